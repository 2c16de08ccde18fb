"""Every web machine scraped exports the same figures read from the database and Redis at scrape time
(the ledger, budgets, rollout state, jobs, Celery): a query over them takes one copy with
`max by (<the metric's own labels>)` before anything else aggregates, in every rule, dashboard panel and
runbook query. A `sum` straight over them counts the ledger once per machine ("$5 in an hour" firing at
$2.50 with two machines), and so did `max without (instance)` when the targets carry another label of
their own (Kubernetes' `pod`: two pods exporting a $3/h ledger read "$6.00"). Counters of events
(genesis_agent_*, genesis_provider_*, genesis_api_key_refusals_total) are each machine's share: each
series' `rate`/`increase` first (a restart's reset is then a reset), then summed;
ops/prometheus/alerts_test.yml shows the alerts with two instances, and with two pods."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from genesis.metrics import scrape_time_metric_labels, scrape_time_metric_names
from tests.ops.test_prometheus_e2e import METRIC_NAME, panel_expressions, rule_expressions, runbook_queries

AGGREGATION_BEFORE = re.compile(
    r"\b(?P<op>sum|min|max|avg|count|group|stddev|stdvar|topk|bottomk|quantile|count_values)\s*"
    r"(?:(?P<clause>by|without)\s*\((?P<labels>[^()]*)\))?\s*$"
)
# Whether this instance could read the database or Redis: per instance is the point
# (DatabaseMetricsUnavailable, RedisMetricsUnavailable).
PER_INSTANCE_HEALTH = {"genesis_cost_metrics_up", "genesis_redis_metrics_up"}


def enclosing_brackets(expr: str, position: int) -> Iterator[int]:
    """The index of each "(" whose bracket holds `position`, innermost first."""
    depth = 0
    for index in range(position - 1, -1, -1):
        if expr[index] == ")":
            depth += 1
        elif expr[index] == "(" and depth:
            depth -= 1
        elif expr[index] == "(":
            yield index


def first_aggregation_around(expr: str, position: int) -> str | None:
    """The innermost aggregation whose argument holds `position` ('max by (agent, operation)'), or None;
    function calls (rate, increase, sort_desc …) and plain brackets between are passed over."""
    for index in enclosing_brackets(expr, position):
        found = AGGREGATION_BEFORE.search(expr[:index])
        if found:
            labels = ", ".join(label.strip() for label in (found["labels"] or "").split(",") if label.strip())
            return f"{found['op']} {found['clause']} ({labels})" if found["clause"] else found["op"]
    return None


def one_copy(aggregation: str | None, own_labels: tuple[str, ...]) -> bool:
    """Whether `aggregation` keeps exactly the metric's own labels: `max by (…its labels, any order)`,
    or `max` for a metric without labels."""
    if aggregation is None:
        return False
    if not own_labels and aggregation in ("max", "max by ()"):
        return True
    head, _, rest = aggregation.partition(" (")
    return head == "max by" and {label.strip() for label in rest.rstrip(")").split(",") if label.strip()} == set(own_labels)


def uncollapsed(expr: str, shared: dict[str, tuple[str, ...]]) -> list[str]:
    """Each scrape-time metric in `expr` not first taken once per series by max by (its own labels)."""
    return [f"{match.group()} under {first_aggregation_around(expr, match.start())}"
            for match in METRIC_NAME.finditer(expr)
            if match.group() in shared and not one_copy(first_aggregation_around(expr, match.start()), shared[match.group()])]


@pytest.fixture(scope="module")
def shared() -> dict[str, tuple[str, ...]]:
    return {name: labels for name, labels in scrape_time_metric_labels().items() if name not in PER_INSTANCE_HEALTH}


def test_the_scrape_time_metrics_are_those_read_from_the_database_and_redis(shared) -> None:
    assert {"genesis_cost_usd_total", "genesis_cost_reversed_usd_total", "genesis_budget_used_ratio",
            "genesis_experiment_rollbacks_total", "genesis_rollout_paused", "genesis_benchmark_runs",
            "genesis_finetuning_jobs", "genesis_celery_workers", "genesis_celery_beat_last_tick_timestamp_seconds",
            "genesis_exposure_dead_letter_batches"} <= set(shared)
    assert not {"genesis_agent_requests_total", "genesis_provider_calls_total", "genesis_agent_served_by_other_model_total"} & set(shared)


def test_the_per_instance_verdicts_are_scrape_time_metrics_set_apart() -> None:
    # Read at scrape time, but each machine's own verdict on its reads: not one copy of shared state.
    assert PER_INSTANCE_HEALTH <= scrape_time_metric_names()


def test_the_check_tells_a_sum_over_instances_from_one_copy(shared) -> None:
    assert uncollapsed("sum(increase(genesis_cost_usd_total[1h])) > 5", shared) == ["genesis_cost_usd_total under sum"]
    assert uncollapsed("genesis_budget_spent_usd", shared) == ["genesis_budget_spent_usd under None"]
    assert uncollapsed("sum by (agent) (max by (operation, agent) (increase(genesis_cost_usd_total[1h])))", shared) == []
    assert uncollapsed("time() - max(genesis_celery_beat_last_tick_timestamp_seconds) > 600", shared) == []
    assert uncollapsed("sum by (agent) (rate(genesis_agent_requests_total[5m]))", shared) == []
    # Keeps a per-target label (pod), or drops one of the metric's own (operation): not one copy.
    assert uncollapsed("sum(max without (instance) (increase(genesis_cost_usd_total[1h])))", shared) == [
        "genesis_cost_usd_total under max without (instance)"]
    assert uncollapsed("sum(max by (agent) (increase(genesis_cost_usd_total[1h])))", shared) == [
        "genesis_cost_usd_total under max by (agent)"]


def test_every_rule_takes_one_copy_of_a_scrape_time_metric(shared) -> None:
    wrong = {alert: found for alert, expr in rule_expressions().items() if (found := uncollapsed(expr, shared))}
    assert wrong == {}


def test_every_panel_takes_one_copy_of_a_scrape_time_metric(shared) -> None:
    wrong = [(title, found) for title, expr in panel_expressions() if (found := uncollapsed(expr, shared))]
    assert wrong == []


def test_every_runbook_query_takes_one_copy_of_a_scrape_time_metric(shared) -> None:
    wrong = [(expr, found) for expr in runbook_queries() if (found := uncollapsed(expr, shared))]
    assert wrong == []


# --- counters of events: each process's and machine's share, so `increase`/`rate` per series, then `sum` ---

COUNTED_SUFFIXES = ("_total", "_bucket", "_count", "_sum")
PER_SERIES_FUNCTIONS = {"rate", "increase", "irate"}


def function_around(expr: str, position: int) -> str | None:
    """The function whose call holds `position` directly ('increase'), or None."""
    for index in enclosing_brackets(expr, position):
        found = re.search(r"([a-z_]+)\s*$", expr[:index])
        return found[1] if found else None
    return None


def unsummed(expr: str, shared: dict[str, tuple[str, ...]]) -> list[str]:
    """Each counter of events in `expr` not taken as `rate`/`increase` per series and then summed: a
    `max` keeps one machine's share, and an `increase` of a sum reads one machine's restart (its counter
    back to 0) as a reset of the total, counting the other machines' events again (ApiKeysExpiredInUse)."""
    wrong = []
    for match in METRIC_NAME.finditer(expr):
        name = match.group()
        if name in shared or name in PER_INSTANCE_HEALTH or not name.endswith(COUNTED_SUFFIXES):
            continue
        function, aggregation = function_around(expr, match.start()), first_aggregation_around(expr, match.start())
        if function not in PER_SERIES_FUNCTIONS or aggregation is None or not aggregation.startswith("sum"):
            wrong.append(f"{name} in {function} under {aggregation}")
    return wrong


