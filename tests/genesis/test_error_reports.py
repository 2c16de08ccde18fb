"""genesis/error_reports.py and the config object's repr: the debug error page (DEBUG on, as in dev and
a staging run with GENESIS_DEBUG=true) and the error e-mails showed the database password, the Redis
password and the Slack webhook — in the GENESIS config object, CACHES › LOCATION, CELERY_BROKER_URL,
REDIS_URL and the environment a development server puts in request.META — because none of them is
named like the settings Django hides. Each is now shown without its secret; the rest stays readable."""

from __future__ import annotations

import sys

import pytest
from django.views.debug import ExceptionReporter, technical_500_response

from genesis.config.redaction import address_shown, without_credentials
from genesis.config.schema import AlertingSection

DATABASE_URL = "postgres://postgres:DBSECRETPW@db.internal:5432/genesis"
REDIS_URL = "redis://default:REDISPW@cache.internal:6379/0"
SLACK_WEBHOOK = "https://hooks.slack.com/services/T000/B000/SLACKSECRET"
EMAIL_PASSWORD = "EMAILSECRETPW"
# (Named here, far from the code the traceback shows: the page quotes the source lines of each frame.)
SECRETS = ("DBSECRETPW", "REDISPW", "SLACKSECRET", EMAIL_PASSWORD)


@pytest.fixture
def settings_with_credentials(settings):
    settings.DEBUG = True
    settings.GENESIS = settings.GENESIS.model_copy(update={
        "database_url": DATABASE_URL, "redis_url": REDIS_URL, "alerting": AlertingSection(slack_webhook=SLACK_WEBHOOK),
    })
    settings.REDIS_URL = settings.CELERY_BROKER_URL = REDIS_URL
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": REDIS_URL}}
    settings.EMAIL_HOST_PASSWORD = EMAIL_PASSWORD
    return settings


def open_connection(url: str) -> None:
    """Fails with the URL in a local variable, as a database or Redis client's frame would."""
    raise ConnectionRefusedError("connection refused")


def failed_request(rf):
    # runserver's WSGI environ carries the process's environment into request.META.
    request = rf.get("/admin/models_app/apikey/", HTTP_ACCEPT="text/html")
    request.META.update(DATABASE_URL=DATABASE_URL, REDIS_URL=REDIS_URL, GENESIS_SLACK_WEBHOOK=SLACK_WEBHOOK,
                        GENESIS_EMAIL_PASSWORD=EMAIL_PASSWORD)
    try:
        open_connection(DATABASE_URL)
    except ConnectionRefusedError:
        return request, sys.exc_info()
    raise AssertionError("unreachable")


def test_the_debug_page_and_the_error_mail_show_no_credential(settings_with_credentials, rf):
    request, exc_info = failed_request(rf)
    page = technical_500_response(request, *exc_info)
    assert page.status_code == 500
    html = page.content.decode()
    mail = ExceptionReporter(request, *exc_info).get_traceback_text()  # what mail_admins sends
    for shown in (html, mail):
        assert [secret for secret in SECRETS if secret in shown] == []
        # What a person debugging needs is still there: scheme, user, host, port, database.
        assert "postgres://postgres:********@db.internal:5432/genesis" in shown  # GENESIS, META, the frame's local
        assert "redis://default:********@cache.internal:6379/0" in shown
    assert "CELERY_BROKER_URL" in html and "ConnectionRefusedError" in html


def test_the_config_objects_repr_masks_its_secrets(settings_with_credentials):
    shown = repr(settings_with_credentials.GENESIS)
    assert [secret for secret in SECRETS if secret in shown] == []
    assert "database_url='postgres://postgres:********@db.internal:5432/genesis'" in shown
    assert "slack_webhook='********'" in shown
    assert str(settings_with_credentials.GENESIS).count("********") == 3
    # The values themselves are untouched: only what is printed is masked.
    assert settings_with_credentials.GENESIS.database_url == DATABASE_URL
    assert settings_with_credentials.GENESIS.alerting.slack_webhook == SLACK_WEBHOOK
    assert "slack_webhook=''" in repr(AlertingSection())  # unset says so


