"""A year-old installation's tables, for bench/admin_scale/run.py: the five demo agents with their
running rollouts (bench/launch/board.py's world, its outcomes from bench/synthetic_outcomes.py) plus a
year of history written in SQL (INSERT … SELECT over generate_series, one statement a table):

at --scale 1 (production-sized)   600 ended experiments (4 stages, 3 approvals, 12 events each) and
                                  their 600 fine-tuned candidates, training files and fine-tuning jobs;
                                  2 000 000 outcomes (5 × 100 000 running, 1 500 000 ended), 1 000 000
                                  assignments, 1 000 000 ledger entries, 2 000 benchmark runs with ~150 000
                                  answers, 3 000 datasets with 6 000 audit runs, 5 000 budget alerts,
                                  2 000 API keys
at --scale 0.01 (the baseline)    a hundredth of each (at least one row of each kind)

Every timestamp lies in the last 365 days, in insertion order (as rows arrive), so BRIN and time
indexes see what a real table holds. VACUUM ANALYZE at the end.

Never writes into the database DATABASE_URL names: the world is built in `<that name>_admin_scale_<scale>`
beside it (`_1`, `_0_01`; bench/scratch.py), which is kept for bench/admin_scale/run.py — a fill takes
minutes — and reused: one that already holds the history is left alone. `dropdb` it when done. REDIS_URL
must be an index no one else uses (bench/scratch.py refuses one holding keys no bench made).

    DATABASE_URL=postgres://…/genesis REDIS_URL=redis://…/N .venv/bin/python bench/admin_scale/fill.py [--scale 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.scratch import require_scratch, scratch_database  # noqa: E402
from bench.targets import services_missing  # noqa: E402

SIZES = {  # rows at --scale 1
    "experiments": 600,
    "running_outcomes": 100_000,  # per running rollout (five)
    "ended_outcomes": 1_500_000,
    "assignments": 1_000_000,
    "cost_entries": 1_000_000,
    "benchmark_runs": 2_000,
    "datasets": 3_000,
    "budget_alerts": 5_000,
    "api_keys": 2_000,
}
MARK = "bench/admin_scale"  # the `reason` / `via` / `source` of every row written here
YEAR = "365 days"

# Each statement reads its sizes as %(name)s; `agents` and `baselines` are the five agents' ids and
# their live versions' ids, `suites` their benchmark suites', in the same order.
STATEMENTS: list[tuple[str, str]] = [
    ("fine-tuned candidates", """
        INSERT INTO models_app_modelversion (model_id, base_model, kind, status, reason, created_at, status_changed_at,
            agent_id, registered_by_id, provider_id)
        SELECT 'ft:open-mistral-7b:scale' || g || ':20260101:' || lpad(to_hex(g), 8, '0'), 'open-mistral-7b', 'fine_tuned',
               CASE WHEN g %% 3 = 0 THEN 'retired' ELSE 'rejected' END, %(mark)s, t, t,
               (%(agents)s::bigint[])[g %% 5 + 1], NULL, %(provider)s
        FROM generate_series(1, %(experiments)s) AS g,
             LATERAL (SELECT now() - interval '365 days' * (%(experiments)s - g + 1) / %(experiments)s AS t) AS at"""),
    ("training files", """
        INSERT INTO models_app_trainingfile (provider_file_id, filename, purpose, line_count, size_bytes, sha256,
            estimated_tokens, uploaded_at, agent_id, provider_id, uploaded_by_id, dataset_id)
        SELECT 'file-scale-' || mv.id, 'train-' || mv.id || '.jsonl', 'training', 2000, 900000, md5(mv.model_id) || md5(mv.model_id),
               400000, mv.created_at, mv.agent_id, mv.provider_id, %(admin)s, NULL
        FROM models_app_modelversion mv WHERE mv.reason = %(mark)s ORDER BY mv.id"""),
    ("fine-tuning jobs", """
        INSERT INTO models_app_finetuningjob (provider_job_id, base_model, hyperparameters, suffix, auto_start, status,
            provider_status, trained_tokens, estimated_cost_usd, cost_usd, cost_currency, cost_recorded_at, fine_tuned_model,
            events, checkpoints, provider_snapshot, last_error, provider_answer, budget_override_reason, created_at,
            submitted_at, started_at, finished_at, last_synced_at, updated_at, agent_id, created_by_id, model_version_id,
            provider_id, training_file_id, validation_file_id, audit_override_reason)
        SELECT 'ftjob-scale-' || mv.id, 'open-mistral-7b', '{"epochs": 1}', '', false, 'SUCCESS', 'SUCCESS', 400000, 3.2, 3.2,
               'USD', mv.created_at, mv.model_id, '[]', '[]', '{}', '', '', '', mv.created_at, mv.created_at, mv.created_at,
               mv.created_at, mv.created_at, mv.created_at, mv.agent_id, %(admin)s, mv.id, mv.provider_id, tf.id, NULL, ''
        FROM models_app_modelversion mv JOIN models_app_trainingfile tf ON tf.provider_file_id = 'file-scale-' || mv.id
        WHERE mv.reason = %(mark)s ORDER BY mv.id"""),
    ("ended experiments", """
        INSERT INTO experiments_experiment (key, description, status, seed, stage_plan, min_stage_hours, min_samples_per_arm,
            planned_samples_per_arm, guardrails, config_version, verdict_override_reason, created_at, started_at, ended_at,
            routing_changed_at, guardrail_states, guardrails_checked_at, agent_id, control_id, created_by_id, started_by_id,
            treatment_id, current_stage_id, stage_targets, data_deleted_at, stage_figures)
        SELECT 'scale-' || mv.id, %(mark)s, CASE WHEN mv.status = 'retired' THEN 'completed' ELSE 'rolled_back' END,
               md5(mv.model_id), '[10, 25, 50, 100]', 48, 150, 0, (SELECT guardrails FROM experiments_experiment
               WHERE key NOT LIKE 'scale-%%' LIMIT 1), 1, '', mv.created_at, mv.created_at, mv.created_at + interval '8 days',
               mv.created_at, '{}', NULL, mv.agent_id, (%(baselines)s::bigint[])[array_position(%(agents)s::bigint[], mv.agent_id)],
               %(admin)s, %(admin)s, mv.id, NULL, '{}', NULL, '{}'
        FROM models_app_modelversion mv WHERE mv.reason = %(mark)s ORDER BY mv.id"""),
    ("stages", """
        INSERT INTO experiments_experimentstage (index, percent, status, started_at, ended_at, experiment_id)
        SELECT s.i, (ARRAY[10, 25, 50, 100])[s.i + 1], CASE WHEN e.status = 'rolled_back' AND s.i = 3 THEN 'rolled_back' ELSE 'done' END,
               e.started_at + interval '2 days' * s.i, e.started_at + interval '2 days' * (s.i + 1), e.id
        FROM experiments_experiment e CROSS JOIN generate_series(0, 3) AS s(i) WHERE e.key LIKE 'scale-%%' ORDER BY e.id, s.i"""),
    ("current stages", """
        UPDATE experiments_experiment e SET current_stage_id = s.id FROM experiments_experimentstage s
        WHERE s.experiment_id = e.id AND s.index = 3 AND e.key LIKE 'scale-%%'"""),
    ("approvals", """
        INSERT INTO experiments_stageapproval (status, config_version, requested_at, note, decided_at, void_reason,
            decided_by_id, requested_by_id, stage_id)
        SELECT 'approved', 1, s.started_at - interval '1 hour', '', s.started_at, '', %(admin)s, %(admin)s, s.id
        FROM experiments_experimentstage s JOIN experiments_experiment e ON e.id = s.experiment_id
        WHERE e.key LIKE 'scale-%%' AND s.index > 0 ORDER BY s.id"""),
    ("experiment events", """
        INSERT INTO experiments_experimentevent (action, at, before, after, reason, reason_code, actor_id, experiment_id)
        SELECT (ARRAY['create', 'start', 'request', 'approval', 'request', 'approval', 'edit', 'guardrail_warning', 'request',
                      'approval', 'pause', CASE WHEN e.status = 'completed' THEN 'complete' ELSE 'rollback' END])[k],
               e.created_at + interval '16 hours' * k, '{"min_stage_hours": 24}', '{"min_stage_hours": 48}', '', '', %(admin)s, e.id
        FROM experiments_experiment e CROSS JOIN generate_series(1, 12) AS k WHERE e.key LIKE 'scale-%%' ORDER BY e.id, k"""),
    ("ended outcomes", """
        INSERT INTO experiments_outcomeevent (event_id, agent_id, experiment_id, variant, user_id, model, success, latency_ms,
            input_tokens, output_tokens, quality, cost_usd, occurred_at, received_at)
        SELECT 'scale-' || g, h.agent_id, h.id, CASE WHEN g %% 2 = 0 THEN 'treatment' ELSE 'control' END, 'user-' || (g %% 200000),
               'open-mistral-7b', random() < 0.9, 200 + random() * 600, 100 + (random() * 500)::int, 50 + (random() * 300)::int,
               random(), (random() * 0.0005)::numeric(14, 8), t, t
        FROM generate_series(1, %(ended_outcomes)s) AS g
        JOIN (SELECT row_number() OVER (ORDER BY id) - 1 AS i, id, agent_id FROM experiments_experiment
              WHERE key LIKE 'scale-%%') AS h ON h.i = (g - 1) * %(experiments)s / %(ended_outcomes)s,
             LATERAL (SELECT now() - interval '365 days' * (%(ended_outcomes)s - g + 1) / %(ended_outcomes)s AS t) AS at"""),
    ("assignments", """
        INSERT INTO experiments_assignment (user_id, variant, first_seen, experiment_id, stage_id)
        SELECT 'user-' || g, CASE WHEN g %% 2 = 0 THEN 'treatment' ELSE 'control' END, t, h.id, NULL
        FROM generate_series(1, %(assignments)s) AS g
        JOIN (SELECT row_number() OVER (ORDER BY id) - 1 AS i, id FROM experiments_experiment
              WHERE key LIKE 'scale-%%') AS h ON h.i = (g - 1) * %(experiments)s / %(assignments)s,
             LATERAL (SELECT now() - interval '365 days' * (%(assignments)s - g + 1) / %(assignments)s AS t) AS at"""),
    ("ledger entries", """
        INSERT INTO costs_costentry (amount_usd, operation, model, tokens, input_tokens, output_tokens, source_id, source,
            occurred_at, recorded_at, idempotency_key, note, actor_id, agent_id, reverses_id, source_type_id, tokens_estimated)
        SELECT (random() * 0.002)::numeric(12, 8),
               (ARRAY['inference', 'inference', 'inference', 'inference', 'inference', 'inference', 'benchmark', 'benchmark',
                      'storage', 'fine_tuning', 'manual', 'data_prep'])[g %% 12 + 1],
               'open-mistral-7b', 600, 400, 200, '', %(mark)s, t, t, 'scale:' || g, '', NULL, (%(agents)s::bigint[])[g %% 5 + 1],
               NULL, NULL, g %% 20 = 0
        FROM generate_series(1, %(cost_entries)s) AS g,
             LATERAL (SELECT now() - interval '365 days' * (%(cost_entries)s - g + 1) / %(cost_entries)s AS t) AS at"""),
    ("benchmark runs", """
        INSERT INTO models_app_benchmarkrun (suite_version, status, parameters, total_items, completed_items, estimated_cost_usd,
            cost_usd, verdict, comparison, error, requested_via, budget_override_reason, candidate_status_before, created_at,
            started_at, finished_at, agent_id, baseline_id, cancelled_by_id, candidate_id, requested_by_id, suite_id)
        SELECT 1, CASE WHEN g %% 10 = 0 THEN 'failed' ELSE 'completed' END, '{}', 2 * su.case_count, 2 * su.case_count, 0.01, 0.01,
               CASE WHEN g %% 10 = 0 THEN '' ELSE (ARRAY['PASS', 'FAIL', 'INCONCLUSIVE'])[g %% 3 + 1] END, NULL,
               CASE WHEN g %% 10 = 0 THEN 'provider timed out' ELSE '' END, %(mark)s, '', 'registered', t, t, t + interval '5 minutes',
               mv.agent_id, (%(baselines)s::bigint[])[array_position(%(agents)s::bigint[], mv.agent_id)], NULL, mv.id, %(admin)s, su.id
        FROM generate_series(1, %(benchmark_runs)s) AS g
        JOIN (SELECT row_number() OVER (ORDER BY id) - 1 AS i, id, agent_id FROM models_app_modelversion
              WHERE reason = %(mark)s) AS mv ON mv.i = (g - 1) * %(experiments)s / %(benchmark_runs)s
        JOIN models_app_benchmarksuite su ON su.id = (%(suites)s::bigint[])[array_position(%(agents)s::bigint[], mv.agent_id)],
             LATERAL (SELECT now() - interval '365 days' * (%(benchmark_runs)s - g + 1) / %(benchmark_runs)s AS t) AS at"""),
    ("benchmark answers", """
        INSERT INTO models_app_benchmarkresult (output, score, reason, error, finish_reason, latency_ms, prompt_tokens,
            completion_tokens, judge_prompt_tokens, judge_completion_tokens, cost_usd, cost_key, created_at, case_id,
            model_version_id, run_id, cost_posted_at, scored, tokens_estimated)
        SELECT 'an answer', random(), '', '', 'stop', 300, 200, 100, 0, 0, 0.0001, 'scale:' || r.id || ':' || m.id || ':' || c.id,
               r.created_at, c.id, m.id, r.id, r.created_at, true, false
        FROM models_app_benchmarkrun r JOIN models_app_benchmarkcase c ON c.suite_id = r.suite_id
        CROSS JOIN LATERAL (VALUES (r.candidate_id), (r.baseline_id)) AS m(id)
        WHERE r.requested_via = %(mark)s AND r.status = 'completed' ORDER BY r.id"""),
    ("datasets", """
        INSERT INTO audits_dataset (purpose, origin, status, file, original_name, size_bytes, line_count, sha256, via, created_at,
            parameters, result, achieved_mix, shortfall, progress, started_at, finished_at, attempts, error, agent_id,
            latest_audit_id, parent_id, uploaded_by_id)
        SELECT (ARRAY['training', 'validation', 'benchmark'])[g %% 3 + 1], 'upload', 'ready', 'datasets/scale-' || g || '.jsonl',
               'tickets-' || g || '.jsonl', 5085, 13, md5('d' || g) || md5('e' || g), %(mark)s, t, '{}', '{}', NULL, '', 1, t, t, 1,
               '', CASE WHEN g %% 7 = 0 THEN NULL ELSE (%(agents)s::bigint[])[g %% 5 + 1] END, NULL, NULL, %(admin)s
        FROM generate_series(1, %(datasets)s) AS g,
             LATERAL (SELECT now() - interval '365 days' * (%(datasets)s - g + 1) / %(datasets)s AS t) AS at"""),
    ("audit runs", """
        INSERT INTO audits_auditrun (status, progress, near_threshold, find_near_duplicates, via, created_at, started_at,
            finished_at, attempts, error, report, lines, valid, format_error_total, pii_total, duplicates_exact, duplicates_near,
            easy, medium, hard, has_findings, seconds, processes, requested_by_id, dataset_id)
        SELECT 'succeeded', 1, 0.8, true, %(mark)s, d.created_at + interval '1 minute' * k, d.created_at, d.created_at, 1, '',
               demo.report, demo.lines, demo.valid, demo.format_error_total, demo.pii_total, demo.duplicates_exact,
               demo.duplicates_near, demo.easy, demo.medium, demo.hard, (d.id + k) %% 2 = 0, 0.5, 1, %(admin)s, d.id
        FROM audits_dataset d CROSS JOIN generate_series(1, 2) AS k
        CROSS JOIN (SELECT * FROM audits_auditrun WHERE status = 'succeeded' AND via <> %(mark)s ORDER BY id LIMIT 1) AS demo
        WHERE d.via = %(mark)s ORDER BY d.id, k"""),
    ("latest audits", """
        UPDATE audits_dataset d SET latest_audit_id = a.id
        FROM (SELECT dataset_id, max(id) AS id FROM audits_auditrun GROUP BY dataset_id) AS a
        WHERE a.dataset_id = d.id AND d.via = %(mark)s"""),
    ("budget alerts", """
        INSERT INTO costs_budgetalert (period_key, period_start, threshold_percent, severity, budget_usd, spent_usd, created_at,
            delivery, delivery_attempts, deliveries, delivered_at, budget_id, triggered_by_id, delivery_claimed_at, kind, rearmed_at)
        SELECT 'scale-' || (g / 3), t, (ARRAY[25, 50, 83])[g %% 3 + 1], (ARRAY['warning', 'critical', 'emergency'])[g %% 3 + 1],
               30, 30 * (ARRAY[25, 50, 83])[g %% 3 + 1] / 100.0, t, 'delivered', 1, '[]', t, %(budget)s, NULL, NULL, 'threshold', NULL
        FROM generate_series(1, %(budget_alerts)s) AS g,
             LATERAL (SELECT now() - interval '365 days' * (%(budget_alerts)s - g + 1) / %(budget_alerts)s AS t) AS at"""),
    ("API keys", """
        INSERT INTO models_app_apikey (label, prefix, hashed_key, all_agents, created_at, last_used_at, revoked, revoked_at,
            created_by_id)
        SELECT 'scale key ' || g, left(md5('k' || g), 8), md5('k' || g) || md5('l' || g), g %% 4 = 0, t, t, g %% 5 = 0,
               CASE WHEN g %% 5 = 0 THEN t END, %(admin)s
        FROM generate_series(1, %(api_keys)s) AS g,
             LATERAL (SELECT now() - interval '365 days' * (%(api_keys)s - g + 1) / %(api_keys)s AS t) AS at"""),
    ("API keys' agents", """
        INSERT INTO models_app_apikey_agents (apikey_id, agent_id)
        SELECT k.id, (%(agents)s::bigint[])[k.id %% 5 + 1] FROM models_app_apikey k
        WHERE k.label LIKE 'scale key %%' AND NOT k.all_agents"""),
]


def database_suffix(scale: float) -> str:
    """The suffix of the scratch database of a scale (bench/scratch.py): `admin_scale_1`, `admin_scale_0_01`."""
    return f"admin_scale_{scale:g}".replace(".", "_")


def sizes(scale: float) -> dict[str, int]:
    return {name: max(1, round(rows * scale)) for name, rows in SIZES.items()}


def fill(scale: float) -> dict[str, int]:
    """The world at `scale` (see the module's docstring) in the scratch database (refused anywhere else:
    it starts every draft rollout and rewrites running rollouts' outcomes); returns the sizes it was built to."""
    from bench.launch.board import setup as running_rollouts

    require_scratch()
    wanted = sizes(scale)
    running_rollouts(wanted["running_outcomes"])  # seed_demo, five running rollouts with outcomes

    from django.contrib.auth import get_user_model
    from django.db import connection

    from costs.models import Budget
    from models_app.benchmarks.models import BenchmarkSuite
    from models_app.registry.models import Agent, ModelStatus, ModelVersion

    if Agent.objects.filter(versions__reason=MARK).exists():
        return wanted
    agents = list(Agent.objects.order_by("id"))
    live = {v.agent_id: v for v in ModelVersion.objects.filter(status=ModelStatus.LIVE)}
    suites = {s.agent_id: s.pk for s in BenchmarkSuite.objects.order_by("version")}
    admin, _ = get_user_model().objects.get_or_create(username="bench-board", defaults={"is_staff": True, "is_superuser": True})
    params: dict[str, Any] = {
        **wanted, "mark": MARK, "admin": admin.pk, "budget": Budget.objects.get(name="default").pk,
        "agents": [a.pk for a in agents], "baselines": [live[a.pk].pk for a in agents], "suites": [suites[a.pk] for a in agents],
        "provider": live[agents[0].pk].provider_id,
    }
    with connection.cursor() as cursor:
        # The running rollouts' outcomes arrived over the hour before now, not all this minute: the
        # agents' health windows (5 and 15 minutes) read a realistic share of them.
        cursor.execute("UPDATE experiments_outcomeevent SET received_at = now() - interval '1 hour' * (id %% 60) / 60.0 "
                       "WHERE experiment_id IN (SELECT id FROM experiments_experiment WHERE status = 'running')", [])
        for label, sql in STATEMENTS:
            started = time.perf_counter()
            cursor.execute(sql, params)
            print(f"{label}: {cursor.rowcount:,} rows in {time.perf_counter() - started:.1f} s", flush=True)
        started = time.perf_counter()
        cursor.execute("VACUUM ANALYZE")
        print(f"VACUUM ANALYZE in {time.perf_counter() - started:.1f} s")
    return wanted


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="1 is production-sized; 0.01 the baseline")
    args = parser.parse_args()
    if services_missing("the bench measures PostgreSQL's plans", redis=True):
        return 2
    started = time.perf_counter()
    with scratch_database(database_suffix(args.scale), keep=True, redis=True) as url:
        fill(args.scale)
    print(f"filled {url.rsplit('/', 1)[-1]} at scale {args.scale:g} in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
