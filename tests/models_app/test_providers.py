"""The provider layer over real HTTP: Mistral via the real SDK against the simulator, the
OpenAI-compatible provider against the simulator and a local stub server; retries and fallback."""

from __future__ import annotations

import json
import random
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from decimal import Decimal
from http.server import ThreadingHTTPServer
from typing import Any

import pytest

from models_app.providers import (
    ChatResult,
    MistralProvider,
    OpenAICompatibleProvider,
    PermanentProviderError,
    ProviderAuthError,
    ProviderCache,
    ProviderRefused,
    RetryPolicy,
    TransientProviderError,
    UnknownModelError,
    UnsupportedParameterError,
    build_provider,
    call_with_retries,
)
from models_app.providers.throttle import CallGate
from models_app.simulator import SimulatorConfig, format_answer_marker, start_in_thread, stop
from models_app.simulator.server import SimulatorHTTPServer
from tests.http_servers import QuietHandler, serving, url_of

API_KEY = "provider-test-key"
CONFIG = SimulatorConfig(
    port=0, seed=5, job_seconds=0.6, validation_seconds=0.05, cancel_seconds=0.1, api_keys=frozenset({API_KEY})
)
QUESTION = [{"role": "user", "content": "How do I reset my password?"}]


@pytest.fixture()
def simulator() -> Iterator[SimulatorHTTPServer]:
    server, _ = start_in_thread(CONFIG)
    yield server
    stop(server)


def simulator_provider(server: SimulatorHTTPServer, **overrides: Any) -> MistralProvider:
    options: dict[str, Any] = {
        "kind": "simulator",
        "name": "simulator",
        "base_url": server.base_url,
        "api_key": API_KEY,
        "api_key_env": "MISTRAL_API_KEY",
        "timeout_seconds": 5,
    }
    provider = build_provider(**{**options, **overrides})
    assert isinstance(provider, MistralProvider)
    return provider


def chat_requests(server: SimulatorHTTPServer) -> list[int]:
    return [status for method, path, status in server.state.request_log if path == "/v1/chat/completions"]


# ---- a stub OpenAI-compatible server -----------------------------------------------------------


@dataclass
class StubReply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


class StubServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        self.replies: dict[tuple[str, str], StubReply] = {}
        self.received: list[dict[str, Any]] = []
        super().__init__(("127.0.0.1", 0), StubHandler)

    @property
    def url(self) -> str:
        return url_of(self)


