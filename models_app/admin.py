"""Django's admin autodiscovery imports `<app>.admin`: importing the domains' admin modules registers
their pages."""

from models_app.benchmarks import admin as benchmarks  # noqa: F401
from models_app.finetuning import admin as finetuning  # noqa: F401
from models_app.registry import admin as registry  # noqa: F401
