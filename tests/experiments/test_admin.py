"""The experiment admin page: timeline, holds, metrics and the audit trail; buttons appear only for
people allowed to use them, and pressing one calls the service."""

from __future__ import annotations

import pytest
from django.urls import reverse

from experiments.models import EventAction, Experiment, ExperimentEvent
from experiments.services import experiment_start, stage_request_advance
from tests.accessibility import accessibility_problems
from tests.experiments.factories import draft_experiment, feed, person, rollout_team

pytestmark = pytest.mark.django_db

GUARDRAILS = '[{"metric": "success_rate", "harmful_direction": "decrease", "threshold": 0.05}]'


@pytest.fixture
def team():
    members = rollout_team()
    for name in ("starter", "requester", "approver", "roller"):
        members[name].user_permissions.add(*person_permission("view_experiment"))
    return {name: type(user).objects.get(pk=user.pk) for name, user in members.items()}


def person_permission(codename: str):
    from django.contrib.auth.models import Permission

    return [Permission.objects.get(content_type__app_label="experiments", codename=codename)]


def page(client, user, experiment: Experiment) -> str:
    client.force_login(user)
    response = client.get(reverse("admin:experiments_experiment_change", args=[experiment.pk]))
    assert response.status_code == 200
    return response.content.decode()


def test_the_page_shows_timeline_holds_metrics_and_trail(client, team):
    experiment = experiment_start(experiment=draft_experiment(actor=team["starter"], min_stage_hours=48), actor=team["starter"])
    feed(experiment, arm="treatment", n=25, success_rate=0.8, seed=1)
    feed(experiment, arm="control", n=225, success_rate=0.9, seed=2)
    html = page(client, team["approver"], experiment)
    assert 'id="timeline"' in html and "10 % — active" in html and "100 % — pending" in html
    assert "<td>min stage time</td>" in html and "of the 48.0 h minimum in this stage" in html
    assert "<td>min users</td>" in html and "control 225 and treatment 25 users with outcomes in this stage" in html
    assert 'id="metrics"' in html and "<td>treatment</td><td>25</td>" in html
    assert 'id="audit"' in html and "Started" in html
    # The results p-value is fixed-horizon, and the page says so where it shows it.
    assert "fixed-horizon p = " in html and "valid at the planned end, not for stopping" in html
    assert "sequential test is what stops" in html


def test_buttons_follow_permissions_and_four_eyes(client, team):
    experiment = experiment_start(experiment=draft_experiment(actor=team["starter"]), actor=team["starter"])
    requester_html = page(client, team["requester"], experiment)
    assert 'name="request"' in requester_html and 'name="rollback"' not in requester_html
    roller_html = page(client, team["roller"], experiment)
    assert 'name="rollback"' in roller_html and 'name="pause"' in roller_html and 'name="request"' not in roller_html

    stage_request_advance(experiment=experiment, actor=team["requester"])
    assert 'name="approve"' not in page(client, team["starter"], experiment)
    assert "Cannot approve: you started this experiment" in page(client, team["starter"], experiment)
    assert "Cannot approve: you requested this advance" in page(client, team["requester"], experiment)
    approver_html = page(client, team["approver"], experiment)
    # Holds are open (no outcomes yet): the button is there but disabled, saying what it waits for.
    assert 'name="approve" disabled' in approver_html and "waiting for: min users: control 0 and treatment 0 users with outcomes" in approver_html


def test_pressing_buttons_calls_the_services(client, team):
    experiment = experiment_start(experiment=draft_experiment(actor=team["starter"]), actor=team["starter"])
    feed(experiment, arm="treatment", n=20, success_rate=0.9, seed=1)
    feed(experiment, arm="control", n=180, success_rate=0.9, seed=2)
    act = lambda action: reverse("admin:experiments_experiment_act", args=[experiment.pk, action])  # noqa: E731

    client.force_login(team["requester"])
    response = client.post(act("request"), {"reason": "numbers look fine"}, follow=True)
    assert "Advance to 25 % requested" in response.content.decode()  # the admin capitalises messages
    shown = shown_on_page(page(client, team["approver"], experiment))
    client.force_login(team["requester"])
    response = client.post(act("approve"), shown, follow=True)
    assert "Refused: four-eyes: requester requested this advance" in response.content.decode()

    client.force_login(team["approver"])
    response = client.post(act("approve"), shown, follow=True)
    assert "Advanced to 25 %" in response.content.decode()
    assert Experiment.objects.get(pk=experiment.pk).current_stage.percent == 25

    client.force_login(team["roller"])
    response = client.post(act("rollback"), {"reason": "tone"}, follow=True)
    assert "rolled back" in response.content.decode()
    assert ExperimentEvent.objects.filter(action=EventAction.ROLLBACK, actor=team["roller"], reason="tone").exists()


