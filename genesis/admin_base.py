"""What the apps' admin pages share: rows that are records (viewed, never edited or deleted here),
inlines that only list rows, the add page of a model whose rows only a service writes, add and change
forms that save through their service (ServiceForm), actions on the selected rows that call a service,
the context every page of our own needs, and deleting only rows nothing keeps a record of
(DeleteWhenUnusedMixin). The templates' side is templates/admin/model_page.html (the
breadcrumbs) and templates/admin/form_page.html (a form that calls a service)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any, Literal, TypeVar

from django import forms
from django.apps import apps
from django.contrib import admin, messages
from django.contrib.admin.utils import flatten, unquote
from django.contrib.admin.views.main import ORDER_VAR, ChangeList
from django.contrib.contenttypes.fields import GenericForeignKey
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db import models, transaction
from django.db.models import ManyToOneRel, Max, Min, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.text import capfirst

from genesis.errors import DomainError, field_errors
from genesis.permissions import Actor, request_actor


class RecordAdminMixin:
    """For the admin of rows that are records (an upload, a run, a ledger entry): added through a
    service and viewed, never changed or deleted here."""

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ReadOnlyAdminMixin(RecordAdminMixin):
    """Rows written only by services and workers (alerts, reports, audit runs): viewed, never added,
    changed or deleted here."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ReadOnlyTabularInline(admin.TabularInline):
    """A parent's rows listed on its page: every field in `fields` read-only, none added or deleted."""

    extra = 0
    can_delete = False

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return flatten(self.fields or ())

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def admin_page(model_admin: admin.ModelAdmin, request: HttpRequest, template: str, context: Mapping[str, Any]) -> TemplateResponse:
    """A page a ModelAdmin adds beside Django's own, with what the admin's templates expect: the
    site's context (navigation, user) and `opts`, the model's _meta."""
    page = {**model_admin.admin_site.each_context(request), "opts": model_admin.model._meta, **context}
    return TemplateResponse(request, template, page)


class ServiceAddFormMixin(admin.ModelAdmin):
    """The add page of a model whose rows only a service writes (Django's ModelForm would write the
    row itself). It shows `add_form`, a plain form; a valid submission goes to `add_through_service`,
    which calls the service and returns the row it wrote, and `add_done` then says so and redirects.
    A DomainError the service raises is shown by `add_refused` — on the form unless an admin shows it
    otherwise — and the form is shown again. A ModelAdmin itself only so that its hooks are typed:
    among an admin's bases, put it before any other ModelAdmin (SimpleHistoryAdmin)."""

    add_form: type[forms.Form]
    add_form_template = "admin/form_page.html"
    add_page: Mapping[str, str] = {}  # the page's title, and the intro and submit_label form_page.html shows

    def add_form_initial(self, request: HttpRequest) -> dict[str, Any] | None:
        return None

    # Every admin supplies these two; a class without them is refused when it is defined.
    add_through_service: Callable[[HttpRequest, forms.Form], Any]  # calls the service: the row it wrote
    add_done: Callable[[HttpRequest, Any], HttpResponse]  # says what was added and redirects

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        missing = [hook for hook in ("add_through_service", "add_done") if not callable(getattr(cls, hook, None))]
        if missing:
            raise TypeError(f"{cls.__name__} uses ServiceAddFormMixin without {' and '.join(missing)}")

    def add_refused(self, request: HttpRequest, form: forms.Form, error: DomainError) -> None:
        form.add_error(None, error.message)

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: dict[str, Any] | None = None) -> HttpResponse:
        if not self.has_add_permission(request):
            raise DjangoPermissionDenied
        form = self.add_form(request.POST or None, request.FILES or None, initial=self.add_form_initial(request))
        if request.method == "POST" and form.is_valid():
            try:
                added = self.add_through_service(request, form)
            except DomainError as exc:
                self.add_refused(request, form, exc)
            else:
                return self.add_done(request, added)
        return admin_page(self, request, self.add_form_template, {**self.add_page, "form": form})