class StubHandler(QuietHandler):
    server: StubServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def _answer(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        self.server.received.append(
            {"method": method, "path": self.path, "headers": dict(self.headers), "json": json.loads(raw) if raw else None}
        )
        reply = self.server.replies.get((method, self.path), StubReply(404, {"error": {"message": "no such route"}}))
        payload = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:  # noqa: N802
        self._answer("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._answer("POST")


@pytest.fixture()
def stub() -> Iterator[StubServer]:
    with serving(StubServer()) as server:
        yield server


def openai_completion(text: str, *, usage: dict[str, int] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "llama3",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
    }
    if usage is not None:
        body["usage"] = usage
    return body


# ---- Mistral provider against the simulator ----------------------------------------------------


def test_chat_returns_text_tokens_latency_and_finish_reason(simulator: SimulatorHTTPServer) -> None:
    provider = simulator_provider(simulator)
    result = provider.chat(model="open-mistral-7b", messages=QUESTION, parameters={"temperature": 0.2, "max_tokens": 200})
    assert isinstance(result, ChatResult)
    assert result.text
    assert result.prompt_tokens == 7  # 27 characters
    assert result.completion_tokens >= 1
    assert result.latency_ms > 0
    assert result.finish_reason == "stop"
    assert (result.model, result.provider) == ("open-mistral-7b", "simulator")


def test_list_models_marks_fine_tunable_base_models(simulator: SimulatorHTTPServer) -> None:
    models = {model.id: model for model in simulator_provider(simulator).list_models()}
    assert models["open-mistral-7b"].fine_tunable and not models["open-mistral-7b"].fine_tuned
    assert not models["mistral-medium-latest"].fine_tunable


def test_fine_tuning_through_the_provider(simulator: SimulatorHTTPServer) -> None:
    provider = simulator_provider(simulator)
    sample = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    uploaded = provider.upload_file(filename="support.jsonl", content=(json.dumps(sample) + "\n").encode() * 5)
    assert (uploaded.num_lines, provider.retrieve_file(file_id=uploaded.id).id) == (5, uploaded.id)

    created = provider.create_job(
        base_model="open-mistral-7b",
        training_file_ids=[uploaded.id],
        hyperparameters={"training_steps": 5, "learning_rate": 0.0001},
        suffix="support",
    )
    assert (created.status, created.auto_start, created.suffix) == ("QUEUED", False, "support")
    assert created.cost == Decimal("4.0") and created.cost_currency == "USD"
    assert [job.id for job in provider.list_jobs()] == [created.id]

    assert provider.start_job(job_id=created.id).status == "RUNNING"
    deadline = time.monotonic() + 5
    while (job := provider.get_job(job_id=created.id)).status != "SUCCESS" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert job.status == "SUCCESS" and job.is_terminal
    assert job.fine_tuned_model and job.fine_tuned_model.startswith("ft:open-mistral-7b:")
    assert job.trained_tokens == 5 * 131_072
    assert isinstance(job.cost, Decimal) and job.cost >= Decimal("4")
    assert [event.data["status"] for event in job.events][-1] == "SUCCESS"
    assert job.checkpoints and job.raw["status"] == "SUCCESS"
    assert job.fine_tuned_model in [model.id for model in provider.list_models() if model.fine_tuned]

    # A refusal carries the provider's answer, for the admin to show.
    with pytest.raises(ProviderRefused) as refused:
        provider.start_job(job_id=created.id)
    assert refused.value.status_code == 409
    assert "only a VALIDATED job can be started" in refused.value.provider_answer
    assert "refused to start fine-tuning job" in str(refused.value)


def test_cancel_through_the_provider(simulator: SimulatorHTTPServer) -> None:
    provider = simulator_provider(simulator)
    sample = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    uploaded = provider.upload_file(filename="t.jsonl", content=json.dumps(sample).encode())
    job = provider.create_job(base_model="open-mistral-7b", training_file_ids=[uploaded.id], auto_start=True)
    assert provider.cancel_job(job_id=job.id).status == "CANCELLATION_REQUESTED"


def test_invalid_training_file_is_refused_with_the_line(simulator: SimulatorHTTPServer) -> None:
    with pytest.raises(ProviderRefused) as refused:
        simulator_provider(simulator).upload_file(filename="bad.jsonl", content=b'{"messages": []}\n')
    assert refused.value.status_code == 422
    assert "line 1" in refused.value.provider_answer


def test_deprecated_fine_tuning_routes_surface_as_provider_refused(stub: StubServer) -> None:
    answer = {"object": "error", "message": "Fine-tuning API is deprecated", "type": "deprecated"}
    stub.replies[("POST", "/v1/fine_tuning/jobs")] = StubReply(410, answer)
    stub.replies[("GET", "/v1/fine_tuning/jobs/abc")] = StubReply(404, {"detail": "Not Found"})
    provider = build_provider(kind="mistral", name="mistral-eu", base_url=stub.url, api_key="k", api_key_env="MISTRAL_API_KEY")
    with pytest.raises(ProviderRefused) as refused:
        provider.create_job(base_model="open-mistral-7b", training_file_ids=["f"])
    assert refused.value.status_code == 410
    assert "Fine-tuning API is deprecated" in refused.value.provider_answer
    assert str(refused.value).startswith("provider 'mistral-eu' refused to create a fine-tuning job (410)")
    with pytest.raises(ProviderRefused, match=r"get fine-tuning job abc \(404\).*Not Found"):
        provider.get_job(job_id="abc")


def test_bad_key_is_a_permanent_error_with_a_clear_message(simulator: SimulatorHTTPServer) -> None:
    provider = simulator_provider(simulator, api_key="not-the-key")
    with pytest.raises(ProviderAuthError) as raised:
        provider.chat(model="open-mistral-7b", messages=QUESTION)
    assert isinstance(raised.value, PermanentProviderError)
    assert str(raised.value) == "provider 'simulator' rejected the API key from $MISTRAL_API_KEY (401)"
    assert "not-the-key" not in str(raised.value) + (raised.value.provider_answer or "")

    with pytest.raises(ProviderAuthError, match=r"no API key, \$MISTRAL_API_KEY is unset or empty \(401\)"):
        simulator_provider(simulator, api_key="").list_models()


def test_unknown_model_is_a_permanent_unknown_model_error(simulator: SimulatorHTTPServer) -> None:
    with pytest.raises(UnknownModelError, match="does not serve model 'no-such-model'"):
        simulator_provider(simulator).chat(model="no-such-model", messages=QUESTION)


def test_unsupported_parameter_is_refused_before_any_request(simulator: SimulatorHTTPServer) -> None:
    provider = simulator_provider(simulator)
    with pytest.raises(UnsupportedParameterError, match="'temprature'"):
        provider.chat(model="open-mistral-7b", messages=QUESTION, parameters={"temprature": 0.1})
    assert chat_requests(simulator) == []
    assert provider.chat(model="open-mistral-7b", messages=QUESTION, parameters={"seed": 1}).text  # alias of random_seed


# ---- transient errors and the retry layer ------------------------------------------------------


def test_429_with_retry_after_is_retried_by_our_layer_and_honoured(simulator: SimulatorHTTPServer) -> None:
    provider = simulator_provider(simulator)
    simulator.state.queue_faults(429)
    with pytest.raises(TransientProviderError) as raised:
        provider.chat(model="open-mistral-7b", messages=QUESTION)
    assert (raised.value.status_code, raised.value.retry_after) == (429, 1.0)
    assert chat_requests(simulator) == [429]  # the SDK did not retry on its own

    simulator.state.queue_faults(429)
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        time.sleep(seconds)

    started = time.monotonic()
    result = call_with_retries(
        lambda: provider.chat(model="open-mistral-7b", messages=QUESTION),
        policy=RetryPolicy(max_attempts=3, base_delay_seconds=0.01),
        sleep=sleep,
    )
    assert result.text
    assert chat_requests(simulator) == [429, 429, 200]
    assert len(waits) == 1 and waits[0] >= 1.0  # Retry-After: 1 beats the 0.01 s backoff
    assert time.monotonic() - started >= 1.0


@pytest.mark.parametrize("status", [500, 503])
def test_5xx_is_transient(simulator: SimulatorHTTPServer, status: int) -> None:
    simulator.state.queue_faults(status)
    with pytest.raises(TransientProviderError) as raised:
        simulator_provider(simulator).chat(model="open-mistral-7b", messages=QUESTION)
    assert raised.value.status_code == status


def test_connection_refused_and_timeout_are_transient(simulator: SimulatorHTTPServer) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    unreachable = build_provider(kind="simulator", base_url=f"http://127.0.0.1:{closed_port}", api_key=API_KEY)
    with pytest.raises(TransientProviderError, match="cannot reach provider 'simulator'"):
        unreachable.chat(model="open-mistral-7b", messages=QUESTION)

    slow_server, slow_url = start_in_thread(replace(CONFIG, latency_ms=500))
    try:
        slow = build_provider(kind="simulator", base_url=slow_url, api_key=API_KEY, timeout_seconds=0.1)
        with pytest.raises(TransientProviderError, match="timed out after 0.1s"):
            slow.chat(model="open-mistral-7b", messages=QUESTION)
    finally:
        stop(slow_server)


def flaky(failures: int, error: Exception) -> tuple[list[int], Any]:
    calls: list[int] = []

    def operation() -> str:
        calls.append(1)
        if len(calls) <= failures:
            raise error
        return "ok"

    return calls, operation


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    policy = RetryPolicy(max_attempts=6, base_delay_seconds=1.0, max_delay_seconds=5.0)
    waits: list[float] = []
    calls, operation = flaky(5, TransientProviderError("busy", provider="p"))
    assert call_with_retries(operation, policy=policy, sleep=waits.append, draw=random.Random(1)) == "ok"
    assert len(calls) == 6
    steps = [1.0, 2.0, 4.0, 5.0, 5.0]
    assert all(step / 2 <= wait <= step for wait, step in zip(waits, steps, strict=True))


def test_retries_stop_at_max_attempts_and_never_touch_permanent_errors() -> None:
    calls, operation = flaky(10, TransientProviderError("busy", provider="p"))
    with pytest.raises(TransientProviderError) as raised:
        call_with_retries(operation, policy=RetryPolicy(max_attempts=3), sleep=lambda _: None)
    assert len(calls) == 3 and raised.value.attempts == 3  # the error says how many calls were made

    calls, operation = flaky(10, PermanentProviderError("bad request", provider="p"))
    with pytest.raises(PermanentProviderError):
        call_with_retries(operation, policy=RetryPolicy(max_attempts=3), sleep=lambda _: None)
    assert len(calls) == 1


def test_a_retry_after_beyond_the_cap_is_raised_not_waited() -> None:
    calls, operation = flaky(1, TransientProviderError("slow down", provider="p", retry_after=120))
    with pytest.raises(TransientProviderError) as raised:
        call_with_retries(operation, policy=RetryPolicy(max_delay_seconds=20), sleep=lambda _: pytest.fail("waited"))
    assert raised.value.retry_after == 120 and len(calls) == 1 and raised.value.attempts == 1


# ---- answer markers reach the simulator only ---------------------------------------------------


def test_answer_markers_reach_the_simulator_kind_only() -> None:
    server, _ = start_in_thread(replace(CONFIG, quality={"*": 1.0}))  # always right when the marker arrives
    try:
        marked = [{"role": "user", "content": "Capital of France? " + format_answer_marker("Paris")}]
        assert simulator_provider(server).chat(model="open-mistral-7b", messages=marked).text == "Paris"
        real_kind = simulator_provider(server, kind="mistral")
        assert real_kind.chat(model="open-mistral-7b", messages=marked).text != "Paris"
    finally:
        stop(server)


# ---- OpenAI-compatible provider ----------------------------------------------------------------


def test_openai_compatible_provider_against_the_simulator(simulator: SimulatorHTTPServer) -> None:
    provider = build_provider(kind="openai_compatible", name="vllm", base_url=simulator.base_url + "/v1", api_key=API_KEY)
    assert isinstance(provider, OpenAICompatibleProvider)
    result = provider.chat(model="open-mistral-7b", messages=QUESTION, parameters={"temperature": 0})
    assert result.text and result.prompt_tokens == 7 and result.finish_reason == "stop"
    assert "open-mistral-7b" in [model.id for model in provider.list_models()]


def test_openai_compatible_provider_against_a_stub_server(stub: StubServer) -> None:
    stub.replies[("POST", "/v1/chat/completions")] = StubReply(200, openai_completion("Bonjour"))
    stub.replies[("GET", "/v1/models")] = StubReply(200, {"object": "list", "data": [{"id": "llama3"}]})
    provider = build_provider(
        kind="openai_compatible", name="ollama", base_url=stub.url, api_key="local-key", api_key_env="OLLAMA_KEY"
    )
    marked = [{"role": "user", "content": "Say hello in French. " + format_answer_marker("Bonjour")}]
    result = provider.chat(model="llama3", messages=marked, parameters={"max_tokens": 20, "random_seed": 3})

    sent = stub.received[-1]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["headers"]["Authorization"] == "Bearer local-key"
    assert sent["json"]["messages"] == [{"role": "user", "content": "Say hello in French."}]  # marker stripped
    assert (sent["json"]["max_tokens"], sent["json"]["seed"]) == (20, 3)
    assert result.text == "Bonjour"
    assert (result.prompt_tokens, result.completion_tokens) == (5, 2)  # no usage reported: ~4 chars a token
    assert result.tokens_estimated
    assert [model.id for model in provider.list_models()] == ["llama3"]


def test_openai_compatible_errors_are_sorted(stub: StubServer) -> None:
    provider = build_provider(kind="openai_compatible", name="vllm", base_url=stub.url + "/v1/", api_key="k", api_key_env="VLLM_KEY")
    route = ("POST", "/v1/chat/completions")

    stub.replies[route] = StubReply(404, {"error": {"message": "The model `llama9` does not exist."}})
    with pytest.raises(UnknownModelError, match="does not serve model 'llama9'"):
        provider.chat(model="llama9", messages=QUESTION)

    stub.replies[route] = StubReply(503, {"error": "overloaded"}, {"Retry-After": "2"})
    with pytest.raises(TransientProviderError) as raised:
        provider.chat(model="llama3", messages=QUESTION)
    assert raised.value.retry_after == 2.0

    stub.replies[route] = StubReply(401, {"error": "bad key"})
    with pytest.raises(ProviderAuthError, match=r"^provider 'vllm' rejected the API key from \$VLLM_KEY \(401\)$"):
        provider.chat(model="llama3", messages=QUESTION)

    stub.replies[route] = StubReply(400, {"error": "messages too long"})
    with pytest.raises(PermanentProviderError, match="messages too long") as raised:
        provider.chat(model="llama3", messages=QUESTION)
    assert not isinstance(raised.value, UnknownModelError)

    stub.replies[route] = StubReply(200, b"<html>proxy error</html>")
    with pytest.raises(PermanentProviderError, match="not a JSON object"):
        provider.chat(model="llama3", messages=QUESTION)


def test_a_redirect_is_not_followed_but_reported_as_the_providers_error(stub: StubServer) -> None:
    # An http:// base URL answered with a redirect to https:// is a configuration to fix, not a
    # request to send again somewhere else (with its API key).
    moved = StubReply(301, {"moved": True}, {"Location": "https://elsewhere.invalid/v1/chat/completions"})
    stub.replies[("POST", "/v1/chat/completions")] = moved
    for kind in ("openai_compatible", "mistral"):
        provider = build_provider(kind=kind, name=f"moved-{kind}", base_url=stub.url, api_key="k")
        with pytest.raises(PermanentProviderError, match=rf"^provider 'moved-{kind}' redirected the chat completion request "
                           r"\(301\) to https://elsewhere.invalid/v1/chat/completions: set the provider account's base URL"):
            provider.chat(model="llama3", messages=QUESTION)
    assert [request["path"] for request in stub.received] == ["/v1/chat/completions"] * 2


# ---- construction and local limits -------------------------------------------------------------


def test_factory_validates_its_input() -> None:
    with pytest.raises(ValueError, match="unknown provider kind 'anthropic'"):
        build_provider(kind="anthropic", base_url="http://x", api_key="")
    with pytest.raises(ValueError, match="needs a base_url"):
        build_provider(kind="openai_compatible", base_url="", api_key="")
    with pytest.raises(ValueError, match="max_concurrency"):
        build_provider(kind="simulator", base_url="http://x", api_key="", max_concurrency=0)
    assert "secret" not in repr(build_provider(kind="simulator", base_url="http://x", api_key="secret").settings)


def test_provider_cache_reuses_a_provider_until_its_configuration_changes() -> None:
    cache = ProviderCache()
    options = {"kind": "simulator", "name": "sim", "base_url": "http://127.0.0.1:1", "api_key": "a"}
    first = cache.get(**options)
    assert cache.get(**options) is first
    assert cache.get(**{**options, "api_key": "b"}) is not first
    cache.close_all()


def test_call_gate_spaces_calls_to_the_rate_limit_and_bounds_concurrency() -> None:
    now = [100.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    gate = CallGate(provider="p", max_concurrency=1, rate_limit_per_minute=30, wait_limit_seconds=5, clock=lambda: now[0], sleep=sleep)
    for _ in range(3):
        with gate.admit():
            pass
    assert waits == [2.0, 2.0]  # 30 a minute: one every two seconds

    busy = CallGate(provider="p", max_concurrency=1, rate_limit_per_minute=None, wait_limit_seconds=0.05)
    with busy.admit():
        with pytest.raises(TransientProviderError, match="1 concurrent slots stayed busy"):
            with busy.admit():
                pass


def test_every_provider_of_a_process_shares_one_tls_context_and_warm_up_sends_nothing():
    # Loading the CA bundle was ~50 ms of CPU per client (and a second one for the SDK's unused
    # async client); a process now loads it once, and warm_up does so before a worker forks.
    from models_app.providers.factory import warm_up
    from models_app.providers.http import tls_context

    warm_up()  # no server anywhere: it must only build and close
    mistral = build_provider(kind="mistral", base_url="https://api.mistral.ai", api_key="k", name="tls-a")
    compatible = build_provider(kind="openai_compatible", base_url="https://vllm.example/v1", api_key="", name="tls-b")
    try:
        for provider in (mistral, compatible):
            assert provider._http.ssl_context is tls_context()
        with pytest.raises(RuntimeError, match="synchronously"):
            mistral._sdk.sdk_configuration.async_client.build_request("GET", "https://api.mistral.ai")
    finally:
        mistral.close()
        compatible.close()


# ---- what a provider answers is kept without the key -------------------------------------------


@pytest.mark.parametrize("kind", ["openai_compatible", "mistral"])
def test_a_provider_echoing_the_key_in_an_error_has_it_redacted(stub: StubServer, kind: str) -> None:
    key = "sk-live-0123456789abcdef"
    echo = {"error": "bad request", "echo": {"authorization": f"Bearer {key}"}, "your_key": key,
            "note": "also seen: authorization: bearer someone-elses-token"}
    stub.replies[("POST", "/v1/chat/completions")] = StubReply(400, echo)
    stub.replies[("POST", "/v1/fine_tuning/jobs")] = StubReply(422, {"detail": f"key {key} may not fine-tune"})
    provider = build_provider(kind=kind, name="echo", base_url=stub.url, api_key=key, api_key_env="ECHO_API_KEY")
    with pytest.raises(PermanentProviderError) as raised:
        provider.chat(model="m", messages=QUESTION)
    said = f"{raised.value} {raised.value.provider_answer} {raised.value.args}"
    assert key not in said and "someone-elses-token" not in said
    assert "Bearer [redacted]" in raised.value.provider_answer and "bearer [redacted]" in raised.value.provider_answer
    assert '"your_key": "[redacted]"' in raised.value.provider_answer
    assert "bad request" in str(raised.value)  # the rest of the answer is kept
    cause = raised.value.__cause__
    assert cause is None or key not in str(cause)  # no traceback prints it either
    if kind == "mistral":
        with pytest.raises(ProviderRefused) as refused:
            provider.create_job(base_model="open-mistral-7b", training_file_ids=["f"])
        assert key not in f"{refused.value} {refused.value.provider_answer}"
        assert "key [redacted] may not fine-tune" in refused.value.provider_answer


# ---- usage: checked, or estimated alike by both kinds ------------------------------------------


@pytest.mark.parametrize("kind", ["openai_compatible", "mistral"])
@pytest.mark.parametrize("usage", ["n/a", {"prompt_tokens": "seventeen", "completion_tokens": 2},
                                   {"prompt_tokens": -5, "completion_tokens": 2}, {"prompt_tokens": 3, "completion_tokens": 1.5}])
def test_malformed_usage_is_a_permanent_error_naming_the_provider(stub: StubServer, kind: str, usage: Any) -> None:
    stub.replies[("POST", "/v1/chat/completions")] = StubReply(200, {**openai_completion("Bonjour"), "usage": usage})
    provider = build_provider(kind=kind, name="odd-llm", base_url=stub.url, api_key="k")
    with pytest.raises(PermanentProviderError) as raised:
        provider.chat(model="llama3", messages=QUESTION)
    assert str(raised.value).startswith("provider 'odd-llm' answered")
    assert "usage" in str(raised.value)


@pytest.mark.parametrize("kind", ["openai_compatible", "mistral"])
def test_missing_usage_counts_are_estimated_alike_and_marked(stub: StubServer, kind: str, caplog) -> None:
    provider = build_provider(kind=kind, name=f"partial-{kind}", base_url=stub.url, api_key="k")
    route = ("POST", "/v1/chat/completions")
    # 27 characters of prompt, 7 of answer: 7 and 2 tokens at four characters a token.
    stub.replies[route] = StubReply(200, openai_completion("Bonjour", usage={"prompt_tokens": None, "completion_tokens": 9}))
    partial = provider.chat(model="llama3", messages=QUESTION)
    assert (partial.prompt_tokens, partial.completion_tokens, partial.tokens_estimated) == (7, 9, True)  # not 0: charged
    stub.replies[route] = StubReply(200, openai_completion("Bonjour", usage={"completion_tokens": 9}))
    assert provider.chat(model="llama3", messages=QUESTION).prompt_tokens == 7
    stub.replies[route] = StubReply(200, openai_completion("Bonjour", usage={"prompt_tokens": 0, "completion_tokens": 9}))
    reported = provider.chat(model="llama3", messages=QUESTION)
    assert (reported.prompt_tokens, reported.completion_tokens, reported.tokens_estimated) == (0, 9, False)
    warnings = [record.getMessage() for record in caplog.records if record.name == "models_app.providers.usage"]
    assert warnings == [f"provider 'partial-{kind}' reported no prompt_tokens for model 'llama3': its token counts (and "
                        "the costs computed from them) are estimated at 4 characters a token (logged once per process)"]
