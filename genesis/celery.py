"""The Celery app `genesis`; its configuration is the `CELERY_*` block of genesis/settings.py.

genesis/__init__.py loads this module in every process, before Django is set up: what only a worker
needs (the metrics heartbeat, the providers' warm-up) is imported inside the signal handlers."""

import os

from celery import Celery
from celery.signals import beat_init, setup_logging, worker_init, worker_process_init, worker_ready, worker_shutdown

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "genesis.settings")

app = Celery("genesis")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
app.autodiscover_tasks(["genesis"])  # genesis/tasks.py: the project is no Django app of its own


@setup_logging.connect
def _keep_genesis_logging(**_: object) -> None:
    """Logging is settings.LOGGING in every process (GENESIS_LOG_LEVEL, GENESIS_LOG_FORMAT;
    genesis/logging.py), set up with Django. Without a receiver here Celery sets the root logger's level
    from the worker's or beat's --loglevel, so GENESIS_LOG_LEVEL=DEBUG showed nothing more in them."""


@worker_process_init.connect
def _print_through_logging(**_: object) -> None:
    """What a task print()s becomes a log line (logger `celery.redirected`, WARNING, with the task's fields),
    not raw text among the JSON lines. Celery redirects print into its logger only when it set up logging
    itself, which the receiver above stops; so each pool process, where the tasks run, does it here."""
    if app.conf.worker_redirect_stdouts:
        app.log.redirect_stdouts(app.conf.worker_redirect_stdouts_level)


@worker_init.connect
@beat_init.connect
def _quiet_housekeeping(**_: object) -> None:
    # Before a worker forks its pool, and in beat: the every-minute sweeps' routine lines go to DEBUG.
    from genesis.logging import set_housekeeping_tasks  # import here: see the module docstring
    from genesis.schedules import housekeeping_tasks  # import here: see the module docstring

    set_housekeeping_tasks(housekeeping_tasks())


@worker_init.connect
def _warm_up_providers(**_: object) -> None:
    # In the worker's main process, before it forks its pool: every pool process then starts with
    # the provider layer's lazy work done (models_app/providers/factory.py warm_up).
    from models_app.providers.factory import warm_up  # import here: see the module docstring

    warm_up()


@worker_ready.connect
def _announce_worker(sender: object = None, **_: object) -> None:
    # A heartbeat naming the queues this worker consumes: /metrics counts workers per queue from it.
    from genesis.metrics import start_worker_heartbeat  # import here: see the module docstring

    queues = sorted(getattr(getattr(sender, "app", app).amqp.queues, "consume_from", None) or {})
    start_worker_heartbeat(hostname=getattr(sender, "hostname", "") or "", queues=queues)


@worker_shutdown.connect
def _retire_worker(**_: object) -> None:
    from genesis.metrics import stop_worker_heartbeat  # import here: see the module docstring

    stop_worker_heartbeat()
