"""With two gunicorn workers, /metrics counts every outcome posted exactly once, whichever worker
took the batch and whichever answers the scrape (prometheus_client's multiprocess mode)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from tests.experiments.factories import agent_with_candidate

pytestmark = pytest.mark.django_db(transaction=True)


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def processes_counting_requests(metrics_dir) -> set[str]:
    """The multiprocess files (one per process) holding a genesis_agent_requests_total value."""
    return {path.name for path in metrics_dir.glob("counter_*.db")
            if any('"genesis_agent_requests_total"' in key for key, *_ in MmapedDict.read_all_values_from_file(str(path)))}


def test_request_counters_equal_the_outcomes_posted(genesis_server, api_key_for) -> None:
    _, baseline, _ = agent_with_candidate("qa_agent")
    agent_with_candidate("content_agent")
    key = api_key_for("qa_agent", "content_agent")

    def batch(i: int) -> dict:
        agent = "qa_agent" if i % 3 else "content_agent"
        events = [{"event_id": f"b{i}-{j}", "agent": agent, "user_id": f"u{j}", "model": "open-mistral-7b",
                   "success": j % 4 != 0, "latency_ms": 200 + 50 * j, "input_tokens": 10, "output_tokens": 5}
                  for j in range(20)]
        if i == 0:
            events.append(dict(events[0]))  # a duplicate in the batch: counted once
            events.append({"event_id": "bad", "agent": "qa_agent"})  # rejected: not counted
        return {"events": events}

    # Concurrent batches until both workers have counted some (the kernel decides who accepts a
    # connection, so a round can land on one worker only); bounded.
    accepted, sent = 0, 0
    for _ in range(20):
        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(pool.map(lambda i: genesis_server.request("POST", "/api/v1/outcomes", key=key, body=batch(i)),
                                    range(sent, sent + 15)))
        sent += 15
        assert all(status == 202 for status, _ in answers), answers[:3]
        accepted += sum(body["accepted"] for _, body in answers)
        if len(processes_counting_requests(genesis_server.metrics_dir)) >= 2:
            break
    assert len(processes_counting_requests(genesis_server.metrics_dir)) >= 2
    assert accepted == 20 * sent
    qa_batches = sum(1 for i in range(sent) if i % 3)
    # Resending a batch adds nothing.
    status, body = genesis_server.request("POST", "/api/v1/outcomes", key=key, body=batch(1))
    assert (status, body["accepted"], body["duplicates"]) == (202, 0, 20)

    # Every scrape — answered by either worker — adds both workers' files up to exactly what was posted.
    for _ in range(6):
        text = genesis_server.metrics_text()
        requests = samples(text, "genesis_agent_requests_total")
        errors = samples(text, "genesis_agent_errors_total")
        successes = samples(text, "genesis_agent_successes_total")
        assert sum(requests.values()) == accepted
        by_agent = {dict(labels)["agent"]: value for labels, value in requests.items()}
        assert by_agent == {"qa_agent": 20 * qa_batches, "content_agent": 20 * (sent - qa_batches)}
        assert sum(errors.values()) == 5 * sent and sum(successes.values()) == 15 * sent
        assert {dict(labels)["model"] for labels in requests} == {baseline.model_id}
        assert {dict(labels)["variant"] for labels in requests} == {"live"}
        counts = samples(text, "genesis_agent_request_duration_seconds_count")
        assert sum(counts.values()) == accepted
        tokens = samples(text, "genesis_agent_tokens_total")
        assert tokens[(("agent", "qa_agent"), ("direction", "input"), ("model", baseline.model_id))] == 200 * qa_batches
        # No user id ever becomes a label.
        assert "user_id" not in text and 'u1"' not in text


def test_an_unregistered_model_name_is_labelled_other(genesis_server, api_key_for) -> None:
    agent_with_candidate("qa_agent")
    key = api_key_for("qa_agent")
    events = [{"event_id": f"x{i}", "agent": "qa_agent", "user_id": "u", "model": f"made-up-{i}", "success": True,
               "latency_ms": 100} for i in range(5)]
    status, _ = genesis_server.request("POST", "/api/v1/outcomes", key=key, body={"events": events})
    assert status == 202
    requests = samples(genesis_server.metrics_text(), "genesis_agent_requests_total")
    assert requests == {(("agent", "qa_agent"), ("model", "other"), ("variant", "live")): 5}
