"""POST /api/v1/audits/datasets (multipart upload; the audit is queued) and GET /api/v1/audits/runs/{id}
and /audits/datasets/{id}: the JSON report once the run has succeeded, and the same key/agent checks
as every other endpoint (401 no key, 403 acting for another agent, 404 unknown — or another agent's data —, 422 bad input)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from audits import services
from audits.models import AuditStatus, Dataset
from audits.pii import PII_TYPES
from tests.audits.samples import PLANTED, chat_line, sentence_with
from tests.factories import AgentFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return Path(settings.MEDIA_ROOT)


@pytest.fixture
def agents(db):
    return AgentFactory(slug="qa_agent"), AgentFactory(slug="legal_agent")


def bearer(key: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {key}"}


def body() -> bytes:
    lines = [chat_line(sentence_with(value)) for values in PLANTED.values() for value in values]
    return ("\n".join(lines) + "\n").encode()


def post_dataset(client, key: str, **fields):
    data = {"file": SimpleUploadedFile("train.jsonl", body(), content_type="application/jsonl"), **fields}
    return client.post("/api/v1/audits/datasets", data, **bearer(key))


def test_upload_stores_the_dataset_and_queues_its_audit(client, agents, api_key_for, media_root):
    key = api_key_for("qa_agent")
    response = post_dataset(client, key, agent="qa_agent", purpose="validation", near_threshold="0.7")
    assert response.status_code == 201, response.content
    answer = response.json()
    dataset = Dataset.objects.get(pk=answer["id"])
    run = dataset.latest_audit
    assert answer == {
        "id": dataset.pk, "name": "train.jsonl", "agent": "qa_agent", "purpose": "validation", "origin": "upload",
        "parent": None, "status": "ready", "size_bytes": len(body()), "lines": dataset.line_count, "sha256": dataset.sha256,
        "created_at": answer["created_at"], "achieved_mix": None, "shortfall": "",
        "latest_audit": {"id": run.pk, "status": "queued", "progress": 0.0, "url": f"/api/v1/audits/runs/{run.pk}"},
    }
    assert (run.near_threshold, dataset.uploaded_by, dataset.via) == (0.7, None, f"api key 'test qa_agent' (#{dataset_key_id(key)})")
    assert (media_root / dataset.file.name).read_bytes() == body()


def dataset_key_id(raw_key: str) -> int:
    from models_app.registry.services import api_key_authenticate

    return api_key_authenticate(raw_key=raw_key).key_id


def test_upload_checks_the_key_and_the_input(client, agents, api_key_for):
    qa_key = api_key_for("qa_agent")
    assert post_dataset(client, "gk_nonsense", agent="qa_agent").status_code == 401
    other = post_dataset(client, qa_key, agent="legal_agent")
    assert other.status_code == 403 and other.json()["detail"] == "API key 'test qa_agent' may not act for agent 'legal_agent'"
    unknown = post_dataset(client, qa_key, agent="ghost_agent")  # 404 to every key (CONTRACT)
    assert unknown.status_code == 404
    unknown = post_dataset(client, api_key_for(all_agents=True), agent="ghost_agent")
    assert unknown.status_code == 404 and unknown.json()["detail"] == "agent 'ghost_agent' does not exist"
    nobody = post_dataset(client, qa_key)
    assert nobody.status_code == 403 and "name the dataset's agent in the form field 'agent'" in nobody.json()["detail"]
    purpose = post_dataset(client, qa_key, agent="qa_agent", purpose="exam")
    assert purpose.status_code == 422 and purpose.json()["detail"] == "purpose: Input should be 'training', 'validation' or 'benchmark'"
    missing = client.post("/api/v1/audits/datasets", {"agent": "qa_agent"}, **bearer(qa_key))
    assert missing.status_code == 422 and missing.json()["errors"][0]["field"].startswith("file")
    assert not Dataset.objects.exists()
    # A key for all agents may keep a dataset that belongs to none.
    assert post_dataset(client, api_key_for(all_agents=True)).json()["agent"] is None


def test_run_answers_with_the_report_once_it_has_succeeded(client, agents, api_key_for):
    key = api_key_for("qa_agent")
    dataset_id = post_dataset(client, key, agent="qa_agent").json()["id"]
    run_id = Dataset.objects.get(pk=dataset_id).latest_audit_id
    queued = client.get(f"/api/v1/audits/runs/{run_id}", **bearer(key)).json()
    assert (queued["status"], queued["report"], queued["has_findings"]) == ("queued", None, None)

    services.audit_run_execute(run_id=run_id)
    response = client.get(f"/api/v1/audits/runs/{run_id}", **bearer(key))
    assert response.status_code == 200
    answer = response.json()
    assert (answer["status"], answer["progress"], answer["dataset"], answer["has_findings"]) == (AuditStatus.SUCCEEDED, 1.0, dataset_id, True)
    report = answer["report"]
    assert {"lines", "valid", "format_errors", "pii", "duplicates", "difficulty"} <= set(report)
    assert report["pii"] == {t: len(PLANTED[t]) for t in PII_TYPES}
    # In the order the command prints, though Postgres stores JSON objects with their keys re-sorted.
    assert list(report)[:6] == ["lines", "valid", "format_errors", "pii", "duplicates", "difficulty"]
    assert list(report["pii"]) == list(PII_TYPES) and list(report["difficulty"]) == ["easy", "medium", "hard"]
    text = response.content.decode()
    for values in PLANTED.values():
        for value in values:
            assert value not in text and json.dumps(value)[1:-1] not in text
    detail = client.get(f"/api/v1/audits/datasets/{dataset_id}", **bearer(key)).json()
    assert detail["latest_audit"] == {"id": run_id, "status": "succeeded", "progress": 1.0, "url": f"/api/v1/audits/runs/{run_id}"}


def test_runs_and_datasets_of_other_agents_answer_404_as_if_they_did_not_exist(client, agents, api_key_for):
    legal_key, qa_key = api_key_for("legal_agent"), api_key_for("qa_agent")
    dataset_id = post_dataset(client, legal_key, agent="legal_agent").json()["id"]
    run_id = Dataset.objects.get(pk=dataset_id).latest_audit_id
    hidden = client.get(f"/api/v1/audits/runs/{run_id}", **bearer(qa_key))
    assert hidden.status_code == 404 and hidden.json()["detail"] == f"audit run #{run_id} does not exist"
    hidden = client.get(f"/api/v1/audits/datasets/{dataset_id}", **bearer(qa_key))
    assert hidden.status_code == 404 and hidden.json()["detail"] == f"dataset #{dataset_id} does not exist"
    assert client.get(f"/api/v1/audits/runs/{run_id}", **bearer(legal_key)).status_code == 200
    gone = client.get("/api/v1/audits/runs/987654", **bearer(qa_key))
    assert gone.status_code == 404 and gone.json()["detail"] == "audit run #987654 does not exist"
    assert client.get("/api/v1/audits/datasets/987654", **bearer(qa_key)).status_code == 404
    unowned = services.dataset_upload(content=SimpleUploadedFile("u.jsonl", body()), original_name="u.jsonl")
    assert client.get(f"/api/v1/audits/datasets/{unowned.pk}", **bearer(qa_key)).status_code == 404
    assert client.get(f"/api/v1/audits/datasets/{unowned.pk}", **bearer(api_key_for(all_agents=True))).status_code == 200


def test_the_list_holds_the_datasets_the_key_may_see_newest_first(client, agents, api_key_for):
    legal_key, qa_key, every_key = api_key_for("legal_agent"), api_key_for("qa_agent"), api_key_for(all_agents=True)
    first = post_dataset(client, legal_key, agent="legal_agent").json()["id"]
    second = post_dataset(client, legal_key, agent="legal_agent").json()["id"]
    other = post_dataset(client, qa_key, agent="qa_agent").json()["id"]
    unowned = services.dataset_upload(content=SimpleUploadedFile("u.jsonl", body()), original_name="u.jsonl").pk
    listed = client.get("/api/v1/audits/datasets", **bearer(legal_key))
    assert listed.status_code == 200 and [row["id"] for row in listed.json()] == [second, first]
    assert listed.json()[0]["latest_audit"]["url"].startswith("/api/v1/audits/runs/")
    assert [row["id"] for row in client.get("/api/v1/audits/datasets", **bearer(every_key)).json()] == [unowned, other, second, first]
    narrowed = client.get("/api/v1/audits/datasets?agent=qa_agent&limit=1", **bearer(every_key)).json()
    assert [row["id"] for row in narrowed] == [other]
    assert client.get("/api/v1/audits/datasets?agent=qa_agent", **bearer(legal_key)).status_code == 403
    assert client.get("/api/v1/audits/datasets?limit=0", **bearer(legal_key)).status_code == 422
    assert client.get("/api/v1/audits/datasets").status_code == 401


def test_an_upload_over_the_size_limit_is_refused_naming_the_limit(client, agents, api_key_for, settings):
    # Refused while Django reads the body (genesis/uploads.py; tests/genesis/test_uploads.py), not by the
    # service after the whole file was stored: 413, as every body too large.
    settings.AUDIT_MAX_UPLOAD_BYTES = 1024
    response = post_dataset(client, api_key_for("qa_agent"), agent="qa_agent")
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    assert response.json()["detail"].startswith("file: the upload is larger than the limit of 1 KiB (AUDIT_MAX_UPLOAD_BYTES")
    assert not Dataset.objects.exists()
