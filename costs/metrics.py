"""Prometheus metrics of the costs app, computed from the database when /metrics is scraped.

Why at scrape time and not counters bumped by the services: the web runs as several gunicorn
processes and the ledger is also written by Celery workers, so an in-process counter would only see
its own process's share (and reset on restart). The ledger is the source of truth; one grouped query
per scrape reads it. Counters stay monotonic because charges and reversals are exported apart.

- genesis_cost_usd_total{agent,operation}            counter: charges (positive entries)
- genesis_cost_reversed_usd_total{agent,operation}   counter: reversals (as positive amounts);
  net spend = charges − reversals
- genesis_budget_limit_usd{budget}, genesis_budget_spent_usd{budget}   gauges, current period
- genesis_budget_used_ratio{budget}                   gauge: spent / limit in the current period (a $0 budget
  with any spend: 1, as it reads 100 % everywhere)
- genesis_budget_threshold_usd{budget,threshold}      gauge: each alert threshold in dollars (dashboard lines)
- genesis_budget_threshold_crossed_percent{budget}    gauge: highest threshold reached this period (0: none)
- genesis_budget_alerts_total{budget,severity}        counter: alerts raised
- genesis_cost_metrics_up                             1 when the numbers above could be read
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from django.db.models import Count, Q, QuerySet
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from costs.models import Budget, BudgetAlert, CostEntry, CostSpendTotal, Operation
from costs.selectors import budget_status, rollup_kept
from genesis.aggregates import DecimalTotal
from genesis.metrics import register_scrape_collector
from models_app.registry.models import Agent

logger = logging.getLogger(__name__)


def _families() -> dict[str, CounterMetricFamily | GaugeMetricFamily]:
    return {
        "cost": CounterMetricFamily("genesis_cost_usd", "Charges on the cost ledger (USD)", labels=["agent", "operation"]),
        "reversed": CounterMetricFamily(
            "genesis_cost_reversed_usd", "Reversed charges on the cost ledger (USD)", labels=["agent", "operation"]
        ),
        "limit": GaugeMetricFamily("genesis_budget_limit_usd", "Budget amount (USD)", labels=["budget"]),
        "spent": GaugeMetricFamily("genesis_budget_spent_usd", "Spend in the budget's current period (USD)", labels=["budget"]),
        "ratio": GaugeMetricFamily("genesis_budget_used_ratio", "Spent / budget in the current period", labels=["budget"]),
        "threshold": GaugeMetricFamily(
            "genesis_budget_threshold_usd", "A budget alert threshold in dollars", labels=["budget", "threshold"]
        ),
        "crossed": GaugeMetricFamily(
            "genesis_budget_threshold_crossed_percent", "Highest alert threshold reached this period (%; 0 = none)",
            labels=["budget"],
        ),
        "alerts": CounterMetricFamily("genesis_budget_alerts", "Budget alerts raised", labels=["budget", "severity"]),
        "up": GaugeMetricFamily("genesis_cost_metrics_up", "1 if the cost metrics could be read from the database"),
    }


class CostMetricsCollector(Collector):
    def describe(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        # Registration asks for the names; answer without touching the database.
        yield from _families().values()

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        families = _families()
        try:
            self._fill(families)
        except Exception as exc:  # noqa: BLE001 - a scrape must still answer when the database does not
            logger.warning("cost metrics unavailable: %s: %s", type(exc).__name__, exc)
            up = GaugeMetricFamily("genesis_cost_metrics_up", "1 if the cost metrics could be read from the database")
            up.add_metric([], 0)
            yield up
            return
        yield from families.values()

    @staticmethod
    def _fill(families: dict[str, CounterMetricFamily | GaugeMetricFamily]) -> None:
        rows: QuerySet[Any, Any]
        if rollup_kept():  # the ledger's totals, kept by its trigger: a scrape does not sum the ledger
            rows = CostSpendTotal.objects.values("agent__slug", "operation").annotate(
                charged=DecimalTotal("charged_usd"), reversed=DecimalTotal("reversed_usd")
            ).order_by("agent__slug", "operation")
        else:
            rows = (
                CostEntry.objects.values("agent__slug", "operation")
                .annotate(charged=DecimalTotal("amount_usd", filter=Q(amount_usd__gt=0)),
                          reversed=DecimalTotal("amount_usd", filter=Q(amount_usd__lt=0)))
                .order_by("agent__slug", "operation")
            )
        seen = set()
        for row in rows:
            labels = [row["agent__slug"], row["operation"]]
            seen.add(tuple(labels))
            # Decimal to the micro-dollar (an SQLite sum reads back with float noise), then one conversion.
            families["cost"].add_metric(labels, float(row["charged"]))
            families["reversed"].add_metric(labels, float(-row["reversed"]))
        # Every agent × operation from zero: increase() cannot see the first charge of a series that
        # appears already holding it, so the burn alerts would miss a new agent's first big spend.
        for slug in Agent.objects.order_by("slug").values_list("slug", flat=True):
            for operation in Operation.values:
                if (slug, operation) not in seen:
                    families["cost"].add_metric([slug, operation], 0.0)
                    families["reversed"].add_metric([slug, operation], 0.0)
        for budget in Budget.objects.filter(active=True).order_by("name"):
            status = budget_status(budget=budget)
            families["limit"].add_metric([budget.name], float(budget.amount_usd))
            families["spent"].add_metric([budget.name], float(status.spent))
            # percent_used's rule, as the API and the admin read it: a $0 budget with any spend is used up
            # (1, so BudgetExhausted fires), not 0.
            families["ratio"].add_metric([budget.name], float(status.percent / 100))
            for threshold in status.thresholds:
                families["threshold"].add_metric(
                    [budget.name, str(threshold.percent)], float(budget.amount_usd * threshold.percent / 100)
                )
            families["crossed"].add_metric([budget.name], max((t.percent for t in status.reached), default=0))
        alert_counts = BudgetAlert.objects.values("budget__name", "severity").annotate(n=Count("id"))
        for alert_count in alert_counts.order_by("budget__name"):
            families["alerts"].add_metric([alert_count["budget__name"], alert_count["severity"]], alert_count["n"])
        families["up"].add_metric([], 1)


def register_collector() -> None:
    """Serve these at /metrics (once per process; AppConfig.ready can run more than once in tests)."""
    register_scrape_collector(CostMetricsCollector())
