# Load the Celery app when Django starts so `@shared_task` binds to it and `delay_on_commit` works.
from genesis.celery import app as celery_app

__all__ = ("celery_app",)
