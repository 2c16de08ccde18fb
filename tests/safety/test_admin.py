"""The safety admin through Django's test client: import a prompt set (skipped lines listed), start a
build, read its report (agreement, cost), and the Stage-1 button through the fine-tuning budget check."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone

from costs.models import CostHold
from costs.services import budget_upsert
from genesis.errors import Conflict
from models_app.finetuning.models import FineTuningJob
from models_app.registry.models import Agent
from safety.models import PromptSet, WaltzBuild
from safety.services import FINETUNE_CLAIM_LASTS, waltz_build_create, waltz_build_execute, waltz_build_finetune
from tests.accessibility import accessibility_problems, self_reload
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def root_client(client):
    client.force_login(UserFactory(username="root", is_superuser=True))
    return client


def finished_build() -> WaltzBuild:
    build = waltz_build_create(agent=Agent.objects.get(slug="support_agent"), target=60, enqueue=False)
    return waltz_build_execute(build_id=build.pk)


def test_a_prompt_set_import_lists_every_skipped_line(root_client, seeded_demo) -> None:
    content = "\n".join([json.dumps({"text": "What does 'arson' mean?"}), "{oops", json.dumps({"text": ""})]).encode()
    response = root_client.post(reverse("admin:safety_promptset_add"), {
        "file": SimpleUploadedFile("mine.jsonl", content), "kind": "borderline", "field": "text",
        "category_field": "category", "source_field": "source",
    }, follow=True)
    page = response.content.decode()
    prompt_set = PromptSet.objects.get(file_name="mine.jsonl")
    assert prompt_set.prompt_count == 1 and prompt_set.problem_count == 2
    assert "line 2: not JSON" in page and "line 3: field &#x27;text&#x27; is empty" in page


def test_the_build_page_shows_agreement_and_cost_and_starts_stage1_through_the_budget_check(root_client, demo_simulator) -> None:
    build = finished_build()
    url = reverse("admin:safety_waltzbuild_change", args=[build.pk])
    page = root_client.get(url).content.decode()
    assert 'id="card-agreement"' in page and f"{build.report['agreement']['agree']} / {build.report['agreement']['judged']}" in page
    assert f"${build.cost_usd}" in page and "Fine-tune the feedback agent (Stage 1)" in page
    assert "feedback_agent" in page and "Disagreements kept for review" in page
    assert "consistency, not accuracy" in page and "review_waltzrl --build ID --sample N" in page  # what the number is not

    # Over budget: refused with the budget's reason, no job, no hold.
    budget_upsert(name="default", amount_usd=str(build.cost_usd + 1), period="monthly", hard_limit=True)
    page = root_client.post(reverse("admin:safety_waltzbuild_finetune", args=[build.pk]), follow=True).content.decode()
    assert "budget" in page and not FineTuningJob.objects.exists()

    budget_upsert(name="default", amount_usd="30", period="monthly", hard_limit=True)
    page = root_client.post(reverse("admin:safety_waltzbuild_finetune", args=[build.pk]), follow=True).content.decode()
    job = FineTuningJob.objects.get()
    build.refresh_from_db()
    assert build.finetuning_job == job and job.agent.slug == "support_agent"
    assert job.training_file.filename == "feedback_agent_train.jsonl" and job.validation_file.filename == "feedback_agent_valid.jsonl"
    assert CostHold.objects.filter(operation="fine_tuning", source_id=str(job.pk), released_at__isnull=True).exists()
    assert f"Stage-1 fine-tuning job #{job.pk}" in page and "Fine-tune the feedback agent (Stage 1)" not in page
    page = root_client.post(reverse("admin:safety_waltzbuild_finetune", args=[build.pk]), follow=True).content.decode()
    assert f"already started fine-tuning job #{job.pk}" in page and FineTuningJob.objects.count() == 1


def test_a_build_is_started_from_the_add_page(root_client, seeded_demo) -> None:
    response = root_client.post(reverse("admin:safety_waltzbuild_add"), {
        "agent": Agent.objects.get(slug="qa_agent").pk, "judge_model": "mistral-large-latest", "target": "40",
        "mix": "50,50", "validation": "0.1", "seed": "0",
    }, follow=True)
    build = WaltzBuild.objects.get()
    assert response.redirect_chain[-1][0] == reverse("admin:safety_waltzbuild_change", args=[build.pk])
    assert build.status == "queued" and build.requested_by.username == "root" and build.total_items >= 40
    assert CostHold.objects.filter(operation="data_prep", source_id=str(build.pk), released_at__isnull=True).exists()
    assert "queued" in response.content.decode()


def test_a_second_request_while_the_stage1_job_is_being_created_is_refused(demo_simulator) -> None:
    """Two clicks at once start one job: the build's row is claimed (no advisory lock, which the web
    tier behind PgBouncer in transaction mode could leak); a claim left by a process that died stops
    counting after FINETUNE_CLAIM_LASTS."""
    build = finished_build()
    root = UserFactory(username="root", is_superuser=True)
    WaltzBuild.objects.filter(pk=build.pk).update(finetune_claimed_at=timezone.now())  # another request, now
    with pytest.raises(Conflict, match="being created right now"):
        waltz_build_finetune(build=build, actor=root)
    assert not FineTuningJob.objects.exists()

    WaltzBuild.objects.filter(pk=build.pk).update(finetune_claimed_at=timezone.now() - FINETUNE_CLAIM_LASTS - timedelta(seconds=1))
    job = waltz_build_finetune(build=build, actor=root)
    build.refresh_from_db()
    assert build.finetuning_job == job and build.finetune_claimed_at is None
    with pytest.raises(Conflict, match=f"already started fine-tuning job #{job.pk}"):
        waltz_build_finetune(build=build, actor=root)
    assert FineTuningJob.objects.count() == 1


def test_a_running_build_page_waits_20_s_before_its_first_reload(root_client, seeded_demo, reload_clock) -> None:
    """The page follows the build every 2 s, and each reload puts a screen reader back at the top: reached by
    a link, it reloaded after 2 s, too soon to reach its "stop reloading" button (WCAG 2.2.1)."""
    build = waltz_build_create(agent=Agent.objects.get(slug="support_agent"), target=60, enqueue=False)
    url = reverse("admin:safety_waltzbuild_change", args=[build.pk])
    visited = root_client.get(url).content.decode()
    assert self_reload(visited) == (20, "")
    assert visited.index("<h1>") < visited.index('id="stop-refresh"') and accessibility_problems(visited) == []
    reload_clock.advance(20.2)
    assert self_reload(root_client.get(url).content.decode()) == (2, "")  # its reload, of the same address
    assert self_reload(root_client.get(f"{url}?reloaded=1").content.decode()) == (20, "")  # a copied link: a visit
