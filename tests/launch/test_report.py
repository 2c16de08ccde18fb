"""The Go/No-Go judgement and its renderings (launch/report.py, pure: plain facts in, text out)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from launch import report
from tests.accessibility import accessibility_problems

NOW = datetime(2026, 12, 7, 7, 0, tzinfo=UTC)


def facts(**changes):
    """An agent whose candidate PASSed on clean, audited data and has not been rolled out yet."""
    base = {
        "agent": "support_agent", "live": "open-mistral-7b", "candidate": "ft:open-mistral-7b:abc", "candidate_status": "approved_for_rollout",
        "benchmark": {
            "run": 7, "verdict": "PASS", "suite": "support_agent/core v1", "suite_cases": 32, "n": 32,
            "relative_improvement": 0.5, "ci_low": 0.2, "ci_high": 1.0, "threshold": 0.08, "more_cases_needed": None,
            "rule": "at_least_threshold", "plan": None, "power": None, "plan_text": None, "overridden": False, "cost_usd": "0.0013", "reasons": [],
            "per_tag": [
                {"tag": "billing", "n": 20, "baseline_mean": 0.5, "candidate_mean": 0.9, "mean_delta": 0.4,
                 "relative_improvement": 0.8, "wins": 9, "losses": 1, "ties": 10},
                {"tag": "refunds", "n": 12, "baseline_mean": 0.6, "candidate_mean": 0.5, "mean_delta": -0.1,
                 "relative_improvement": -0.1667, "wins": 1, "losses": 3, "ties": 8},
            ],
        },
        "training_data": {"job": 3, "file": "support_train.jsonl", "audit": {"audit": {
            "id": 5, "status": "succeeded", "lines": 50, "valid": 50, "format_errors": 0, "pii": 0,
            "duplicates": {"exact": 0, "near": 0}}}},
        "rollout": None,
        "cost_usd": "4.0013",
    }
    base.update(changes)
    return base


def test_a_pass_on_clean_audited_data_is_go_with_its_reasons():
    judgement = report.judge(facts())
    assert judgement.decision == report.GO and judgement.blockers == []
    assert any("benchmark run #7: PASS, +50.0 % (95 % interval +20.0 % to +100.0 %) on 32 paired cases" in p for p in judgement.passed)
    # A tag the candidate scored lower on within chance (1 win, 3 losses) is no caution.
    assert judgement.cautions == []


def test_the_interval_is_named_at_the_level_the_verdict_read_it():
    # A re-run reads its interval wider (re-runs spend α); the report must not call that a 95 % interval.
    from models_app.benchmarks.reruns import rerun_alpha

    second_run = {**facts()["benchmark"], "alpha": rerun_alpha(alpha=0.05, run_number=2)}
    judgement = report.judge(facts(benchmark=second_run))
    assert any("PASS, +50.0 % (99.48 % interval +20.0 % to +100.0 %)" in p for p in judgement.passed), judgement.passed
    assert "99.48 % interval" in report.render_markdown([facts(benchmark=second_run)], generated_at=NOW)


def test_each_blocker_makes_it_no_go():
    fail = facts(benchmark={**facts()["benchmark"], "verdict": "FAIL"})
    pii = facts(training_data={"job": 3, "file": "f.jsonl", "audit": {"audit": {
        "id": 5, "status": "succeeded", "lines": 50, "valid": 50, "format_errors": 0, "pii": 2, "duplicates": {}}}})
    rolled_back = facts(rollout={"experiment": "support-x", "status": "rolled_back", "stage_percent": 25})
    breach = facts(rollout={"experiment": "support-x", "status": "running", "stage_percent": 25,
                            "guardrails": [{"metric": "success_rate", "state": "breach"}]})
    unbenchmarked = facts(benchmark=None)
    for case, expected in ((fail, "benchmark run #7: FAIL"), (pii, "2 PII"), (rolled_back, "rolled back"), (breach, "breached"),
                           (unbenchmarked, "not benchmarked")):
        judgement = report.judge(case)
        assert judgement.decision == report.NO_GO, case
        assert expected in " ".join(judgement.blockers), judgement.blockers


def test_an_override_or_unaudited_data_is_a_caution_not_a_blocker():
    overridden = facts(benchmark={**facts()["benchmark"], "verdict": "INCONCLUSIVE", "overridden": True})
    unaudited = facts(training_data={"job": 3, "file": "f.jsonl", "audit": None})
    assert report.judge(overridden).decision == report.GO
    assert "overridden by a person" in " ".join(report.judge(overridden).cautions)
    assert report.judge(unaudited).decision == report.GO
    assert "linked to no audited dataset" in " ".join(report.judge(unaudited).cautions)


def test_exit_rule_ignores_agents_without_a_candidate():
    nobody = {"agent": "qa_agent", "live": "open-mistral-7b", "candidate": None}
    assert report.all_go([facts(), nobody]) is True
    assert report.all_go([facts(benchmark=None), nobody]) is False
    assert report.judge(nobody).decision is None


def test_markdown_shows_money_below_a_cent_and_per_tag_relative_as_percent():
    text = report.render_markdown([facts()], generated_at=NOW)
    assert "1 of 1 agent(s) with a candidate are GO: support_agent." in text
    assert "cost $0.0013" in text  # the run's cost, not "$0.00"
    assert "| refunds | 12 | 0.600 | 0.500 | -16.7 % | 1 | 3 |" in text
    assert "**Recommendation: GO**" in text
    assert "n = 32 paired cases (no power figure stored with the run: decided before the sample-size planner)" in text


PLAN = {"rule": "at_least_threshold", "threshold": 0.08, "planned_improvement": 0.16, "power": 0.8, "relative_sd": 0.4,
        "basis": "per-case delta SD 0.200 measured on these 32 cases", "cases_needed": 57, "current_cases": 32,
        "current_power": 0.523, "detectable_improvement": 0.21}


def test_the_stored_plan_gives_the_rule_the_power_and_the_cases_needed():
    with_plan = facts(benchmark={**facts()["benchmark"], "plan": PLAN, "power": PLAN["current_power"]})
    text = report.render_markdown([with_plan], generated_at=NOW)
    assert ("rule `at_least_threshold`; power 52 % with 32 cases to PASS a true improvement of +16.0 % "
            "(threshold +8.0 %); 57 cases needed for 80 % power") in text
    assert "no power figure" not in text
    assert "<code>at_least_threshold</code>; power 52 %" in report.render_html([with_plan], generated_at=NOW)
    assert json.loads(report.render_json([with_plan], generated_at=NOW))["agents"][0]["benchmark"]["plan"] == PLAN
    assert report.power_short(PLAN) == "power 52 %; 57 cases for 80 %"
    unreachable = {**PLAN, "cases_needed": None}
    assert "no suite size reaches 80 % power" in report.render_markdown(
        [facts(benchmark={**facts()["benchmark"], "plan": unreachable})], generated_at=NOW)
    assert report.power_short(None) == ""


def test_json_and_html_carry_the_same_decision():
    data = json.loads(report.render_json([facts(), facts(agent="qa_agent", benchmark=None)], generated_at=NOW))
    assert data["all_go"] is False
    assert [(a["agent"], a["recommendation"]) for a in data["agents"]] == [("support_agent", "GO"), ("qa_agent", "NO-GO")]
    page = report.render_html([facts()], generated_at=NOW)
    assert "<strong>Recommendation: GO</strong>" in page and "<td>refunds</td>" in page and "<script" not in page
    assert page.startswith("<!doctype html><html lang='en'>") and accessibility_problems(page) == []


def _tags(refunds_wins: int, refunds_losses: int) -> dict:
    base = facts()["benchmark"]
    refunds = {**base["per_tag"][1], "wins": refunds_wins, "losses": refunds_losses, "ties": 12 - refunds_wins - refunds_losses}
    return facts(benchmark={**base, "per_tag": [base["per_tag"][0], refunds]})


def test_a_tag_is_regressed_only_when_its_losses_beat_chance_across_the_runs_tags():
    # 0 wins, 9 losses: one-sided sign test p = 1/512, Holm over the run's 2 tags: 0.004 < 5 %.
    judgement = report.judge(_tags(0, 9))
    assert judgement.decision == report.GO
    assert judgement.cautions == [
        "regressed on tag(s) refunds (-16.7 %, 0 wins / 9 losses, sign test p = 0.004 Holm-adjusted over 2 tags)"]
    assert "tags regressed (sign test, Holm, 5 %): refunds" in report.render_markdown([_tags(0, 9)], generated_at=NOW)
    # 1 win, 5 losses: p = 7/64 = 0.109 (0.219 adjusted): lower within chance, said so, no caution.
    assert report.judge(_tags(1, 5)).cautions == []
    text = report.render_markdown([_tags(1, 5)], generated_at=NOW)
    assert "tags regressed (sign test, Holm, 5 %): none; lower within chance: refunds" in text


def test_the_sign_test_and_holms_adjustment():
    assert report.sign_test_lower_p(wins=0, losses=5) == 1 / 32
    assert report.sign_test_lower_p(wins=3, losses=3) == 42 / 64
    assert report.sign_test_lower_p(wins=0, losses=0) == 1.0  # all ties: no evidence either way
    assert report.holm_adjusted([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert report.holm_adjusted([]) == []
    # Six tags: a tag needs at least 7 cases where the models differ, all losses, to be named (6 · 0.5^7 < 5 %).
    six = [{"tag": f"t{i}", "mean_delta": -0.1, "wins": 0, "losses": 6 if i == 0 else 1} for i in range(6)]
    assert report.tag_wins_and_regressions(six)[1] == []
    six[0]["losses"] = 7
    assert [tag["tag"] for tag in report.tag_wins_and_regressions(six)[1]] == ["t0"]


def test_the_false_caution_rate_is_measured_under_both_rules():
    """bench/launch/tag_cautions.py, small: the old rule named a tag on most uniformly better candidates."""
    from bench.launch import tag_cautions

    numbers = tag_cautions.measure(suites=150, seed=7)
    at_threshold = next(row for row in numbers["false_caution"] if row["improvement"] == 0.08)
    assert at_threshold["before"] > 0.5 and at_threshold["after"] <= 0.05


def test_a_running_rollouts_guardrails_are_dated_and_a_stale_or_missing_evaluation_is_a_caution():
    # The report shows a running rollout's guardrails as the latest guardrail evaluation stored them
    # (launch.selectors, experiments.holds.stored_evaluation), never as fresher than they are.
    running = {"experiment": "support-x", "status": "running", "stage_percent": 10,
               "guardrails": [{"metric": "success_rate", "state": "healthy"}], "relative_lift": 0.01,
               "evaluated_at": datetime(2026, 12, 7, 6, 58, tzinfo=UTC), "evaluation_stale": False}
    fresh = facts(rollout=running)
    assert report.judge(fresh).decision == report.GO and report.judge(fresh).cautions == []
    assert "- Rollout: support-x running at 10 %; guardrails as of 06:58 UTC (2 min ago)" in report.render_markdown(
        [fresh], generated_at=NOW)
    assert json.loads(report.render_json([fresh], generated_at=NOW))["agents"][0]["rollout"]["evaluated_at"].startswith(
        "2026-12-07 06:58")

    stale = facts(rollout={**running, "evaluated_at": datetime(2026, 12, 6, 21, 30, tzinfo=UTC), "evaluation_stale": True})
    assert report.judge(stale).decision == report.GO  # a caution: the evaluation is old, not bad
    assert report.judge(stale).cautions == [
        "the guardrails of support-x were last evaluated at 2026-12-06 21:30 UTC: stale — is the guardrail task running (beat, a worker)?"]
    assert "guardrails as of 2026-12-06 21:30 UTC (9.5 h ago)" in report.render_markdown([stale], generated_at=NOW)

    missing = facts(rollout={**running, "guardrails": None, "relative_lift": None, "evaluated_at": None, "evaluation_stale": False})
    assert report.judge(missing).decision == report.GO
    assert report.judge(missing).cautions == ["the guardrails of support-x have not been evaluated in its current stage yet"]
    assert "- Rollout: support-x running at 10 %; guardrails not evaluated in this stage yet" in report.render_markdown(
        [missing], generated_at=NOW)


def test_ages_are_said_in_the_unit_that_matters():
    from datetime import timedelta

    assert [report.age_text(timedelta(seconds=s)) for s in (-3, 0, 59, 60, 3599, 3600, 5400, 86399, 86400 * 3)] == [
        "0 s", "0 s", "59 s", "1 min", "59 min", "1.0 h", "1.5 h", "24.0 h", "3 d"]