class ServiceForm(forms.ModelForm):
    """A ModelForm whose save is a service call, made as the last step of validation so that a
    DomainError becomes a form error. The admin runs the whole view in one transaction, so the
    service's write commits only with a response that reports it."""

    actor: Actor = None  # the request's user; ServiceFormAdminMixin.get_form sets it
    saved: models.Model  # the row the service wrote: set once validation passes, which the admin's save requires
    # Every form supplies this (called with actor=…); a form without it is refused when it is defined.
    save_through_service: Callable[..., models.Model]  # calls the service: the row it wrote

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not callable(getattr(cls, "save_through_service", None)):
            raise TypeError(f"{cls.__name__} is a ServiceForm without save_through_service")

    def full_clean(self) -> None:
        super().full_clean()
        if not self.is_bound or self.errors:
            return
        try:
            self.saved = self.save_through_service(actor=self.actor)
        except DomainError as exc:
            # Services prefix a message with the parameter it is about ("amount_usd: …"); show it on that field.
            [named] = field_errors(exc.message)
            if named["field"] in self.fields:
                self.add_error(named["field"], named["message"])
            else:
                self.add_error(None, exc.message)


class ServiceFormAdminMixin(admin.ModelAdmin):
    """For a ModelAdmin whose form is a ServiceForm: the form gets the user, and saving the model is
    taking the row the service wrote. A ModelAdmin itself only so that its hooks are typed: among an
    admin's bases, put it before any other ModelAdmin (SimpleHistoryAdmin)."""

    def get_form(
        self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any
    ) -> type[forms.ModelForm[Any]]:
        form_class = super().get_form(request, obj, change, **kwargs)
        return type(form_class.__name__, (form_class,), {"actor": request_actor(request)})

    def save_model(self, request: HttpRequest, obj: models.Model, form: ServiceForm, change: bool) -> None:
        obj.pk = form.saved.pk
        obj._state.adding = False


_AdminT = TypeVar("_AdminT", bound=admin.ModelAdmin)  # any ModelAdmin
ServiceActionFunction = Callable[[_AdminT, HttpRequest, "QuerySet[Any]"], HttpResponse | None]


def service_action(
    *, description: str, permissions: Sequence[str],
) -> Callable[[ServiceActionFunction[_AdminT]], ServiceActionFunction[_AdminT]]:
    """`@admin.action` for an action that calls a service on the selected rows. Offered only to people
    with `permissions` (the ModelAdmin's `has_<name>_permission`, as Django's own `permissions=`): an
    admin action Django offers without one is offered to anyone who may view the list. A DomainError
    the service raises is its refusal, shown as an error message instead of a 500 (whose debug page
    would show settings); the action runs in one transaction, so a refusal part-way undoes the rows
    done before it."""

    def decorate(action: ServiceActionFunction[_AdminT]) -> ServiceActionFunction[_AdminT]:
        @functools.wraps(action)
        def run(model_admin: _AdminT, request: HttpRequest, queryset: QuerySet[models.Model]) -> HttpResponse | None:
            try:
                with transaction.atomic():
                    return action(model_admin, request, queryset)
            except DomainError as exc:
                model_admin.message_user(request, f"{description}: refused, nothing changed — {exc.message}", level=messages.ERROR)
                return None

        return admin.action(run, description=description, permissions=permissions)

    return decorate


# --- deleting only what nothing keeps a record of ----------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """Rows of `model` that name rows of another table: those whose `key` column holds their id (and
    that match `where`: a generic foreign key's content type). `label` says which: "outcome events
    (agent)"."""

    label: str
    model: type[models.Model]
    key: str
    where: Mapping[str, Any] = field(default_factory=dict)

    def naming(self, pks: Sequence[Any]) -> QuerySet[Any]:
        return self.model._base_manager.filter(**self.where, **{f"{self.key}__in": list(pks)})


def foreign_keys_to(model: type[models.Model]) -> list[ManyToOneRel]:
    """Every foreign key and one-to-one of a table pointing at `model`, hidden ones (related_name="+") too."""
    return [relation for relation in model._meta.get_fields(include_hidden=True) if isinstance(relation, ManyToOneRel)]


def reference_by(relation: ManyToOneRel) -> Reference:
    referring = relation.related_model
    return Reference(f"{referring._meta.verbose_name_plural} ({relation.field.verbose_name})", referring, relation.field.name)


def protecting_references(model: type[models.Model]) -> list[Reference]:
    """What keeps a row of `model` from being deleted: every foreign key to it that is PROTECT or
    RESTRICT (the collector would refuse anyway, after reading every such row), and every generic
    foreign key of any model (a ledger entry's source) — which the collector does not see at all, so
    deleting the row would leave the entry naming a row that is gone. Read from the models, so a new
    relation protects without being listed here."""
    references = [
        reference_by(relation) for relation in foreign_keys_to(model) if relation.on_delete in (models.PROTECT, models.RESTRICT)
    ]
    content_type = ContentType.objects.get_for_model(model)
    for referring in apps.get_models():
        for generic in referring._meta.private_fields:
            if isinstance(generic, GenericForeignKey) and not referring._meta.proxy:
                label = f"{referring._meta.verbose_name_plural} ({generic.name.replace('_', ' ')})"
                references.append(Reference(label, referring, generic.fk_field, {generic.ct_field: content_type}))
    return references