def test_the_check_tells_a_sum_of_increases_from_one_share_or_a_raw_counter(shared) -> None:
    assert unsummed('sum (increase(genesis_api_key_refusals_total{reason="expired"}[10m])) > 0', shared) == []
    assert unsummed("histogram_quantile(0.95, sum by (agent, le) (rate(genesis_agent_request_duration_seconds_bucket[5m])))",
                    shared) == []
    assert unsummed('max by (reason) (increase(genesis_api_key_refusals_total{reason="expired"}[10m])) > 0', shared) == [
        "genesis_api_key_refusals_total in increase under max by (reason)"]
    assert unsummed('sum (genesis_api_key_refusals_total{reason="expired"}) > 0', shared) == [
        "genesis_api_key_refusals_total in sum under sum"]
    assert unsummed("increase(genesis_api_key_refusals_total[10m]) > 0", shared) == [
        "genesis_api_key_refusals_total in increase under None"]


def test_every_rule_sums_the_increases_of_a_counter_of_events(shared) -> None:
    wrong = {alert: found for alert, expr in rule_expressions().items() if (found := unsummed(expr, shared))}
    assert wrong == {}


def test_every_panel_and_runbook_query_sums_the_increases_of_a_counter_of_events(shared) -> None:
    wrong = [(expr, found) for expr in [expr for _, expr in panel_expressions()] + runbook_queries()
             if (found := unsummed(expr, shared))]
    assert wrong == []
