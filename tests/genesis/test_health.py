"""/healthz, /readyz (with a real worker, and with Redis unreachable) and /metrics."""

from __future__ import annotations

import pytest

from genesis import health


def test_healthz_is_ok_without_touching_the_database(client, db, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.worker
def test_readyz_is_ok_when_everything_is_up(client, celery_worker):
    response = client.get("/readyz")
    body = response.json()
    assert response.status_code == 200, body
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "redis", "celery"}
    assert body["checks"]["celery"].startswith("ok (")


@pytest.mark.django_db(transaction=True)
def test_readyz_names_redis_when_redis_is_unreachable(client, settings):
    # A port nothing listens on stands in for a stopped Redis.
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    response = client.get("/readyz")
    body = response.json()
    assert response.status_code == 503
    assert "redis" in body["status"]
    assert body["checks"]["redis"].startswith("failed:")
    assert "127.0.0.1" not in body["checks"]["redis"]  # public endpoint: no hosts or credentials
    assert body["checks"]["database"] == "ok"
    assert client.get("/healthz").status_code == 200


@pytest.mark.django_db(transaction=True)
def test_readyz_names_celery_when_no_worker_answers(client):
    response = client.get("/readyz")
    assert response.status_code == 503
    assert "celery" in response.json()["status"]
    # With no worker the ping waits out its timeout, which on a loaded machine may pass the probe's
    # one-second deadline: either way the check names celery as failed.
    assert response.json()["checks"]["celery"] in {"failed: NoWorkerAnswered", "failed: no answer within 1 s"}


def test_slow_checks_are_cut_off_at_about_a_second_under_one_shared_deadline(monkeypatch):
    import threading
    import time

    hung = threading.Event()
    for name in ("database", "redis", "celery"):
        monkeypatch.setitem(health.READINESS_CHECKS, name, lambda: hung.wait(5) and "ok")
    # One deadline for the three checks, not one each (three seconds): the waits the probe allows its
    # checks add up to the deadline. Counted from the join timeouts, as seconds would also count the load.
    allowed: list[float] = []
    join = health._Check.join

    def counted_join(self, timeout=None):
        allowed.append(float("inf") if timeout is None else timeout)
        return join(self, timeout)

    monkeypatch.setattr(health._Check, "join", counted_join)
    started = time.monotonic()
    try:
        results = health.run_readiness_checks()
        took = time.monotonic() - started
    finally:
        hung.set()
    assert len(allowed) == 3 and sum(allowed) < 2 * health.PROBE_DEADLINE_SECONDS
    assert took < 3.0  # cut off at about a second, not the checks' 5 s (slack for load)
    assert all(ok is False and "no answer within" in message for ok, message in results.values())


@pytest.mark.django_db
def test_metrics_are_prometheus_text(client):
    client.get("/healthz")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert b"django_http_requests_total_by_view_transport_method_total" in response.content
