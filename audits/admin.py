"""Admin pages of the audits app. A dataset's page is the place people read an audit: the summary,
PII per type with masked samples and line numbers, line-numbered format errors, duplicate groups,
the difficulty chart, the progress of a running audit, and the buttons "Audit again", "Scrub" and
"Rebalance" — each a POST that calls one service. Rows are never edited or deleted here: a dataset
is a record of what was uploaded, and an audit a record of what was found."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db.models import QuerySet
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from audits import selectors, services
from audits.dedupe import DEFAULT_THRESHOLD
from audits.difficulty import LEVELS
from audits.models import AuditRun, AuditStatus, Dataset, DatasetPurpose, DatasetStatus
from audits.pii import PII_TYPES
from audits.scrub import SCRUB_MODES
from genesis.admin_base import ReadOnlyAdminMixin, RecordAdminMixin, ServiceAddFormMixin, admin_page
from genesis.charts import Scale, bands
from genesis.errors import DomainError
from genesis.permissions import request_actor
from models_app.registry.models import Agent

DOWNLOAD_PERMISSION = "audits.download_dataset"


def human_bytes(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


def _percent(fraction: float | None) -> str:
    return "—" if fraction is None else f"{fraction:.0%}"


# The difficulty chart: three horizontal bars, drawn as inline SVG (no chart library, no CDN).
CHART_WIDTH = 420
CHART_LABEL_WIDTH = 70
CHART_BAR_HEIGHT = 26
CHART_GAP = 10
LEVEL_COLOURS = {"easy": "#7fb77e", "medium": "#e8b04b", "hard": "#d0605e"}


def difficulty_chart(view: selectors.ReportView) -> dict[str, Any]:
    scale = Scale(top=1.0, length=CHART_WIDTH - CHART_LABEL_WIDTH - 110)  # the rest holds "12.5% (340)"
    bars = []
    for level, row in zip(LEVELS, bands(len(LEVELS), slot=CHART_BAR_HEIGHT + CHART_GAP), strict=True):
        fraction = view.difficulty[level]
        width = round(scale(fraction), 1)
        bars.append({
            "level": level, "fraction": fraction, "count": view.difficulty_counts[level],
            "percent": f"{fraction:.1%}", "x": CHART_LABEL_WIDTH, "y": row.start, "width": width,
            "text_y": row.start + CHART_BAR_HEIGHT * 0.68, "value_x": CHART_LABEL_WIDTH + width + 6,
            "colour": LEVEL_COLOURS[level],
        })
    return {"width": CHART_WIDTH, "height": len(LEVELS) * (CHART_BAR_HEIGHT + CHART_GAP), "bars": bars,
            "bar_height": CHART_BAR_HEIGHT}


class DatasetUploadForm(forms.Form):
    file = forms.FileField(help_text="A chat JSONL file: one {\"messages\": [...]} object per line.")
    agent = forms.ModelChoiceField(queryset=Agent.objects.order_by("slug"), required=False, empty_label="(no agent)")
    purpose = forms.ChoiceField(choices=DatasetPurpose.choices, initial=DatasetPurpose.TRAINING)
    # Checked by the service (audits.dedupe.check_threshold), the one place that knows the bounds.
    near_threshold = forms.FloatField(
        initial=DEFAULT_THRESHOLD,
        help_text="Similarity (estimated Jaccard of word shingles) at which two examples count as near duplicates.",
    )


class RebalanceForm(forms.Form):
    mix = forms.CharField(initial="30,45,25", help_text="easy,medium,hard percentages")
    seed = forms.IntegerField(initial=0, required=False)
    target_size = forms.IntegerField(min_value=0, required=False, help_text="examples to write; empty: as many as are usable")


@admin.register(Dataset)
class DatasetAdmin(RecordAdminMixin, ServiceAddFormMixin):
    """A dataset is a record of an uploaded file: a new version is a new upload, none is edited here."""

    list_display = ("id", "name_link", "agent", "purpose", "origin_label", "status", "size", "line_count",
                    "audit_summary", "created_at", "uploaded_by")
    list_display_links = None
    list_filter = ("purpose", "origin", "status", "agent")
    search_fields = ("original_name", "sha256")
    date_hierarchy = "created_at"

    add_form = DatasetUploadForm
    add_page = {
        "title": "Upload a dataset", "submit_label": "Upload and audit",
        "intro": "The file is stored under MEDIA_ROOT/datasets/ and audited by a worker: format, PII, duplicates, difficulty.",
    }

    def get_queryset(self, request: HttpRequest) -> QuerySet[Dataset]:
        return selectors.datasets_for_list()

    # --- list columns ------------------------------------------------------------------------------

    @admin.display(description="dataset", ordering="original_name")
    def name_link(self, dataset: Dataset) -> str:
        return format_html('<a href="{}">{}</a>', reverse("admin:audits_dataset_change", args=[dataset.pk]), dataset.original_name)

    @admin.display(description="origin", ordering="origin")
    def origin_label(self, dataset: Dataset) -> str:
        if dataset.parent_id is None:
            return dataset.get_origin_display()
        return format_html('{} of <a href="{}">#{}</a>', dataset.get_origin_display(),
                           reverse("admin:audits_dataset_change", args=[dataset.parent_id]), dataset.parent_id)

    @admin.display(description="size", ordering="size_bytes")
    def size(self, dataset: Dataset) -> str:
        return human_bytes(dataset.size_bytes)

    @admin.display(description="latest audit")
    def audit_summary(self, dataset: Dataset) -> str:
        run = dataset.latest_audit
        if run is None:
            return "—"
        if run.is_active:
            return f"{run.status} {run.progress:.0%}"
        if run.status == AuditStatus.FAILED:
            return "failed"
        return format_html(
            '<span class="{}">{} PII · {} format errors · {} duplicates</span>',
            "audit-findings" if run.has_findings else "audit-clean",
            run.pii_total, run.format_error_total, (run.duplicates_exact or 0) + (run.duplicates_near or 0),
        )

    # --- pages ---------------------------------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path("<int:pk>/audit/", view(self.audit_view), name="audits_dataset_audit"),
            path("<int:pk>/scrub/", view(self.scrub_view), name="audits_dataset_scrub"),
            path("<int:pk>/rebalance/", view(self.rebalance_view), name="audits_dataset_rebalance"),
            path("<int:pk>/download/", view(self.download_view), name="audits_dataset_download"),
            *super().get_urls(),
        ]

    def add_through_service(self, request: HttpRequest, form: forms.Form) -> Dataset:
        upload = form.cleaned_data["file"]
        return services.dataset_upload(
            content=upload, original_name=upload.name, purpose=form.cleaned_data["purpose"],
            agent=form.cleaned_data["agent"], actor=request_actor(request), via="admin",
            near_threshold=form.cleaned_data["near_threshold"],
        )

    def add_done(self, request: HttpRequest, dataset: Dataset) -> HttpResponse:
        messages.success(request, f"{dataset.original_name} stored as dataset #{dataset.pk}; its audit is queued")
        return self._back(dataset)

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None) -> HttpResponse:
        try:
            dataset = selectors.dataset_get(dataset_id=int(object_id))
        except (ValueError, DomainError):
            raise Http404(f"dataset #{object_id} does not exist") from None
        if not self.has_view_permission(request, dataset):
            raise DjangoPermissionDenied
        run_id = request.GET.get("run")
        page = selectors.dataset_page(dataset=dataset, run_id=int(run_id) if run_id and run_id.isdigit() else None)
        user = request.user
        context = {
            "title": f"Dataset #{dataset.pk}: {dataset.original_name}",
            "page": page,
            "dataset": dataset,
            "run": page.run,
            "view": page.view,
            "chart": difficulty_chart(page.view) if page.view else None,
            "size": human_bytes(dataset.size_bytes),
            "can_audit": user.has_perm("audits.add_auditrun") and dataset.status == DatasetStatus.READY,
            "can_derive": user.has_perm("audits.add_dataset") and dataset.status == DatasetStatus.READY,
            "can_download": user.has_perm(DOWNLOAD_PERMISSION),
            "scrub_modes": [(mode, "placeholders" if mode == "placeholder" else "pseudonyms") for mode in SCRUB_MODES],
            "rebalance_form": RebalanceForm(),
            # JSON columns come back with their keys reordered (Postgres jsonb); show them in the usual order.
            "replaced": [(t, dataset.result.get("replaced", {}).get(t, 0)) for t in PII_TYPES if dataset.result.get("replaced", {}).get(t)],
            "target_mix": [(level, dataset.parameters.get("mix", {}).get(level, 0.0)) for level in LEVELS],
            "achieved_mix": [(level, (dataset.achieved_mix or {}).get(level, 0.0)) for level in LEVELS],
        }
        return admin_page(self, request, "admin/audits/dataset/detail.html", context)

    def _dataset_or_404(self, pk: int) -> Dataset:
        try:
            return selectors.dataset_get(dataset_id=pk)
        except DomainError:
            raise Http404(f"dataset #{pk} does not exist") from None

    def _back(self, dataset: Dataset) -> HttpResponseRedirect:
        return HttpResponseRedirect(reverse("admin:audits_dataset_change", args=[dataset.pk]))

    def audit_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        dataset = self._dataset_or_404(pk)
        if request.method != "POST":
            return self._back(dataset)
        try:
            previous = dataset.latest_audit  # audit again as before: same near-duplicate settings
            run = services.audit_start(
                dataset=dataset, actor=request_actor(request), via="admin: audit again",
                near_threshold=previous.near_threshold if previous else DEFAULT_THRESHOLD,
                find_near_duplicates=previous.find_near_duplicates if previous else True,
            )
        except DomainError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, f"audit #{run.pk} queued")
        return self._back(dataset)

    def _derive(self, request: HttpRequest, dataset: Dataset, making: str, derive: Callable[[], Dataset]) -> HttpResponse:
        """Make a copy of `dataset` through the service `derive` calls, then show the copy (its page
        follows the writing) — or the refusal, on the dataset's own page."""
        try:
            derived = derive()
        except DomainError as exc:
            messages.error(request, exc.message)
            return self._back(dataset)
        messages.success(request, f"{making} into dataset #{derived.pk} ({derived.original_name}); it is audited when written")
        return self._back(derived)

    def scrub_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        dataset = self._dataset_or_404(pk)
        if request.method != "POST":
            return self._back(dataset)
        types = request.POST.getlist("types") or None
        return self._derive(request, dataset, "scrubbing", lambda: services.dataset_scrub(
            dataset=dataset, mode=request.POST.get("mode", "placeholder"), types=types, actor=request_actor(request), via="admin",
        ))

    def rebalance_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        dataset = self._dataset_or_404(pk)
        if request.method != "POST":
            return self._back(dataset)
        form = RebalanceForm(request.POST)
        if not form.is_valid():
            messages.error(request, "; ".join(f"{field}: {' '.join(str(error) for error in errors)}" for field, errors in form.errors.items()))
            return self._back(dataset)
        return self._derive(request, dataset, "rebalancing", lambda: services.dataset_rebalance(
            dataset=dataset, mix=form.cleaned_data["mix"], seed=form.cleaned_data["seed"] or 0,
            target_size=form.cleaned_data["target_size"], actor=request_actor(request), via="admin",
        ))

    def download_view(self, request: HttpRequest, pk: int) -> FileResponse:
        dataset = self._dataset_or_404(pk)
        # Viewing a dataset shows counts and masked samples; the file itself holds the raw PII.
        if not request.user.has_perm(DOWNLOAD_PERMISSION):
            raise DjangoPermissionDenied(
                f"downloading dataset #{pk} needs the permission '{DOWNLOAD_PERMISSION}': the raw file may hold PII, "
                "which its page shows only masked"
            )
        if dataset.status != DatasetStatus.READY:
            raise Http404(f"dataset #{pk} has no file yet ({dataset.get_status_display().lower()})")
        try:
            stream = services.dataset_file_open(dataset=dataset)  # FileResponse closes it
        except DomainError as exc:  # the file is missing or unreadable: said, not a 500
            raise Http404(exc.message) from None
        return FileResponse(stream, as_attachment=True, filename=dataset.original_name, content_type="application/jsonl")


