"""A staged rollout driven from the admin in headless Chromium by three people: one requests the
advance, a second approves it (the first cannot), a third rolls the experiment back."""

from __future__ import annotations

import pytest

from experiments.models import EventAction, Experiment, ExperimentEvent
from experiments.services import experiment_start
from models_app.registry.models import ModelVersion
from tests.e2e.conftest import admin_login, chromium_executable, chromium_page
from tests.experiments.factories import draft_experiment, feed, person

pytestmark = pytest.mark.e2e


def test_request_approve_and_roll_back_in_the_admin(live_server, transactional_db, e2e_password, tmp_path):
    chromium_executable()  # skip (or fail under GENESIS_REQUIRE_SERVICES=1) before building anything
    olivia = person("olivia", "view_experiment", "add_experiment", "start_experiment", "request_stage", "approve_stage")
    person("adam", "view_experiment", "approve_stage")
    person("rita", "view_experiment", "rollback_experiment")
    experiment = experiment_start(experiment=draft_experiment(actor=olivia), actor=olivia)
    feed(experiment, arm="treatment", n=20, success_rate=0.9, seed=1)
    feed(experiment, arm="control", n=180, success_rate=0.9, seed=2)
    url = f"{live_server.url}/admin/experiments/experiment/{experiment.pk}/change/"

    with chromium_page() as page:
        admin_login(page, live_server.url, username="olivia", password=e2e_password)
        page.goto(url)
        assert page.inner_text("[data-testid=stage-percent]").strip() == "10 %"
        page.click("button[name=request]")
        page.wait_for_selector("#pending-request")
        request_message = page.inner_text(".messagelist")
        olivia_sees = page.inner_text("#actions")
        page.screenshot(path=str(tmp_path / "1-requested.png"), full_page=True)

        page.context.clear_cookies()
        admin_login(page, live_server.url, username="adam", password=e2e_password)
        page.goto(url)
        holds = page.locator("#holds tbody tr").all_inner_texts()
        page.click("button[name=approve]")
        page.wait_for_selector("text=Advanced to 25 %")
        stage_after_approval = page.inner_text("[data-testid=stage-percent]").strip()
        adam_sees_rollback = page.locator("button[name=rollback]").count()
        page.screenshot(path=str(tmp_path / "2-approved.png"), full_page=True)

        page.context.clear_cookies()
        admin_login(page, live_server.url, username="rita", password=e2e_password)
        page.goto(url)
        rita_sees_approve = page.locator("button[name=approve]").count() + page.locator("button[name=request]").count()
        page.fill("textarea[name=reason]", "support tickets about wrong refunds")
        page.click("button[name=rollback]")
        page.wait_for_selector("text=rolled back")
        status_after = page.inner_text("[data-testid=status]").strip()
        trail = page.locator("#audit tbody tr").all_inner_texts()
        page.screenshot(path=str(tmp_path / "3-rolled-back.png"), full_page=True)

    assert "Advance to 25 % requested" in request_message
    assert "Cannot approve: you started this experiment" in olivia_sees  # four-eyes, shown to the starter
    assert all("\tclear\t" in row for row in holds), holds
    assert stage_after_approval == "25 %" and adam_sees_rollback == 0
    assert rita_sees_approve == 0
    assert status_after == "Rolled back"
    assert trail[0].split("\t")[1:3] == ["Rolled back", "rita"] and "support tickets about wrong refunds" in trail[0]

    experiment.refresh_from_db()
    assert experiment.status == "rolled_back"
    actors = {event.action: event.actor.username for event in ExperimentEvent.objects.filter(experiment=experiment).exclude(actor=None)}
    assert actors[EventAction.REQUEST] == "olivia"
    assert actors[EventAction.APPROVAL] == "adam"
    assert actors[EventAction.ROLLBACK] == "rita"
    assert ModelVersion.objects.get(pk=experiment.treatment_id).status == "rejected"
    assert Experiment.objects.get(pk=experiment.pk).stages.get(percent=25).status == "rolled_back"