@pytest.mark.parametrize(("text", "shown"), [
    ("postgres://genesis:PW@db:5432/genesis", "postgres://genesis:********@db:5432/genesis"),
    ("redis://:PW@cache:6379/1", "redis://:********@cache:6379/1"),
    ("amqp://user:p@ss@broker//", "amqp://user:********@broker//"),  # an "@" in the password
    ("postgres://postgres@127.0.0.1:5432/test", "postgres://postgres@127.0.0.1:5432/test"),  # no password
    ("https://api.example.com/v1?api_key=K123&limit=5", "https://api.example.com/v1?api_key=********&limit=5"),
    ("connect to redis://u:PW@h:1/0 failed", "connect to redis://u:********@h:1/0 failed"),
    ("alice@example.com", "alice@example.com"),
    ("at 10:30 bob@example.com", "at 10:30 bob@example.com"),
    ("mailto:jo@example.com", "mailto:jo@example.com"),
    ("'https://h/p?token=K1'", "'https://h/p?token=********'"),  # the quote after a query value stays
    ("", ""),
])
def test_without_credentials_masks_passwords_and_keeps_the_rest(text, shown):
    assert without_credentials(text) == shown



@pytest.mark.parametrize(("value", "shown"), [
    ("VLLM_API_KEY=ops:PW@vllm:8000", "VLLM_API_KEY=********@vllm:8000"),  # a host list's entry: no scheme
    ("https://ops:p/w?x#y@api.example/v1", "https://********@api.example/v1"),  # only the last "@" ends a password
    ("VLLM_API_KEY=u:p,w@vllm,localhost:1", "VLLM_API_KEY=********@vllm,localhost:1"),
    ("https://TOKEN@api.example", "https://********@api.example"),  # a token given as the user name
    ("https://api.example/v1?api_key=K1", "https://api.example/v1?api_key=********"),
    ("vllm.internal:8000", "vllm.internal:8000"),
    # Deliberate: an "@" in the query masks the host too, since the same shape is a token holding "/" and
    # "?" given as the user name (the next case); telling them apart would show that token.
    ("https://hooks.example/x?to=a@b.c", "https://********@b.c"),
    ("https://tok/en?x@api.example/v1", "https://********@api.example/v1"),
])
def test_an_address_a_refusal_quotes_shows_nothing_before_its_last_at(value, shown):
    assert address_shown(value) == shown

def test_a_connection_url_inside_a_dict_or_list_local_is_masked_too(rf):
    # Second reviewer: plain-string locals were masked, a dict or list holding the URL was shown whole.
    # The secrets are put together at run time: the page also shows the function's source lines.
    dict_secret, list_secret, tuple_secret = ("".join(("SEC", kind, "RET")) for kind in ("DICT", "LIST", "TUPLE"))

    def connect() -> None:
        settings_of_the_cache = {"url": f"redis://default:{dict_secret}@cache:6379/0",
                                 "options": ("x", f"postgres://u:{tuple_secret}@db/x")}
        replicas = [f"postgres://genesis:{list_secret}@db/genesis"]
        raise ConnectionError(f"cannot connect ({len(settings_of_the_cache)}, {len(replicas)})")

    try:
        connect()
    except ConnectionError:
        info = sys.exc_info()
    reporter = ExceptionReporter(rf.get("/x"), *info)
    html = reporter.get_traceback_html()
    assert "cache:6379/0" in html and "db/genesis" in html  # the locals are shown, their passwords not
    for page in (html, reporter.get_traceback_text()):
        for secret in (dict_secret, list_secret, tuple_secret):
            assert f"{secret}@" not in page, secret  # (the bare word is this test's own local, shown too)
