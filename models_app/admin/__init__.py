"""Admin pages of the models_app, one module per domain; importing them registers them."""

from models_app.admin import registry  # noqa: F401
