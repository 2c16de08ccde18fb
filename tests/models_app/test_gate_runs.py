"""The gate on real runs (Postgres, the simulator over HTTP, the chunk service called in-process): a
baseline that scores on few cases, suites below the minimum size, and scorer specifications that
cannot be used, as the API and the commands report them."""

from __future__ import annotations

import json

import pytest

from models_app.benchmarks.ledger import benchmark_run_post_all_costs
from models_app.benchmarks.models import BenchmarkCase, BenchmarkChunk, BenchmarkResult, BenchmarkRun
from models_app.benchmarks.runner import benchmark_chunk_execute
from models_app.benchmarks.services import benchmark_run_create, benchmark_suite_import
from models_app.management.commands._benchmark_cli import json_object
from models_app.registry.models import Agent, ModelVersion
from models_app.simulator.markers import format_answer_marker
from tests.models_app.conftest import point_demo_provider_at

pytestmark = pytest.mark.django_db
URL = "/api/v1/benchmarks/runs"
# The fine-tune always gives a marked case's answer, the base never does.
PERFECT_FINE_TUNE = {"ft:*": 1.0, "*": 0.0}


def marked_case(key: str, *, answer: str, reference: str) -> str:
    """A case whose prompt tells the simulator `answer` (the fine-tune says it, the base says "Maybe")."""
    prompt = f"Question {key}? {format_answer_marker(answer, ['Maybe'])}"
    return json.dumps({"id": key, "messages": [{"role": "user", "content": prompt}], "reference": reference,
                       "scorer": {"name": "exact"}, "tags": ["marked"]})


def free_case(key: str) -> str:
    """A case both models pass: any reply will do."""
    return json.dumps({"id": key, "messages": [{"role": "user", "content": f"Say anything about {key}."}],
                       "scorer": {"name": "length", "min_chars": 1}, "tags": ["free"]})


def run_to_the_end(run: BenchmarkRun) -> BenchmarkRun:
    """Do the workers' job in this process: every chunk, then the costs (the last chunk decides the verdict)."""
    for chunk in BenchmarkChunk.objects.filter(run=run).order_by("index"):
        benchmark_chunk_execute(chunk_id=chunk.pk, worker="inline@test")
    benchmark_run_post_all_costs(run_id=run.pk)
    run.refresh_from_db()
    return run


