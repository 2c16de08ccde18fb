"""GET /experiments/{key}/results: per-arm aggregates computed in SQL agree with the same numbers
computed independently in Python; lift, interval, p-value, SRM and guardrail states."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest
from django.db import connection
from scipy import stats as scipy_stats

from costs.budgeting import money_str
from experiments import stats
from experiments.assignment import bucket
from experiments.models import OutcomeEvent
from experiments.outcome_aggregate import experiment_metrics
from experiments.outcomes import outcomes_ingest
from experiments.results import experiment_results
from experiments.selectors import get_experiment
from experiments.services import experiment_start, stage_approve
from models_app.benchmarks.reruns import ZETA_3
from tests.experiments.factories import draft_experiment, outcome_events, rollout_team, user_in_arm, user_in_buckets

pytestmark = pytest.mark.django_db


def bearer(key: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {key}"}


@pytest.fixture
def experiment_with_data():
    team = rollout_team()
    experiment = experiment_start(experiment=draft_experiment(actor=team["starter"], stage_plan=[20, 100]), actor=team["starter"])
    control = outcome_events(experiment, arm="control", n=400, success_rate=0.85, latency_ms=400, quality=0.70, seed=1)
    treatment = outcome_events(experiment, arm="treatment", n=100, success_rate=0.92, latency_ms=300, quality=0.75, seed=2)
    for start in range(0, 500, 250):
        outcomes_ingest(principal=None, events=(control + treatment)[start : start + 250])
    # Costs as the costs app would price them (the pricing itself is tested there).
    stored = list(OutcomeEvent.objects.order_by("event_id"))
    for index, row in enumerate(stored):
        row.cost_usd = Decimal("0.00012") if row.variant == "control" else Decimal("0.00030") + Decimal(index % 3) / 100000
    OutcomeEvent.objects.bulk_update(stored, ["cost_usd"])
    return experiment, control, treatment


def test_per_arm_numbers_match_an_independent_python_computation(experiment_with_data, django_assert_max_num_queries):
    experiment, control, treatment = experiment_with_data
    experiment = get_experiment(key=experiment.key)

    # The stage windows with each stage's resumes (which SRM test runs), one per-user aggregate query
    # (after turning off JIT and nested loops on PostgreSQL) and one for the percentiles, no loop over events;
    # SQLite has no percentile_cont (nor the jit setting), so its documented fallback reads each arm's
    # sorted latencies (one query per arm).
    with django_assert_max_num_queries(4):
        results = experiment_results(experiment=experiment)
    for arm, events in (("control", control), ("treatment", treatment)):
        got = results["variants"][arm]
        latencies = np.array([e["latency_ms"] for e in events])
        assert got["n"] == len(events) and got["users"] == len({e["user_id"] for e in events})
        assert got["success_rate"] == pytest.approx(np.mean([e["success"] for e in events]))
        assert got["mean_quality"] == pytest.approx(np.mean([e["quality"] for e in events]))
        assert got["latency_p50_ms"] == pytest.approx(np.percentile(latencies, 50))  # linear, as percentile_cont
        assert got["latency_p95_ms"] == pytest.approx(np.percentile(latencies, 95))
        costs = [c for c in OutcomeEvent.objects.filter(variant=arm).values_list("cost_usd", flat=True)]
        assert Decimal(got["cost_usd"]) == (sum(costs)).quantize(Decimal("0.00000001"))
        assert Decimal(got["cost_per_request_usd"]) == (sum(costs) / len(costs)).quantize(Decimal("0.00000001"))
        assert money_str(Decimal(got["cost_usd"]), places=8) == got["cost_usd"]  # the API's one money format


def test_lift_interval_and_p_value_of_the_success_rate(experiment_with_data):
    experiment, control, treatment = experiment_with_data
    results = experiment_results(experiment=experiment)
    c_success = sum(e["success"] for e in control)
    t_success = sum(e["success"] for e in treatment)
    # One outcome per user in one stage: the per-user analysis is Welch's t-test on the users' 0/1
    # outcomes, computed independently here by scipy.
    welch = scipy_stats.ttest_ind([float(e["success"]) for e in treatment], [float(e["success"]) for e in control],
                                  equal_var=False)
    assert results["p_value"] == pytest.approx(welch.pvalue, rel=1e-9)
    absolute = results["comparisons"]["success_rate"]["absolute_ci95"]
    welch_interval = welch.confidence_interval(0.95)
    assert absolute == pytest.approx([welch_interval.low, welch_interval.high], rel=1e-9)
    assert results["relative_lift"] == pytest.approx((t_success / len(treatment)) / (c_success / len(control)) - 1)
    low, high = results["ci95"]
    assert low < results["relative_lift"] < high
    # The relative (Fieller) interval, the absolute interval and the p-value agree about "no effect".
    assert (results["p_value"] < 0.05) == (low > 0 or high < 0) == (absolute[0] > 0 or absolute[1] < 0)
    assert results["analysis"]["unit"] == "user" and results["analysis"]["covers"] == "stages 20 %"
    assert "fixed-horizon: valid at the planned end, not for stopping early" in results["analysis"]["method"]
    assert results["comparisons"]["latency_ms"]["relative_lift"] < 0  # treatment is faster
    assert results["comparisons"]["quality"]["p_value"] < 0.05


def test_srm_and_guardrail_states(experiment_with_data):
    experiment, _, _ = experiment_with_data
    results = experiment_results(experiment=experiment)
    # 400 / 100 users against a planned 80 / 20 split: exactly as planned.
    assert results["srm_p"] == pytest.approx(1.0) and results["srm_flagged"] is False
    # The rollout's 1 %, one stage with control, spent on its first test as 1 %/ζ(3) (stats.srm_threshold).
    assert results["srm_threshold"] == pytest.approx(0.01 / ZETA_3) and results["srm_test"] == 1
    states = {g["metric"]: g["state"] for g in results["guardrails"]}
    assert states["success_rate"] == "healthy" and states["latency_ms"] == "healthy"
    assert set(states) == {"success_rate", "latency_ms", "quality", "cost_per_request"}
    # Treatment costs 2.5x control: beyond the +50 % warning.
    assert states["cost_per_request"] == "warning"


def test_the_endpoint_serves_the_results_to_keys_of_that_agent_only(client, experiment_with_data, api_key_for):
    experiment, _, _ = experiment_with_data
    response = client.get(f"/api/v1/experiments/{experiment.key}/results", **bearer(api_key_for("qa_agent")))
    assert response.status_code == 200
    body = response.json()
    assert body["experiment"] == "qa_agent-exp" and body["stage_percent"] == 20
    assert set(body["variants"]["control"]) >= {"n", "success_rate", "mean_quality", "latency_p50_ms",
                                                 "latency_p95_ms", "cost_per_request_usd"}
    assert {"relative_lift", "ci95", "p_value", "srm_p", "guardrails"} <= set(body)
    # The schema labels the p-value for what it is: fixed-horizon, not a stopping rule.
    schema = client.get("/api/v1/openapi.json").json()["components"]["schemas"]
    assert "not for stopping early" in schema["ResultsOut"]["properties"]["p_value"]["description"]
    assert "not for stopping early" in schema["ComparisonOut"]["properties"]["p_value"]["description"]
    from tests.factories import AgentFactory

    AgentFactory(slug="legal_agent")
    assert client.get(f"/api/v1/experiments/{experiment.key}/results", **bearer(api_key_for("legal_agent"))).status_code == 403
    missing = client.get("/api/v1/experiments/nope/results", **bearer(api_key_for("qa_agent")))
    assert missing.status_code == 404 and missing.json()["detail"] == "experiment 'nope' does not exist"


def test_an_experiment_without_outcomes_has_empty_arms_and_no_comparison():
    team = rollout_team()
    experiment = experiment_start(experiment=draft_experiment(actor=team["starter"]), actor=team["starter"])
    results = experiment_results(experiment=experiment)
    assert results["variants"]["control"]["n"] == 0 and results["variants"]["control"]["success_rate"] is None
    assert results["variants"]["control"]["cost_usd"] == "0.00" and results["variants"]["control"]["cost_per_request_usd"] is None
    assert results["relative_lift"] is None and results["p_value"] is None
    assert {g["state"] for g in results["guardrails"]} == {"no_data", "not_reported"}
    # No data is null, never a fake interval [0, 0] with p = 1.
    assert results["ci95"] is None and results["comparisons"]["success_rate"] is None


def test_one_outcome_per_arm_gives_null_statistics_not_zeros(client, api_key_for):
    team = rollout_team()
    experiment = experiment_start(experiment=draft_experiment(actor=team["starter"], stage_plan=[20, 100]), actor=team["starter"])
    outcomes_ingest(principal=None, events=outcome_events(experiment, arm="control", n=1, success_rate=1.0, seed=3)
                    + outcome_events(experiment, arm="treatment", n=1, success_rate=0.0, seed=4))
    results = experiment_results(experiment=experiment)
    assert results["variants"]["control"]["n"] == 1 and results["variants"]["treatment"]["n"] == 1
    # No cost reported: zero dollars as a plain decimal string like all money in the API (was "0E-8").
    served = client.get(f"/api/v1/experiments/{experiment.key}/results", **bearer(api_key_for("qa_agent"))).json()
    assert served["variants"]["control"]["cost_usd"] == served["variants"]["treatment"]["cost_usd"] == "0.00"
    assert results["p_value"] is None and results["ci95"] is None and results["relative_lift"] is None


def test_a_user_with_many_outcomes_counts_once_in_the_interval():
    """Ten outcomes from each of 30 users are 30 independent units, not 300: the interval is as wide
    as Welch's on the users' own success rates."""
    team = rollout_team()
    experiment = experiment_start(experiment=draft_experiment(actor=team["starter"], stage_plan=[50, 100]), actor=team["starter"])
    rng = np.random.default_rng(7)
    rates = {}
    events = []
    for arm in ("control", "treatment"):
        rates[arm] = []
        for user in range(30):
            base = outcome_events(experiment, arm=arm, n=10, success_rate=float(rng.choice([0.5, 0.8, 1.0])),
                                  seed=user, user_prefix=f"{arm}-user-{user}")
            one_user = user_in_arm(experiment, arm, percent=50, base=f"{arm}-user-{user}")
            for event in base:
                event["user_id"] = one_user
            rates[arm].append(np.mean([e["success"] for e in base]))
            events += base
    outcomes_ingest(principal=None, events=events)
    results = experiment_results(experiment=experiment)
    assert results["variants"]["control"]["users"] == 30 and results["variants"]["control"]["n"] == 300
    # Every user has 10 outcomes, so the ratio metric is the mean of the users' rates.
    welch = scipy_stats.ttest_ind(rates["treatment"], rates["control"], equal_var=False)
    assert results["p_value"] == pytest.approx(welch.pvalue, rel=1e-6)


def test_users_returning_in_a_later_stage_cluster_the_variance(django_assert_max_num_queries):
    """120 users with persistent success rates, active in the 20 % stage and again in the 50 % one
    (users 24–59 move from control to treatment): the selector's SQL gives exactly the estimate
    stats computes from the same users' numbers in Python, clustered by user, and wider than the
    stages taken as independent. Latency is each request's, capped at the pooled 99th percentile."""
    team = rollout_team()
    experiment = experiment_start(experiment=draft_experiment(actor=team["starter"], stage_plan=[20, 50, 100]), actor=team["starter"])
    rng = np.random.default_rng(11)
    users = 120
    rates = np.resize([0.2, 0.6, 1.0], users)
    successes, outcomes = np.zeros((users, 2)), np.zeros((users, 2))
    requests = []  # (user, stage, latency) of every request
    treated = np.zeros((users, 2), dtype=bool)
    counter = 0
    # Outcomes count in the arm the hash assigns (intention to treat): users 0–23 in buckets below
    # 0.2, 24–59 in [0.2, 0.5), the rest above.
    user_ids = [user_in_buckets(experiment, base=f"user-{user}", low=low, high=high)
                for user in range(users)
                for low, high in [(0.0, 0.2) if user < 0.2 * users else (0.2, 0.5) if user < 0.5 * users else (0.5, 1.0)]]
    for stage, share in enumerate((0.2, 0.5)):
        if stage == 1:
            assert stage_approve(stage=experiment.stages.get(index=1), actor=team["approver"]).percent == 50
        events = []
        for user in range(users):
            arm = "treatment" if user < share * users else "control"
            model = (experiment.treatment if arm == "treatment" else experiment.control).model_id
            treated[user, stage] = arm == "treatment"
            visits = int(rng.integers(1, 6))
            for visit in range(visits):  # each user's success rate is its own, stage after stage
                success, served_in = visit < round(rates[user] * visits), float(300 + 200 * rates[user] + rng.normal(0, 20))
                events.append({"event_id": f"returning-{counter}", "agent": experiment.agent.slug, "user_id": user_ids[user],
                               "model": model, "success": success, "latency_ms": served_in})
                counter += 1
                successes[user, stage] += success
                outcomes[user, stage] += 1
                requests.append((user, stage, served_in))
        assert outcomes_ingest(principal=None, events=events).accepted == len(events)
    experiment = get_experiment(key=experiment.key)
    with django_assert_max_num_queries(4):  # stage windows with their resumes, no JIT, the aggregate statement, the percentiles
        results = experiment_results(experiment=experiment)
    assert results["analysis"]["covers"] == "stages 20 %, 50 %"
    cap = stats.pooled_cap([served_in for _, _, served_in in requests])
    latency = np.zeros((users, 2))
    for user, stage, served_in in requests:
        latency[user, stage] += min(served_in, cap)
    assert results["comparisons"]["latency_ms"]["capped_at"] == pytest.approx(cap)
    for metric, numerators in (("success_rate", successes), ("latency_ms", latency)):
        strata = stats.strata_from_users(numerators, outcomes, treated)
        assert {pair.second for stratum in strata for pair in stratum.shared} >= {(1, "control"), (1, "treatment")}
        expected = stats.compare(strata)
        independent = stats.compare([stats.Stratum(s.control, s.treatment) for s in strata])
        assert expected is not None and independent is not None and expected.absolute_interval and independent.absolute_interval
        got = results["comparisons"][metric]
        assert got["p_value"] == pytest.approx(expected.p_value, rel=1e-9)
        assert got["absolute_ci95"] == pytest.approx([expected.absolute_interval.low, expected.absolute_interval.high], rel=1e-9)
        # Persistent users counted in both stages: the clustered interval is the wider one.
        clustered_width = expected.absolute_interval.high - expected.absolute_interval.low
        assert clustered_width > 1.05 * (independent.absolute_interval.high - independent.absolute_interval.low)


