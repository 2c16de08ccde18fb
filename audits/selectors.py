"""Reads of the audits app that are more than a `.get()`: the dataset list, a dataset's page (its
audit report arranged for people), the rows the API answers with, and the jobs beat's sweep sends
again (which /metrics counts as stalled)."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db.models import QuerySet

from audits.difficulty import LEVELS
from audits.models import AuditRun, AuditStatus, Dataset, DatasetStatus
from audits.pii import PII_TYPES
from genesis.errors import NotFound
from genesis.locks import stranded

PII_LABELS = {
    "email": "E-mail address",
    "phone": "Phone number",
    "credit_card": "Credit card number",
    "iban": "IBAN",
    "ip_address": "IP address",
    "ssn": "US social security number",
    "api_key": "API key or secret",
}
LINES_SHOWN = 30
FORMAT_ERRORS_SHOWN = 100
GROUPS_SHOWN = 20
# Keys of the Postgres advisory locks that say "a worker is on this row right now" (taken by the
# services, tested here by the sweep's rule).
LOCK_NAMESPACE_RUN = zlib.crc32(b"audits.AuditRun") & 0x7FFFFFFF
LOCK_NAMESPACE_DATASET = zlib.crc32(b"audits.Dataset") & 0x7FFFFFFF
# Beat's sweep (audits_sweep_stranded): a job queued this long without a worker starting it lost
# its message (e.g. the broker was down when it was sent) and is sent again.
STRANDED_AFTER_SECONDS = 10 * 60


def datasets_for_list() -> QuerySet[Dataset]:
    """Datasets with everything the admin list shows, in one query."""
    return Dataset.objects.select_related("agent", "uploaded_by", "latest_audit", "parent")


def datasets_for_agents(*, agent_slugs: frozenset[str] | None = None, agent: str | None = None) -> QuerySet[Dataset]:
    """Datasets newest first, of `agent_slugs` (None: every agent, and datasets of none) or of `agent`."""
    datasets = Dataset.objects.select_related("agent", "parent", "latest_audit").order_by("-created_at", "-pk")
    if agent_slugs is not None:
        datasets = datasets.filter(agent__slug__in=agent_slugs)
    if agent is not None:
        datasets = datasets.filter(agent__slug=agent)
    return datasets


def dataset_get(*, dataset_id: int) -> Dataset:
    dataset = Dataset.objects.select_related("agent", "parent", "uploaded_by", "latest_audit").filter(pk=dataset_id).first()
    if dataset is None:
        raise NotFound(f"dataset #{dataset_id} does not exist")
    return dataset


def audit_run_get(*, run_id: int) -> AuditRun:
    run = AuditRun.objects.select_related("dataset", "dataset__agent").filter(pk=run_id).first()
    if run is None:
        raise NotFound(f"audit run #{run_id} does not exist")
    return run


def latest_finished_audit(*, dataset: Dataset) -> AuditRun | None:
    return dataset.audit_runs.filter(status=AuditStatus.SUCCEEDED).order_by("-finished_at", "-id").first()


CONTRACT_KEYS = ("lines", "valid", "format_errors", "pii", "duplicates", "difficulty")
_BY_PII_TYPE = ("pii", "pii_samples", "pii_lines", "pii_lines_total")
_BY_LEVEL = ("difficulty", "difficulty_counts", "difficulty_examples")


def ordered_report(report: dict[str, Any] | None) -> dict[str, Any] | None:
    """A stored report with its keys in the order `audit_dataset --json` prints them: the contract's
    keys first, PII types and levels in their usual order. (Postgres keeps JSON objects sorted its
    own way, by key length.)"""
    if report is None:
        return None
    ordered: dict[str, Any] = {key: report[key] for key in CONTRACT_KEYS if key in report}
    ordered.update({key: value for key, value in report.items() if key not in ordered})
    for key in _BY_PII_TYPE:
        if isinstance(ordered.get(key), dict):
            ordered[key] = {t: ordered[key][t] for t in PII_TYPES if t in ordered[key]}
    for key in _BY_LEVEL:
        if isinstance(ordered.get(key), dict):
            ordered[key] = {level: ordered[key][level] for level in LEVELS if level in ordered[key]}
    if isinstance(ordered.get("duplicates"), dict):
        ordered["duplicates"] = {k: ordered["duplicates"][k] for k in ("exact", "near") if k in ordered["duplicates"]}
    return ordered


def ordered_mix(mix: dict[str, float] | None) -> dict[str, float] | None:
    return None if mix is None else {level: mix[level] for level in LEVELS if level in mix}


@dataclass
class PiiRow:
    type: str
    label: str
    count: int
    lines: list[int]
    lines_total: int
    samples: list[dict[str, Any]]

    @property
    def more_lines(self) -> int:
        return max(0, self.lines_total - len(self.lines))


@dataclass
class ReportView:
    """A stored report arranged for the dataset page; every value comes from the report, which holds
    counts, line numbers and masked samples only."""

    pii_rows: list[PiiRow]
    pii_total: int
    format_errors: list[dict[str, Any]]
    format_errors_total: int
    exact_groups: list[dict[str, Any]]  # {"lines": first lines, "total": size, "more": size - shown}
    near_groups: list[dict[str, Any]]
    exact_groups_total: int
    near_groups_total: int
    duplicates: dict[str, int]
    near_threshold: float
    difficulty: dict[str, float]
    difficulty_counts: dict[str, int]
    difficulty_examples: dict[str, list[dict[str, Any]]]
    notes: list[str] = field(default_factory=list)

    @property
    def format_errors_hidden(self) -> int:
        return max(0, self.format_errors_total - len(self.format_errors))


def _group_view(group: dict[str, Any] | list[int]) -> dict[str, Any]:
    # Reports stored before groups were capped hold plain lists of lines.
    lines = list(group) if isinstance(group, list) else list(group.get("lines", []))
    total = len(lines) if isinstance(group, list) else int(group.get("total", len(lines)))
    lines = lines[:LINES_SHOWN]
    return {"lines": lines, "total": total, "more": max(0, total - len(lines))}


def _error_view(error: dict[str, Any]) -> dict[str, Any]:
    """A format error for a table with its own line column: the detail without its "line N: " prefix."""
    line = error.get("line")
    return {**error, "problem": str(error.get("detail", "")).removeprefix(f"line {line}: ")}


def report_view(report: dict[str, Any]) -> ReportView:
    pii = report.get("pii", {})
    samples = report.get("pii_samples", {})
    lines = report.get("pii_lines", {})
    lines_total = report.get("pii_lines_total", {})
    rows = [
        PiiRow(
            type=pii_type,
            label=PII_LABELS[pii_type],
            count=int(pii.get(pii_type, 0)),
            lines=list(lines.get(pii_type, []))[:LINES_SHOWN],
            lines_total=int(lines_total.get(pii_type, len(lines.get(pii_type, [])))),
            samples=list(samples.get(pii_type, [])),
        )
        for pii_type in PII_TYPES
    ]
    groups = report.get("duplicate_groups", {})
    return ReportView(
        pii_rows=rows,
        pii_total=sum(row.count for row in rows),
        format_errors=[_error_view(error) for error in list(report.get("format_errors", []))[:FORMAT_ERRORS_SHOWN]],
        format_errors_total=int(report.get("format_errors_total", len(report.get("format_errors", [])))),
        exact_groups=[_group_view(group) for group in list(groups.get("exact", []))[:GROUPS_SHOWN]],
        near_groups=[_group_view(group) for group in list(groups.get("near", []))[:GROUPS_SHOWN]],
        exact_groups_total=int(groups.get("exact_total", 0)),
        near_groups_total=int(groups.get("near_total", 0)),
        duplicates=dict(report.get("duplicates", {"exact": 0, "near": 0})),
        near_threshold=float(groups.get("near_threshold", 0.0)),
        difficulty={level: float(report.get("difficulty", {}).get(level, 0.0)) for level in LEVELS},
        difficulty_counts={level: int(report.get("difficulty_counts", {}).get(level, 0)) for level in LEVELS},
        difficulty_examples={level: list(report.get("difficulty_examples", {}).get(level, [])) for level in LEVELS},
        notes=list(report.get("notes", [])),
    )


@dataclass
class DatasetPage:
    dataset: Dataset
    run: AuditRun | None  # the run shown: ?run=ID, else the newest
    runs: list[AuditRun]
    derived: list[Dataset]
    view: ReportView | None  # None until the shown run has succeeded

    @property
    def busy(self) -> bool:
        """Something on the page is still moving (the page refreshes itself while so)."""
        return self.dataset.status == DatasetStatus.PENDING or bool(self.run and self.run.is_active) or any(
            child.status == DatasetStatus.PENDING for child in self.derived
        )


def dataset_page(*, dataset: Dataset, run_id: int | None = None) -> DatasetPage:
    runs = list(dataset.audit_runs.select_related("requested_by").order_by("-created_at", "-id")[:20])
    run = None
    if run_id is not None:
        run = next((r for r in runs if r.pk == run_id), None) or dataset.audit_runs.filter(pk=run_id).first()
    if run is None and runs:
        run = runs[0]
    derived = list(dataset.derived.select_related("latest_audit").order_by("-created_at", "-id"))
    view = report_view(run.report) if run is not None and run.status == AuditStatus.SUCCEEDED and run.report else None
    return DatasetPage(dataset=dataset, run=run, runs=runs, derived=derived, view=view)


# --- the sweep's backlog ------------------------------------------------------------------------------


def audit_runs_queued() -> QuerySet[AuditRun]:
    """Audit runs no worker has started yet."""
    return AuditRun.objects.filter(status=AuditStatus.QUEUED)


def dataset_copies_queued() -> QuerySet[Dataset]:
    """Scrubbed or rebalanced copies no worker has started writing yet (a copy has no running status:
    pending and started is one a worker began)."""
    return Dataset.objects.filter(status=DatasetStatus.PENDING, started_at__isnull=True)


def audit_runs_stranded(*, older_than_seconds: float = STRANDED_AFTER_SECONDS, now: datetime | None = None) -> list[int]:
    """The audit runs beat's sweep sends again (genesis/locks.py `stranded`): queued too long, or
    running with their worker gone."""
    return stranded(queued=audit_runs_queued(), running=AuditRun.objects.filter(status=AuditStatus.RUNNING),
                    namespace=LOCK_NAMESPACE_RUN, older_than_seconds=older_than_seconds, now=now)


def dataset_copies_stranded(*, older_than_seconds: float = STRANDED_AFTER_SECONDS, now: datetime | None = None) -> list[int]:
    """The dataset copies beat's sweep sends again, by the same rule."""
    started = Dataset.objects.filter(status=DatasetStatus.PENDING, started_at__isnull=False)
    return stranded(queued=dataset_copies_queued(), running=started, namespace=LOCK_NAMESPACE_DATASET,
                    older_than_seconds=older_than_seconds, now=now)
