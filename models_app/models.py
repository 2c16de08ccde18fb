"""Django loads an app's tables from `<app>.models`: this gathers the tables of the three domains.

Import a table from its domain (`from models_app.registry.models import Agent`), not from here."""

from models_app.benchmarks import models as benchmarks  # noqa: F401
from models_app.finetuning import models as finetuning  # noqa: F401
from models_app.registry import models as registry  # noqa: F401
