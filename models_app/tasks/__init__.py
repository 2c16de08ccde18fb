"""Celery tasks of the models_app, one module per domain (imported here so autodiscovery finds them)."""

from models_app.tasks import benchmarks  # noqa: F401
from models_app.tasks import finetuning  # noqa: F401, E402
