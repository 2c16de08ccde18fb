"""Admin pages of the costs app. Every button and form calls a service; the ledger can be read,
added to and reversed here, never edited or deleted. The cost dashboard is the changelist of the
CostDashboard proxy, so it sits on the admin index next to the ledger.

Add and change forms save through their service while the form is validated (ServiceForm,
genesis/admin_base.py): the admin then either shows the service's refusal as a form error or reports a save that happened — never a 500
and never "added successfully" for a row that was not written."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.paginator import Page, Paginator
from django.db import models
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html
from simple_history.admin import SimpleHistoryAdmin
from simple_history.models import ModelChange, ModelChangeValue
from simple_history.template_utils import HistoricalRecordContextHelper

from costs import budgeting, charts, selectors
from costs.models import (
    Budget,
    BudgetAlert,
    BudgetOverride,
    CostDashboard,
    CostEntry,
    CostHold,
    CostReport,
    Operation,
    PriceTable,
)
from costs.services import (
    RequestedReport,
    budget_upsert,
    cost_entry_reverse,
    cost_record,
    cost_report_request,
    price_upsert,
)
from genesis.admin_base import (
    DateHierarchyByProbesMixin,
    ReadOnlyAdminMixin,
    RecordAdminMixin,
    ServiceForm,
    ServiceFormAdminMixin,
    SortableByOnlyMixin,
    admin_page,
)
from genesis.errors import DomainError
from genesis.permissions import Actor, request_actor


def usd_column(field_name: str, description: str) -> Callable[[Any], str]:
    """A changelist column showing the money in `field_name` as people read it (format_usd: "$0.0028",
    never "0.00" or "0.150000"), sorted by the field."""

    def column(row: Any) -> str:
        amount = getattr(row, field_name)
        return "—" if amount is None else budgeting.format_usd(amount)

    column.__name__ = field_name  # the cell's CSS class, field-<name>, as the raw field had
    return admin.display(description=description, ordering=field_name)(column)


# --- prices ------------------------------------------------------------------------------------------------


class PriceTableForm(ServiceForm):
    class Meta:
        model = PriceTable
        fields = ("model", "effective_from", "input_usd_per_million", "output_usd_per_million", "training_usd_per_million",
                  "fine_tuning_minimum_usd", "storage_usd_per_month", "source", "source_date", "note")

    def save_through_service(self, *, actor: Actor) -> PriceTable:
        price = self.instance  # model and effective_from come from the row when they are read-only
        return price_upsert(
            model=price.model, effective_from=price.effective_from, input_usd_per_million=price.input_usd_per_million,
            output_usd_per_million=price.output_usd_per_million, training_usd_per_million=price.training_usd_per_million,
            fine_tuning_minimum_usd=price.fine_tuning_minimum_usd, storage_usd_per_month=price.storage_usd_per_month,
            source=price.source, source_date=price.source_date, note=price.note, actor=actor,
        )


@admin.register(PriceTable)
class PriceTableAdmin(ServiceFormAdminMixin, SimpleHistoryAdmin):
    form = PriceTableForm
    list_display = ("model", "effective_from", "input_usd_per_million", "output_usd_per_million",
                    "training_usd_per_million", "fine_tuning_minimum_usd", "storage_usd_per_month", "source_date")
    list_filter = ("model",)
    search_fields = ("model", "source")
    fields = ("model", "effective_from", "input_usd_per_million", "output_usd_per_million", "training_usd_per_million",
              "fine_tuning_minimum_usd", "storage_usd_per_month", "source", "source_date", "note", "created_by", "created_at")
    readonly_fields = ("created_by", "created_at")

    def get_readonly_fields(self, request: HttpRequest, obj: PriceTable | None = None) -> tuple[str, ...]:
        # A version is identified by model and date; a price change is a new version.
        return (*self.readonly_fields, "model", "effective_from") if obj else self.readonly_fields

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # costs already computed from a version stay explained by it


# --- the ledger ----------------------------------------------------------------------------------------------


class CostEntryAddForm(ServiceForm):
    amount_usd = forms.DecimalField(min_value=Decimal(0), decimal_places=6, max_digits=16, label="Amount (USD)")
    # Made when the form is shown and sent back with it, as the entry's idempotency key: the same form
    # sent twice (a double click, a browser's re-send) records one charge, not two.
    submission = forms.UUIDField(widget=forms.HiddenInput, initial=uuid.uuid4)

    class Meta:
        model = CostEntry
        fields = ("agent", "operation", "amount_usd", "model", "tokens", "note")

    def save_through_service(self, *, actor: Actor) -> CostEntry:
        data = self.cleaned_data
        return cost_record(
            agent=data["agent"], operation=data["operation"], amount_usd=data["amount_usd"], model=data.get("model") or "",
            tokens=data.get("tokens"), note=data.get("note") or "", actor=actor, source="admin",
            idempotency_key=f"admin:{data['submission']}", exact_replay=True,
        )


class ReverseForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), help_text="Kept on the reversing entry.")


class LedgerPaginator(Paginator):
    """The ledger list's pages. Counting the entries the filters select also sums them
    (selectors.ledger_selection): one pass over them, not two, read by the list's total
    (`CostEntryAdmin.changelist_view`)."""

    total: Decimal
    object_list: models.QuerySet[CostEntry]  # the changelist's ordered entries (get_paginator)

    @cached_property
    def count(self) -> int:
        selection = selectors.ledger_selection(entries=self.object_list)
        self.total = selection.total
        return selection.entries

    def page(self, number: int | str) -> Page:
        """Pages in the second half are read from the end, in the opposite order: an OFFSET reads every
        row it skips, so the last page of a million entries took 1.3 s; now as long as the first."""
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        top = min(bottom + self.per_page, self.count) if bottom + self.per_page + self.orphans < self.count else self.count
        if bottom <= self.count - top:
            return super().page(number)
        rows = list(self.object_list.reverse()[self.count - top:self.count - bottom])
        return Page(rows[::-1], number, self)


@admin.register(CostEntry)
class CostEntryAdmin(RecordAdminMixin, SortableByOnlyMixin, DateHierarchyByProbesMixin, ServiceFormAdminMixin):
    """The ledger is append-only: an entry is added or reversed (a new entry), never changed or deleted.

    Its list stays quick with a million entries and more: every query it makes reads an index or the
    entries selected, once. The count of all entries beside the selection's is not shown
    (show_full_result_count); the selection is counted and summed in one pass (LedgerPaginator); the
    date hierarchy's periods are probed (DateHierarchyByProbesMixin); a search is an exact match on
    indexed columns (selectors.ledger_search); and the list sorts only by indexed columns, also when a URL
    names another (`?o=3`, SortableByOnlyMixin) — sorting a million rows by agent or model took 1.2–1.7 s
    (the filters select by those instead)."""

    list_display = ("id", "occurred_at", "agent", "operation", "model", usd_column("amount_usd", "amount"), "tokens",
                    "tokens_estimated", "source", "actor", "reverses")
    list_filter = ("operation", "agent", "tokens_estimated", "occurred_at")
    search_fields = ("idempotency_key", "model", "agent__slug")  # what get_search_results matches, exactly
    search_help_text = "Exact match: an entry's idempotency key, a model id (e.g. open-mistral-7b) or an agent's slug."
    sortable_by = ("id", "occurred_at")
    show_full_result_count = False
    date_hierarchy = "occurred_at"
    list_select_related = ("agent", "actor")
    change_list_template = "admin/costs/costentry/change_list.html"
    readonly = ("id", "amount_usd", "agent", "operation", "model", "tokens", "input_tokens", "output_tokens",
                "tokens_estimated", "source", "source_link", "occurred_at", "recorded_at", "actor", "idempotency_key", "note", "reverses", "reversal_link")

    def get_paginator(
        self, request: HttpRequest, queryset: Any, per_page: int, orphans: int = 0, allow_empty_first_page: bool = True
    ) -> Paginator:
        # The list's pages count and sum the entries together; the history page's admin log entries
        # (also paged here) are paged as usual.
        paginator = LedgerPaginator if queryset.model is CostEntry else Paginator
        return paginator(queryset, per_page, orphans, allow_empty_first_page)

    def get_search_results(
        self, request: HttpRequest, queryset: models.QuerySet[CostEntry], search_term: str
    ) -> tuple[models.QuerySet[CostEntry], bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        return queryset.filter(selectors.ledger_search(term=term)), False

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        response = super().changelist_view(request, extra_context)
        if isinstance(response, TemplateResponse) and response.context_data and "cl" in response.context_data:
            # Not a redirect: the total of the rows the filters select, on every page (summed with their count).
            paginator = response.context_data["cl"].paginator
            response.context_data["ledger_total"] = budgeting.format_usd(paginator.total)
        return response

    def get_form(
        self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any
    ) -> type[forms.ModelForm[Any]]:
        if obj is None:
            kwargs["form"] = CostEntryAddForm
        return super().get_form(request, obj, change, **kwargs)

    def get_fields(self, request: HttpRequest, obj: CostEntry | None = None) -> tuple[str, ...]:
        return self.readonly if obj else ("agent", "operation", "amount_usd", "model", "tokens", "note", "submission")

    def get_readonly_fields(self, request: HttpRequest, obj: CostEntry | None = None) -> tuple[str, ...]:
        return self.readonly if obj else ()

    @admin.display(description="caused by")
    def source_link(self, entry: CostEntry) -> str:
        source_type = entry.source_type
        if source_type is None:
            return "—"
        target = entry.source_object
        label = f"{source_type.name} #{entry.source_id}"
        if target is None:
            return f"{label} (gone)"
        try:
            url = reverse(f"admin:{source_type.app_label}_{source_type.model}_change", args=[entry.source_id])
        except Exception:  # noqa: BLE001 - not every model has an admin page
            return str(target)
        return format_html('<a href="{}">{}</a>', url, target)

    @admin.display(description="reversal")
    def reversal_link(self, entry: CostEntry) -> str:
        reversal = CostEntry.objects.filter(reverses=entry).first()
        if reversal is not None:
            url = reverse("admin:costs_costentry_change", args=[reversal.pk])
            return format_html('reversed by <a href="{}">#{}</a>', url, reversal.pk)
        if entry.reverses_id is not None:
            return "—"
        url = reverse("admin:costs_costentry_reverse", args=[entry.pk])
        return format_html('<a class="button" href="{}">Reverse this entry…</a>', url)

    def get_urls(self) -> list[URLPattern]:
        return [
            path("<int:pk>/reverse/", self.admin_site.admin_view(self.reverse_view), name="costs_costentry_reverse"),
            *super().get_urls(),
        ]

    def reverse_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        entry = get_object_or_404(CostEntry.objects.select_related("agent"), pk=pk)
        if not self.has_add_permission(request):
            raise DjangoPermissionDenied
        form = ReverseForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                reversal = cost_entry_reverse(entry=entry, actor=request_actor(request), reason=form.cleaned_data["reason"])
            except DomainError as exc:
                messages.error(request, exc.message)
            else:
                messages.success(request, f"entry #{entry.pk} reversed by #{reversal.pk}")
                return HttpResponseRedirect(reverse("admin:costs_costentry_change", args=[reversal.pk]))
        context = {"title": f"Reverse cost entry #{entry.pk}", "entry": entry, "form": form}
        return admin_page(self, request, "admin/costs/costentry/reverse.html", context)


# --- budgets ------------------------------------------------------------------------------------------------------


class BudgetForm(ServiceForm):
    thresholds = forms.CharField(
        help_text="Percent and severity (warning, critical, emergency), e.g. '25 warning, 50 critical, 83 emergency'.",
    )
    reason = forms.CharField(required=False, help_text="Why the budget changes (kept in its history).")

    class Meta:
        model = Budget
        fields = ("name", "amount_usd", "period", "agent", "thresholds", "hard_limit", "active")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        current = self.instance.thresholds if self.instance.pk else budgeting.default_thresholds(settings.BUDGET_THRESHOLDS)
        self.initial["thresholds"] = budgeting.thresholds_text(budgeting.parse_thresholds(current))

    def clean_thresholds(self) -> list[dict[str, object]]:
        try:
            return [t.as_dict() for t in budgeting.parse_thresholds(self.cleaned_data["thresholds"])]
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None

    def save_through_service(self, *, actor: Actor) -> Budget:
        data = self.cleaned_data
        return budget_upsert(
            name=self.instance.name, amount_usd=data["amount_usd"], period=data["period"], agent=data.get("agent"),
            thresholds=data["thresholds"], hard_limit=data["hard_limit"], active=data["active"], actor=actor,
            reason=data.get("reason") or "",
        )


class BudgetHistoryContext(HistoricalRecordContextHelper):
    """A budget's history shows its thresholds as people read them, not as the stored JSON."""

    def prepare_delta_change_value(self, change: ModelChange, value: ModelChangeValue) -> Any:
        if change.field == "thresholds":
            try:
                return budgeting.thresholds_text(budgeting.parse_thresholds(value))
            except ValueError:
                return value  # a row written before the thresholds were checked: shown as stored
        return super().prepare_delta_change_value(change, value)


