"""POST /route and GET /agents/{agent}/config: the contract, sticky and monotone assignment, the
in-process config cache (no query per decision, survives Redis going away) and exposure rows."""

from __future__ import annotations

import time

import pytest
import redis

from experiments import routing
from experiments.client import AgentRouteConfig, decide_route
from experiments.models import Assignment, Experiment
from experiments.services import (
    experiment_pause,
    experiment_rollback,
    experiment_start,
    stage_approve,
    stage_request_advance,
)
from tests.experiments.factories import draft_experiment, feed

pytestmark = pytest.mark.django_db

# The embedded mode (no REDIS_URL) has no shared generation counter and rebuilds the table every
# CHECK_INTERVAL_SECONDS by design; the tests of the Redis-refreshed cache need Redis.
needs_redis = pytest.mark.skipif(not routing.settings.REDIS_URL, reason="needs Redis (REDIS_URL): the cache is refreshed through it")
needs_exposure_queue = pytest.mark.skipif(not routing.settings.REDIS_URL, reason="the exposure queue lives in Redis")

ROUTE_KEYS = {"agent", "model", "provider", "variant", "experiment", "stage_percent"}


def bearer(key: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {key}"}


def route(client, key: str, user_id: str, agent: str = "qa_agent"):
    return client.post("/api/v1/route", {"agent": agent, "user_id": user_id}, content_type="application/json", **bearer(key))


def variants(client, key: str, users: list[str], agent: str = "qa_agent") -> dict[str, str]:
    answers = {}
    for user in users:
        response = route(client, key, user, agent)
        assert response.status_code == 200, response.content
        answers[user] = response.json()["variant"]
    return answers


@pytest.fixture
def running(team, django_capture_on_commit_callbacks) -> Experiment:
    experiment = draft_experiment(actor=team["starter"])
    with django_capture_on_commit_callbacks(execute=True):
        return experiment_start(experiment=experiment, actor=team["starter"])


def advance(experiment: Experiment, team, capture) -> None:
    """Request and approve the next stage, with the data its holds need."""
    experiment.refresh_from_db()
    percent = experiment.current_stage.percent
    feed(experiment, arm="treatment", n=20, success_rate=0.9, seed=percent, user_prefix=f"t{percent}")
    feed(experiment, arm="control", n=round(20 * (100 - percent) / percent), success_rate=0.9, seed=percent + 1,
         user_prefix=f"c{percent}")
    stage_request_advance(experiment=experiment, actor=team["requester"])
    with capture(execute=True):
        stage_approve(stage=experiment.stages.get(index=experiment.current_stage.index + 1), actor=team["approver"])


def test_without_a_running_experiment_everyone_gets_the_live_model(client, team, api_key_for):
    draft_experiment(actor=team["starter"])  # a draft does not route anyone
    key = api_key_for("qa_agent")
    response = route(client, key, "user-1")
    assert response.status_code == 200
    assert response.json() == {"agent": "qa_agent", "model": "open-mistral-7b", "provider": "simulator",
                               "variant": "live", "experiment": None, "stage_percent": None}


def test_route_answers_with_the_contract_shape_inside_an_experiment(client, running, api_key_for):
    body = route(client, api_key_for("qa_agent"), "user-1").json()
    assert set(body) == ROUTE_KEYS
    assert body["experiment"] == "qa_agent-exp" and body["stage_percent"] == 10
    assert body["variant"] in {"control", "treatment"}
    expected = running.treatment if body["variant"] == "treatment" else running.control
    assert body["model"] == expected.model_id and body["provider"] == "simulator"


def test_20000_users_split_10_percent_sticky_and_only_move_towards_treatment(client, running, team, api_key_for,
                                                                            django_capture_on_commit_callbacks):
    key = api_key_for("qa_agent")
    users = [f"user-{i}" for i in range(20_000)]
    first = variants(client, key, users)
    treated = {user for user, variant in first.items() if variant == "treatment"}
    # Binomial(20 000, 0.10): 2 000 ± 42; the bounds are ±4.7 standard deviations.
    assert 1_800 <= len(treated) <= 2_200
    sample = users[::10]  # asking again: identical answers
    assert variants(client, key, sample) == {user: first[user] for user in sample}

    advance(running, team, django_capture_on_commit_callbacks)
    # Every earlier treatment user is still in treatment…
    assert set(variants(client, key, sorted(treated)).values()) == {"treatment"}
    # …and the control users fill up to 25 % (among 4 000 earlier control users, 1/6 move: 667 ± 24).
    earlier_control = [user for user in users if user not in treated][:4_000]
    moved = [user for user, variant in variants(client, key, earlier_control).items() if variant == "treatment"]
    assert 560 <= len(moved) <= 780
    assert route(client, key, "user-0").json()["stage_percent"] == 25


def test_a_users_arm_in_one_agents_experiment_says_nothing_about_another(client, team, api_key_for,
                                                                        django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        for slug in ("qa_agent", "legal_agent"):
            experiment = draft_experiment(slug, actor=team["starter"], key=f"{slug}-exp", stage_plan=[50, 100])
            experiment_start(experiment=experiment, actor=team["starter"])
    key = api_key_for(all_agents=True)
    users = [f"user-{i}" for i in range(4_000)]
    qa = {u for u, v in variants(client, key, users, "qa_agent").items() if v == "treatment"}
    legal = {u for u, v in variants(client, key, users, "legal_agent").items() if v == "treatment"}
    # Independent 50 % splits overlap on about a quarter of users (1 000 ± 27); one shared hash
    # (the prototype's md5(user) % 100) would overlap on all of them.
    assert 880 <= len(qa & legal) <= 1_120


@needs_redis
def test_steady_state_decisions_touch_no_database(client, running, api_key_for, django_assert_num_queries):
    key = api_key_for("qa_agent")
    route(client, key, "warm-up")  # loads the key and the routing table
    with django_assert_num_queries(0):
        for i in range(50):
            assert route(client, key, f"user-{i}").status_code == 200
        time.sleep(routing.CHECK_INTERVAL_SECONDS + 0.1)  # the next request checks the Redis generation
        for i in range(50):
            assert route(client, key, f"user-{i}").status_code == 200
        assert client.get("/api/v1/agents/qa_agent/config", **bearer(key)).status_code == 200


@needs_redis
def test_when_redis_is_down_routing_keeps_answering_from_the_last_config(client, running, api_key_for, settings,
                                                                        django_assert_num_queries, monkeypatch):
    key = api_key_for("qa_agent")
    before = variants(client, key, [f"user-{i}" for i in range(200)])
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    monkeypatch.setattr(routing, "_redis_client", None)
    monkeypatch.setattr(routing, "_last_check", 0.0)  # force the next request to look at Redis
    monkeypatch.setattr(routing, "EXPOSURE_FLUSH_SECONDS", 0.0)  # and to try to flush exposures there
    # No request waits on the dead Redis: it is tried once, then left alone for a while (here longer
    # than the requests take, however loaded the machine). Counted in connection attempts, as seconds
    # (a bound of 5 s on the 200 requests) would also count the load: without the pause, 201 attempts.
    monkeypatch.setattr(routing, "REDIS_RETRY_AFTER_SECONDS", 600.0)
    monkeypatch.setattr(routing, "_redis_retry_at", 0.0)
    attempts = 0
    connect = redis.connection.Connection._connect

    def counted_connect(self):
        nonlocal attempts
        attempts += 1
        return connect(self)

    monkeypatch.setattr(redis.connection.Connection, "_connect", counted_connect)
    with django_assert_num_queries(0):
        after = variants(client, key, [f"user-{i}" for i in range(200)])
    assert after == before
    assert set(after.values()) == {"control", "treatment"}
    assert attempts == 1
    assert len(routing._exposures) > 0  # exposures wait in memory for Redis to return


@needs_redis
@pytest.mark.django_db(transaction=True)
def test_exposures_a_failed_flush_kept_leave_the_process_when_redis_returns_without_a_request(
        client, running, api_key_for, settings, monkeypatch):
    from experiments.outcomes import exposures_flush

    key = api_key_for("qa_agent")
    real_redis = settings.REDIS_URL
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    monkeypatch.setattr(routing, "_redis_client", None)
    monkeypatch.setattr(routing, "REDIS_RETRY_AFTER_SECONDS", 0.2)
    monkeypatch.setattr(routing, "EXPOSURE_FLUSH_SECONDS", 0.0)  # every request tries to flush, and fails
    answers = variants(client, key, ["back-1", "back-2"])
    assert len(routing._exposures) == 2
    settings.REDIS_URL = real_redis  # Redis is back; no request comes
    monkeypatch.setattr(routing, "_redis_client", None)
    deadline = time.monotonic() + 10
    while not Assignment.objects.filter(experiment=running).count() == 2:
        assert time.monotonic() < deadline, "the exposures stayed in memory after Redis came back"
        exposures_flush()  # what beat's task does every 10 s
        time.sleep(0.1)
    assert dict(Assignment.objects.filter(experiment=running).values_list("user_id", "variant")) == answers


@needs_redis
def test_a_change_in_another_process_reaches_this_one_through_the_redis_generation(client, running, api_key_for, team):
    key = api_key_for("qa_agent")
    assert route(client, key, "user-1").json()["experiment"] == "qa_agent-exp"
    # Paused "elsewhere": the commit hook that would mark this process stale does not run here
    # (the test transaction never commits), so only the Redis generation can tell this process.
    experiment_pause(experiment=running, actor=team["roller"], reason="elsewhere")
    assert route(client, key, "user-1").json()["experiment"] == "qa_agent-exp"  # within the check interval
    redis.Redis.from_url(routing.settings.REDIS_URL).incr(routing.GENERATION_KEY)
    time.sleep(routing.CHECK_INTERVAL_SECONDS + 0.1)
    assert route(client, key, "user-1").json() == {
        "agent": "qa_agent", "model": "open-mistral-7b", "provider": "simulator", "variant": "live",
        "experiment": None, "stage_percent": None,
    }


def test_after_a_rollback_everyone_gets_the_live_model(client, running, team, api_key_for,
                                                       django_capture_on_commit_callbacks):
    key = api_key_for("qa_agent")
    with django_capture_on_commit_callbacks(execute=False):  # no alert task is sent anywhere
        experiment_rollback(experiment=running, actor=team["roller"], reason="bad answers")
    routing.reset()  # what the commit hook does in a real request
    assert set(variants(client, key, [f"user-{i}" for i in range(300)]).values()) == {"live"}


def test_errors_follow_the_contract(client, running, api_key_for):
    key = api_key_for("qa_agent")
    assert route(client, "gk_wrong", "u").status_code == 401
    from tests.factories import AgentFactory

    AgentFactory(slug="legal_agent")  # created after the table was loaded: found on the next ask
    time.sleep(routing.CHECK_INTERVAL_SECONDS + 0.05)
    forbidden = route(client, key, "u", agent="legal_agent")
    assert forbidden.status_code == 403 and forbidden.json()["detail"] == "API key 'test qa_agent' may not act for agent 'legal_agent'"
    unknown = route(client, key, "u", agent="nobody_agent")  # 404 to every key (CONTRACT)
    assert unknown.status_code == 404 and unknown.json()["detail"] == "agent 'nobody_agent' does not exist"
    unknown = route(client, api_key_for(all_agents=True), "u", agent="nobody_agent")
    assert unknown.status_code == 404 and unknown.json()["detail"] == "agent 'nobody_agent' does not exist"
    empty = client.post("/api/v1/route", {"agent": "qa_agent", "user_id": ""}, content_type="application/json", **bearer(key))
    assert empty.status_code == 422 and "user_id" in empty.json()["detail"]


def test_an_agent_without_a_live_model_gets_409(client, api_key_for):
    from tests.factories import AgentFactory

    AgentFactory(slug="new_agent")
    response = route(client, api_key_for("new_agent"), "u", agent="new_agent")
    assert response.status_code == 409
    assert response.json()["detail"] == "agent 'new_agent' has no live model version: make one live in the registry first"


# --- GET /agents/{agent}/config ------------------------------------------------------------------------


def test_config_has_the_client_shape_an_etag_and_304_when_unchanged(client, running, api_key_for):
    key = api_key_for("qa_agent")
    response = client.get("/api/v1/agents/qa_agent/config", **bearer(key))
    assert response.status_code == 200
    etag = response["ETag"]
    assert etag.startswith('"') and etag.endswith('"')
    payload = response.json()
    assert payload["experiment"] == {
        "key": "qa_agent-exp", "seed": running.seed, "stage_percent": 10,
        "control": {"model": "open-mistral-7b", "provider": "simulator"},
        "treatment": {"model": running.treatment.model_id, "provider": "simulator"},
    }
    config = AgentRouteConfig.from_json(payload)
    for i in range(500):  # the client decides exactly as the server does
        assert decide_route(config=config, user_id=f"user-{i}").to_json() == route(client, key, f"user-{i}").json()
    unchanged = client.get("/api/v1/agents/qa_agent/config", HTTP_IF_NONE_MATCH=etag, **bearer(key))
    assert unchanged.status_code == 304 and unchanged["ETag"] == etag and unchanged.content == b""


def test_if_none_match_is_compared_weakly_and_takes_a_list_or_star(client, running, api_key_for):
    # RFC 9110 §13.1.2: If-None-Match uses the weak comparison. Was strong only, so a client behind a
    # proxy that weakens ETags when it compresses (nginx with gzip sends W/"…") never got a 304.
    key = api_key_for("qa_agent")
    etag = client.get("/api/v1/agents/qa_agent/config", **bearer(key))["ETag"]
    other = '"0123456789abcdef0123456789abcdef"'

    def status(if_none_match: str) -> int:
        response = client.get("/api/v1/agents/qa_agent/config", HTTP_IF_NONE_MATCH=if_none_match, **bearer(key))
        assert response["ETag"] == etag  # the current tag, with a 304 as with a 200
        assert response.status_code == 200 or response.content == b""
        return response.status_code

    assert status(f"W/{etag}") == 304
    assert status(f"{other}, W/{etag}") == 304
    assert status(f'{other},{etag} , W/"x"') == 304
    assert status("*") == 304
    assert status(other) == 200
    assert status(f"W/{other}") == 200
    assert status(f"{other}, W/{other}") == 200
    assert status(etag.strip('"')) == 200  # not an entity tag: no quotes
    assert status("") == 200


def test_config_version_and_etag_change_when_the_stage_moves(client, running, team, api_key_for,
                                                            django_capture_on_commit_callbacks):
    key = api_key_for("qa_agent")
    first = client.get("/api/v1/agents/qa_agent/config", **bearer(key))
    advance(running, team, django_capture_on_commit_callbacks)
    second = client.get("/api/v1/agents/qa_agent/config", HTTP_IF_NONE_MATCH=first["ETag"], **bearer(key))
    assert second.status_code == 200 and second["ETag"] != first["ETag"]
    assert second.json()["config_version"] > first.json()["config_version"]
    assert second.json()["experiment"]["stage_percent"] == 25


def test_config_without_an_experiment_is_null_and_403_for_another_agent(client, team, api_key_for):
    draft_experiment(actor=team["starter"])
    key = api_key_for("qa_agent")
    payload = client.get("/api/v1/agents/qa_agent/config", **bearer(key)).json()
    assert payload["experiment"] is None and payload["live"] == {"model": "open-mistral-7b", "provider": "simulator"}
    assert isinstance(payload["config_version"], int) and payload["config_version"] > 0
    from tests.factories import AgentFactory

    AgentFactory(slug="legal_agent")
    routing.reset()
    assert client.get("/api/v1/agents/legal_agent/config", **bearer(key)).status_code == 403


# --- exposures ----------------------------------------------------------------------------------------


def test_routed_users_become_assignment_rows_off_the_request_path(client, running, api_key_for, monkeypatch):
    from experiments.outcomes import exposures_flush

    key = api_key_for("qa_agent")
    monkeypatch.setattr(routing, "EXPOSURE_FLUSH_SECONDS", 3600.0)
    answers = variants(client, key, [f"user-{i}" for i in range(300)])
    assert not Assignment.objects.exists()  # nothing written by the requests themselves
    assert routing.flush_exposure_buffer() == 300  # one Redis push for the whole batch (no Redis: one insert)
    if routing.settings.REDIS_URL:
        assert not Assignment.objects.exists()
        assert exposures_flush() == 300  # the beat task moves them from Redis into the table
    rows = {(a.user_id, a.variant) for a in Assignment.objects.filter(experiment=running)}
    assert rows == set(answers.items())
    assert set(Assignment.objects.values_list("stage__percent", flat=True)) == {10}
    # Asked again and flushed again: still one row per user and arm.
    variants(client, key, [f"user-{i}" for i in range(300)])
    routing.flush_exposure_buffer()
    exposures_flush()
    assert Assignment.objects.filter(experiment=running).count() == 300


@pytest.mark.django_db(transaction=True)  # the timer's thread writes with its own connection without Redis
def test_exposures_leave_the_process_without_a_later_request(client, running, api_key_for, monkeypatch):
    """After a burst, a web process that gets no further request still sends what it buffered."""
    from experiments.outcomes import exposures_flush

    monkeypatch.setattr(routing, "EXPOSURE_FLUSH_SECONDS", 0.3)
    answers = variants(client, api_key_for("qa_agent"), ["quiet-1", "quiet-2"])  # then silence
    assert not Assignment.objects.exists()

    def delivered() -> bool:
        if routing.settings.REDIS_URL:
            exposures_flush()  # what beat's task does every 10 s
        return Assignment.objects.filter(experiment=running).count() == 2

    deadline = time.monotonic() + 10
    while not delivered():
        assert time.monotonic() < deadline, "the buffered exposures never left the process"
        time.sleep(0.1)
    assert dict(Assignment.objects.filter(experiment=running).values_list("user_id", "variant")) == answers


def test_without_redis_the_table_is_rebuilt_every_check_interval(client, running, team, api_key_for, settings,
                                                                  django_assert_max_num_queries):
    """The embedded mode: no shared counter, so a change made anywhere shows within the interval."""
    settings.REDIS_URL = ""
    routing.reset()
    key = api_key_for("qa_agent")
    assert route(client, key, "user-1").json()["experiment"] == "qa_agent-exp"
    with django_assert_max_num_queries(0):
        assert route(client, key, "user-2").status_code == 200  # within the interval: from memory
    experiment_pause(experiment=running, actor=team["roller"], reason="elsewhere")  # no commit hook runs here
    time.sleep(routing.CHECK_INTERVAL_SECONDS + 0.05)
    with django_assert_max_num_queries(5):  # one rebuild of the table
        assert route(client, key, "user-1").json()["variant"] == "live"


def test_a_user_id_with_a_nul_is_refused_naming_the_field(client, running, api_key_for):
    response = route(client, api_key_for("qa_agent"), "user\x00one")
    assert response.status_code == 422
    assert "user_id" in response.json()["detail"] and "NUL" in response.json()["detail"]
    assert routing.flush_exposure_buffer() == 0  # nothing was recorded for it


def test_user_ids_are_used_byte_for_byte_by_route_and_by_outcomes(client, running, api_key_for):
    from experiments.models import OutcomeEvent
    from experiments.outcomes import outcomes_ingest

    answer = route(client, api_key_for("qa_agent"), " u1").json()
    assert answer["variant"] == decide_route(config=AgentRouteConfig.from_json(routing.current_table().agents["qa_agent"].config_json),
                                             user_id=" u1").variant
    outcomes_ingest(principal=None, events=[{"event_id": "e-space", "agent": "qa_agent", "user_id": " u1",
                                             "model": answer["model"], "success": True, "latency_ms": 10}])
    assert OutcomeEvent.objects.get(event_id="e-space").user_id == " u1"  # the same id /route hashed


@needs_exposure_queue
def test_a_batch_that_cannot_be_written_is_set_aside_and_does_not_block_the_queue(running, caplog):
    import json

    client = redis.Redis.from_url(routing.settings.REDIS_URL)
    now = time.time()
    bad = json.dumps([[running.pk, "nul\x00user", "control", running.current_stage_id, now]])
    good = json.dumps([[running.pk, "fine-user", "treatment", running.current_stage_id, now]])
    client.rpush(routing.EXPOSURE_LIST_KEY, bad, good)

    assert routing.drain_exposure_queue() == 1
    assert list(Assignment.objects.values_list("user_id", flat=True)) == ["fine-user"]
    assert client.llen(routing.EXPOSURE_LIST_KEY) == 0
    assert [raw.decode() for raw in client.lrange(routing.EXPOSURE_DEAD_LETTER_KEY, 0, -1)] == [bad]
    assert any(routing.EXPOSURE_DEAD_LETTER_KEY in record.getMessage() for record in caplog.records)
    client.close()


@needs_exposure_queue
def test_exposures_the_database_cannot_have_produced_are_left_out(running, caplog):
    """A backup restored to an earlier point while Redis kept the exposures routed after it (the restore
    drill, docs/runbooks/backup-restore.md): they name a stage the restored experiment has not reached, an
    experiment that is a draft again and a stage id it does not have, an experiment that does not exist.
    Before, all but the last were written — exposures of a draft experiment, in a stage nobody started."""
    import json

    from experiments.models import ExperimentStage

    draft = draft_experiment("content_agent", key="content-exp")
    pending = running.stages.get(index=1)
    assert pending.started_at is None
    unknown_stage = ExperimentStage.objects.order_by("-pk").values_list("pk", flat=True).first() + 100
    now = time.time()
    client = redis.Redis.from_url(routing.settings.REDIS_URL)
    client.rpush(routing.EXPOSURE_LIST_KEY, json.dumps([
        [running.pk, "in-stage-1", "control", running.current_stage_id, now],
        [running.pk, "in-stage-2", "treatment", pending.pk, now],
        [draft.pk, "in-a-draft", "control", unknown_stage, now],
        [running.pk + draft.pk + 100, "nowhere", "control", None, now],
    ]))
    try:
        assert routing.drain_exposure_queue() == 1
        assert list(Assignment.objects.values_list("user_id", "stage_id")) == [("in-stage-1", running.current_stage_id)]
        assert client.llen(routing.EXPOSURE_LIST_KEY) == 0 and client.llen(routing.EXPOSURE_DEAD_LETTER_KEY) == 0
        assert any("3 of 4 left out" in record.getMessage() for record in caplog.records)
    finally:
        client.close()


@needs_exposure_queue
@pytest.mark.django_db(transaction=True)
def test_concurrent_drains_write_each_batch_once(running):
    """Beat's drain every 10 s, a slow one still running, an erasure's: one drains at a time (a Redis
    lock), so the rows written are the rows queued — four drains side by side each wrote the head batch
    before any removed it (96 000 row-writes for 20 000 rows)."""
    import json
    import threading

    from django.db import connection

    client = redis.Redis.from_url(routing.settings.REDIS_URL)
    now = time.time()
    batches, per_batch = 300, 20
    client.rpush(routing.EXPOSURE_LIST_KEY, *[
        json.dumps([[running.pk, f"u{batch}-{row}", "control", running.current_stage_id, now] for row in range(per_batch)])
        for batch in range(batches)])
    writes: list[int] = []

    def drain_until_empty() -> None:
        try:
            while client.llen(routing.EXPOSURE_LIST_KEY):
                written = routing.drain_exposure_queue()
                writes.append(written)
                if not written:
                    time.sleep(0.01)  # another drain holds the lock
        finally:
            connection.close()

    threads = [threading.Thread(target=drain_until_empty) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert Assignment.objects.count() == batches * per_batch
    assert sum(writes) == batches * per_batch
    assert not client.exists(routing.EXPOSURE_DRAIN_LOCK_KEY)
    client.close()


@needs_exposure_queue
def test_a_drain_that_finds_another_running_skips_unless_told_to_wait(running):
    import json

    client = redis.Redis.from_url(routing.settings.REDIS_URL)
    client.rpush(routing.EXPOSURE_LIST_KEY, json.dumps([[running.pk, "waiting-user", "control", running.current_stage_id, time.time()]]))
    other = client.lock(routing.EXPOSURE_DRAIN_LOCK_KEY, timeout=1)
    assert other.acquire(blocking=False)
    try:
        assert routing.drain_exposure_queue() == 0  # the other drain has it
        assert client.llen(routing.EXPOSURE_LIST_KEY) == 1
        # The erasure waits for it (here: until it expires) and then drains.
        assert routing.drain_exposure_queue(wait_seconds=5) == 1
        assert list(Assignment.objects.values_list("user_id", flat=True)) == ["waiting-user"]
    finally:
        client.delete(routing.EXPOSURE_DRAIN_LOCK_KEY)
        client.close()