def shown_on_page(html: str) -> dict[str, str]:
    """The hidden fields of the approve form: the request and config version the page showed."""
    import re

    form = html[html.index("/act/approve/"):]
    form = form[: form.index("</form>")]
    return dict(re.findall(r'<input type="hidden" name="(approval|config_version)" value="([^"]*)"', form))


def test_approving_a_request_that_changed_since_the_page_was_opened_is_refused(client, team):
    from experiments.models import StageApproval
    from experiments.services import experiment_update

    experiment = experiment_start(experiment=draft_experiment(actor=team["starter"]), actor=team["starter"])
    feed(experiment, arm="treatment", n=30, success_rate=0.9, seed=1)
    feed(experiment, arm="control", n=270, success_rate=0.9, seed=2)
    first = stage_request_advance(experiment=experiment, actor=team["requester"], note="as it was")
    shown = shown_on_page(page(client, team["approver"], experiment))
    assert shown == {"approval": str(first.pk), "config_version": "1"}

    # Meanwhile the experiment is edited (voiding that request) and the advance is requested again.
    experiment_update(experiment=experiment, actor=team["starter"], min_samples_per_arm=25)
    second = stage_request_advance(experiment=experiment, actor=team["requester"], note="after the edit")
    act = reverse("admin:experiments_experiment_act", args=[experiment.pk, "approve"])
    response = client.post(act, shown, follow=True)
    assert "changed since you opened the page" in response.content.decode() and "reload" in response.content.decode()
    assert Experiment.objects.get(pk=experiment.pk).current_stage.percent == 10
    assert StageApproval.objects.get(pk=second.pk).status == "pending"

    # A form that does not say what it showed is refused too; the reloaded page's form goes through.
    response = client.post(act, follow=True)
    assert "does not say which request it showed" in response.content.decode()
    reloaded = shown_on_page(page(client, team["approver"], experiment))
    response = client.post(act, reloaded, follow=True)
    assert "Advanced to 25 %" in response.content.decode()
    # Sent twice: the second answer says it is done already, by whom, and where the experiment is.
    again = client.post(act, reloaded, follow=True).content.decode()
    assert "already approved by approver at" in again and "the experiment is at 25 %" in again and "Refused:" not in again
    assert ExperimentEvent.objects.filter(experiment=experiment, action=EventAction.REFUSAL).count() == 1  # the changed request above


def test_a_view_only_person_reads_the_guardrails_as_the_forms_table_not_json(client, team):
    # Was: the approver's read-only page showed the rules as raw JSON.
    experiment = experiment_start(experiment=draft_experiment(actor=team["starter"]), actor=team["starter"])
    html = page(client, team["approver"], experiment)
    assert 'id="guardrail-rules"' in html and "&quot;harmful_direction&quot;" not in html
    rules = html[html.index('id="guardrail-rules"'):]
    assert "<td>success_rate</td><td>a decrease harms</td><td>0.05</td><td>absolute</td><td>roll back</td>" in rules
    editable = page(client, team["starter"], experiment)
    assert 'name="guardrails-0-metric"' in editable and 'id="guardrail-rules"' not in editable


def test_a_staff_user_without_view_permission_gets_403(client, team):
    experiment = draft_experiment(actor=team["starter"])
    outsider = person("outsider")
    client.force_login(outsider)
    assert client.get(reverse("admin:experiments_experiment_change", args=[experiment.pk])).status_code == 403
    assert client.post(reverse("admin:experiments_experiment_act", args=[experiment.pk, "start"])).status_code == 403


