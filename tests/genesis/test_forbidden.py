"""Actions a person lacks the permission for are not offered, and a 403 page that can still be
reached (a typed URL, an old link) says which permission is missing instead of a bare "403 Forbidden"."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse

from tests.experiments.factories import agent_with_candidate
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def member(username: str, group: str):
    user = UserFactory(username=username)
    user.groups.add(Group.objects.get(name=group))
    return type(user).objects.get(pk=user.pk)


def test_a_view_only_approver_is_not_offered_change_status_and_its_url_names_the_permission(seeded_demo, client):
    # Was: "Change status…" on the page, and a bare 403 page behind it.
    version = agent_with_candidate("demo_agent")[2]
    client.force_login(member("adam", "Rollout approvers"))
    page = client.get(reverse("admin:models_app_modelversion_change", args=[version.pk]))
    assert page.status_code == 200 and "Change status" not in page.content.decode()
    refused = client.get(reverse("admin:models_app_modelversion_transition", args=[version.pk]))
    assert refused.status_code == 403
    assert "changing a model version&#x27;s status needs the permission &#x27;models_app.change_modelversion&#x27;" in (
        refused.content.decode())

    client.force_login(UserFactory(username="root", is_superuser=True))
    assert "Change status…" in client.get(reverse("admin:models_app_modelversion_change", args=[version.pk])).content.decode()


def test_an_admin_add_page_without_the_permission_names_it(seeded_demo, client):
    # Was: a rollout operator at Fine-tuning jobs › Add read only "403 Forbidden".
    client.force_login(member("olivia", "Rollout operators"))
    refused = client.get(reverse("admin:models_app_finetuningjob_add"))
    assert refused.status_code == 403
    html = refused.content.decode()
    assert "Not allowed for olivia" in html and "this page needs the permission &#x27;models_app.add_finetuningjob&#x27;" in html
    assert "Admin › Users" in html
    # A permission a demo group has is named with it.
    client.force_login(UserFactory(username="nobody"))
    html = client.get(reverse("admin:experiments_experiment_changelist")).content.decode()
    assert "experiments.view_experiment" in html and "“Rollout approvers”, “Rollout operators”" in html
