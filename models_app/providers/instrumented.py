"""A provider wrapper that reports every call (operation, model, outcome, seconds) to a callback.

Django-free and metrics-library-free: models_app/registry/gateway.py passes a callback that counts in
Prometheus. Everything not listed in CALLS (settings, name, close…) passes through untouched.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from models_app.providers.errors import PermanentProviderError, ProviderError, TransientProviderError

# method → the keyword naming the model it concerns (None: the call concerns no single model)
CALLS: dict[str, str | None] = {
    "chat": "model",
    "list_models": None,
    "retrieve_model": "model_id",
    "upload_file": None,
    "retrieve_file": None,
    "create_job": "base_model",
    "list_jobs": None,
    "get_job": None,
    "start_job": None,
    "cancel_job": None,
}
NO_MODEL = "-"

CallRecorder = Callable[[str, str, str, float], None]  # (operation, model, status, seconds)


def call_status(error: BaseException | None) -> str:
    """ok | rate_limited | transient | permanent | error — a bounded label value."""
    if error is None:
        return "ok"
    if isinstance(error, ProviderError) and error.status_code == 429:
        return "rate_limited"
    if isinstance(error, TransientProviderError):
        return "transient"
    if isinstance(error, PermanentProviderError):
        return "permanent"
    return "error"


class InstrumentedProvider:
    def __init__(self, provider: Any, *, record: CallRecorder) -> None:
        self._provider = provider
        self._record = record

    @property
    def wrapped(self) -> Any:
        return self._provider

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._provider, name)
        if name not in CALLS:
            return target
        model_keyword = CALLS[name]

        def timed(*args: Any, **kwargs: Any) -> Any:
            model = str(kwargs.get(model_keyword) or NO_MODEL) if model_keyword else NO_MODEL
            started = time.perf_counter()
            error: BaseException | None = None
            try:
                return target(*args, **kwargs)
            except BaseException as exc:
                error = exc
                raise
            finally:
                self._record(name, model, call_status(error), time.perf_counter() - started)

        return timed
