"""What the apps' admin pages share: rows that are records (viewed, never edited or deleted here),
inlines that only list rows, and the context every page of our own needs (its template extends
templates/admin/model_page.html, which draws the breadcrumbs)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.contrib import admin
from django.contrib.admin.utils import flatten
from django.http import HttpRequest
from django.template.response import TemplateResponse


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