def rows_in_use(pks: Sequence[Any], references: Sequence[Reference]) -> dict[Any, list[str]]:
    """Each of the rows `pks` that `references` name → the labels of those that do. EXISTS queries
    only, each stopping at the first row an index finds, whatever the number of referring rows: one
    per reference for the whole selection, then one per row for a reference that names some of them.
    Built with the ids as constants, not as a correlated subquery, so that the planner sees the id:
    for a correlated one it plans a scan of the whole table (500 000 outcomes read to find that a new
    agent has none)."""
    in_use: dict[Any, list[str]] = {}
    for reference in references:
        if not reference.naming(pks).exists():
            continue
        for pk in pks:
            if len(pks) == 1 or reference.naming([pk]).exists():
                in_use.setdefault(pk, []).append(reference.label)
    return in_use


class DeleteWhenUnusedMixin(admin.ModelAdmin):
    """Deletes only a row nothing keeps a record of (`references`). Django's delete page and its "Delete
    selected" action learn what a deletion would touch by collecting it, every protecting row read into
    memory — an agent with 500 000 outcomes took 15–19 s and 1.4 GB to say "Cannot delete". Here a few
    EXISTS queries (rows_in_use) decide first: a row in use offers no Delete; its delete page leads back
    to the row's page, saying which records name it and what to do instead (`delete_instead`); "Delete
    selected" lists the same refusals. Django's collector runs only for rows nothing protects. A
    ModelAdmin itself only so that its hooks are typed: among an admin's bases, put it before any other
    ModelAdmin (SimpleHistoryAdmin)."""

    delete_instead: str  # what a person does with a row in use, e.g. "Retire it instead (Change status…)."

    def references(self) -> list[Reference]:
        return protecting_references(self.model)

    def in_use(self, request: HttpRequest, pks: Sequence[Any]) -> dict[Any, list[str]]:
        # Asked up to three times by one delete page (its refusal, the permission, the objects to
        # delete): answered once per request.
        answers = request.__dict__.setdefault("_rows_in_use", {})
        asked = (self.model._meta.label, tuple(pks))
        if asked not in answers:
            answers[asked] = rows_in_use(pks, self.references())
        return answers[asked]

    def delete_refusal(self, obj: Any, labels: Sequence[str]) -> str:
        return f"{capfirst(self.model._meta.verbose_name)} '{obj}' cannot be deleted: {', '.join(labels)} name it. {self.delete_instead}"

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if not super().has_delete_permission(request, obj):
            return False
        return obj is None or not self.in_use(request, [obj.pk])

    def delete_view(self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        obj = self.get_object(request, unquote(object_id))
        # Someone who may delete such rows is told why not this one, on the row's page — a refusal by
        # the row's state, not a missing permission (the 403 page would say how to get one).
        if obj is not None and self.has_delete_permission(request):
            labels = self.in_use(request, [obj.pk]).get(obj.pk)
            if labels:
                self.message_user(request, self.delete_refusal(obj, labels), level=messages.ERROR)
                return HttpResponseRedirect(reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_change", args=[obj.pk]))
        return super().delete_view(request, object_id, extra_context)

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> tuple[list[Any], dict[str, int], set[str], list[Any]]:
        # Asked by the delete page and by "Delete selected" before either deletes: rows in use come back
        # as the "protected" list, so Django shows its "Cannot delete" page and deletes nothing.
        rows = {obj.pk: obj for obj in objs}  # the rows selected, as Django's own delete loads them
        in_use = self.in_use(request, list(rows))
        if in_use:
            return [], {}, set(), [self.delete_refusal(rows[pk], labels) for pk, labels in in_use.items()]
        return super().get_deleted_objects(objs, request)


# --- lists of millions of rows ----------------------------------------------------------------------------


def _period_start(moment: datetime, kind: str) -> datetime:
    """The naive local start of the year, month or day `moment` (naive, local) falls in."""
    start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return start.replace(month=1, day=1) if kind == "year" else start.replace(day=1) if kind == "month" else start


def _next_period(start: datetime, kind: str) -> datetime:
    if kind == "year":
        return start.replace(year=start.year + 1)
    if kind == "month":
        return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
    return datetime.fromordinal(start.toordinal() + 1)


class PeriodsProbedQuerySet(QuerySet):
    """A queryset whose `datetimes(field, "year" | "month" | "day")` — what the admin's date hierarchy
    asks for the years, months or days to offer — probes each period between the first and the last
    row for one row (an EXISTS the field's index answers) instead of truncating the date of every row
    selected: on a ledger of a million entries the years took 280 ms, a scan that grows with the
    table; the probes read a few index entries per period. Same answer: the periods holding a row, as
    aware datetimes at their local start."""

    def datetimes(
        self, field_name: str, kind: Literal["year", "month", "week", "day", "hour", "minute", "second"],
        order: Literal["ASC", "DESC"] = "ASC", tzinfo: tzinfo | None = None,
    ) -> Any:
        if kind not in ("year", "month", "day"):
            return super().datetimes(field_name, kind, order=order, tzinfo=tzinfo)
        zone = tzinfo or timezone.get_current_timezone()
        bounds = self.order_by().aggregate(first=Min(field_name), last=Max(field_name))
        if bounds["first"] is None:
            return []
        start, last = (timezone.make_naive(bounds[end], zone) for end in ("first", "last"))
        start = _period_start(start, kind)
        periods = []
        while start <= last:
            end = _next_period(start, kind)
            begins, ends = timezone.make_aware(start, zone), timezone.make_aware(end, zone)
            if self.filter(**{f"{field_name}__gte": begins, f"{field_name}__lt": ends}).exists():
                periods.append(begins)
            start = end
        return periods if order == "ASC" else periods[::-1]


class SortableByChangeList(ChangeList):
    """A changelist that sorts only by its admin's `sortable_by`. Django leaves the other columns' headers
    without a link but still sorts by any column a URL names (`?o=3`); here such an `o` is ignored, as an
    index past the columns is, and the default ordering holds."""

    def get_ordering_field(self, field_name: Any) -> Any:
        if self.sortable_by is not None and field_name not in self.sortable_by:
            return None
        return super().get_ordering_field(field_name)

    def get_ordering(self, request: HttpRequest, queryset: QuerySet[Any]) -> list[Any]:
        # Django drops the admin's ordering as soon as `o` is given, usable or not: an `o` naming only
        # ignored columns left the list sorted by pk alone, not by the default (the ledger's newest first).
        if self.params.get(ORDER_VAR) and not self._orders_by_a_column():
            params, self.params = self.params, {key: value for key, value in self.params.items() if key != ORDER_VAR}
            try:
                return super().get_ordering(request, queryset)
            finally:
                self.params = params
        return super().get_ordering(request, queryset)

    def _orders_by_a_column(self) -> bool:
        """Whether `o` names a column the list sorts by (Django's parse: `[-]index`, dot-separated)."""
        for part in str(self.params[ORDER_VAR]).split("."):
            try:
                if self.get_ordering_field(self.list_display[int(part.rpartition("-")[2])]):
                    return True
            except (IndexError, ValueError):
                continue
        return False


class SortableByOnlyMixin(admin.ModelAdmin):
    """For an admin whose `sortable_by` keeps a big table's list off unindexed sorts: the list ignores
    any other column a URL asks to sort by (SortableByChangeList). Put it before any other ModelAdmin."""

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return SortableByChangeList


class DateHierarchyByProbesMixin(admin.ModelAdmin):
    """For the admin of a big table with a `date_hierarchy` on an indexed field: the hierarchy's
    periods come from index probes (PeriodsProbedQuerySet), not a scan of every row selected. A
    ModelAdmin itself only so that its hooks are typed: among an admin's bases, put it before any
    other ModelAdmin."""

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        queryset = super().get_queryset(request)
        clone = queryset._chain()  # type: ignore[attr-defined]  # QuerySet's own copy
        clone.__class__ = _periods_probed(type(queryset))
        return clone


@functools.cache
def _periods_probed(queryset_class: type[QuerySet[Any]]) -> type[QuerySet[Any]]:
    """`queryset_class` (the model's own, with its methods) answering datetimes() by probes."""
    if issubclass(queryset_class, PeriodsProbedQuerySet):
        return queryset_class
    return type(f"PeriodsProbed{queryset_class.__name__}", (PeriodsProbedQuerySet, queryset_class), {})