@admin.register(Budget)
class BudgetAdmin(ServiceFormAdminMixin, SimpleHistoryAdmin):
    form = BudgetForm
    list_display = ("name", "scope", "period", usd_column("amount_usd", "amount"), "spent", usd_column("held_usd", "held"),
                    "hard_limit", "active")
    list_filter = ("period", "hard_limit", "active")
    list_select_related = ("agent",)

    def get_queryset(self, request: HttpRequest) -> models.QuerySet[Budget]:
        queryset = super().get_queryset(request)
        # Spend and holds are the list's columns, summed for the list only: the change and history
        # pages read the row alone (each summed the budget's ledger: 0.14 s at a million entries).
        if request.resolver_match is not None and request.resolver_match.url_name == "costs_budget_changelist":
            return selectors.with_spent(selectors.with_held(queryset))
        return queryset

    def get_historical_record_context_helper(self, request: HttpRequest, historical_record: Any) -> BudgetHistoryContext:
        return BudgetHistoryContext(self.model, historical_record)

    def get_readonly_fields(self, request: HttpRequest, obj: Budget | None = None) -> tuple[str, ...]:
        return ("name",) if obj else ()

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # deactivate instead; alerts and overrides refer to it

    @admin.display(description="scope")
    def scope(self, budget: Budget) -> str:
        return budget.agent.slug if budget.agent is not None else "all agents"

    @admin.display(description="spent (current period)")
    def spent(self, budget: Budget) -> str:
        """Spend and share of the budget, read with the list (selectors.with_spent; the burn rate is the
        dashboard's)."""
        spent = budget.spent_usd  # type: ignore[attr-defined]  # annotated by selectors.with_spent
        percent = budgeting.percent_used(spent=spent, limit=budget.amount_usd)
        return f"{budgeting.format_usd(spent)} ({budgeting.format_percent(percent)})"


