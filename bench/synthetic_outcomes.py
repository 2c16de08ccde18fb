"""Synthetic outcomes for the benches that read an experiment's outcome aggregate (bench/results,
bench/launch/board.py), written in SQL: one INSERT … SELECT over generate_series per experiment.

Call after django.setup() (the benches set up Django themselves)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from experiments.models import Experiment


def fill_outcomes(experiment: Experiment, *, outcomes: int, prefix: str) -> int:
    """Top up `experiment` (running, in its first stage) to `outcomes` synthetic outcomes: 10 % of them
    treatment's, which succeeds a little less (0.88 against 0.90) and is a little slower (+20 ms), every
    `g`-th from user `g mod 200 000` (so treatment has exactly a tenth of the users: no sample-ratio
    mismatch), event ids `<prefix><experiment id>-<g>`. Returns how many it inserted: none when the
    experiment has them already (a later run reuses them)."""
    from django.db import connection, transaction

    from experiments.models import OutcomeEvent

    have = OutcomeEvent.objects.filter(experiment=experiment).count()
    if have >= outcomes:
        return 0
    assert experiment.current_stage is not None  # a started experiment is in a stage
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO experiments_outcomeevent (event_id, agent_id, experiment_id, variant, user_id, model, success,
                latency_ms, input_tokens, output_tokens, quality, cost_usd, occurred_at, received_at)
            SELECT %(prefix)s || %(exp)s || '-' || g, %(agent)s, %(exp)s,
                   CASE WHEN g %% 10 = 0 THEN 'treatment' ELSE 'control' END,
                   'user-' || (g %% 200000),
                   CASE WHEN g %% 10 = 0 THEN %(treatment)s ELSE %(control)s END,
                   random() < CASE WHEN g %% 10 = 0 THEN 0.88 ELSE 0.90 END,
                   200 + random() * 600 + CASE WHEN g %% 10 = 0 THEN 20 ELSE 0 END,
                   100 + (random() * 500)::int, 50 + (random() * 300)::int,
                   random(), (random() * 0.0005)::numeric(14, 8),
                   %(start)s + (g || ' milliseconds')::interval, now()
            FROM generate_series(%(first)s, %(last)s) AS g
            ON CONFLICT (agent_id, event_id) DO NOTHING
            """,
            {"prefix": prefix, "exp": experiment.pk, "agent": experiment.agent_id, "treatment": experiment.treatment.model_id,
             "control": experiment.control.model_id, "start": experiment.current_stage.started_at,
             "first": have + 1, "last": outcomes},
        )
        cursor.execute("ANALYZE experiments_outcomeevent")
    return outcomes - have
