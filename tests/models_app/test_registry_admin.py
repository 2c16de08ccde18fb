"""The API key admin: "Revoke selected keys" is offered only to people who may change keys. It was
offered to a user who may only view them, and pressing it answered 500 — the service refused, the key
stayed, but its refusal was not caught, and with DEBUG on the 500 page showed the settings."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.contrib.messages import get_messages
from django.contrib.messages.storage.fallback import FallbackStorage
from django.contrib.sessions.backends.db import SessionStore
from django.urls import reverse

from models_app.registry.models import ApiKey
from models_app.registry.services import api_key_create
from tests.experiments.factories import person

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:models_app_apikey_changelist"


def revoke_form(*keys: ApiKey) -> dict[str, object]:
    return {"action": "revoke_selected", "index": "0", "_selected_action": [key.pk for key in keys]}


def test_a_user_who_may_only_view_keys_is_not_offered_revoke_and_cannot_press_it(client):
    key, _ = api_key_create(label="ci", agents=[], all_agents=True)
    client.force_login(person("viewer", "models_app.view_apikey"))
    page = client.get(reverse(CHANGELIST))
    assert page.status_code == 200 and "ci" in page.content.decode()
    assert "Revoke selected keys" not in page.content.decode()
    pressed = client.post(reverse(CHANGELIST), revoke_form(key), follow=True)
    assert pressed.status_code == 200  # was: 500
    key.refresh_from_db()
    assert not key.revoked


def test_a_user_who_may_change_keys_revokes_them(client):
    first, _ = api_key_create(label="ci", agents=[], all_agents=True)
    second, _ = api_key_create(label="laptop", agents=[], all_agents=True)
    client.force_login(person("keeper", "models_app.view_apikey", "models_app.change_apikey"))
    assert "Revoke selected keys" in client.get(reverse(CHANGELIST)).content.decode()
    pressed = client.post(reverse(CHANGELIST), revoke_form(first, second), follow=True)
    assert [str(message) for message in pressed.context["messages"]] == ["revoked 2 key(s)"]
    assert ApiKey.objects.filter(revoked=True).count() == 2


def test_a_refusal_inside_the_action_is_an_error_message_not_a_500(rf):
    # Behind the permission gate, the service's own refusal (a DomainError) is still shown as a message:
    # the action as the admin runs it, for a person the service refuses.
    key, _ = api_key_create(label="ci", agents=[], all_agents=True)
    request = rf.post(reverse(CHANGELIST))
    request.user = person("viewer", "models_app.view_apikey")
    request.session = SessionStore()
    request._messages = FallbackStorage(request)
    key_admin = admin.site._registry[ApiKey]
    assert key_admin.revoke_selected(request, ApiKey.objects.all()) is None
    assert [str(message) for message in get_messages(request)] == [
        "Revoke selected keys: refused, nothing changed — user 'viewer' may not revoke API keys: "
        "it needs the permission 'models_app.change_apikey'"
    ]
    key.refresh_from_db()
    assert not key.revoked
