"""Admin pages of benchmarks: suites (import/export JSONL), and runs — start one, follow it, read its
verdict, per-tag table, score histogram and worst regressions, cancel it, or override its verdict.
Every button calls a service; nothing here writes a row itself."""

from __future__ import annotations

import io
from typing import Any, cast

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from costs.budgeting import format_usd
from genesis.admin_base import (
    ReadOnlyAdminMixin,
    ReadOnlyTabularInline,
    RecordAdminMixin,
    ServiceAddFormMixin,
    admin_page,
)
from genesis.charts import Scale, bands
from genesis.errors import DomainError
from genesis.permissions import request_actor
from models_app.benchmarks.models import (
    BenchmarkCase,
    BenchmarkRun,
    BenchmarkRunStatus,
    BenchmarkSuite,
    BenchmarkVerdictOverride,
)
from models_app.benchmarks.selectors import (
    BENCHMARKABLE_STATUSES,
    benchmark_run_report,
    benchmark_suite_jsonl,
    comparison_only_warning,
    run_approves_candidate,
    run_verdict_note,
    suite_sample_size_plan,
    with_verdict_facts,
)
from models_app.benchmarks.services import (
    CHANGE_VERSION_PERMISSION,
    OVERRIDE_PERMISSION,
    benchmark_run_cancel,
    benchmark_run_create,
    benchmark_suite_import,
    benchmark_verdict_override,
)
from models_app.registry.models import Agent, ModelKind, ModelStatus, ModelVersion

MAX_IMPORT_BYTES = 20 * 1024 * 1024


# --- suites ---------------------------------------------------------------------------------------------


class BenchmarkCaseInline(ReadOnlyTabularInline):
    model = BenchmarkCase
    fields = ("key", "tags", "scorer", "reference", "messages")


class SuiteImportForm(forms.Form):
    agent = forms.ModelChoiceField(queryset=Agent.objects.order_by("slug"))
    slug = forms.SlugField(max_length=64, help_text="A new slug starts a suite; an existing one adds a version.")
    file = forms.FileField(help_text="JSONL, one case per line (see the format below).")
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}),
                                  help_text="Optional; otherwise the file's {\"suite\": …} header line, if any.")


