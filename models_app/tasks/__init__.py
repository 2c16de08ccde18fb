"""Celery tasks of the models_app, one module per domain (imported here so autodiscovery finds them)."""
