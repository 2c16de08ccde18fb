"""What the debug error page (DEBUG on: dev, and staging when GENESIS_DEBUG=true) and the error
e-mails show of settings, the request's environment and a traceback's variables
(DEFAULT_EXCEPTION_REPORTER_FILTER).

Django hides only settings named like API, AUTH, TOKEN, KEY, SECRET, PASS, SIGNATURE; Genesis keeps its
credentials elsewhere too: in connection URLs (`CACHES` › LOCATION, `CELERY_BROKER_URL`, `REDIS_URL`, the
`DATABASE_URL` and `REDIS_URL` a development server's environment puts in request.META) and in the
config object `GENESIS` (its database and Redis URLs, its Slack webhook). So beside Django's names, a
webhook is hidden whole, every URL is shown with its password masked
(genesis/config/redaction.py), and the config object is shown as its fields, each judged like a setting.
"""

from __future__ import annotations

import re
from typing import Any

from django.http import HttpRequest
from django.views.debug import SafeExceptionReporterFilter
from pydantic import BaseModel

from genesis.config.redaction import without_credentials


class CredentialsExceptionReporterFilter(SafeExceptionReporterFilter):
    # Django's names, and webhooks: the URL of a Slack-compatible webhook is its own credential.
    hidden_settings = re.compile("API|AUTH|TOKEN|KEY|SECRET|PASS|SIGNATURE|HTTP_COOKIE|WEBHOOK", flags=re.IGNORECASE)

    def cleanse_setting(self, key: int | str, value: Any) -> Any:
        if isinstance(value, BaseModel):
            value = value.model_dump()  # the config object: each field by its own name, like a setting
        cleansed = super().cleanse_setting(key, value)  # recurses through this method for nested values
        return without_credentials(cleansed) if isinstance(cleansed, str) else cleansed

    def cleanse_special_types(self, request: HttpRequest | None, value: Any) -> Any:
        # A traceback's variables: a connection URL held in a local — or in a dict, list or tuple a
        # local holds (connection settings) — is shown without its password.
        return _without_credentials_within(super().cleanse_special_types(request, value))


def _without_credentials_within(value: Any, *, depth: int = 0) -> Any:
    if isinstance(value, str):
        return without_credentials(value)
    if depth >= 4:  # deep enough for connection settings; a traceback page need not walk whole graphs
        return value
    if isinstance(value, dict):
        return {key: _without_credentials_within(item, depth=depth + 1) for key, item in value.items()}
    if type(value) in (list, tuple):
        return type(value)(_without_credentials_within(item, depth=depth + 1) for item in value)
    return value
