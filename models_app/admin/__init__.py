"""Admin pages of the models_app, one module per domain; importing them registers them."""

from models_app.admin import registry  # noqa: F401
from models_app.admin import finetuning  # noqa: F401, E402
from models_app.admin import benchmarks  # noqa: F401, E402
