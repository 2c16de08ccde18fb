"""The User admin: Django's own, except that a person who appears in the record is never deleted.

Every "who" column of Genesis (who started an experiment, requested or approved a stage, registered
a model, logged a cost, uploaded a dataset…) is PROTECT, and the rows' History names the user too
(simple-history's `history_user`, which the library itself sets to NULL on delete). Deleting such a
user would turn their approvals into Genesis's own (an experiment event's null actor means Genesis
itself) and empty the four-eyes record, so the delete is refused and the operator is told to
deactivate the user instead. The admin's own log counts as record too: its `user` column is CASCADE,
so deleting a staff member whose only trace is there (they granted someone `approve_stage`) would
delete the log of what they did with them. A user added by mistake, who never acted, may still be
deleted."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.models import LogEntry
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.models import User
from simple_history.models import HistoricalChanges

from genesis.admin_base import DeleteWhenUnusedMixin, Reference, foreign_keys_to, protecting_references, reference_by


def history_references() -> list[Reference]:
    """The History rows each tracked model keeps of who changed it."""
    return [
        reference_by(relation) for relation in foreign_keys_to(User)
        if isinstance(relation.related_model, type) and issubclass(relation.related_model, HistoricalChanges)
    ]


def admin_log_reference() -> Reference:
    """The admin's log of what each staff member changed (CASCADE: Django would delete it with them)."""
    return reference_by(LogEntry._meta.get_field("user").remote_field)


class RecordKeepingUserAdmin(DeleteWhenUnusedMixin, UserAdmin):
    delete_instead = (
        "Deactivate the user instead: untick Active on their page. They can no longer sign in, and the "
        "record keeps their name on what they did."
    )

    def references(self) -> list[Reference]:
        return [*protecting_references(User), *history_references(), admin_log_reference()]


admin.site.unregister(User)
admin.site.register(User, RecordKeepingUserAdmin)