@admin.register(AuditRun)
class AuditRunAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Every audit run, with the summary columns; a run's report is read on its dataset's page. Runs
    are started from a dataset's page ("Audit again") or by an upload, never added here."""

    list_display = ("id", "dataset_link", "status", "progress_percent", "lines", "valid", "format_error_total", "pii_total",
                    "duplicates_exact", "duplicates_near", "easy_share", "medium_share", "hard_share", "has_findings",
                    "requested_by", "created_at", "finished_at")
    list_display_links = None
    list_filter = ("status", "has_findings")
    search_fields = ("dataset__original_name",)
    list_select_related = ("dataset", "requested_by")

    @admin.display(description="dataset")
    def dataset_link(self, run: AuditRun) -> str:
        url = reverse("admin:audits_dataset_change", args=[run.dataset_id]) + f"?run={run.pk}"
        return format_html('<a href="{}">#{} {}</a>', url, run.dataset_id, run.dataset.original_name)

    @admin.display(description="progress", ordering="progress")
    def progress_percent(self, run: AuditRun) -> str:
        return f"{run.progress:.0%}"

    @admin.display(description="easy", ordering="easy")
    def easy_share(self, run: AuditRun) -> str:
        return _percent(run.easy)

    @admin.display(description="medium", ordering="medium")
    def medium_share(self, run: AuditRun) -> str:
        return _percent(run.medium)

    @admin.display(description="hard", ordering="hard")
    def hard_share(self, run: AuditRun) -> str:
        return _percent(run.hard)

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None) -> HttpResponse:
        run = AuditRun.objects.filter(pk=object_id).only("pk", "dataset_id").first() if str(object_id).isdigit() else None
        if run is None:
            raise Http404(f"audit run #{object_id} does not exist")
        return HttpResponseRedirect(reverse("admin:audits_dataset_change", args=[run.dataset_id]) + f"?run={run.pk}")
