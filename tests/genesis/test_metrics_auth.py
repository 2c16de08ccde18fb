"""GET /metrics named each agent's spend to anyone (`genesis_cost_usd_total{agent=…}`). With
GENESIS_METRICS_TOKEN set it answers only a scrape that sends `Authorization: Bearer <token>` (401
otherwise); unset, it stays open as before. tests/ops/test_prometheus_e2e.py scrapes with the token
through Prometheus' own `authorization` setting, as README › Monitoring configures it."""

from __future__ import annotations

import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.django_db

TOKEN = "scrape-token-31f9c0"


# "Bearer tökên": a header that is not ASCII is refused too (compare_digest raises on such a str: a 500).
@pytest.mark.parametrize("authorization", [None, "", "Bearer", "Bearer wrong", f"Basic {TOKEN}", f"Bearer {TOKEN}x", TOKEN,
                                           "Bearer tökên"])
def test_with_a_token_set_a_scrape_without_it_is_refused(client, settings, authorization):
    settings.GENESIS_METRICS_TOKEN = TOKEN
    headers = {} if authorization is None else {"Authorization": authorization}
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert b"genesis_" not in response.content
    assert response.content.decode() == "/metrics needs 'Authorization: Bearer <GENESIS_METRICS_TOKEN>'\n"


@pytest.mark.parametrize("scheme", ["Bearer", "bearer"])
def test_with_a_token_set_a_scrape_that_sends_it_reads_the_metrics(client, settings, scheme):
    settings.GENESIS_METRICS_TOKEN = TOKEN
    response = client.get("/metrics", headers={"Authorization": f"{scheme} {TOKEN}"})
    assert response.status_code == 200
    assert response["Content-Type"] == CONTENT_TYPE_LATEST
    names = {family.name for family in text_string_to_metric_families(response.content.decode())}
    assert "genesis_cost_usd" in names


def test_without_a_token_metrics_stay_open(client, settings):
    settings.GENESIS_METRICS_TOKEN = ""
    response = client.get("/metrics")
    assert response.status_code == 200 and b"genesis_cost_metrics_up" in response.content