def test_creating_and_editing_through_the_admin_uses_the_services(client, team):
    from tests.experiments.factories import agent_with_candidate

    agent, _, candidate = agent_with_candidate()
    admin_user = person("boss", superuser=True)
    client.force_login(admin_user)
    response = client.post(reverse("admin:experiments_experiment_add"), {
        "agent": agent.pk, "treatment": candidate.pk, "key": "", "description": "",
        "stage_plan": "[10, 100]", "min_stage_hours": "1", "min_samples_per_arm": "30",
        "planned_samples_per_arm": "2000", "guardrails": GUARDRAILS,
    })
    assert response.status_code == 302, response.content.decode()[:300]
    experiment = Experiment.objects.get()
    assert experiment.stage_plan == [10, 100] and experiment.created_by == admin_user
    bad = client.post(reverse("admin:experiments_experiment_change", args=[experiment.pk]), {
        "description": "", "stage_plan": "[10, 50]", "min_stage_hours": "1", "min_samples_per_arm": "30",
        "planned_samples_per_arm": "2000", "guardrails": GUARDRAILS,
    })
    assert bad.status_code == 200 and "the last stage must be 100" in bad.content.decode()
    client.post(reverse("admin:experiments_experiment_change", args=[experiment.pk]), {
        "description": "", "stage_plan": "[10, 100]", "min_stage_hours": "2", "min_samples_per_arm": "30",
        "planned_samples_per_arm": "2000", "guardrails": GUARDRAILS,
    })
    experiment.refresh_from_db()
    assert experiment.min_stage_hours == 2 and experiment.config_version == 2
    assert ExperimentEvent.objects.get(action=EventAction.EDIT).actor == admin_user


def test_guardrails_are_edited_in_a_table_not_as_json(client, team):
    from tests.experiments.factories import draft_experiment

    experiment = draft_experiment(actor=team["starter"])
    client.force_login(person("boss", superuser=True))
    url = reverse("admin:experiments_experiment_change", args=[experiment.pk])
    page = client.get(url).content.decode()
    assert 'class="guardrails-form"' in page and 'name="guardrails-0-metric"' in page and "<textarea name=\"guardrails\"" not in page
    rows = {"guardrails-count": "3",
            "guardrails-0-metric": "success_rate", "guardrails-0-harmful_direction": "decrease", "guardrails-0-threshold": "0.03",
            "guardrails-0-threshold_kind": "absolute", "guardrails-0-on_violation": "breach",
            "guardrails-1-metric": "latency_ms", "guardrails-1-harmful_direction": "increase", "guardrails-1-threshold": "0.2",
            "guardrails-1-threshold_kind": "relative", "guardrails-1-on_violation": "warning",
            "guardrails-2-metric": ""}
    form = {"description": "", "stage_plan": "[10, 25, 50, 100]", "min_stage_hours": "0", "min_samples_per_arm": "20",
            "planned_samples_per_arm": "2000"}
    bad = client.post(url, {**form, **rows, "guardrails-0-on_violation": "warning"})
    assert bad.status_code == 200 and "a success_rate rule with harmful_direction" in bad.content.decode()
    client.post(url, {**form, **rows})
    experiment.refresh_from_db()
    assert [(rule["metric"], rule["threshold"], rule["on_violation"]) for rule in experiment.guardrails] == [
        ("success_rate", 0.03, "breach"), ("latency_ms", 0.2, "warning")]


def test_the_published_rollback_curve_is_shown_only_for_the_settings_it_was_measured_at(client, team):
    """The curve on the page is the defaults' (stages 10/25/50/100 of 48 h, 150 and 2 000 users per arm,
    down 5 points at α 5 %). Until 2026-12-07 every experiment showed it; one with its own settings is now
    told that it does not apply, what differs and the bench command that measures its own."""
    defaults = experiment_start(experiment=draft_experiment(actor=team["starter"], min_stage_hours=48, min_samples_per_arm=150),
                                actor=team["starter"])
    feed(defaults, arm="control", n=30, success_rate=0.9, seed=3)
    html = page(client, team["approver"], defaults)
    assert 'id="operating-curve"' in html and "How often the default success-rate rule" in html
    assert "drop 5 points → 0.6 %" in html and "does not apply here" not in html

    own = experiment_start(experiment=draft_experiment("content_agent", actor=team["starter"], min_stage_hours=48,
                                                       min_samples_per_arm=40), actor=team["starter"])
    feed(own, arm="control", n=30, success_rate=0.9, seed=4)
    html = page(client, team["approver"], own)
    assert 'id="operating-curve"' in html and "drop 5 points → 0.6 %" not in html
    assert "this experiment differs (40 minimum users per arm, not 150), so it does not apply here" in html
    assert ("bench/decisions/run.py --part curve --stages 10,25,50 --stage-hours 48 --tolerance 0.05 --min-users 40 "
            "--planned-users 2000 --alpha 0.05") in html


