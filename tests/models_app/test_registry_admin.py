"""The model registry's admin pages, as the security review walked them: registering a version and
"Change status…" (finding 1: registry permissions alone put an untested model live for every user),
and "Revoke selected keys" on API keys — offered to a user who may only view keys, it answered 500:
the service refused and the key stayed, but the refusal was not caught, and with DEBUG on the 500 page
showed the settings."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.contrib.messages.storage.fallback import FallbackStorage
from django.contrib.sessions.backends.db import SessionStore
from django.urls import reverse

from experiments import routing
from models_app.registry.models import Agent, ApiKey, ModelVersion, ProviderAccount
from models_app.registry.services import api_key_create
from tests.experiments.factories import person
from tests.factories import AgentFactory, ProviderAccountFactory, UserFactory

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:models_app_apikey_changelist"


def registry_clerk():
    """A staff user holding only models_app.add_modelversion and models_app.change_modelversion."""
    user = UserFactory(username="clerk")
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="models_app",
                                                         codename__in=["add_modelversion", "change_modelversion"]))
    return type(user).objects.get(pk=user.pk)


def route(client, key: str, agent: str = "qa_agent") -> dict:
    # The routing table is a per-process copy refreshed within seconds; rebuild it now from the database.
    routing.reset()
    response = client.post("/api/v1/route", {"agent": agent, "user_id": "u1"}, content_type="application/json",
                           HTTP_AUTHORIZATION=f"Bearer {key}")
    assert response.status_code == 200, response.content
    return response.json()


def register(client, **fields):
    return client.post(reverse("admin:models_app_modelversion_add"), fields)


def test_registry_permissions_alone_cannot_put_an_untested_model_live(seeded_demo, client, api_key_for):
    key = api_key_for("qa_agent")
    assert route(client, key)["model"] == "open-mistral-7b"
    client.force_login(registry_clerk())
    agent, provider = Agent.objects.get(slug="qa_agent"), ProviderAccount.objects.get(name="simulator")

    added = register(client, agent=agent.pk, provider=provider.pk, model_id="untested-model-x",
                     base_model="untested-model-x", kind="baseline", reason="")
    assert added.status_code == 302  # registering stays the registry's business
    version = ModelVersion.objects.get(agent=agent, model_id="untested-model-x")
    assert (version.kind, version.status) == ("baseline", "registered")

    transition_url = reverse("admin:models_app_modelversion_transition", args=[version.pk])
    page = client.get(transition_url).content.decode()
    assert 'value="live"' not in page and 'value="retired"' in page  # it may still be retired or rejected by hand
    refused = client.post(transition_url, {"to_status": "live", "reason": "x"})
    assert refused.status_code == 200 and "Select a valid choice. live is not one of the available choices." in refused.content.decode()

    assert ModelVersion.objects.get(pk=version.pk).status == "registered"
    assert ModelVersion.objects.get(agent=agent, status="live").model_id == "open-mistral-7b"
    answer = route(client, key)
    assert (answer["model"], answer["variant"]) == ("open-mistral-7b", "live")

    # Nor in two steps: the live version cannot be retired by hand, so the agent never looks "new".
    live = ModelVersion.objects.get(agent=agent, status="live")
    assert 'value="retired"' not in client.get(reverse("admin:models_app_modelversion_transition", args=[live.pk])).content.decode()
    assert "Change status…" not in client.get(reverse("admin:models_app_modelversion_change", args=[live.pk])).content.decode()
    client.post(reverse("admin:models_app_modelversion_transition", args=[live.pk]), {"to_status": "retired", "reason": "x"})
    assert ModelVersion.objects.get(pk=live.pk).status == "live"


def test_an_agents_first_baseline_is_put_live_by_hand(client, api_key_for):
    agent, provider = AgentFactory(slug="new_agent"), ProviderAccountFactory()
    client.force_login(registry_clerk())
    register(client, agent=agent.pk, provider=provider.pk, model_id="open-mistral-7b", base_model="open-mistral-7b",
             kind="baseline", reason="the agent's first model")
    version = ModelVersion.objects.get(agent=agent)
    transition_url = reverse("admin:models_app_modelversion_transition", args=[version.pk])
    assert 'value="live"' in client.get(transition_url).content.decode()

    assert client.post(transition_url, {"to_status": "live", "reason": "serves from today"}).status_code == 302
    assert ModelVersion.objects.get(pk=version.pk).status == "live"
    answer = route(client, api_key_for("new_agent"), agent="new_agent")
    assert (answer["model"], answer["variant"]) == ("open-mistral-7b", "live")


def test_a_fine_tuned_id_registered_as_a_baseline_is_refused_on_the_form(seeded_demo, client):
    client.force_login(registry_clerk())
    agent, provider = Agent.objects.get(slug="qa_agent"), ProviderAccount.objects.get(name="simulator")
    page = register(client, agent=agent.pk, provider=provider.pk, model_id="ft:open-mistral-7b:0123abcd:20261101:deadbeef",
                    base_model="open-mistral-7b", kind="baseline", reason="")
    assert page.status_code == 200
    assert "is a fine-tuned model (its id starts with &#x27;ft:&#x27;); register it as fine_tuned" in page.content.decode()
    assert not ModelVersion.objects.filter(model_id__startswith="ft:open-mistral-7b:0123abcd").exists()


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
