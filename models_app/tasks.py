"""Celery's autodiscovery imports `<app>.tasks`: importing the domains' task modules registers them."""

from models_app.benchmarks import tasks as benchmarks  # noqa: F401
from models_app.finetuning import tasks as finetuning  # noqa: F401
