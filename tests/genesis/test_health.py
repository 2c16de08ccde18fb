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


def test_a_slow_check_is_cut_off_at_about_a_second(monkeypatch):
    import time

    monkeypatch.setitem(health.READINESS_CHECKS, "database", lambda: time.sleep(5) or "ok")
    monkeypatch.setitem(health.READINESS_CHECKS, "celery", lambda: "ok")
    monkeypatch.setitem(health.READINESS_CHECKS, "redis", lambda: "ok")
    started = time.monotonic()
    results = health.run_readiness_checks()
    assert time.monotonic() - started < 3.0  # cut off at about a second, not the check's 5 s (slack for load)
    assert results["database"][0] is False
    assert "no answer within" in results["database"][1]


@pytest.mark.django_db
def test_metrics_are_prometheus_text(client):
    client.get("/healthz")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert b"django_http_requests_total_by_view_transport_method_total" in response.content
