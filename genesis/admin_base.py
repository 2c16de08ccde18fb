"""What the apps' admin pages share: rows that are records (viewed, never edited or deleted here)
and inlines that only list rows."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.utils import flatten
from django.http import HttpRequest


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