def test_latency_and_cost_are_compared_on_requests_capped_at_the_pooled_99th_percentile():
    """Heavy-tailed latency and cost (log-normal, one slow, costly outlier in treatment): the
    comparisons use each request capped at the 99th percentile of both arms' requests (nearest rank,
    stats.pooled_cap) and say so; the guardrails judge the real requests; the arms' mean latency and cost
    per request stay the real, uncapped ones, and success rate is not capped."""
    team = rollout_team()
    experiment = experiment_start(experiment=draft_experiment(actor=team["starter"], stage_plan=[10, 100]), actor=team["starter"])
    rng = np.random.default_rng(5)
    events = outcome_events(experiment, arm="control", n=450, success_rate=0.9, seed=1)
    events += outcome_events(experiment, arm="treatment", n=50, success_rate=0.8, seed=2)
    for event in events:
        event["latency_ms"] = float(np.exp(rng.normal(6.5, 1.5)))
    events[-1]["latency_ms"] = 3_000_000.0  # 50 min: one stuck request
    assert outcomes_ingest(principal=None, events=events).accepted == len(events)
    stored = list(OutcomeEvent.objects.filter(experiment=experiment).order_by("event_id"))
    for row in stored:
        row.cost_usd = Decimal(f"{float(np.exp(rng.normal(-8, 1.5))):.8f}")
    next(row for row in stored if row.variant == "treatment").cost_usd = Decimal("4.00000000")
    OutcomeEvent.objects.bulk_update(stored, ["cost_usd"])

    results = experiment_results(experiment=get_experiment(key=experiment.key))
    for metric, column in (("latency_ms", "latency_ms"), ("cost_per_request", "cost_usd")):
        values = {arm: np.array([float(getattr(row, column)) for row in stored if row.variant == arm]) for arm in ("control", "treatment")}
        cap = stats.pooled_cap(np.concatenate(list(values.values())))
        assert cap < 0.01 * max(values["treatment"])  # the outlier is capped
        got = results["comparisons"][metric]
        assert got["capped_at"] == pytest.approx(cap, rel=1e-12)
        assert "capped at" in got["measures"] and f"{stats.CAP_PERCENTILE}th percentile" in got["measures"]
        for arm in ("control", "treatment"):
            assert got[arm] == pytest.approx(np.minimum(values[arm], cap).mean(), rel=1e-9)
    for arm in ("control", "treatment"):
        real = [row for row in stored if row.variant == arm]
        assert results["variants"][arm]["mean_latency_ms"] == pytest.approx(np.mean([row.latency_ms for row in real]))
        total = sum(row.cost_usd for row in real)
        assert Decimal(results["variants"][arm]["cost_per_request_usd"]) == (total / len(real)).quantize(Decimal("0.00000001"))
    success = results["comparisons"]["success_rate"]
    assert success["capped_at"] is None and (success["control"], success["treatment"]) == pytest.approx((0.9, 0.8))
    # The guardrails judge the real requests (second reviewer: a cap at the pooled 99th percentile hid a
    # candidate hanging on 5 % of its requests from the latency guardrail): the stuck request counts whole.
    latency_guardrail = next(g for g in results["guardrails"] if g["metric"] == "latency_ms")
    real = {arm: np.mean([row.latency_ms for row in stored if row.variant == arm]) for arm in ("control", "treatment")}
    assert latency_guardrail["estimate"] == pytest.approx(real["treatment"] - real["control"], rel=1e-9)  # ms
    assert "capped" not in latency_guardrail["reason"] and "capped" not in latency_guardrail["rule"]


