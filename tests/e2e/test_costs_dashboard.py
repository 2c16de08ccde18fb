"""The cost dashboard as a person reads it, in headless Chromium: the budget gauge with its three
thresholds marked, spend by agent and by operation over time, the projection and the alerts."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from costs.services import budget_upsert, cost_record
from tests.e2e.conftest import admin_login, chromium_executable, chromium_page
from tests.factories import AgentFactory, UserFactory

pytestmark = pytest.mark.e2e


def test_admin_reads_the_cost_dashboard(live_server, transactional_db, e2e_password, tmp_path):
    chromium_executable()  # skip (or fail under GENESIS_REQUIRE_SERVICES=1) before building anything
    UserFactory(username="finance", is_superuser=True)
    qa, legal = AgentFactory(slug="qa_agent"), AgentFactory(slug="legal_agent")
    budget_upsert(name="default", amount_usd=Decimal("30"), thresholds=[25, 50, 83], hard_limit=True)
    now = timezone.now()
    cost_record(agent=qa, operation="benchmark", amount_usd=Decimal("6.20"), idempotency_key="d1", occurred_at=now - timedelta(days=2))
    cost_record(agent=legal, operation="fine_tuning", amount_usd=Decimal("4.00"), idempotency_key="d2", occurred_at=now - timedelta(days=1))
    cost_record(agent=qa, operation="inference", amount_usd=Decimal("5.80"), idempotency_key="d3", occurred_at=now)

    with chromium_page() as page:
        admin_login(page, live_server.url, username="finance", password=e2e_password)
        page.click("text=Cost dashboard")  # linked from the admin index
        page.wait_for_selector("#budget-gauge")
        page.screenshot(path=str(tmp_path / "cost-dashboard.png"), full_page=True)

        figures = {key: page.inner_text(f"[data-testid={key}]").strip() for key in ("spent", "limit", "percent", "remaining")}
        markers = page.eval_on_selector_all(
            "#budget-gauge .threshold-marker",
            "nodes => nodes.map(n => [n.dataset.percent, n.dataset.severity, n.classList.contains('reached')])",
        )
        # Markers sit left to right in threshold order, inside the drawn gauge.
        marker_x = page.eval_on_selector_all("#budget-gauge .threshold-marker line", "nodes => nodes.map(n => n.getBoundingClientRect().x)")
        fill_width = page.eval_on_selector("#budget-gauge .gauge-fill", "n => n.getBoundingClientRect().width")
        gauge_width = page.eval_on_selector("#budget-gauge", "n => n.getBoundingClientRect().width")
        agent_bars = page.locator("#spend-by-agent rect.bar").count()
        agent_legend = page.locator("#spend-by-agent .costs-legend li").all_inner_texts()
        operation_legend = page.locator("#spend-by-operation .costs-legend li").all_inner_texts()
        burn = page.inner_text("[data-testid=burn-rate]").strip()
        exhaustion = page.inner_text("[data-testid=exhaustion]").strip()
        alert_rows = page.locator("#alerts tr.alert-row").all_inner_texts()

    assert figures == {"spent": "$16.00", "limit": "$30.00", "percent": "53.3 %", "remaining": "$14.00"}
    assert markers == [["25", "warning", True], ["50", "critical", True], ["83", "emergency", False]]
    assert marker_x == sorted(marker_x)
    assert 0.5 * gauge_width < fill_width < 0.56 * gauge_width  # 53.3 % of a 0–100 % bar
    assert agent_bars == 3  # one bar per day with spend (a single agent each day)
    assert [text.strip() for text in agent_legend] == ["legal_agent $4.00", "qa_agent $12.00"]
    assert [text.strip() for text in operation_legend] == ["benchmark $6.20", "fine_tuning $4.00", "inference $5.80"]
    assert burn.endswith("/ day") and burn.startswith("$")
    assert exhaustion[:4].isdigit()  # a projected date, YYYY-MM-DD
    assert len(alert_rows) == 2
    assert "50 %" in alert_rows[0] and "critical" in alert_rows[0] and "25 %" in alert_rows[1]
    assert (tmp_path / "cost-dashboard.png").stat().st_size > 10_000


def test_a_missing_browser_skips_with_the_reason_or_fails_under_required_services(monkeypatch, tmp_path):
    from _pytest.outcomes import Failed, Skipped

    import tests.e2e.conftest as browser

    monkeypatch.setattr(browser, "CHROMIUM_PATH", str(tmp_path / "no-chromium"))
    monkeypatch.delenv("GENESIS_REQUIRE_SERVICES", raising=False)
    with pytest.raises(Skipped, match="no-chromium is missing: install Debian's chromium"):
        browser.chromium_executable()
    monkeypatch.setenv("GENESIS_REQUIRE_SERVICES", "1")
    with pytest.raises(Failed, match="GENESIS_REQUIRE_SERVICES=1 but .*no-chromium is missing"):
        browser.chromium_executable()
