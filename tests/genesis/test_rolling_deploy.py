"""A column added to an existing table while the release before it may still be running (a rolling
deploy, README "Upgrading") must not refuse that release's inserts. Django drops a field's Python
`default=` from the column once AddField has filled the table, so a NOT NULL column needs `db_default=`
too. experiments 0011 added Experiment.stage_figures without one: on an upgrade from the release before
it, the old web processes' "Start rollout" failed on the NOT NULL (and reported a key conflict) until
they were restarted. Measured by hand on a database filled by that release's code, then checked here."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings
from django.db import migrations
from django.db.migrations.loader import MigrationLoader
from django.db.models.fields import NOT_PROVIDED

from experiments.models import Experiment
from tests.experiments.factories import draft_experiment

# NOT NULL columns without a database default that landed before models_app 0013 (which dropped
# Agent.fallback_enabled): the code of any release without them reads that column, so it cannot run
# beside a migrated schema at all and an upgrade from it stops every process first (docs/runbooks/upgrade.md).
ADDED_BEFORE_A_FULL_STOP_WAS_NEEDED = {
    ("costs", "0006_alert_rearm_and_exhausted", "budgetalert", "kind"),
    ("costs", "0010_cost_report_resends", "costreport", "resends"),
    ("experiments", "0004_experiment_stage_targets", "experiment", "stage_targets"),
    ("launch", "0002_approval_notice_redelivery", "approvalnotice", "delivery_attempts"),
    ("launch", "0002_approval_notice_redelivery", "approvalnotice", "reminder_delivery_attempts"),
    ("models_app", "0005_benchmark_unscored_answers", "benchmarkresult", "scored"),
    ("models_app", "0006_benchmarkchunk_received_by", "benchmarkchunk", "received_by"),
    ("models_app", "0009_finetuning_audit_override", "finetuningjob", "audit_override_reason"),
    ("models_app", "0009_finetuning_audit_override", "historicalfinetuningjob", "audit_override_reason"),
}

# The release before experiments 0011: its Experiment model, as its code inserts rows.
STATE_BEFORE_STAGE_FIGURES = ("experiments", "0010_data_deletion_at_index")


def _project_migrations(loader: MigrationLoader):
    root = Path(settings.BASE_DIR).resolve()
    for key, migration in sorted(loader.disk_migrations.items()):
        path = Path(__import__(migration.__module__, fromlist=["_"]).__file__).resolve()
        # The checkout's own apps; a virtualenv inside the checkout (`make install`'s .venv) holds others'.
        if root in path.parents and "site-packages" not in path.parts:
            yield key, migration


def test_every_not_null_column_added_to_an_existing_table_has_a_database_default():
    loader = MigrationLoader(None, ignore_no_migrations=True)
    final = loader.project_state()
    missing = []
    for (app, name), migration in _project_migrations(loader):
        created_here = {op.name_lower for op in migration.operations if isinstance(op, migrations.CreateModel)}
        for op in migration.operations:
            if not isinstance(op, migrations.AddField) or op.field.null or op.field.many_to_many:
                continue
            if op.model_name_lower in created_here or (app, name, op.model_name_lower, op.name) in ADDED_BEFORE_A_FULL_STOP_WAS_NEEDED:
                continue
            field = final.apps.get_model(app, op.model_name)._meta.get_field(op.name)
            if field.db_default is NOT_PROVIDED:
                missing.append(f"{app}.{op.model_name}.{op.name} (added by {name})")
    assert not missing, f"NOT NULL columns without db_default (the release before them loses its inserts): {missing}"


@pytest.mark.django_db
def test_the_release_before_stage_figures_still_creates_experiments_on_the_migrated_schema():
    template = draft_experiment()
    old_state = MigrationLoader(None, ignore_no_migrations=True).project_state(STATE_BEFORE_STAGE_FIGURES)
    OldExperiment = old_state.apps.get_model("experiments", "Experiment")
    assert "stage_figures" not in {field.name for field in OldExperiment._meta.fields}
    values = {field.attname: getattr(template, field.attname) for field in OldExperiment._meta.concrete_fields if not field.primary_key}

    created = OldExperiment.objects.create(**{**values, "key": "qa_agent-created-by-the-release-before"})

    assert Experiment.objects.get(pk=created.pk).stage_figures == {}