def test_the_curve_differences_name_every_setting_the_curve_depends_on():
    from experiments.operating_characteristics import curve_command, curve_differences

    rule = {"metric": "success_rate", "harmful_direction": "decrease", "threshold": 0.05, "threshold_kind": "absolute",
            "on_violation": "breach"}
    measured = {"stage_plan": [10, 25, 50, 100], "min_stage_hours": 48.0, "min_samples_per_arm": 150,
                "planned_samples_per_arm": 2000, "guardrails": [rule], "alpha": 0.05}
    assert curve_differences(**measured) == []
    assert curve_differences(**{**measured, "guardrails": [{**rule, "threshold": 0.03}]}) == [
        "success-rate rule decrease 0.03 (absolute), not down 0.05 (absolute)"]
    assert curve_differences(**{**measured, "alpha": 0.025}) == [
        "the rule is tested at α 2.5 % (shared by the rules that roll back), not 5 %"]
    assert curve_differences(**{**measured, "stage_plan": [5, 50, 100], "min_stage_hours": 24, "planned_samples_per_arm": 500}) == [
        "stages 5, 50, 100 %, not 10, 25, 50, 100 %", "24 h a stage, not 48 h", "500 planned users per arm, not 2 000"]
    assert curve_differences(**{**measured, "guardrails": [{**rule, "on_violation": "warning"}]}) == [
        "it has no success-rate rule that rolls back"]
    assert curve_command(**{**measured, "stage_plan": [5, 50, 100], "alpha": 0.025}).startswith(
        "python bench/decisions/run.py --part curve --stages 5,50 --stage-hours 48 --tolerance 0.05 --min-users 150 "
        "--planned-users 2000 --alpha 0.025")


def test_the_rollout_panel_is_usable_with_a_screen_reader_keyboard_and_dark_mode(client, team):
    """Every field of the panel and the guardrails table named, every button named and drawn with
    focus-showing CSS, headers scoped, the approve button's reason for waiting tied to it, colours
    that follow the theme (tests/accessibility.py)."""
    experiment = experiment_start(experiment=draft_experiment(actor=team["starter"]), actor=team["starter"])
    stage_request_advance(experiment=experiment, actor=team["requester"], note="ready")
    html = page(client, person("chief", superuser=True), experiment)
    assert accessibility_problems(html) == []
    assert 'name="approve" disabled aria-describedby="approve-blocked-by"' in html and 'name="rollback"' in html
    assert 'aria-label="target for the 25 % stage (UTC)" name="target_25"' in html
    assert 'aria-label="rule 1: metric"' in html  # the guardrails form's table


def test_the_page_reads_the_outcome_aggregate_once(client, team):
    """Scale review: the holds and the results each read the experiment's outcome aggregate — two passes
    over its outcomes per view (0.36 s each at 100 000 outcomes); now one, shared."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    experiment = experiment_start(experiment=draft_experiment(actor=team["starter"]), actor=team["starter"])
    feed(experiment, arm="treatment", n=25, success_rate=0.8, seed=1)
    feed(experiment, arm="control", n=225, success_rate=0.9, seed=2)
    with CaptureQueriesContext(connection) as captured:
        html = page(client, team["approver"], experiment)
    assert 'id="metrics"' in html and "<td>treatment</td><td>25</td>" in html and "fixed-horizon p = " in html
    aggregates = [query for query in captured if "WITH analysed" in query["sql"]]
    assert len(aggregates) == 1