@admin.register(BenchmarkSuite)
class BenchmarkSuiteAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Suites come from a JSONL import (the button on the list), never the add form; a version is
    immutable (import a new file instead) and runs refer to it."""

    list_display = ("__str__", "agent", "slug", "version", "case_count", "source", "created_by", "created_at", "actions_links")
    list_select_related = ("agent", "created_by")  # created_by may be NULL: not followed by default
    list_filter = ("agent",)
    search_fields = ("slug", "description", "agent__slug")
    readonly_fields = ("agent", "slug", "version", "description", "fingerprint", "case_count", "sample_size_plan",
                       "source", "created_by", "created_at", "actions_links")
    inlines = [BenchmarkCaseInline]
    change_list_template = "admin/models_app/benchmarksuite/change_list.html"

    @admin.display(description="cases needed (80 % power)")
    def sample_size_plan(self, suite: BenchmarkSuite) -> str:
        return suite_sample_size_plan(suite=suite).summary()

    @admin.display(description="")
    def actions_links(self, suite: BenchmarkSuite) -> str:
        export = reverse("admin:models_app_benchmarksuite_export", args=[suite.pk])
        start = reverse("admin:models_app_benchmarkrun_add") + f"?agent={suite.agent_id}&suite={suite.pk}"
        return format_html('<a href="{}">Export JSONL</a> · <a href="{}">Start a run</a>', export, start)

    def get_urls(self) -> list[URLPattern]:
        return [
            path("import/", self.admin_site.admin_view(self.import_view), name="models_app_benchmarksuite_import"),
            path("<int:pk>/export/", self.admin_site.admin_view(self.export_view), name="models_app_benchmarksuite_export"),
            *super().get_urls(),
        ]

    def import_view(self, request: HttpRequest) -> HttpResponse:
        if not request.user.has_perm("models_app.add_benchmarksuite"):
            raise DjangoPermissionDenied
        form = SuiteImportForm(request.POST or None, request.FILES or None)
        errors: list[str] = []
        if request.method == "POST" and form.is_valid():
            upload = form.cleaned_data["file"]
            if upload.size > MAX_IMPORT_BYTES:
                errors = [f"the file is {upload.size} bytes; the limit is {MAX_IMPORT_BYTES}"]
            else:
                try:
                    text = upload.read().decode("utf-8")
                except UnicodeDecodeError:
                    errors = ["the file is not UTF-8 text"]
                else:
                    try:
                        imported = benchmark_suite_import(
                            agent=form.cleaned_data["agent"], slug=form.cleaned_data["slug"],
                            lines=io.StringIO(text), description=form.cleaned_data["description"] or None,
                            source=f"admin upload: {upload.name}", actor=request_actor(request),
                        )
                    except DomainError as exc:
                        errors = [part.strip() for part in exc.message.split(";")]
                    else:
                        suite = imported.suite
                        if imported.created:
                            messages.success(request, f"imported {suite} with {suite.case_count} cases")
                        else:
                            messages.info(request, f"the file holds exactly the cases of {suite}; no new version made")
                        return HttpResponseRedirect(reverse("admin:models_app_benchmarksuite_change", args=[suite.pk]))
        context = {"title": "Import a benchmark suite (JSONL)", "form": form, "errors": errors}
        return admin_page(self, request, "admin/models_app/benchmarksuite/import.html", context)

    def export_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        if not self.has_view_permission(request):
            raise DjangoPermissionDenied
        suite = get_object_or_404(BenchmarkSuite.objects.select_related("agent"), pk=pk)
        response = HttpResponse(benchmark_suite_jsonl(suite=suite), content_type="application/x-ndjson; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{suite.agent.slug}-{suite.slug}-v{suite.version}.jsonl"'
        return response


# --- runs ---------------------------------------------------------------------------------------------------


class RunStartForm(forms.Form):
    agent = forms.ModelChoiceField(queryset=Agent.objects.order_by("slug"))
    suite = forms.ModelChoiceField(queryset=BenchmarkSuite.objects.select_related("agent"), required=False,
                                   help_text="Default: the agent's latest suite.")
    candidate = forms.ModelChoiceField(
        queryset=ModelVersion.objects.filter(kind=ModelKind.FINE_TUNED, status__in=BENCHMARKABLE_STATUSES).select_related("agent"),
        required=False, help_text="Default: the agent's newest registered or approved fine-tune.",
    )
    baseline = forms.ModelChoiceField(queryset=ModelVersion.objects.select_related("agent"), required=False,
                                      help_text="Default: the agent's live model. Only a PASS against the live model "
                                      "approves the candidate for rollout; against any other version the run is a "
                                      "comparison.")
    budget_override_reason = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Only if the budget refuses the run and you hold costs.override_budget: why it should go ahead.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Choosing the agent reloads the form with ?agent=, so the lists hold only that agent's suites and models.
        self.fields["agent"].widget.attrs["onchange"] = "window.location.search = '?agent=' + this.value"
        agent_id = self.data.get("agent") or self.initial.get("agent")
        if agent_id and str(agent_id).isdigit():
            for name in ("suite", "candidate", "baseline"):
                field = cast(forms.ModelChoiceField, self.fields[name])
                if field.queryset is not None:  # always: each of these fields declares its queryset above
                    field.queryset = field.queryset.filter(agent_id=int(agent_id))


class OverrideForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), required=True,
                             help_text="Why the candidate should go to rollout despite the verdict (kept in the record).")


class CancelForm(forms.Form):
    reason = forms.CharField(required=False, max_length=500)


HISTOGRAM_WIDTH, HISTOGRAM_HEIGHT, HISTOGRAM_TOP = 600, 160, 10


def histogram_bars(baseline: list[int], candidate: list[int]) -> dict[str, Any]:
    """Rectangles of a paired histogram (baseline and candidate side by side per score bin), for a
    plain inline SVG: no script, no CDN."""
    bins = len(baseline)
    scale = Scale(top=max([1, *baseline, *candidate]), length=HISTOGRAM_HEIGHT - HISTOGRAM_TOP)
    score_bins = bands(bins, slot=HISTOGRAM_WIDTH / bins)
    bars = []
    for index, score_bin in enumerate(score_bins):
        for offset, count, css in ((0.1, baseline[index], "baseline"), (0.52, candidate[index], "candidate")):
            x, width = score_bin.part(offset=offset, share=0.38)
            height = scale(count)
            bars.append({"x": round(x, 1), "y": round(HISTOGRAM_HEIGHT - height, 1), "width": round(width, 1),
                         "height": round(height, 1), "count": count, "css": css, "label_x": round(x + width / 2, 1)})
    labels = [{"x": round(score_bin.centre, 1), "text": f"{index / bins:.1f}–{(index + 1) / bins:.1f}"}
              for index, score_bin in enumerate(score_bins)]
    # The counts as a table too: the SVG is an image to a screen reader, and its two arms differ by colour.
    rows = [{"bin": label["text"], "baseline": baseline[index], "candidate": candidate[index]}
            for index, label in enumerate(labels)]
    return {"bars": bars, "labels": labels, "rows": rows, "width": HISTOGRAM_WIDTH, "height": HISTOGRAM_HEIGHT + 18,
            "axis_y": HISTOGRAM_HEIGHT}


@admin.register(BenchmarkRun)
class BenchmarkRunAdmin(RecordAdminMixin, ServiceAddFormMixin):
    """Runs are advanced by the workers (the report page below has the buttons) and kept, each on its
    own, as the evidence for a verdict. The add page starts a run through the service."""

    list_display = ("id", "agent", "suite_label", "candidate_model", "baseline_model", "status", "progress",
                    "verdict_label", "cost", "created_at")
    list_filter = ("status", "verdict", "agent")
    search_fields = ("candidate__model_id", "baseline__model_id", "agent__slug")
    list_select_related = ("agent", "suite", "candidate", "baseline")
    ordering = ("-created_at",)
    add_form = RunStartForm
    add_form_template = "admin/models_app/benchmarkrun/start.html"
    add_page = {"title": "Start a benchmark run"}

    def get_queryset(self, request: HttpRequest) -> QuerySet[BenchmarkRun]:
        # The verdict column's note reads whether each candidate went live since: in the list's query.
        return with_verdict_facts(super().get_queryset(request))

    @admin.display(description="cost", ordering="cost_usd")
    def cost(self, run: BenchmarkRun) -> str:
        return format_usd(run.cost_usd)  # a run's cents and fractions of a cent: "$0.0013", not "0.00130000"

    @admin.display(description="suite")
    def suite_label(self, run: BenchmarkRun) -> str:
        return f"{run.suite.slug} v{run.suite_version}"

    @admin.display(description="candidate")
    def candidate_model(self, run: BenchmarkRun) -> str:
        return run.candidate.model_id

    @admin.display(description="baseline")
    def baseline_model(self, run: BenchmarkRun) -> str:
        return run.baseline.model_id

    @admin.display(description="verdict", ordering="verdict")
    def verdict_label(self, run: BenchmarkRun) -> str:
        # A verdict against a baseline that was not the live version decides nothing: say so in the list too.
        note = run_verdict_note(run=run)
        return f"{run.verdict} ({note.split(': ', 1)[1]})" if note else run.verdict

    @admin.display(description="progress")
    def progress(self, run: BenchmarkRun) -> str:
        # Items are (model, case) answers: a 48-case suite is 96 of them, two per case.
        return f"{run.completed_items}/{run.total_items} answers ({run.progress_percent:g} %)"

    def get_urls(self) -> list[URLPattern]:
        return [
            path("<int:pk>/cancel/", self.admin_site.admin_view(self.cancel_view), name="models_app_benchmarkrun_cancel"),
            path("<int:pk>/override/", self.admin_site.admin_view(self.override_view),
                 name="models_app_benchmarkrun_override"),
            *super().get_urls(),
        ]

    def add_form_initial(self, request: HttpRequest) -> dict[str, Any]:
        return {key: request.GET[key] for key in ("agent", "suite") if request.GET.get(key)}

    def add_through_service(self, request: HttpRequest, form: forms.Form) -> BenchmarkRun:
        data = form.cleaned_data
        return benchmark_run_create(
            agent=data["agent"], suite=data["suite"], candidate=data["candidate"], baseline=data["baseline"],
            actor=request_actor(request), requested_via="admin page",
            budget_override_reason=data["budget_override_reason"] or None,
        )

    def add_refused(self, request: HttpRequest, form: forms.Form, error: DomainError) -> None:
        messages.error(request, error.message)

    def add_done(self, request: HttpRequest, run: BenchmarkRun) -> HttpResponse:
        messages.success(request, f"run #{run.pk} queued: {run.candidate.model_id} vs {run.baseline.model_id}")
        if run.baseline.status != ModelStatus.LIVE:
            messages.warning(request, comparison_only_warning(run=run))
        return HttpResponseRedirect(reverse("admin:models_app_benchmarkrun_change", args=[run.pk]))

    # The "change" page is the run's report.
    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None) -> HttpResponse:
        if not self.has_view_permission(request):
            raise DjangoPermissionDenied
        run = get_object_or_404(
            BenchmarkRun.objects.select_related("agent", "suite", "candidate__provider", "baseline__provider",
                                                "requested_by", "cancelled_by"),
            pk=object_id,
        )
        report = benchmark_run_report(run=run)
        context = {
            "title": f"Benchmark run #{run.pk}",
            "run": run,
            "report": report,
            "comparison": report.comparison or {},
            "histogram": histogram_bars(report.baseline_histogram, report.candidate_histogram),
            "overrides": BenchmarkVerdictOverride.objects.filter(run=run).select_related("actor"),
            "can_cancel": not run.is_finished and request.user.has_perm("models_app.change_benchmarkrun"),
            # The service checks the same two permissions; the button is offered only to who can use it.
            "verdict_note": run_verdict_note(run=run),
            "can_override": run.status == BenchmarkRunStatus.COMPLETED and not run_approves_candidate(run=run)
            and run.candidate.status != ModelStatus.APPROVED_FOR_ROLLOUT
            and request.user.has_perm(OVERRIDE_PERMISSION) and request.user.has_perm(CHANGE_VERSION_PERMISSION),
            "override_form": OverrideForm(),
            "cancel_form": CancelForm(),
            "refresh_seconds": 3 if not run.is_finished else None,
        }
        return admin_page(self, request, "admin/models_app/benchmarkrun/detail.html", context)

    def cancel_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        run = get_object_or_404(BenchmarkRun, pk=pk)
        if request.method != "POST":
            return HttpResponseRedirect(reverse("admin:models_app_benchmarkrun_change", args=[pk]))
        form = CancelForm(request.POST)
        try:
            benchmark_run_cancel(run=run, actor=request_actor(request), reason=form.data.get("reason", ""))
        except DomainError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, f"run #{pk} cancelled")
        return HttpResponseRedirect(reverse("admin:models_app_benchmarkrun_change", args=[pk]))

    def override_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        run = get_object_or_404(BenchmarkRun, pk=pk)
        form = OverrideForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                benchmark_verdict_override(run=run, actor=request_actor(request), reason=form.cleaned_data["reason"])
            except DomainError as exc:
                messages.error(request, exc.message)
            else:
                messages.success(request, f"verdict of run #{pk} overridden: the candidate is approved for rollout")
        elif request.method == "POST":
            messages.error(request, "give a reason for the override")
        return HttpResponseRedirect(reverse("admin:models_app_benchmarkrun_change", args=[pk]))