def bearer(key: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {key}"}


def test_a_baseline_right_on_2_of_30_cases_passes_and_the_api_reports_a_null_interval(
    seeded_demo, simulator_factory, client, api_key_for
):
    point_demo_provider_at(simulator_factory(quality=PERFECT_FINE_TUNE), rate_limit_per_minute=60_000)
    agent = Agent.objects.get(slug="qa_agent")
    # Both right on 2 cases; only the fine-tune on 18; neither on 10 (the reference is not the marked answer).
    lines = ([free_case(f"both{n}") for n in range(2)]
             + [marked_case(f"ft{n}", answer="Yes", reference="Yes") for n in range(18)]
             + [marked_case(f"none{n}", answer="Yes", reference="No") for n in range(10)])
    suite = benchmark_suite_import(agent=agent, slug="sparse-baseline", lines=lines).suite

    run = run_to_the_end(benchmark_run_create(agent=agent, suite=suite))

    comparison = run.comparison
    assert run.verdict == "PASS", comparison["reasons"]
    assert (comparison["baseline_mean"], comparison["candidate_mean"]) == (round(2 / 30, 6), round(20 / 30, 6))
    assert comparison["relative_improvement"] == pytest.approx(9.0)
    # Resamples that miss both baseline hits make the upper end +inf: no half-open [lo, null] is stored.
    assert comparison["ci_low"] is None and comparison["ci_high"] is None
    assert any("no finite end" in reason for reason in comparison["reasons"])

    key = bearer(api_key_for("qa_agent"))
    detail = client.get(f"{URL}/{run.pk}", **key)
    assert detail.status_code == 200, detail.content
    assert detail.json()["ci95"] is None and detail.json()["verdict"] == "PASS"
    listing = client.get(URL, **key)
    assert listing.status_code == 200 and [r["ci95"] for r in listing.json()] == [None]
    printed = json.dumps(json_object(run), allow_nan=False)  # what `benchmark_finetuned --json` prints
    assert json.loads(printed)["ci95"] is None

    # A run decided before the fix holds one end only; it is reported as null too, not as a 500.
    BenchmarkRun.objects.filter(pk=run.pk).update(comparison={**comparison, "ci_low": 3.0, "ci_high": None})
    again = client.get(f"{URL}/{run.pk}", **key)
    assert again.status_code == 200 and again.json()["ci95"] is None


def test_a_suite_below_the_minimum_is_inconclusive_until_the_setting_allows_it(seeded_demo, simulator_factory, settings):
    point_demo_provider_at(simulator_factory(quality=PERFECT_FINE_TUNE), rate_limit_per_minute=60_000)
    agent = Agent.objects.get(slug="qa_agent")
    suite = benchmark_suite_import(
        agent=agent, slug="two-cases", lines=[marked_case(f"q{n}", answer="Yes", reference="Yes") for n in range(2)]
    ).suite
    assert settings.BENCHMARK_MIN_CASES == 20  # the default

    small = run_to_the_end(benchmark_run_create(agent=agent, suite=suite))

    assert small.parameters["min_cases"] == 20  # frozen with the run, like the threshold
    assert small.verdict == "INCONCLUSIVE" and small.comparison["more_cases_needed"] == 18
    assert small.comparison["reasons"][0].startswith("only 2 paired case(s): the gate needs at least 20 to decide")
    candidate = ModelVersion.objects.get(pk=small.candidate_id)
    assert candidate.status == "registered"
    assert "only 2 paired case(s)" in candidate.history.order_by("-history_date").first().history_change_reason

    settings.BENCHMARK_MIN_CASES = 2
    allowed = run_to_the_end(benchmark_run_create(agent=agent, suite=suite))
    assert allowed.verdict == "PASS", allowed.comparison["reasons"]


def test_a_stored_scorer_specification_that_cannot_be_used_is_a_scorer_error_for_its_case_only(
    seeded_demo, simulator_factory
):
    point_demo_provider_at(simulator_factory(quality=PERFECT_FINE_TUNE), rate_limit_per_minute=60_000)
    agent = Agent.objects.get(slug="qa_agent")
    suite = benchmark_suite_import(
        agent=agent, slug="stale-spec", lines=[free_case("ok"), free_case("stale")]
    ).suite
    # A case imported before the checks existed: the import would refuse this schema today.
    BenchmarkCase.objects.filter(suite=suite, key="stale").update(
        scorer={"name": "json_schema", "schema": {"type": "number", "minimum": "5"}}
    )

    run = run_to_the_end(benchmark_run_create(agent=agent, suite=suite))

    assert run.status == "completed" and run.error == ""
    stale = BenchmarkResult.objects.filter(run=run, case__key="stale")
    assert stale.count() == 2 and {r.score for r in stale} == {0.0}
    assert {r.reason for r in stale} == {"scorer error: schema: #/minimum: '5' is not of type 'number'"}
    assert {r.score for r in BenchmarkResult.objects.filter(run=run, case__key="ok")} == {1.0}


# ---- issue 14: the rule, the seed and the plan of a run --------------------------------------------------------


def test_a_run_stores_the_rule_and_a_seed_from_its_id_and_its_page_shows_them_with_the_suites_power(
    seeded_demo, simulator_factory, admin_client, settings
):
    from django.urls import reverse

    from models_app.benchmarks.stats import run_seed

    point_demo_provider_at(simulator_factory(), rate_limit_per_minute=60_000)
    agent = Agent.objects.get(slug="legal_agent")
    suite_url = reverse("admin:models_app_benchmarksuite_change", args=[agent.benchmark_suites.get().pk])
    before = admin_client.get(suite_url).content.decode()
    assert "Cases needed (80 % power)" in before and "assumed per-case delta SD 0.40" in before

    first = run_to_the_end(benchmark_run_create(agent=agent))
    assert settings.BENCHMARK_GATE_RULE == "at_least_threshold"  # the default
    assert first.parameters["gate_rule"] == first.comparison["rule"] == "at_least_threshold"
    assert first.parameters["bootstrap_seed"] == first.comparison["seed"] == run_seed(run_id=first.pk)
    assert first.parameters["bootstrap_resamples"] == 10_000 and first.comparison["resamples"] >= 10_000
    assert first.comparison["mc_se_low"] > 0 and first.comparison["plan"]["current_cases"] == 32
    page = admin_client.get(reverse("admin:models_app_benchmarkrun_change", args=[first.pk])).content.decode()
    assert "<code>at_least_threshold</code> (applied)" in page and "confident the improvement is at least" in page
    assert f"seed {first.comparison['seed']} (derived from the run)" in page
    assert "paired cases give 80 % power to PASS" in page and "measured on these 32 cases" in page

    # The suite page now plans from the spread this run measured.
    after = admin_client.get(suite_url).content.decode()
    assert f"measured by run #{first.pk} (32 cases)" in after

    # The candidate was approved; change the setting and benchmark it again: a new seed, the other rule.
    settings.BENCHMARK_GATE_RULE = "improves_and_reaches"
    second = run_to_the_end(benchmark_run_create(agent=agent))
    assert second.comparison["rule"] == "improves_and_reaches" and second.comparison["seed"] != first.comparison["seed"]
    page = admin_client.get(reverse("admin:models_app_benchmarkrun_change", args=[second.pk])).content.decode()
    assert "<code>improves_and_reaches</code> (applied)" in page
    printed = json_object(second)  # what `benchmark_finetuned --json` prints
    assert printed["gate"]["rule"] == "improves_and_reaches" and printed["gate"]["plan"]["cases_needed"] > 0
    assert printed["ci95"] == [second.comparison["ci_low"], second.comparison["ci_high"]]


def test_the_gate_rule_and_resamples_come_from_the_environment_and_are_checked():
    from genesis.config.loader import ConfigError, load_config

    environ = {"DATABASE_URL": "postgres://x/y"}
    default = load_config(env_name="dev", environ=environ).benchmarks
    assert (default.gate_rule, default.bootstrap_resamples) == ("at_least_threshold", 10_000)
    chosen = load_config(env_name="production", environ={**environ, "BENCHMARK_GATE_RULE": "improves_and_reaches",
                                                            "REDIS_URL": "redis://x", "GENESIS_ALLOWED_HOSTS": "h"})
    assert chosen.benchmarks.gate_rule == "improves_and_reaches"
    with pytest.raises(ConfigError) as exc:
        load_config(env_name="dev", environ={**environ, "BENCHMARK_GATE_RULE": "sometimes"})
    assert "dev.yaml: benchmarks.gate_rule (from BENCHMARK_GATE_RULE):" in str(exc.value)


# ---- review F5: re-running an INCONCLUSIVE candidate spends alpha -------------------------------------------


def test_each_rerun_of_a_candidate_on_a_suite_reads_a_wider_interval_and_says_which_run_it_is(
    seeded_demo, simulator_factory, admin_client
):
    from django.urls import reverse

    from models_app.benchmarks.reruns import ZETA_3

    point_demo_provider_at(simulator_factory(quality=PERFECT_FINE_TUNE), rate_limit_per_minute=60_000)
    agent = Agent.objects.get(slug="qa_agent")
    # Both right on 10 cases, only the fine-tune on 3, neither on 17: +30 %, but 3 wins of 30 decide nothing.
    lines = ([free_case(f"both{n}") for n in range(10)]
             + [marked_case(f"ft{n}", answer="Yes", reference="Yes") for n in range(3)]
             + [marked_case(f"none{n}", answer="Yes", reference="No") for n in range(17)])
    suite = benchmark_suite_import(agent=agent, slug="few-wins", lines=lines).suite

    first = run_to_the_end(benchmark_run_create(agent=agent, suite=suite))
    assert first.verdict == "INCONCLUSIVE", first.comparison["reasons"]
    assert first.parameters["run_number"] == first.comparison["run_number"] == 1
    assert first.comparison["alpha"] == pytest.approx(0.05 / ZETA_3, abs=1e-6)
    candidate = ModelVersion.objects.get(pk=first.candidate_id)
    assert candidate.status == "registered"  # INCONCLUSIVE: it may be benchmarked again

    second = run_to_the_end(benchmark_run_create(agent=agent, suite=suite, candidate=candidate))
    assert second.verdict == "INCONCLUSIVE"
    assert second.parameters["run_number"] == second.comparison["run_number"] == 2
    assert second.comparison["alpha"] == pytest.approx(0.05 / (ZETA_3 * 8), abs=1e-6)
    assert second.comparison["confidence"] == pytest.approx(1 - 0.05 / (ZETA_3 * 8), abs=1e-6)
    assert second.comparison["ci_low"] < first.comparison["ci_low"]
    assert second.comparison["ci_high"] > first.comparison["ci_high"]
    assert any(reason.startswith("run 2 of this candidate on this suite: its interval is read at 99.48 %")
               for reason in second.comparison["reasons"])

    # What the command and the admin page show.
    printed = json_object(second)
    assert printed["gate"]["run_number"] == 2 and printed["gate"]["alpha"] == second.comparison["alpha"]
    assert printed["ci95"] == [second.comparison["ci_low"], second.comparison["ci_high"]]
    page = admin_client.get(reverse("admin:models_app_benchmarkrun_change", args=[second.pk])).content.decode()
    assert "run 2 of this candidate on this suite: interval at 99.48 %" in page
    # The rule as applied: at the run's own level, with FAIL's one more win (it said "95 %" before 2026-12-07).
    assert printed["gate"]["rule_text"].startswith("confident the improvement is at least the threshold: on the 99.48 % interval")
    assert "one more case where the candidate is right and the baseline wrong" in printed["gate"]["rule_text"]
    assert "95 %" not in printed["gate"]["rule_text"]
    assert "on the 99.48 % interval" in page and "on the 95 % interval" not in page

    # A new version of the same suite continues the count; another suite starts its own.
    reimported = benchmark_suite_import(agent=agent, slug="few-wins", lines=lines + [free_case("both-extra")]).suite
    assert reimported.pk != suite.pk
    third = benchmark_run_create(agent=agent, suite=reimported, candidate=candidate)
    assert third.parameters["run_number"] == 3
    third = run_to_the_end(third)
    other = benchmark_suite_import(agent=agent, slug="other-suite", lines=lines).suite
    assert run_to_the_end(benchmark_run_create(agent=agent, suite=other, candidate=candidate)).parameters["run_number"] == 1


def test_a_cancelled_run_is_not_counted_and_a_run_decided_before_reruns_spent_alpha_keeps_95(
    seeded_demo, simulator_factory
):
    from models_app.benchmarks.selectors import benchmark_run_gate
    from models_app.benchmarks.services import benchmark_run_cancel

    point_demo_provider_at(simulator_factory(quality=PERFECT_FINE_TUNE), rate_limit_per_minute=60_000)
    agent = Agent.objects.get(slug="qa_agent")
    suite = benchmark_suite_import(agent=agent, slug="cancelled", lines=[free_case(f"c{n}") for n in range(4)]).suite
    cancelled = benchmark_run_create(agent=agent, suite=suite)
    benchmark_run_cancel(run=cancelled, actor=None, reason="test")
    candidate = ModelVersion.objects.get(pk=cancelled.candidate_id)
    assert benchmark_run_create(agent=agent, suite=suite, candidate=candidate).parameters["run_number"] == 1

    # A run stored before this change: no run_number, decided at the full 95 %.
    old = BenchmarkRun.objects.filter(suite=suite).exclude(pk=cancelled.pk).get()
    BenchmarkRun.objects.filter(pk=old.pk).update(parameters={k: v for k, v in old.parameters.items() if k != "run_number"})
    old = run_to_the_end(BenchmarkRun.objects.get(pk=old.pk))
    assert old.comparison["run_number"] is None and old.comparison["confidence"] == 0.95
    gate = benchmark_run_gate(run=old)
    assert gate.run_number is None and gate.rerun_text.startswith("one look at the full α")
