"""Every provider call the control plane makes is counted by provider, model, operation and outcome
(models_app/providers/instrumented.py behind gateway.provider_for)."""

from __future__ import annotations

import pytest

from models_app.providers.errors import PermanentProviderError, TransientProviderError
from models_app.providers.instrumented import InstrumentedProvider, call_status
from models_app.registry.gateway import provider_for
from models_app.registry.metrics import PROVIDER_CALLS
from tests.factories import ProviderAccountFactory


class Answering:
    """A stand-in for a provider client (third-party HTTP, not our code): answers or raises as told."""

    name = "stand-in"

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error

    def chat(self, *, model: str, messages: list, parameters: dict | None = None) -> str:
        if self.error:
            raise self.error
        return f"answer from {model}"

    def get_job(self, *, job_id: str) -> str:
        return job_id


def test_calls_are_recorded_with_their_outcome() -> None:
    calls: list[tuple[str, str, str]] = []
    record = lambda operation, model, status, seconds: calls.append((operation, model, status))  # noqa: E731
    assert InstrumentedProvider(Answering(), record=record).chat(model="m-1", messages=[]) == "answer from m-1"
    assert InstrumentedProvider(Answering(), record=record).get_job(job_id="j") == "j"
    throttled = TransientProviderError("slow down", provider="p", status_code=429)
    with pytest.raises(TransientProviderError):
        InstrumentedProvider(Answering(throttled), record=record).chat(model="m-1", messages=[])
    with pytest.raises(PermanentProviderError):
        InstrumentedProvider(Answering(PermanentProviderError("no", provider="p")), record=record).chat(model="m-2", messages=[])
    assert calls == [("chat", "m-1", "ok"), ("get_job", "-", "ok"), ("chat", "m-1", "rate_limited"), ("chat", "m-2", "permanent")]
    assert InstrumentedProvider(Answering(), record=record).name == "stand-in"  # everything else passes through
    assert call_status(TransientProviderError("t", provider="p", status_code=503)) == "transient"
    assert call_status(ValueError()) == "error"


@pytest.mark.django_db
def test_provider_for_counts_calls_in_prometheus() -> None:
    account = ProviderAccountFactory(name="unreachable-for-metrics", base_url="http://127.0.0.1:9")
    provider = provider_for(account)
    counter = PROVIDER_CALLS.labels("unreachable-for-metrics", "-", "list_models", "transient")
    before = counter._value.get()
    with pytest.raises(TransientProviderError):
        provider.list_models()
    assert counter._value.get() == before + 1