@admin.register(BudgetAlert)
class BudgetAlertAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("created_at", "budget", "period_key", "threshold_percent", "kind", "severity",
                    usd_column("spent_usd", "spent"), usd_column("budget_usd", "of"), "rearmed_at", "delivery",
                    "delivery_attempts")
    list_filter = ("severity", "kind", "delivery", "budget")


@admin.register(BudgetOverride)
class BudgetOverrideAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("created_at", "budget", "agent", "actor", usd_column("estimate_usd", "estimate"),
                    usd_column("spent_usd", "spent then"), usd_column("budget_usd", "budget then"), "reason")
    list_filter = ("budget", "agent")


@admin.register(CostHold)
class CostHoldAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Estimates set aside by paid work still running; they count against hard limits until released."""

    list_display = ("created_at", "agent", "operation", usd_column("amount_usd", "held"), "work", "released_at", "expires_at")
    list_filter = ("operation", "agent", ("released_at", admin.EmptyFieldListFilter))

    def get_queryset(self, request: HttpRequest) -> models.QuerySet[CostHold]:
        return selectors.holds_with_work(super().get_queryset(request).select_related("agent"))

    @admin.display(description="held for")
    def work(self, hold: CostHold) -> str:
        """The work as it is now (a job's state moves on), not the text saved when the hold was placed."""
        target = hold.source_object
        return hold.source if target is None else str(target)


# --- reports ---------------------------------------------------------------------------------------------------------


@admin.register(CostReport)
class CostReportAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("id", "created_at", "schedule_key", "status", "finished_at", "entry_count", usd_column("total_usd", "total"),
                    "downloads")
    list_filter = ("status",)
    exclude = ("markdown", "csv")
    readonly_fields = ("downloads", "preview")
    change_list_template = "admin/costs/costreport/change_list.html"

    @admin.display(description="download")
    def downloads(self, report: CostReport) -> str:
        if report.status != CostReport.Status.SUCCEEDED:
            return report.error[:120] if report.error else "—"
        return format_html(
            '<a href="{}">markdown</a> · <a href="{}">CSV</a>',
            reverse("admin:costs_costreport_download", args=[report.pk, "md"]),
            reverse("admin:costs_costreport_download", args=[report.pk, "csv"]),
        )

    @admin.display(description="report")
    def preview(self, report: CostReport) -> str:
        return format_html("<pre style='white-space: pre-wrap'>{}</pre>", report.markdown or "—")

    def get_urls(self) -> list[URLPattern]:
        return [
            path("<int:pk>/download/<str:fmt>/", self.admin_site.admin_view(self.download_view), name="costs_costreport_download"),
            path("generate/", self.admin_site.admin_view(self.generate_view), name="costs_costreport_generate"),
            *super().get_urls(),
        ]

    def download_view(self, request: HttpRequest, pk: int, fmt: str) -> HttpResponse:
        if not self.has_view_permission(request):
            raise DjangoPermissionDenied
        if fmt not in ("md", "csv"):
            raise Http404(f"a report downloads as md or csv, not '{fmt}'")
        report = get_object_or_404(CostReport, pk=pk, status=CostReport.Status.SUCCEEDED)
        content, content_type = {"md": (report.markdown, "text/markdown"), "csv": (report.csv, "text/csv")}[fmt]
        response = HttpResponse(content, content_type=f"{content_type}; charset=utf-8")
        stamp = f"{timezone.localtime(report.as_of or report.created_at):%Y-%m-%d}"  # the day its title names
        response["Content-Disposition"] = f'attachment; filename="genesis-costs-{stamp}-{report.pk}.{fmt}"'
        return response

    def generate_view(self, request: HttpRequest) -> HttpResponse:
        if request.method != "POST":
            return HttpResponseRedirect(reverse("admin:costs_costreport_changelist"))
        try:
            requested = cost_report_request(actor=request_actor(request))
        except DomainError as exc:
            messages.error(request, exc.message)
        else:
            messages.add_message(request, *_generate_message(requested))
        return HttpResponseRedirect(reverse("admin:costs_costreport_changelist"))


def _generate_message(requested: RequestedReport) -> tuple[int, str]:
    """What "Generate now" tells the person: queued, or saved but not queued (the broker is down)."""
    pk = requested.report.pk
    if requested.sent is False:
        return messages.WARNING, (
            f"report #{pk} is saved but could not be queued: the task broker (Redis) did not answer. "
            "Beat's “costs: resend stranded cost reports” sends it again within minutes of the broker "
            "answering; it stays Pending until then (after 5 tries it is marked failed with the reason)."
        )
    return messages.SUCCESS, f"report #{pk} queued; a worker makes it in a moment"


# --- the dashboard -----------------------------------------------------------------------------------------------------


@admin.register(CostDashboard)
class CostDashboardAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """The cost dashboard: budget gauge with thresholds, spend over time by agent and by operation,
    burn rate and projected exhaustion, and the alerts."""

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm("costs.view_costentry")

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self.has_view_permission(request)

    def get_urls(self) -> list[URLPattern]:
        return [path("", self.admin_site.admin_view(self.changelist_view), name="costs_costdashboard_changelist")]

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        if not self.has_view_permission(request):
            raise DjangoPermissionDenied
        budgets = list(Budget.objects.filter(active=True).select_related("agent").order_by("name"))
        chosen_name = request.GET.get("budget") or ("default" if any(b.name == "default" for b in budgets) else None)
        budget = next((b for b in budgets if b.name == chosen_name), budgets[0] if budgets else None)
        days = 30
        context: dict[str, Any] = {
            "title": "Cost dashboard",
            "budgets": budgets,
            "budget": budget,
            "days": days,
            "now": timezone.localtime(),
        }
        if budget is not None:
            status = selectors.budget_status(budget=budget)
            split = selectors.spend_split(budget=budget, period=status.period)
            context.update(
                status=status,
                spent=budgeting.format_usd(status.spent),
                limit=budgeting.format_usd(budget.amount_usd),
                held=budgeting.format_usd(status.held),
                remaining=budgeting.format_usd(status.remaining),
                percent=budgeting.format_percent(status.percent),
                burn=budgeting.format_usd(status.projection.burn_usd_per_day),
                gauge=charts.budget_gauge(percent=status.percent, thresholds=status.thresholds),
                by_agent_totals=[(k, budgeting.format_usd(v)) for k, v in split.by_agent.items()],
                by_operation_totals=[(k, budgeting.format_usd(v)) for k, v in split.by_operation.items()],
                alerts=list(selectors.recent_alerts(budget=budget, limit=20)),
                overrides=list(BudgetOverride.objects.filter(budget=budget).select_related("agent", "actor")[:10]),
            )
        by_agent = selectors.daily_spend(dimension="agent", days=days, budget=budget)
        by_operation = selectors.daily_spend(dimension="operation", days=days, budget=budget)
        context.update(
            agent_chart=charts.stacked_bars(days=by_agent.days, series=by_agent.series),
            operation_chart=charts.stacked_bars(days=by_operation.days, series=by_operation.series),
            operations=Operation.choices,
        )
        return admin_page(self, request, "admin/costs/dashboard.html", context)
