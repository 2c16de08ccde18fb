"""Genesis settings: one module, driven by the environment and `genesis/config/<GENESIS_ENV>.yaml`.

Secrets (the secret key, provider API keys, webhook URLs) come only from environment variables. A
missing or malformed value stops start-up with a message naming the key and the file.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from genesis.config.loader import ConfigError, load_config, normalise_env_name
from genesis.logging import logging_config

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("GENESIS_VAR_DIR", BASE_DIR / "var"))

# Set but empty means unset, for prometheus_client too: it goes multiprocess when the variable is present
# at all and then writes its files into the working directory, which /metrics (genesis/metrics.py,
# reading empty as unset) never serves. Removed here, before prometheus_client is imported.
if os.environ.get("PROMETHEUS_MULTIPROC_DIR") == "":
    del os.environ["PROMETHEUS_MULTIPROC_DIR"]
# prometheus_client's multiprocess mode writes its files into this folder as soon as a process counts
# anything, and a gunicorn worker died at boot ("No such file or directory") when it was missing — a
# tmpfs folder such as /run/genesis-metrics is gone after a reboot. Made here, before any metric is.
if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)

DEV_SECRET_KEY = "genesis-dev-insecure-secret-key-change-me"

try:
    GENESIS_ENV = normalise_env_name(os.environ.get("GENESIS_ENV", "dev"))
    SECRET_KEY = os.environ.get("GENESIS_SECRET_KEY", "")
    if GENESIS_ENV != "dev" and SECRET_KEY in ("", DEV_SECRET_KEY):
        raise ConfigError(
            f"GENESIS_SECRET_KEY: {GENESIS_ENV} refuses to start without a secret key of its own; "
            "set GENESIS_SECRET_KEY to a long random value (python -c 'import secrets; "
            "print(secrets.token_urlsafe(50))')"
        )
    GENESIS = load_config(env_name=GENESIS_ENV)
    if GENESIS_ENV == "production" and GENESIS.debug:
        raise ConfigError("genesis/config/production.yaml: debug: production refuses to start with DEBUG on")
    if GENESIS_ENV == "production" and not GENESIS.allowed_hosts:
        raise ConfigError(
            "genesis/config/production.yaml: allowed_hosts: production refuses to start with no allowed "
            "hosts; set GENESIS_ALLOWED_HOSTS"
        )
except ConfigError as exc:
    raise ImproperlyConfigured(str(exc)) from None

SECRET_KEY = SECRET_KEY or DEV_SECRET_KEY
DEBUG = GENESIS.debug
ALLOWED_HOSTS = GENESIS.allowed_hosts

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    # django-ninja's bundled Swagger UI (templates and static files) for /api/v1/docs: without the app
    # the page loads Swagger UI from a CDN and is blank offline.
    "ninja",
    "django_prometheus",
    "django_celery_beat",
    "simple_history",
    "models_app",
    "experiments",
    "costs",
    "audits",
    "safety",
    "launch",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    # Before SecurityMiddleware (whose HTTPS redirect reads the Host) and CommonMiddleware (which checks
    # it), both answering Django's HTML 400 for a Host not allowed: the API's and the probes' is JSON.
    "genesis.middleware.ApiJsonErrorsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "simple_history.middleware.HistoryRequestMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

# A change's reason is kept whole in each model's history (genesis/history.py): status reasons name who
# at their end ("fine-tuned by job #1 (…), started by admin"), and simple-history's default column cut
# them at 100 characters.
SIMPLE_HISTORY_HISTORY_CHANGE_REASON_USE_TEXT_FIELD = True

# /api/ requests go through this shorter chain (genesis/wsgi.py): nothing above that only the admin uses.
# CommonMiddleware is left out too (APPEND_SLASH redirects and PREPEND_WWW are for pages, and it cost
# ~10 µs a call, bench/route); without it gunicorn sends API answers chunked instead of with a length.
# ApiJsonErrorsMiddleware stays: it is what turns Django's HTML 404 / empty 405 into the API's JSON.
API_MIDDLEWARE = [
    "genesis.middleware.ApiJsonErrorsMiddleware",
    "django.middleware.security.SecurityMiddleware",
]

# Request bodies: a full POST /outcomes batch (1 000 events, each with 200-character ids written as
# \uXXXX escapes and extra fields) is under 8 MB; above this limit the API answers 413 and says so.
# Files in multipart uploads do not count (AUDIT_MAX_UPLOAD_BYTES bounds those).
DATA_UPLOAD_MAX_MEMORY_SIZE = 16 * 1024 * 1024
# Files: the first handler stops an upload once the request's files pass AUDIT_MAX_UPLOAD_BYTES (or its
# Content-Length says they will), before the two after it have stored the excess (genesis/uploads.py).
FILE_UPLOAD_HANDLERS = [
    "genesis.uploads.UploadLimitHandler",
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "django.core.files.uploadhandler.TemporaryFileUploadHandler",
]

if not DEBUG:
    # runserver serves static files in development; in production WhiteNoise serves the collected ones.
    MIDDLEWARE.insert(MIDDLEWARE.index("django.middleware.security.SecurityMiddleware") + 1,
                      "whitenoise.middleware.WhiteNoiseMiddleware")

ROOT_URLCONF = "genesis.urls"
WSGI_APPLICATION = "genesis.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
            # {% load auto_refresh %}: how a page that follows running work reloads (genesis is no app).
            "libraries": {"auto_refresh": "genesis.auto_refresh"},
        },
    },
]

# --- database ----------------------------------------------------------------------------------
def _env_seconds(name: str, default: int) -> int:
    """A whole number of seconds from the environment. A malformed value stops start-up naming the variable."""
    raw = os.environ.get(name, str(default)).strip()
    if not (raw.isascii() and raw.isdigit()):  # isdigit alone takes '²', which int() refuses
        raise ImproperlyConfigured(f"{name}: '{raw}' is not a whole number of seconds")
    return int(raw)


USING_SQLITE = GENESIS.database_url.startswith("sqlite")
DATABASES: dict[str, dict[str, Any]]
if USING_SQLITE:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    # A relative SQLite path lives under var/ (GENESIS_VAR_DIR), with the broker's files.
    sqlite_path = GENESIS.database_url.removeprefix("sqlite:///")
    sqlite_file = Path(sqlite_path) if Path(sqlite_path).is_absolute() else VAR_DIR / sqlite_path
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": sqlite_file,
            # Worker, beat and web share one file: wait for the write lock instead of failing.
            "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"},
            # A file, not memory, so a Celery worker started by the tests sees the test database.
            "TEST": {"NAME": str(VAR_DIR / "test.sqlite3")},
        }
    }
else:
    # Each process (each gunicorn thread, each Celery pool process) keeps its connection this long after a
    # request or task (README "Scaling out" sizes max_connections by it); 0 closes it after each one.
    DATABASES = {"default": dict(dj_database_url.parse(
        GENESIS.database_url, conn_max_age=_env_seconds("GENESIS_DB_CONN_MAX_AGE", 60), conn_health_checks=True))}
    DATABASES["default"].setdefault("OPTIONS", {})["connect_timeout"] = 5
    # `.iterator()` outside a transaction would use a WITH HOLD cursor fetched over several statements,
    # which PgBouncer in transaction mode (fine for web processes, README "Scaling out") may send to
    # different server connections; the rows are read client-side instead.
    DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- cache and Redis ---------------------------------------------------------------------------
REDIS_URL = GENESIS.redis_url
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Celery ----------------------------------------------------------------------------------------
# Reliability (GUIDE, "Tasks are idempotent"): a task is acknowledged only after it finished
# (acks_late) and goes back to the queue if its worker dies (reject_on_worker_lost), so every task must
# be safe to run twice: tasks load their row by id and skip work already done. Workers take one message
# at a time because benchmark chunks are long. Redis' visibility timeout is above the longest task, or
# Redis would hand a still-running task to a second worker.
from kombu import Queue  # noqa: E402

CELERY_LONGEST_TASK_SECONDS = 30 * 60
CELERY_BROKER_URL = REDIS_URL or "filesystem://localhost//"  # a host, or kombu warns on every connection
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {"visibility_timeout": CELERY_LONGEST_TASK_SECONDS + 600}
if REDIS_URL:
    # kombu's Redis transport, whose worker survives a Redis outage mid-task (genesis/broker.py says how).
    CELERY_BROKER_TRANSPORT = "genesis.broker:RedisTransport"
else:
    # The embedded broker: messages are files under var/celery, shared by web, worker and beat, written
    # whole before a worker can see them (genesis/broker.py says why kombu's own transport is not used).
    CELERY_BROKER_TRANSPORT = "genesis.broker:Transport"
    celery_dir = VAR_DIR / "celery"
    for sub in ("queue", "processed", "control"):
        (celery_dir / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS.update(
        data_folder_in=str(celery_dir / "queue"),
        data_folder_out=str(celery_dir / "queue"),
        processed_folder=str(celery_dir / "processed"),
        control_folder=str(celery_dir / "control"),
        store_processed=False,
        # The file-system transport polls; the default second would make /readyz's worker ping slow.
        polling_interval=0.1,
    )
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A worker (or beat) that lost the broker tries again every 30 s at most, for as long as it takes:
# Celery's default gives up after 100 attempts (about 45 minutes of outage) and the process exits.
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True  # a background job's outcome lives on its row, not in a result store
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# A running task whose broker connection broke can no longer be acknowledged, and its message goes
# back to the queue as the worker reconnects: without this, a short break ran the task a second time
# beside the first (seen: two runs of one message, 2 s apart). Stopped instead, it runs once more from
# its row (tasks are idempotent), or, when Redis lost the message, the sweeps send it (genesis/broker.py).
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = CELERY_LONGEST_TASK_SECONDS
CELERY_TASK_TIME_LIMIT = CELERY_LONGEST_TASK_SECONDS + 60
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_QUEUES = [Queue("default"), Queue("benchmarks")]
# Where a task goes when it is not the default queue; here rather than on the task, so a task sent by name
# (genesis/tasks.py send_on_commit) from a process that never imported it is routed the same way.
CELERY_TASK_ROUTES = {"models_app.benchmark_chunk_run": {"queue": "benchmarks"}}
# One beat sends at a time (a Redis lock; genesis/beat.py): a second beat waits as a standby.
CELERY_BEAT_SCHEDULER = "genesis.beat:SingleBeatScheduler"
# Beat saves each task's last_run_at right after sending it, not every 3 minutes (django-celery-beat's
# sync_every): a standby that takes over from a killed beat reads the schedule from the database, and
# sent again everything the dead beat had sent since its last save (seen: the weekly report twice).
# What is still left — a beat killed between sending and saving — the reports absorb: one per day and
# week (CostReport.schedule_key, launch.WeeklyLaunchReport).
CELERY_BEAT_SYNC_EVERY = 1
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_TIMEZONE = GENESIS.time_zone

# --- auth, i18n, static ------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LANGUAGE_CODE = "en-us"
TIME_ZONE = GENESIS.time_zone
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
MEDIA_ROOT = VAR_DIR / "media"
LOGIN_URL = "admin:login"

# --- email (budget alerts, cost reports): the SMTP server and its credentials from the environment --
# Where people reach the admin, for links in notifications; and when an unanswered stage request is
# reminded to its approvers (once).
GENESIS_PUBLIC_URL = os.environ.get("GENESIS_PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/")
GENESIS_APPROVAL_REMINDER_HOURS = float(os.environ.get("GENESIS_APPROVAL_REMINDER_HOURS", "24"))



def _env_days(name: str, default: int) -> int:
    """A whole number of days from the environment; 0 means "keep forever". A malformed value stops
    start-up naming the variable."""
    raw = os.environ.get(name, str(default)).strip()
    if not (raw.isascii() and raw.isdigit()):  # isdigit alone takes '²', which int() refuses
        raise ImproperlyConfigured(f"{name}: '{raw}' is not a whole number of days (0 keeps forever)")
    return int(raw)


# --- data retention (README "Data retention"): what the daily beat tasks delete, in days; 0 keeps forever.
# Outcomes outside every experiment ("live"): their cost is on the ledger, and nothing reads them after
# the health windows (15 minutes); 90 days leaves room for investigations. POST /outcomes rejects events
# older than this (experiments.retention.outcome_age_limit): a pruned event sent again would be charged twice.
GENESIS_RETAIN_LIVE_OUTCOMES_DAYS = _env_days("GENESIS_RETAIN_LIVE_OUTCOMES_DAYS", 90)
# The outcomes and exposures of rolled-back or completed experiments are their results, the evidence of
# a launch decision: kept unless an operator chooses a retention for them.
GENESIS_RETAIN_ENDED_EXPERIMENTS_DAYS = _env_days("GENESIS_RETAIN_ENDED_EXPERIMENTS_DAYS", 0)
# Stored cost reports (each can be made again from the append-only ledger with its as_of).
GENESIS_RETAIN_COST_REPORTS_DAYS = _env_days("GENESIS_RETAIN_COST_REPORTS_DAYS", 400)

EMAIL_HOST = os.environ.get("GENESIS_EMAIL_HOST", "localhost")
EMAIL_PORT = int(os.environ.get("GENESIS_EMAIL_PORT", "25"))
EMAIL_HOST_USER = os.environ.get("GENESIS_EMAIL_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("GENESIS_EMAIL_PASSWORD", "")
EMAIL_USE_TLS = os.environ.get("GENESIS_EMAIL_USE_TLS", "false").lower() == "true"
EMAIL_TIMEOUT = 10  # an unreachable mail server must not hold a worker
DEFAULT_FROM_EMAIL = os.environ.get("GENESIS_EMAIL_FROM", "genesis@localhost")

# --- security: production behind TLS ------------------------------------------------------------
if not DEBUG:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = os.environ.get("GENESIS_SSL_REDIRECT", "true").lower() == "true"
    # Probes and the Prometheus scraper talk plain HTTP inside the cluster.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = 31536000
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    CSRF_TRUSTED_ORIGINS = [f"https://{host}" for host in ALLOWED_HOSTS if host and "*" not in host]

# The debug page and error e-mails hide credentials in URLs, webhooks and the GENESIS config object too,
# not only in settings named like Django's list (genesis/error_reports.py).
DEFAULT_EXCEPTION_REPORTER_FILTER = "genesis.error_reports.CredentialsExceptionReporterFilter"

# --- logging -------------------------------------------------------------------------------------
# Text or JSON (GENESIS_LOG_FORMAT), identifiers as fields, the every-minute sweeps' routine lines at DEBUG:
# genesis/logging.py, which gunicorn.conf.py uses too.
LOGGING = logging_config(level=GENESIS.logging.level, format=GENESIS.logging.format)
# Python's warnings (a library's deprecation, Celery's warning about running as root) through the same
# handler, in the same format, instead of bare lines on stderr that a JSON log shipper cannot parse.
logging.captureWarnings(True)

# /metrics: when set, a scrape must send `Authorization: Bearer <token>` (genesis/metrics_auth.py); a secret,
# so from the environment only.
GENESIS_METRICS_TOKEN = os.environ.get("GENESIS_METRICS_TOKEN", "")

# --- Genesis domain settings (named as in the public contract) -----------------------------------
ROLLOUT_STAGES = GENESIS.ab_testing.stages
ROLLOUT_MIN_STAGE_HOURS = GENESIS.ab_testing.min_stage_hours
ROLLOUT_MIN_SAMPLES_PER_ARM = GENESIS.ab_testing.min_samples_per_arm
BENCHMARK_MIN_RELATIVE_IMPROVEMENT = GENESIS.benchmarks.min_relative_improvement
BENCHMARK_MIN_CASES = GENESIS.benchmarks.min_cases
BENCHMARK_GATE_RULE = GENESIS.benchmarks.gate_rule
BUDGET_THRESHOLDS = GENESIS.costs.thresholds
GENESIS_SIMULATOR_URL = GENESIS.simulator_url
# Where provider accounts may send requests and their keys (models_app/registry/gateway.py provider_destinations).
GENESIS_PROVIDER_HOSTS = GENESIS.providers.hosts
AUDIT_MAX_UPLOAD_BYTES = GENESIS.audits.max_upload_bytes
