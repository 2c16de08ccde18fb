"""genesis/admin_base.py: an admin that uses the service add page without saying how to add is refused
when its class is defined, not when someone first submits the form; an action that calls a service is
offered only with its permission and turns a refusal into a message, undoing what it had done."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib import admin
from django.contrib.messages import get_messages
from django.contrib.messages.storage.fallback import FallbackStorage
from django.contrib.sessions.backends.db import SessionStore
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse

from genesis.admin_base import ServiceAddFormMixin, service_action
from genesis.errors import Conflict
from models_app.registry.models import ApiKey
from models_app.registry.services import api_key_create, api_key_revoke


def test_an_add_page_without_its_service_call_is_refused_at_definition() -> None:
    with pytest.raises(TypeError, match="without add_through_service and add_done"):
        type("NoHooksAdmin", (ServiceAddFormMixin,), {})

    with pytest.raises(TypeError, match="NoServiceAdmin uses ServiceAddFormMixin without add_through_service$"):
        class NoServiceAdmin(ServiceAddFormMixin):
            def add_done(self, request: HttpRequest, added: Any) -> HttpResponse:
                return HttpResponse()


def test_an_add_page_with_both_hooks_is_accepted() -> None:
    class CompleteAdmin(ServiceAddFormMixin):
        def add_through_service(self, request: HttpRequest, form: Any) -> Any:
            return None

        def add_done(self, request: HttpRequest, added: Any) -> HttpResponse:
            return HttpResponse()

    assert callable(CompleteAdmin.add_through_service) and callable(CompleteAdmin.add_done)


@pytest.mark.django_db
def test_a_service_action_refused_part_way_undoes_the_rows_done_before_and_says_so(rf) -> None:
    class KeyAdmin(admin.ModelAdmin):
        @service_action(description="Revoke one by one", permissions=("change",))
        def revoke_each(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
            for index, key in enumerate(queryset.order_by("pk")):
                if index == 1:
                    raise Conflict(f"key '{key.label}' is in use")
                api_key_revoke(key=key, actor=None)

    assert KeyAdmin.revoke_each.allowed_permissions == ("change",)  # offered only to who may change rows
    for label in ("first", "second"):
        api_key_create(label=label, agents=[], all_agents=True)
    request = rf.post("/admin/")
    request.session = SessionStore()
    request._messages = FallbackStorage(request)
    KeyAdmin(ApiKey, admin.site).revoke_each(request, ApiKey.objects.all())
    assert [str(message) for message in get_messages(request)] == [
        "Revoke one by one: refused, nothing changed — key 'second' is in use"
    ]
    assert not ApiKey.objects.filter(revoked=True).exists()  # the first key's revocation was undone
