"""What a new operator tripped over (issue 17), each fixed and held here: approvers may read the
evidence they judge, no Delete on a live version, no Save on a finished experiment, the benchmark
form lists the chosen agent's models only, a moving fine-tuning job's page refreshes itself."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from audits import services as audit_services
from experiments.services import experiment_rollback, experiment_start
from models_app.finetuning.models import FineTuningJob
from models_app.registry.models import Agent, ModelVersion
from tests.experiments.factories import draft_experiment, person
from tests.factories import ModelVersionFactory, UserFactory
from tests.models_app.finetuning_fixtures import DEMO_TRAINING_FILE, ft_simulator, ft_world  # noqa: F401

pytestmark = pytest.mark.django_db


def test_the_approver_group_can_read_what_it_approves(seeded_demo, client):
    approver = UserFactory(username="adam")
    approver.groups.add(Group.objects.get(name="Rollout approvers"))
    client.force_login(approver)
    version = ModelVersion.objects.filter(agent__slug="support_agent", kind="fine_tuned").get()
    for url in (reverse("admin:models_app_modelversion_change", args=[version.pk]),
                reverse("admin:models_app_benchmarkrun_changelist"), reverse("admin:models_app_finetuningjob_changelist"),
                reverse("admin:audits_dataset_changelist"), reverse("admin:experiments_experiment_changelist")):
        assert client.get(url).status_code == 200, url
    page = client.get(reverse("admin:models_app_modelversion_change", args=[version.pk])).content.decode()
    assert 'id="lineage"' in page


def test_a_live_version_offers_no_delete(admin_client):
    experiment = draft_experiment("qa_agent")
    live = experiment.control
    page = admin_client.get(reverse("admin:models_app_modelversion_change", args=[live.pk])).content.decode()
    assert "deletelink" not in page
    refused = admin_client.post(reverse("admin:models_app_modelversion_delete", args=[live.pk]), {"post": "yes"})
    assert refused.status_code == 302 and ModelVersion.objects.filter(pk=live.pk).exists()  # told why on its page
    candidate_page = admin_client.get(reverse("admin:models_app_modelversion_change", args=[experiment.treatment_id])).content.decode()
    assert "deletelink" not in candidate_page  # its experiment names it (tests/models_app/test_registry_delete.py)
    unused = ModelVersionFactory(agent=experiment.agent, provider=live.provider)
    unused_page = admin_client.get(reverse("admin:models_app_modelversion_change", args=[unused.pk])).content.decode()
    assert "deletelink" in unused_page  # a version registered by mistake may still go


def test_a_finished_experiment_has_no_save_buttons(admin_client):
    starter = person("starter", "add_experiment", "start_experiment", "rollback_experiment")
    experiment = experiment_start(experiment=draft_experiment("qa_agent", actor=starter), actor=starter)
    url = reverse("admin:experiments_experiment_change", args=[experiment.pk])
    assert 'name="_save"' in admin_client.get(url).content.decode()
    experiment_rollback(experiment=experiment, actor=starter, reason="test")
    page = admin_client.get(url).content.decode()
    assert 'name="_save"' not in page and 'id="rollout"' in page


def test_the_benchmark_form_lists_only_the_chosen_agents_models(seeded_demo, admin_client):
    agent = Agent.objects.get(slug="support_agent")
    page = admin_client.get(reverse("admin:models_app_benchmarkrun_add") + f"?agent={agent.pk}").content.decode()
    for version in ModelVersion.objects.filter(kind="fine_tuned"):
        assert (version.model_id in page) == (version.agent_id == agent.pk), version


def test_the_job_form_takes_an_audited_dataset_and_the_moving_job_page_refreshes(ft_world, client):  # noqa: F811
    root = UserFactory(username="root", is_superuser=True)
    client.force_login(root)
    dataset = audit_services.dataset_upload(
        content=SimpleUploadedFile("train.jsonl", DEMO_TRAINING_FILE.read_bytes()), original_name="train.jsonl",
        agent=ft_world.agent, actor=root,
    )
    add_url = reverse("admin:models_app_finetuningjob_add")
    assert f'value="{dataset.pk}"' not in client.get(add_url).content.decode()  # not offered before its audit
    audit_services.audit_run_execute(run_id=dataset.latest_audit_id)
    form = client.get(add_url).content.decode()
    assert "…or an audited dataset" in form and f'value="{dataset.pk}"' in form and "audit clean" in form
    response = client.post(add_url, {"agent": "support_agent", "training_dataset": dataset.pk, "epochs": "1"}, follow=True)
    job = FineTuningJob.objects.get()
    assert job.training_file.dataset == dataset and job.status == "QUEUED"
    assert 'http-equiv="refresh"' in response.content.decode()  # it moves: the page follows it
    assert "$4.00" in response.content.decode()  # the estimate, through the money helper
    # …and says so, with a way to stop it: each reload puts a screen reader back at the top (WCAG 2.2.1).
    assert 'id="stop-refresh">stop reloading</button>' in response.content.decode()
    job_url = reverse("admin:models_app_finetuningjob_change", args=[job.pk])
    client.post(reverse("auto_refresh"), {"refresh": "off", "next": job_url})
    still = client.get(job_url).content.decode()
    assert 'http-equiv="refresh"' not in still and "reload every 10 s</button>" in still


def test_approval_reason_edit_before_after_and_one_config_version(client, api_key_for):
    from experiments.models import EventAction, ExperimentEvent
    from experiments.services import experiment_update
    from tests.experiments.factories import feed

    starter = person("starter", "view_experiment", "add_experiment", "change_experiment", "start_experiment", "request_stage")
    approver = person("approver", "view_experiment", "approve_stage")
    experiment = experiment_start(experiment=draft_experiment("qa_agent", actor=starter), actor=starter)
    experiment_update(experiment=experiment, actor=starter, min_samples_per_arm=25)
    feed(experiment, arm="treatment", n=25, success_rate=0.9, seed=1)
    feed(experiment, arm="control", n=225, success_rate=0.9, seed=2)
    client.force_login(starter)
    client.post(reverse("admin:experiments_experiment_act", args=[experiment.pk, "request"]))
    client.force_login(approver)
    page = client.get(reverse("admin:experiments_experiment_change", args=[experiment.pk])).content.decode()
    assert 'name="reason" placeholder="why approve' in page
    assert "min_samples_per_arm: 20 → 25" in page and "config_version: 1 → 2" in page  # the edit, before → after
    api = client.get("/api/v1/agents/qa_agent/config", HTTP_AUTHORIZATION=f"Bearer {api_key_for('qa_agent')}").json()
    assert f'<span data-testid="agent-config-version">{api["config_version"]}</span>' in page
    pending = experiment.stages.get(percent=25).approvals.get()
    client.post(reverse("admin:experiments_experiment_act", args=[experiment.pk, "approve"]),
                {"approval": pending.pk, "config_version": 2, "reason": "success rate steady over 250 users"})
    event = ExperimentEvent.objects.get(action=EventAction.APPROVAL)
    assert event.actor == approver and event.reason == "success rate steady over 250 users"


def test_provider_timestamps_read_as_people_read_them():
    from models_app.finetuning.admin import _human_time

    assert _human_time("2026-12-06T00:19:04.123456+00:00") == "2026-12-06 00:19:04 UTC"
    assert _human_time(1796515200) == "2026-12-06 00:00:00 UTC"
    assert _human_time(None) == "—" and _human_time("soon") == "soon"
