"""A model version's lineage: `GET /api/v1/models/{id}/lineage` scoped by API key, and its total
matching the ledger — the candidate's own entries and their reversals, nothing of other models."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db.models import Sum

from audits import services as audit_services
from audits.models import Dataset
from costs.models import CostEntry
from costs.services import cost_entry_reverse, cost_record
from experiments.services import experiment_rollback, experiment_start, stage_approve
from genesis.errors import Conflict
from launch.selectors import model_lineage
from models_app.finetuning.training_files import training_file_from_dataset, training_file_upload
from tests.experiments.factories import draft_experiment, feed, person
from tests.factories import UserFactory
from tests.models_app.finetuning_fixtures import DEMO_TRAINING_FILE, chat_lines, ft_simulator, ft_world  # noqa: F401

pytestmark = pytest.mark.django_db


def bearer(key: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {key}"}


def test_lineage_lists_stages_with_approvers_and_a_total_that_matches_the_ledger(client, api_key_for):
    starter = person("starter", "add_experiment", "start_experiment")
    approver = person("approver", "approve_stage")
    experiment = experiment_start(experiment=draft_experiment("qa_agent", actor=starter), actor=starter)
    feed(experiment, arm="treatment", n=20, success_rate=0.9, seed=1)
    feed(experiment, arm="control", n=180, success_rate=0.9, seed=2)
    stage_approve(stage=experiment.stages.get(percent=25), actor=approver)
    candidate, agent = experiment.treatment, experiment.agent
    root = UserFactory(username="root", is_superuser=True)
    mine = cost_record(agent=agent, operation="inference", idempotency_key="t1", amount_usd=Decimal("0.0013"),
                       model=candidate.model_id, actor=root)
    cost_record(agent=agent, operation="storage", idempotency_key="t2", amount_usd=Decimal("2"), model=candidate.model_id, actor=root)
    cost_record(agent=agent, operation="inference", idempotency_key="t3", amount_usd=Decimal("5"), model="open-mistral-7b", actor=root)
    cost_entry_reverse(entry=CostEntry.objects.get(idempotency_key="t2"), actor=root, reason="storage charged by mistake")

    response = client.get(f"/api/v1/models/{candidate.pk}/lineage", **bearer(api_key_for("qa_agent")))
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["model_version"]["model"] == candidate.model_id
    stages = {stage["percent"]: stage for stage in body["experiments"][0]["stages"]}
    assert stages[25]["status"] == "active" and stages[25]["approvals"][0]["approved_by"] == "approver"
    assert body["experiments"][0]["started_by"] == "starter"
    # $0.0013 inference + $2 storage − $2 reversed; the baseline's $5 is not this candidate's.
    assert body["total_cost_usd"] == "0.0013"
    assert body["costs"]["by_operation"] == {"inference": "0.0013", "storage": "0.00"}
    ledger = CostEntry.objects.filter(model=candidate.model_id).aggregate(total=Sum("amount_usd"))["total"]
    assert Decimal(body["total_cost_usd"]) == ledger == mine.amount_usd


def test_lineage_is_scoped_by_api_key(client, api_key_for):
    experiment = draft_experiment("qa_agent")
    draft_experiment("legal_agent")
    url = f"/api/v1/models/{experiment.treatment_id}/lineage"
    assert client.get(url, **bearer(api_key_for("legal_agent"))).status_code == 403
    assert client.get(url).status_code == 401
    assert client.get("/api/v1/models/999999/lineage", **bearer(api_key_for("qa_agent"))).status_code == 404
    assert client.get(url, **bearer(api_key_for(all_agents=True))).status_code == 200


def test_an_audited_dataset_becomes_the_training_file_and_the_lineage_reaches_its_audit(ft_world):  # noqa: F811
    root = UserFactory(username="root", is_superuser=True)
    dataset = audit_services.dataset_upload(
        content=SimpleUploadedFile("train.jsonl", DEMO_TRAINING_FILE.read_bytes()), original_name="train.jsonl",
        agent=ft_world.agent, actor=root,
    )
    with pytest.raises(Conflict, match="audit it first|is queued"):
        training_file_from_dataset(dataset=dataset, actor=root)  # its audit has not run yet
    audit_services.audit_run_execute(run_id=dataset.latest_audit_id)
    dataset.refresh_from_db()
    training_file = training_file_from_dataset(dataset=dataset, actor=root)
    assert training_file.dataset == dataset and training_file.sha256 == dataset.sha256

    # Bytes uploaded directly (the CLI's path) are audited on the way and kept as a dataset, so their
    # lineage reaches an audit too; the same bytes again reuse both.
    other = training_file_upload(agent=ft_world.agent, content=SimpleUploadedFile("v.jsonl", chat_lines(12)),
                                 filename="v.jsonl", purpose="validation", actor=root)
    assert other.dataset is not None and other.dataset.latest_audit.status == "succeeded"
    assert other.dataset.via == "fine-tuning upload by root" and other.dataset.sha256 == other.sha256
    again = training_file_upload(agent=ft_world.agent, content=SimpleUploadedFile("v.jsonl", chat_lines(12)),
                                 filename="v.jsonl", purpose="validation", actor=root)
    assert again.pk == other.pk and Dataset.objects.filter(sha256=other.sha256).count() == 1


def test_lineage_of_a_hand_registered_version_says_there_is_no_job():
    experiment = draft_experiment("qa_agent")
    lineage = model_lineage(version=experiment.treatment)
    assert lineage["fine_tuning_job"] is None and lineage["datasets"] == [] and lineage["benchmark_runs"] == []
    assert lineage["experiments"][0]["status"] == "draft" and lineage["total_cost_usd"] == "0.00"


def test_the_version_page_names_statuses_by_their_labels(client):
    # Was: "rolled_back" on the page (the API keeps the value).
    starter = person("starter", "add_experiment", "start_experiment", "rollback_experiment")
    experiment = experiment_start(experiment=draft_experiment("qa_agent", actor=starter), actor=starter)
    experiment_rollback(experiment=experiment, actor=starter, reason="complaints")
    client.force_login(UserFactory(username="root", is_superuser=True))
    lineage = client.get(f"/admin/models_app/modelversion/{experiment.treatment_id}/change/").content.decode()
    lineage = lineage[lineage.index('id="lineage"'):]
    assert "rolled_back" not in lineage and "qa_agent-exp</a> — rolled back" in lineage
    assert model_lineage(version=experiment.treatment)["experiments"][0]["status"] == "rolled_back"


def test_a_candidates_costs_are_read_through_the_ledgers_indexes():
    """Scale review: the candidate's entries and their reversals were one query whose OR joined every
    entry to the one it reverses, so PostgreSQL read the whole ledger (0.5 s a version at a million
    entries, on the version page, the board and the report). With sequential scans priced out, the plan
    of the entries' query looks them up by model id (costs_entry_model), as it does on a big ledger."""
    import re

    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext

    from launch.selectors import candidate_costs

    starter = person("starter", "add_experiment", "start_experiment")
    experiment = experiment_start(experiment=draft_experiment("qa_agent", actor=starter), actor=starter)
    candidate = experiment.treatment
    root = UserFactory(username="root", is_superuser=True)
    cost_record(agent=experiment.agent, operation="storage", idempotency_key="s1", amount_usd=Decimal("2"),
                model=candidate.model_id, actor=root)
    cost_entry_reverse(entry=CostEntry.objects.get(idempotency_key="s1"), actor=root, reason="charged twice")
    cost_record(agent=experiment.agent, operation="inference", idempotency_key="i1", amount_usd=Decimal("0.25"),
                model=candidate.model_id, actor=root)
    with CaptureQueriesContext(connection) as captured:
        costs = candidate_costs(version=candidate)
    assert costs == {"storage": Decimal("0"), "inference": Decimal("0.25"), "total": Decimal("0.25")}
    ledger_reads = [query["sql"] for query in captured if "costs_costentry" in query["sql"]]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"EXPLAIN {ledger_reads[0]}")
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert re.search(r"Cond: .*\(model\)::text = ", plan), plan
