"""The User admin keeps the four-eyes record (data-lifecycle review, finding 1): deleting user `op` in
the admin set every "who" column naming them to NULL — their starts, requests and approvals then read
as Genesis's own (an experiment event's null actor means Genesis itself) and the lineage showed
`approved_by: null`. A user who acted is now deactivated, never deleted."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.contrib.messages import get_messages
from django.db.models import ProtectedError
from django.urls import reverse

from experiments.models import ExperimentEvent, StageApproval
from experiments.services import experiment_start, stage_approve
from launch.selectors import model_lineage
from tests.experiments.factories import draft_experiment, feed, person
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def approved_rollout() -> tuple[User, User, StageApproval]:
    starter = person("op", "add_experiment", "start_experiment")
    approver = person("appr", "approve_stage")
    experiment = experiment_start(experiment=draft_experiment("qa_agent", actor=starter), actor=starter)
    feed(experiment, arm="treatment", n=20, success_rate=0.9, seed=1)
    feed(experiment, arm="control", n=180, success_rate=0.9, seed=2)
    stage_approve(stage=experiment.stages.get(percent=25), actor=approver)
    return starter, approver, StageApproval.objects.get(decided_by=approver)


def test_a_user_who_acted_is_not_deleted_and_the_record_keeps_their_name(admin_client):
    starter, approver, approval = approved_rollout()
    delete_url = reverse("admin:auth_user_delete", args=[approver.pk])

    assert "deletelink" not in admin_client.get(reverse("admin:auth_user_change", args=[approver.pk])).content.decode()
    refused = admin_client.post(delete_url, {"post": "yes"})
    assert refused.status_code == 302 and refused["Location"] == reverse("admin:auth_user_change", args=[approver.pk])
    [message] = [str(m) for m in get_messages(refused.wsgi_request)]
    assert "User 'appr' cannot be deleted" in message and "stage approvals (decided by)" in message
    assert "Deactivate the user instead" in message

    bulk = admin_client.post(reverse("admin:auth_user_changelist"),
                             {"action": "delete_selected", "_selected_action": [starter.pk, approver.pk], "post": "yes"})
    assert "Cannot delete" in bulk.content.decode() and "experiments (started by)" in bulk.content.decode()

    assert User.objects.filter(pk__in=[starter.pk, approver.pk]).count() == 2
    approval.refresh_from_db()
    assert (approval.decided_by, approval.stage.experiment.started_by) == (approver, starter)
    assert ExperimentEvent.objects.filter(actor=starter, action="start").exists()
    [lineage] = model_lineage(version=approval.stage.experiment.treatment)["experiments"]
    approvals = [a for stage in lineage["stages"] for a in stage["approvals"]]
    assert (lineage["started_by"], [(a["requested_by"], a["approved_by"]) for a in approvals]) == ("op", [("appr", "appr")])
    with pytest.raises(ProtectedError):  # and not through the ORM either: the columns are PROTECT
        approver.delete()


def test_a_user_added_by_mistake_is_still_deleted(admin_client):
    typo = UserFactory(username="tpyo")
    page = admin_client.get(reverse("admin:auth_user_delete", args=[typo.pk]))
    assert page.status_code == 200 and "Are you sure" in page.content.decode()
    assert admin_client.post(reverse("admin:auth_user_delete", args=[typo.pk]), {"post": "yes"}).status_code == 302
    assert not User.objects.filter(pk=typo.pk).exists()


def test_an_admin_who_only_granted_permissions_is_not_deleted_and_the_admin_log_stays(admin_client):
    """Second review: the admin log's `user` column is CASCADE — a staff member whose only trace was the
    log (they granted someone a permission) was deleted, and the record of the grant with them."""
    from django.contrib.admin.models import CHANGE, LogEntry

    granter = UserFactory(username="granter", is_staff=True)
    grantee = UserFactory(username="grantee")
    LogEntry.objects.log_actions(user_id=granter.pk, queryset=[grantee], action_flag=CHANGE,
                                 change_message="Changed user permissions: experiments | stage | Can approve stage",
                                 single_object=True)
    refused = admin_client.post(reverse("admin:auth_user_delete", args=[granter.pk]), {"post": "yes"})
    [message] = [str(m) for m in get_messages(refused.wsgi_request)]
    assert "User 'granter' cannot be deleted" in message and "log entries (user)" in message
    assert User.objects.filter(pk=granter.pk).exists()
    assert LogEntry.objects.filter(user=granter, object_id=str(grantee.pk)).count() == 1