def _nested_loops_over_users(plan: dict) -> list[str]:
    """The join filters of the plan's nested loops that compare user ids (one per loop)."""
    found = []
    if plan.get("Node Type") == "Nested Loop" and "user_id" in plan.get("Join Filter", ""):
        found.append(plan["Join Filter"])
    for child in plan.get("Plans", []):
        found += _nested_loops_over_users(child)
    return found


def test_the_results_statement_pairs_users_by_hash_even_when_the_statistics_predate_the_experiment():
    """The soak test's finding: with the outcome table last analysed before the experiment began (autovacuum
    analyses a large table after every 10 % of growth, so for hours after a start), the planner expects one
    outcome and paired the per-user rows by nested loops — every user against every user, twice — and the
    results and the minutely guardrail check took 0.8 s at 3 500 outcomes, growing with the square of the
    users. The statement as the selector runs it (its SET LOCALs in force) joins users by hash instead."""
    if connection.vendor != "postgresql":
        pytest.skip("the plan is PostgreSQL's")
    team = rollout_team()
    experiment = draft_experiment(actor=team["starter"], stage_plan=[20, 50, 100])
    # Live traffic before the start, and the table analysed then, as autovacuum last did.
    outcomes_ingest(principal=None, events=outcome_events(experiment, arm="control", n=200, success_rate=0.9, seed=3))
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {OutcomeEvent._meta.db_table}")
    experiment = experiment_start(experiment=experiment, actor=team["starter"])
    # 40 users always in treatment, 40 moving to it at 50 %, 40 always in control.
    users = [user_in_buckets(experiment, base=f"returning-{index}", low=low, high=high)
             for low, high in ((0.0, 0.2), (0.2, 0.5), (0.5, 1.0)) for index in range(40)]
    for stage, percent in ((0, 20), (1, 50)):
        if stage == 1:
            stage_approve(stage=experiment.stages.get(index=1), actor=team["approver"])
        events = []
        for user_id in users:  # each user in both stages: users shared by two cells, as returning users are
            arm = "treatment" if bucket(seed=experiment.seed, user_id=user_id) < percent / 100 else "control"
            events.append({"event_id": f"{user_id}-{stage}", "agent": experiment.agent.slug, "user_id": user_id,
                           "model": (experiment.treatment if arm == "treatment" else experiment.control).model_id,
                           "success": True, "latency_ms": 300.0})
        assert outcomes_ingest(principal=None, events=events).accepted == len(users)

    plans = []

    def explain_the_aggregate(execute, sql, params, many, context):
        if sql.startswith("WITH analysed"):
            context["cursor"].execute("EXPLAIN (FORMAT JSON) " + sql, params)
            plans.append(context["cursor"].fetchone()[0][0]["Plan"])
        return execute(sql, params, many, context)

    with connection.execute_wrapper(explain_the_aggregate):
        results = experiment_results(experiment=get_experiment(key=experiment.key))
    assert results["variants"]["control"]["n"] + results["variants"]["treatment"]["n"] == 2 * len(users)
    assert len(plans) == 1
    assert _nested_loops_over_users(plans[0]) == []


def test_results_refuse_metrics_read_without_the_latency_percentiles(experiment_with_data):
    """Review: metrics read without include_percentiles were accepted, and the results showed each arm's
    latency p50/p95 as None. Such metrics are refused; with the percentiles they are used as given."""
    experiment = get_experiment(key=experiment_with_data[0].key)
    with pytest.raises(ValueError, match="include_percentiles=True"):
        experiment_results(experiment=experiment, metrics=experiment_metrics(experiment=experiment))
    given = experiment_results(experiment=experiment, metrics=experiment_metrics(experiment=experiment, include_percentiles=True))
    assert given["variants"]["control"]["latency_p50_ms"] is not None
    assert given == experiment_results(experiment=experiment)
