"""HTTP endpoints of the audits app, mounted under /api/v1 by genesis/api.py.

An API key acts for agents: it may upload a dataset for an agent it may act for, and list and read
the datasets and audits of those agents; any other dataset or audit answers 404, as if it did not
exist. A dataset with no agent belongs to no one agent, so only a key allowed for all agents may
upload or read it. Keys are not people: the upload service checks the key
(`principal`) against the agent, and the row remembers which key it came from (`via`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from django.http import HttpRequest
from ninja import File, Form, Query, Router, Schema, Status
from ninja.files import UploadedFile

from audits import selectors, services
from audits.dedupe import DEFAULT_THRESHOLD, MIN_THRESHOLD
from audits.models import AuditRun, Dataset
from genesis.errors import NotFound
from genesis.validation import ObjectId, Slug, check_text, refuse_repeated_form_fields
from models_app.registry.models import Agent
from models_app.registry.services import ApiPrincipal, ensure_agent_access, request_principal

router = Router(tags=["audits"])


class AuditRunBrief(Schema):
    id: int
    status: str
    progress: float
    url: str


class DatasetOut(Schema):
    id: int
    name: str
    agent: str | None
    purpose: str
    origin: str
    parent: int | None
    status: str
    size_bytes: int
    lines: int
    sha256: str
    created_at: datetime
    achieved_mix: dict[str, float] | None = None
    shortfall: str = ""
    latest_audit: AuditRunBrief | None


class AuditRunOut(Schema):
    id: int
    dataset: int
    status: str
    progress: float
    near_threshold: float
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str
    has_findings: bool | None
    report: dict[str, Any] | None



def _via(principal: ApiPrincipal) -> str:
    return f"api key '{principal.label}' (#{principal.key_id})"


def _visible(principal: ApiPrincipal, dataset: Dataset) -> bool:
    """Whether the key may read `dataset`: one of its agents', or — with no agent — any, for a key for all agents."""
    return principal.may_act_for(dataset.agent.slug) if dataset.agent is not None else principal.all_agents


def _run_brief(run: AuditRun | None) -> dict[str, Any] | None:
    if run is None:
        return None
    return {"id": run.pk, "status": run.status, "progress": run.progress, "url": f"/api/v1/audits/runs/{run.pk}"}


def _dataset_out(dataset: Dataset) -> dict[str, Any]:
    return {
        "id": dataset.pk, "name": dataset.original_name, "agent": dataset.agent.slug if dataset.agent is not None else None,
        "purpose": dataset.purpose, "origin": dataset.origin, "parent": dataset.parent_id, "status": dataset.status,
        "size_bytes": dataset.size_bytes, "lines": dataset.line_count, "sha256": dataset.sha256,
        "created_at": dataset.created_at, "achieved_mix": selectors.ordered_mix(dataset.achieved_mix), "shortfall": dataset.shortfall,
        "latest_audit": _run_brief(dataset.latest_audit),
    }


Purpose = Literal["training", "validation", "benchmark"]
UPLOAD_FIELDS = ("file", "agent", "purpose", "near_threshold")




@router.post(
    "/audits/datasets",
    response={201: DatasetOut},
    summary="Upload a chat JSONL dataset (multipart); its audit is queued",
)
def audits_dataset_upload(
    request: HttpRequest,
    file: File[UploadedFile],
    agent: Slug = Form(None),
    purpose: Purpose = Form("training"),
    near_threshold: float = Form(DEFAULT_THRESHOLD, ge=MIN_THRESHOLD, le=1.0, allow_inf_nan=False),
) -> Status[dict[str, Any]]:
    """Multipart fields, each at most once: `file` (the JSONL; a longer name keeps its last 255 characters),
    `agent` (slug; may be left out only by a key for all agents), `purpose` (training, validation,
    benchmark), `near_threshold` (0.3–1, default 0.8). Answers 201 with the dataset and its queued
    audit; poll `latest_audit.url` for the report."""
    refuse_repeated_form_fields(request, UPLOAD_FIELDS)
    check_text(file.name or "", field="file: the file name")
    principal = request_principal(request)
    owner = None
    if agent:
        ensure_agent_access(principal=principal, agent_slug=agent)
        owner = Agent.objects.get(slug=agent)
    dataset = services.dataset_upload(
        content=file, original_name=file.name or "dataset.jsonl", purpose=purpose, agent=owner,
        principal=principal, via=_via(principal), near_threshold=near_threshold,
    )
    return Status(201, _dataset_out(selectors.dataset_get(dataset_id=dataset.pk)))


@router.get("/audits/datasets", response=list[DatasetOut], summary="Datasets of the agents this key may act for, newest first")
def audits_dataset_list(
    request: HttpRequest, agent: Slug | None = None, limit: int = Query(50, ge=1, le=200)
) -> list[dict[str, Any]]:
    """`agent` narrows the list to one agent (403 for an agent the key may not act for); datasets with
    no agent are listed for keys for all agents only."""
    principal = request_principal(request)
    if agent is not None:
        ensure_agent_access(principal=principal, agent_slug=agent)
    slugs = None if principal.all_agents else principal.agent_slugs
    return [_dataset_out(dataset) for dataset in selectors.datasets_for_agents(agent_slugs=slugs, agent=agent)[:limit]]


@router.get("/audits/datasets/{dataset_id}", response=DatasetOut, summary="A dataset and its latest audit")
def audits_dataset_detail(request: HttpRequest, dataset_id: ObjectId) -> dict[str, Any]:
    dataset = selectors.dataset_get(dataset_id=dataset_id)
    # Another agent's dataset answers 404, like a fine-tuning job: its existence is not the key's business.
    if not _visible(request_principal(request), dataset):
        raise NotFound(f"dataset #{dataset_id} does not exist")
    return _dataset_out(dataset)


@router.get("/audits/runs/{run_id}", response=AuditRunOut, summary="An audit run: status, progress and the JSON report")
def audits_run_detail(request: HttpRequest, run_id: ObjectId) -> dict[str, Any]:
    """`report` is null until the run has succeeded; then it is the `audit_dataset --json` object
    (`lines`, `valid`, `format_errors`, `pii`, `duplicates`, `difficulty`) with its extras: masked
    samples, line numbers, duplicate groups. It never holds a raw PII value."""
    run = selectors.audit_run_get(run_id=run_id)
    if not _visible(request_principal(request), run.dataset):
        raise NotFound(f"audit run #{run_id} does not exist")
    return {
        "id": run.pk, "dataset": run.dataset_id, "status": run.status, "progress": run.progress,
        "near_threshold": run.near_threshold, "created_at": run.created_at, "started_at": run.started_at,
        "finished_at": run.finished_at, "error": run.error, "has_findings": run.has_findings,
        "report": selectors.ordered_report(run.report),
    }
