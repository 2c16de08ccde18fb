"""The Mistral simulator, driven over real HTTP by the real `mistralai` SDK (no database)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import replace

import httpx
import pytest
from mistralai import Mistral
from mistralai import models as sdk_models

from models_app.simulator import (
    MINIMUM_JOB_FEE_USD,
    SimulatorConfig,
    format_answer_marker,
    parse_answer_marker,
    start_in_thread,
    stop,
    strip_answer_markers,
)
from models_app.simulator.cli import add_simulator_arguments, config_from_arguments
from models_app.simulator.server import SimulatorHTTPServer

API_KEY = "test-sim-key"
FT_NAME = re.compile(r"^ft:(?P<base>[a-z0-9.-]+):[0-9a-f]{8}:(?P<day>\d{8}):[0-9a-f]{8}$")
FAST_JOBS = SimulatorConfig(
    port=0, seed=7, job_seconds=1.0, validation_seconds=0.1, cancel_seconds=0.2, api_keys=frozenset({API_KEY})
)
SAMPLE = {"messages": [{"role": "user", "content": "Where is my order?"}, {"role": "assistant", "content": "Let me check."}]}


def training_file(lines: int = 10) -> bytes:
    return "".join(
        json.dumps({"messages": [{"role": "user", "content": f"question {n}"}, {"role": "assistant", "content": f"answer {n}"}]})
        + "\n"
        for n in range(lines)
    ).encode()


@pytest.fixture()
def simulator() -> Iterator[SimulatorHTTPServer]:
    server, _ = start_in_thread(FAST_JOBS)
    yield server
    stop(server)


@pytest.fixture()
def client(simulator: SimulatorHTTPServer) -> Iterator[Mistral]:
    with httpx.Client() as http:
        yield Mistral(api_key=API_KEY, server_url=simulator.base_url, client=http, retry_config=None)


def wait_for_status(client: Mistral, job_id: str, wanted: str, *, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while True:
        job = client.fine_tuning.jobs.get(job_id=job_id)
        if job.status == wanted or time.monotonic() > deadline:
            return job
        time.sleep(0.05)


# ---- chat and models ---------------------------------------------------------------------------


def test_chat_completion_parses_in_the_sdk_and_usage_grows_with_text(client: Mistral) -> None:
    short = client.chat.complete(model="open-mistral-7b", messages=[{"role": "user", "content": "Hi"}])
    long = client.chat.complete(model="open-mistral-7b", messages=[{"role": "user", "content": "Hi " * 400}])

    assert short.object == "chat.completion"
    assert short.model == "open-mistral-7b"
    assert short.choices[0].message.content
    assert short.choices[0].finish_reason == "stop"
    assert short.usage.prompt_tokens >= 1
    assert short.usage.total_tokens == short.usage.prompt_tokens + short.usage.completion_tokens
    assert long.usage.prompt_tokens == 300  # 1 200 characters, one token per four
    assert short.usage.completion_tokens == -(-len(short.choices[0].message.content) // 4)


def test_max_tokens_cuts_the_reply_with_finish_reason_length(client: Mistral) -> None:
    response = client.chat.complete(
        model="mistral-small-latest", messages=[{"role": "user", "content": "Explain refunds at length"}], max_tokens=2
    )
    assert response.choices[0].finish_reason == "length"
    assert response.usage.completion_tokens <= 2


def test_unknown_model_is_a_400_naming_it(client: Mistral) -> None:
    with pytest.raises(sdk_models.SDKError) as raised:
        client.chat.complete(model="gpt-nonexistent", messages=[{"role": "user", "content": "Hi"}])
    assert raised.value.status_code == 400
    assert "Invalid model: gpt-nonexistent" in raised.value.body


def test_any_well_formed_fine_tuned_name_answers_even_without_a_job(client: Mistral) -> None:
    # So models registered in Genesis keep answering after a simulator restart.
    response = client.chat.complete(
        model="ft:open-mistral-7b:0123abcd:20250101:89abcdef", messages=[{"role": "user", "content": "Hi"}]
    )
    assert response.choices[0].message.content


def test_model_list_and_retrieve(client: Mistral) -> None:
    listing = client.models.list()
    ids = [card.id for card in listing.data]
    assert {"open-mistral-7b", "open-mistral-nemo", "mistral-small-latest", "mistral-large-latest"} <= set(ids)
    assert all(card.type == "base" for card in listing.data)

    card = client.models.retrieve(model_id="open-mistral-7b")
    assert isinstance(card, sdk_models.BaseModelCard)
    assert card.capabilities.fine_tuning and card.capabilities.completion_chat

    with pytest.raises(sdk_models.SDKError) as raised:
        client.models.retrieve(model_id="no-such-model")
    assert raised.value.status_code == 404


def test_openai_style_request_gets_openai_fields(simulator: SimulatorHTTPServer) -> None:
    response = httpx.post(
        f"{simulator.base_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {API_KEY}"},
        json={"model": "open-mistral-7b", "messages": [{"role": "user", "content": "Hello"}], "temperature": 0},
    )
    body = response.json()
    assert response.status_code == 200
    assert set(body) >= {"id", "object", "created", "model", "choices", "usage"}
    assert body["choices"][0]["index"] == 0
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert set(body["usage"]) >= {"prompt_tokens", "completion_tokens", "total_tokens"}


# ---- auth, faults and latency ------------------------------------------------------------------


@pytest.mark.parametrize("header", [None, "Bearer wrong-key", f"Basic {API_KEY}"])
def test_requests_without_a_configured_key_get_a_401_json(simulator: SimulatorHTTPServer, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    response = httpx.get(f"{simulator.base_url}/v1/models", headers=headers)
    assert response.status_code == 401
    assert response.json()["type"] == "authentication_error"


def test_every_configured_key_is_accepted() -> None:
    server, base_url = start_in_thread(replace(FAST_JOBS, api_keys=frozenset({"one", "two"})))
    try:
        for key in ("one", "two"):
            assert httpx.get(f"{base_url}/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    finally:
        stop(server)


def test_keys_default_to_the_environment_or_sim_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GENESIS_SIMULATOR_KEYS", raising=False)
    monkeypatch.delenv("GENESIS_SIMULATOR_API_KEY", raising=False)
    assert SimulatorConfig().api_keys == {"sim-key"}
    monkeypatch.setenv("GENESIS_SIMULATOR_KEYS", "a, b")
    assert SimulatorConfig().api_keys == {"a", "b"}
    monkeypatch.setenv("GENESIS_SIMULATOR_API_KEY", "demo")  # what the demo provider sends
    assert SimulatorConfig().api_keys == {"a", "b", "demo"}


def test_health_needs_no_key(simulator: SimulatorHTTPServer) -> None:
    assert httpx.get(f"{simulator.base_url}/healthz").json() == {"status": "ok"}


def fault_statuses(seed: int, requests: int) -> list[tuple[int, str | None]]:
    server, base_url = start_in_thread(replace(FAST_JOBS, seed=seed, error_rate=0.5))
    try:
        with httpx.Client(headers={"Authorization": f"Bearer {API_KEY}"}) as http:
            answers = [http.get(f"{base_url}/v1/models") for _ in range(requests)]
        return [(answer.status_code, answer.headers.get("Retry-After")) for answer in answers]
    finally:
        stop(server)


def test_injected_faults_follow_the_seed() -> None:
    first = fault_statuses(seed=11, requests=40)
    assert first == fault_statuses(seed=11, requests=40)
    assert first != fault_statuses(seed=12, requests=40)
    statuses = [status for status, _ in first]
    assert {200, 429, 500} <= set(statuses)
    assert 8 <= statuses.count(200) <= 32  # about half fail
    assert all(retry_after == "1" for status, retry_after in first if status == 429)


def test_latency_is_added_to_every_response() -> None:
    server, base_url = start_in_thread(replace(FAST_JOBS, latency_ms=150))
    try:
        started = time.monotonic()
        response = httpx.get(f"{base_url}/v1/models", headers={"Authorization": "Bearer nope"})
        assert response.status_code == 401
        assert time.monotonic() - started >= 0.15
    finally:
        stop(server)


# ---- files -------------------------------------------------------------------------------------


def test_upload_counts_lines_and_retrieve_returns_the_file(client: Mistral) -> None:
    uploaded = client.files.upload(file={"file_name": "train.jsonl", "content": training_file(12)}, purpose="fine-tune")
    assert uploaded.num_lines == 12
    assert uploaded.sample_type == "instruct"
    assert uploaded.purpose == "fine-tune"
    assert uploaded.size_bytes == len(training_file(12))

    retrieved = client.files.retrieve(file_id=uploaded.id)
    assert (retrieved.id, retrieved.filename, retrieved.num_lines, retrieved.deleted) == (uploaded.id, "train.jsonl", 12, False)


@pytest.mark.parametrize(
    ("bad_line", "expected"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"prompt": "hi"}), "'messages' list"),
        (json.dumps({"messages": [{"role": "wizard", "content": "x"}, {"role": "assistant", "content": "y"}]}), "role 'wizard'"),
        (json.dumps({"messages": [{"role": "user", "content": "only a question"}]}), "assistant message"),
    ],
)
def test_invalid_training_file_is_a_422_naming_the_line(client: Mistral, bad_line: str, expected: str) -> None:
    content = (json.dumps(SAMPLE) + "\n" + json.dumps(SAMPLE) + "\n" + bad_line + "\n").encode()
    with pytest.raises(sdk_models.SDKError) as raised:
        client.files.upload(file={"file_name": "bad.jsonl", "content": content})
    assert raised.value.status_code == 422
    body = json.loads(raised.value.body)
    assert body["object"] == "error"
    assert "line 3" in body["message"] and expected in body["message"]
    assert body["detail"][0]["loc"] == ["body", "file", "line", 3]


def test_unknown_file_is_a_404(client: Mistral) -> None:
    with pytest.raises(sdk_models.SDKError) as raised:
        client.files.retrieve(file_id="00000000-0000-4000-8000-000000000000")
    assert raised.value.status_code == 404
    with pytest.raises(sdk_models.SDKError) as raised:
        client.files.download(file_id="00000000-0000-4000-8000-000000000000")
    assert raised.value.status_code == 404


def test_a_files_content_is_served_back_as_uploaded(client: Mistral, simulator: SimulatorHTTPServer) -> None:
    """GET /v1/files/{id}/content, as Mistral serves it and the SDK's files.download reads it (it accepts only
    application/octet-stream)."""
    uploaded = client.files.upload(file={"file_name": "train.jsonl", "content": training_file(7)}, purpose="fine-tune")
    downloaded = client.files.download(file_id=uploaded.id)
    assert downloaded.read() == training_file(7)
    assert downloaded.headers["content-type"] == "application/octet-stream"
    assert simulator.state.request_log[-1] == ("GET", f"/v1/files/{uploaded.id}/content", 200)


# ---- fine-tuning jobs --------------------------------------------------------------------------


def test_job_routes_from_create_to_success(client: Mistral) -> None:
    uploaded = client.files.upload(file={"file_name": "train.jsonl", "content": training_file()})
    created = client.fine_tuning.jobs.create(
        model="open-mistral-7b",
        training_files=[{"file_id": uploaded.id, "weight": 1}],
        hyperparameters={"training_steps": 10, "learning_rate": 0.0001},
        suffix="support",
        auto_start=False,
    )
    assert isinstance(created, sdk_models.CompletionJobOut)
    assert created.status == "QUEUED"
    assert created.metadata.cost_currency == "USD"
    assert created.metadata.expected_duration_seconds == 1

    listed = client.fine_tuning.jobs.list()
    assert created.id in [job.id for job in listed.data] and listed.total == 1

    validated = wait_for_status(client, created.id, "VALIDATED")
    assert validated.status == "VALIDATED"
    assert validated.fine_tuned_model is None

    started = client.fine_tuning.jobs.start(job_id=created.id)
    assert started.status == "RUNNING"

    finished = wait_for_status(client, created.id, "SUCCESS")
    assert finished.status == "SUCCESS"
    match = FT_NAME.match(finished.fine_tuned_model)
    assert match and match["base"] == "open-mistral-7b"
    assert finished.trained_tokens == 10 * 131_072
    assert finished.metadata.cost >= MINIMUM_JOB_FEE_USD
    assert [event.data["status"] for event in finished.events] == ["QUEUED", "VALIDATED", "RUNNING", "SUCCESS"]
    assert len(finished.checkpoints) == 4
    assert finished.checkpoints[0].step_number == 10  # newest first

    models = client.models.list()
    assert finished.fine_tuned_model in [card.id for card in models.data]
    card = client.models.retrieve(model_id=finished.fine_tuned_model)
    assert isinstance(card, sdk_models.FTModelCard)
    assert (card.job, card.root) == (created.id, "open-mistral-7b")

    with pytest.raises(sdk_models.SDKError) as raised:
        client.fine_tuning.jobs.start(job_id=created.id)
    assert raised.value.status_code == 409


def test_cost_is_training_tokens_times_price_above_the_minimum(client: Mistral) -> None:
    uploaded = client.files.upload(file={"file_name": "train.jsonl", "content": training_file()})
    job = client.fine_tuning.jobs.create(
        model="mistral-large-latest",
        training_files=[{"file_id": uploaded.id}],
        hyperparameters={"training_steps": 100},
        auto_start=False,
    )
    # 100 steps x 131 072 tokens x $9 per million tokens
    assert job.metadata.train_tokens == 13_107_200
    assert job.metadata.cost == pytest.approx(117.96)


def test_auto_start_runs_to_success_without_a_start_call(client: Mistral) -> None:
    uploaded = client.files.upload(file={"file_name": "train.jsonl", "content": training_file()})
    job = client.fine_tuning.jobs.create(
        model="open-mistral-nemo", training_files=[{"file_id": uploaded.id}], hyperparameters={"epochs": 2}, auto_start=True
    )
    finished = wait_for_status(client, job.id, "SUCCESS")
    assert finished.status == "SUCCESS"
    assert finished.trained_tokens == 2 * finished.metadata.data_tokens
    assert finished.metadata.cost == MINIMUM_JOB_FEE_USD


def test_cancel_moves_through_cancellation_requested_to_cancelled(client: Mistral) -> None:
    uploaded = client.files.upload(file={"file_name": "train.jsonl", "content": training_file()})
    job = client.fine_tuning.jobs.create(
        model="open-mistral-7b", training_files=[{"file_id": uploaded.id}], hyperparameters={}, auto_start=False
    )
    client.fine_tuning.jobs.start(job_id=job.id)
    cancelling = client.fine_tuning.jobs.cancel(job_id=job.id)
    assert cancelling.status == "CANCELLATION_REQUESTED"
    cancelled = wait_for_status(client, job.id, "CANCELLED")
    assert cancelled.status == "CANCELLED"
    assert cancelled.fine_tuned_model is None

    with pytest.raises(sdk_models.SDKError) as raised:
        client.fine_tuning.jobs.cancel(job_id=job.id)
    assert raised.value.status_code == 409


def test_overlapping_training_and_validation_data_fails_validation(client: Mistral) -> None:
    uploaded = client.files.upload(file={"file_name": "train.jsonl", "content": training_file()})
    job = client.fine_tuning.jobs.create(
        model="open-mistral-7b",
        training_files=[{"file_id": uploaded.id}],
        validation_files=[uploaded.id],
        hyperparameters={},
        auto_start=True,
    )
    failed = wait_for_status(client, job.id, "FAILED_VALIDATION")
    assert failed.status == "FAILED_VALIDATION"
    assert "overlap" in failed.events[-1].data["error"]


def test_job_with_unknown_base_model_or_file_is_refused(client: Mistral) -> None:
    uploaded = client.files.upload(file={"file_name": "train.jsonl", "content": training_file()})
    with pytest.raises(sdk_models.SDKError) as raised:
        client.fine_tuning.jobs.create(
            model="mistral-medium-latest", training_files=[{"file_id": uploaded.id}], hyperparameters={}
        )
    assert raised.value.status_code == 400 and "not available for fine-tuning" in raised.value.body
    with pytest.raises(sdk_models.SDKError) as raised:
        client.fine_tuning.jobs.create(
            model="open-mistral-7b", training_files=[{"file_id": "missing"}], hyperparameters={}
        )
    assert raised.value.status_code == 404


# ---- determinism and the quality knob ----------------------------------------------------------


def run_scenario(seed: int, *, fixed_ids: bool = False) -> tuple[str, str, str, str]:
    config = replace(FAST_JOBS, seed=seed, fixed_ids=fixed_ids, job_seconds=0.0, validation_seconds=0.0)
    server, base_url = start_in_thread(config)
    try:
        with httpx.Client() as http:
            client = Mistral(api_key=API_KEY, server_url=base_url, client=http, retry_config=None)
            reply = client.chat.complete(model="open-mistral-7b", messages=[{"role": "user", "content": "How do refunds work?"}])
            uploaded = client.files.upload(file={"file_name": "t.jsonl", "content": training_file()})
            job = client.fine_tuning.jobs.create(
                model="open-mistral-7b", training_files=[{"file_id": uploaded.id}], hyperparameters={}, auto_start=True
            )
            finished = client.fine_tuning.jobs.get(job_id=job.id)
            return reply.choices[0].message.content, uploaded.id, job.id, finished.fine_tuned_model
    finally:
        stop(server)


def test_same_seed_same_answers_but_ids_unique_per_start() -> None:
    first_reply, first_file, first_job, first_model = run_scenario(seed=3)
    again_reply, again_file, again_job, again_model = run_scenario(seed=3)
    assert first_reply == again_reply
    assert first_reply != run_scenario(seed=4)[0]
    # A restarted simulator (same seed, counters from 1) must not hand out an id an earlier start gave:
    # a client keeping it would otherwise train on another file or follow another job.
    assert first_file != again_file and first_job != again_job and first_model != again_model
    assert first_model.startswith("ft:open-mistral-7b:") and again_model.startswith("ft:open-mistral-7b:")


def test_an_explicit_seed_repeats_the_ids_too() -> None:
    """`mistral_simulator --seed S` (CONTRACT: deterministic for a given seed) repeats everything, ids
    included; without --seed (make run) the ids are unique per start."""
    assert run_scenario(seed=3, fixed_ids=True) == run_scenario(seed=3, fixed_ids=True)
    import argparse

    parser = argparse.ArgumentParser()
    add_simulator_arguments(parser)
    assert config_from_arguments(parser.parse_args(["--seed", "3"])).fixed_ids
    unseeded = config_from_arguments(parser.parse_args([]))
    assert not unseeded.fixed_ids and unseeded.seed == 0


def test_a_restarted_simulator_answers_not_found_for_ids_of_the_earlier_start() -> None:
    config = replace(FAST_JOBS, seed=3)
    server, base_url = start_in_thread(config)
    try:
        with httpx.Client() as http:
            client = Mistral(api_key=API_KEY, server_url=base_url, client=http, retry_config=None)
            earlier = client.files.upload(file={"file_name": "t.jsonl", "content": training_file()})
    finally:
        stop(server)
    server, base_url = start_in_thread(config)
    try:
        with httpx.Client() as http:
            client = Mistral(api_key=API_KEY, server_url=base_url, client=http, retry_config=None)
            later = client.files.upload(file={"file_name": "t.jsonl", "content": training_file()})
            assert later.id != earlier.id
            with pytest.raises(sdk_models.SDKError) as raised:
                client.files.retrieve(file_id=earlier.id)
            assert raised.value.status_code == 404
    finally:
        stop(server)


def test_free_replies_vary_in_length(client: Mistral) -> None:
    lengths = {
        len(client.chat.complete(model="open-mistral-7b", messages=[{"role": "user", "content": f"Tell me about topic {n}"}]).choices[0].message.content)
        for n in range(12)
    }
    assert len(lengths) >= 4


def accuracy(client: Mistral, model: str, questions: list[tuple[str, str]]) -> float:
    correct = 0
    for question, answer in questions:
        reply = client.chat.complete(
            model=model,
            messages=[
                {"role": "system", "content": "Answer with the answer only."},
                {"role": "user", "content": f"{question} {format_answer_marker(answer)}"},
            ],
        )
        correct += reply.choices[0].message.content == answer
    return correct / len(questions)


def test_quality_knob_lets_a_fine_tuned_model_beat_its_base(client: Mistral) -> None:
    questions = [(f"What is the code for ticket {n}?", f"CODE-{n * 7919 % 10007}") for n in range(200)]
    base = accuracy(client, "open-mistral-7b", questions)
    fine_tuned = accuracy(client, "ft:open-mistral-7b:0123abcd:20250101:89abcdef", questions)
    assert 0.45 <= base <= 0.65  # configured 0.55
    assert 0.77 <= fine_tuned <= 0.93  # configured 0.85
    assert fine_tuned - base >= 0.2


def test_quality_is_overridable_per_model() -> None:
    server, base_url = start_in_thread(replace(FAST_JOBS, quality={"open-mistral-7b": 1.0, "ft:*": 0.0, "*": 0.5}))
    try:
        with httpx.Client() as http:
            client = Mistral(api_key=API_KEY, server_url=base_url, client=http, retry_config=None)
            questions = [(f"Question {n}?", f"answer {n}") for n in range(20)]
            assert accuracy(client, "open-mistral-7b", questions) == 1.0
            assert accuracy(client, "ft:open-mistral-7b:0123abcd:20250101:89abcdef", questions) == 0.0
    finally:
        stop(server)


def test_wrong_answers_are_plausible(client: Mistral) -> None:
    replies = set()
    for n in range(30):
        marker = format_answer_marker("Paris", ["Lyon", "Marseille"])
        reply = client.chat.complete(
            model="mistral-small-latest", messages=[{"role": "user", "content": f"Capital of France, take {n}? {marker}"}]
        )
        replies.add(reply.choices[0].message.content)
    assert replies == {"Paris", "Lyon", "Marseille"}
    numeric = client.chat.complete(
        model="ft:open-mistral-7b:0123abcd:20250101:89abcdef",
        messages=[{"role": "user", "content": "2+2? " + format_answer_marker("4")}],
    ).choices[0].message.content
    assert re.fullmatch(r"-?\d+", numeric)


def test_markers_round_trip_and_strip() -> None:
    marker = format_answer_marker("Paris", ["Lyon"])
    assert marker == "[[answer: Paris | Lyon]]"
    key = parse_answer_marker(f"Capital of France? {marker}")
    assert key is not None and (key.correct, key.wrong_alternatives) == ("Paris", ("Lyon",))
    assert strip_answer_markers(f"Capital of France? {marker}") == "Capital of France?"
    assert parse_answer_marker("no marker here") is None
    with pytest.raises(ValueError):
        format_answer_marker("a | b")


# ---- configuration -----------------------------------------------------------------------------


def test_command_line_options_build_the_config() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_simulator_arguments(parser)
    options = parser.parse_args(
        ["--port", "0", "--latency-ms", "20", "--error-rate", "0.1", "--job-seconds", "5", "--seed", "9", "--quality", "ft:*=0.9"]
    )
    config = config_from_arguments(options)
    assert (config.port, config.latency_ms, config.error_rate, config.job_seconds, config.seed) == (0, 20, 0.1, 5, 9)
    assert config.quality["ft:*"] == 0.9
    with pytest.raises(ValueError, match="error_rate"):
        config_from_arguments(parser.parse_args(["--error-rate", "2"]))


def test_a_host_or_port_the_simulator_cannot_listen_on_is_a_clear_error_not_a_traceback() -> None:
    # CONTRACT: exit 2 = usage error, always. A --host that is no address of this machine is a bad value
    # (2); a port another program holds is a refusal of the moment (1). Both name the option; before,
    # both were a socket traceback and exit 1.
    import socket

    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError) as not_a_host:
        call_command("mistral_simulator", "--host", "256.1.1.1", "--port", "0")
    assert not_a_host.value.returncode == 2 and "--host 256.1.1.1" in str(not_a_host.value)
    with pytest.raises(CommandError) as not_ours:
        call_command("mistral_simulator", "--host", "192.0.2.1", "--port", "0")  # TEST-NET-1: never ours
    assert not_ours.value.returncode == 2
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(CommandError) as taken:
            call_command("mistral_simulator", "--port", str(port))
    assert taken.value.returncode == 1 and f"--port {port}" in str(taken.value)
    assert "in use" in str(taken.value)
