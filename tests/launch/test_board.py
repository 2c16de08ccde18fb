"""The launch board (the admin's home): one row per agent with its states in words, and the next
action as a button only for people the service would allow — each button calling that service."""

from __future__ import annotations

import re
from datetime import timedelta
from html import unescape

import pytest
from django.contrib.auth.models import Group
from django.utils.timezone import now as timezone_now

from experiments.models import Experiment, StageApproval
from experiments.services import experiment_start, stage_request_advance
from launch.report import judge, render_markdown
from launch.selectors import launch_board, launch_facts
from models_app.benchmarks.models import BenchmarkRun
from models_app.registry.models import Agent
from tests.accessibility import accessibility_problems
from tests.experiments.factories import agent_with_candidate, draft_experiment, evaluate, feed, person
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def text_of(html: bytes) -> str:
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html.decode())))


def member(username: str, group: str):
    user = UserFactory(username=username)
    user.groups.add(Group.objects.get(name=group))
    return type(user).objects.get(pk=user.pk)


def test_the_admin_home_is_the_board_with_a_row_per_agent(seeded_demo, client):
    operator = member("olivia", "Rollout operators")
    client.force_login(operator)
    page = client.get("/admin/")
    assert page.status_code == 200
    html = page.content.decode()
    for slug in ("qa_agent", "content_agent", "legal_agent", "support_agent", "analyst_agent"):
        assert f'id="agent-{slug}"' in html
    # The demo candidates are registered, not benchmarked: the operator may start a benchmark.
    assert html.count('name="benchmark"') == 5
    assert "not benchmarked" in text_of(page.content) and "None" not in text_of(page.content).split("Launch board")[1].split("Total")[0]


def test_a_person_without_the_permission_sees_who_may_instead_of_a_button(seeded_demo, client):
    approver = member("adam", "Rollout approvers")
    client.force_login(approver)
    html = client.get("/admin/").content.decode()
    assert 'name="benchmark"' not in html
    assert "for someone in “Rollout operators”" in html


def row_messages(html: bytes, slug: str) -> str:
    row = html.decode().split(f'id="agent-{slug}"')[1].split("</tr>")[0]
    return text_of(row.split('data-testid="row-messages"')[1].split("</ul>")[0].encode()) if "row-messages" in row else ""


def test_a_buttons_outcome_is_shown_in_its_row_where_the_redirect_lands(seeded_demo, client):
    # Was: a refusal came back at #agent-qa_agent with the message at the top of the page, 484 px out of view.
    client.force_login(member("adam", "Rollout approvers"))
    response = client.post("/admin/launch/act/qa_agent/benchmark/", {"next": "/admin/"})
    assert response["Location"] == "/admin/#agent-qa_agent"
    board = client.get(response["Location"]).content
    assert "refused — user 'adam' may not start benchmark runs" in row_messages(board, "qa_agent")
    assert 'class="messagelist"' not in board.decode().split('id="launch-board"')[0]  # not at the top as well
    assert row_messages(client.get("/admin/").content, "qa_agent") == ""  # shown once

    # Pressed on the agent page, it returns there.
    response = client.post("/admin/launch/act/qa_agent/benchmark/", {"next": "/admin/launch/agent/qa_agent/"})
    assert response["Location"] == "/admin/launch/agent/qa_agent/#agent-qa_agent"
    assert "may not start benchmark runs" in row_messages(client.get(response["Location"]).content, "qa_agent")
    # Anywhere else is not followed.
    assert client.post("/admin/launch/act/qa_agent/benchmark/", {"next": "https://evil.example/admin/"})["Location"] == (
        "/admin/#agent-qa_agent")


def test_the_benchmark_button_calls_the_service_and_a_refusal_is_shown(seeded_demo, client):
    client.force_login(member("olivia", "Rollout operators"))
    response = client.post("/admin/launch/act/support_agent/benchmark/", follow=True)
    run = BenchmarkRun.objects.get()
    assert run.agent.slug == "support_agent" and run.requested_via == "launch board"
    page = text_of(response.content)
    # The identifier keeps its case (the admin capitalises a message's first letter: it starts with a word).
    assert f"Agent support_agent: benchmark run #{run.pk} queued" in page and "Support_agent" not in page

    client.force_login(member("adam", "Rollout approvers"))
    response = client.post("/admin/launch/act/qa_agent/benchmark/", follow=True)
    assert "qa_agent: refused — user 'adam' may not start benchmark runs" in text_of(response.content)
    assert BenchmarkRun.objects.count() == 1
    assert client.get("/admin/launch/act/qa_agent/benchmark/").status_code == 405


def test_a_budget_refusal_on_the_board_says_where_an_override_can_be_given(seeded_demo, client):
    # UX review: "pass an override reason" named a field the board's button does not have.
    from costs.services import budget_upsert

    budget_upsert(name="default", amount_usd="0.000001")
    client.force_login(member("olivia", "Rollout operators"))
    page = text_of(client.post("/admin/launch/act/support_agent/benchmark/", follow=True).content)
    assert "raise the budget or pass an override reason" in page
    assert "the board takes no override reason: start the run from Benchmark runs › Add, which does" in page
    assert not BenchmarkRun.objects.exists()


def test_request_then_approve_from_the_board_with_four_eyes(client):
    starter = person("starter", "view_experiment", "add_experiment", "start_experiment", "request_stage", "approve_stage")
    approver = person("approver", "view_experiment", "approve_stage")
    experiment = experiment_start(experiment=draft_experiment("qa_agent", actor=starter), actor=starter)
    evaluate(experiment)

    rows, _ = launch_board(user=starter)
    assert rows[0].next_action.action == "request" and rows[0].next_action.allowed
    assert "min users" in rows[0].rollout.detail  # what the stage waits for, in words
    client.force_login(starter)
    client.post("/admin/launch/act/qa_agent/request/")
    approval = StageApproval.objects.get()
    feed(experiment, arm="treatment", n=20, success_rate=0.9, seed=1)
    feed(experiment, arm="control", n=180, success_rate=0.9, seed=2)
    evaluate(experiment)

    starter_row = launch_board(user=starter)[0][0]
    assert starter_row.next_action.action == "approve" and not starter_row.next_action.allowed
    assert "you started this experiment" in starter_row.next_action.blocked_by
    page = client.get("/admin/").content.decode()
    assert 'name="approve"' not in page and "awaiting-approval" in page

    client.force_login(approver)
    stale = client.post("/admin/launch/act/qa_agent/approve/", {"approval": approval.pk + 1, "config_version": 1}, follow=True)
    assert "changed since you opened the page" in text_of(stale.content)
    done = client.post("/admin/launch/act/qa_agent/approve/", {"approval": approval.pk, "config_version": 1}, follow=True)
    assert "qa_agent: Advanced to 25 %" in text_of(done.content)
    assert Experiment.objects.get().current_stage.percent == 25
    refusals = experiment.events.filter(action="refusal").count()  # the stale form's, above
    # The same form sent again answers that it is done, not that a stage was skipped, and leaves no refusal.
    again = text_of(client.post("/admin/launch/act/qa_agent/approve/", {"approval": approval.pk, "config_version": 1},
                                follow=True).content)
    assert "already approved by approver at" in again and "the experiment is at 25 %" in again
    assert "refused" not in again and "skipped" not in again
    assert experiment.events.filter(action="refusal").count() == refusals


def test_a_draft_for_an_older_candidate_is_shown_as_what_start_rollout_will_do(client):
    # Was: ROLLOUT "draft qa_agent-exp" (the seeded draft of an older fine-tune), while "Start rollout"
    # started a new experiment for the newest candidate and left that draft.
    from models_app.registry.services import model_version_transition
    from tests.factories import ModelVersionFactory

    operator = person("operator", "view_experiment", "add_experiment", "start_experiment")
    draft = draft_experiment("qa_agent", actor=operator)
    newer = ModelVersionFactory(agent=draft.agent, model_id="ft:open-mistral-7b:newer:20261102:0ddba11")
    for status in ("benchmarking", "approved_for_rollout"):
        newer = model_version_transition(version=newer, to_status=status, reason="test")
    row = launch_board(user=operator)[0][0]
    assert row.candidate == newer and row.next_action.action == "rollout"
    assert row.rollout.text == "not started"
    assert row.rollout.detail == (f"draft qa_agent-exp is for an older candidate {draft.treatment.model_id} — Start rollout "
                                  f"starts a new experiment for {newer.model_id}")
    client.force_login(operator)
    client.post("/admin/launch/act/qa_agent/rollout/")
    started = Experiment.objects.get(status="running")
    assert started.treatment == newer and Experiment.objects.get(pk=draft.pk).status == "draft"  # as the row said


def test_the_candidates_own_draft_is_the_one_start_rollout_starts(client):
    operator = person("operator", "view_experiment", "add_experiment", "start_experiment")
    draft_experiment("qa_agent", actor=operator)
    row = launch_board(user=operator)[0][0]
    assert (row.rollout.text, row.rollout.detail) == ("draft qa_agent-exp", "Start rollout starts this draft")


def _job(agent, *, status: str, version=None):
    from models_app.finetuning.models import FineTuningJob, TrainingFile

    training = TrainingFile.objects.create(agent=agent, provider=agent.versions.first().provider, provider_file_id=f"file-{status}",
                                           filename="train.jsonl", line_count=10, size_bytes=100, sha256="0" * 64,
                                           estimated_tokens=1000)
    return FineTuningJob.objects.create(agent=agent, provider=training.provider, base_model="open-mistral-7b", status=status,
                                        training_file=training, model_version=version,
                                        fine_tuned_model=version.model_id if version else "")


def test_the_job_cell_shows_the_job_that_produced_the_candidate_and_a_newer_one_beside_it():
    # Was: candidate ft:… from job #5 and job #5's audit, but the job cell "#4 validated": the newer job in flight.
    agent, _, candidate = agent_with_candidate("qa_agent", candidate_status="registered")
    own = _job(agent, status="SUCCESS", version=candidate)
    row = launch_board()[0][0]
    assert (row.job.text, row.job.url_args) == (f"#{own.pk} success", (own.pk,))
    newer = _job(agent, status="VALIDATED")
    row = launch_board()[0][0]
    assert (row.job.text, row.job.url_args) == (f"#{own.pk} success", (own.pk,))
    assert row.job.detail == f"{candidate.model_id}; next: #{newer.pk} validated (waiting for start)"


def test_no_candidate_no_candidate_audit_text():
    # Was: CANDIDATE "—" after a launch, but the audit cell "the candidate was registered without a fine-tuning job here".
    from models_app.registry.services import model_version_transition

    agent, _, candidate = agent_with_candidate("qa_agent", candidate_status="registered")
    assert launch_board()[0][0].audit.text == "no training job"
    model_version_transition(version=candidate, to_status="rejected", reason="test")
    row = launch_board()[0][0]
    assert row.candidate is None and (row.audit.text, row.audit.detail) == ("—", "")


def test_a_starter_without_the_approve_permission_reads_that_reason_first(client):
    # Was: "you started this experiment; another approver must approve" for an operator who may not approve at all.
    starter = person("starter", "view_experiment", "add_experiment", "start_experiment", "request_stage")
    experiment = experiment_start(experiment=draft_experiment("qa_agent", actor=starter), actor=starter)
    stage_request_advance(experiment=experiment, actor=starter)
    action = launch_board(user=starter)[0][0].next_action
    assert not action.allowed
    assert action.blocked_by == "you may not approve stages: it needs the permission 'experiments.approve_stage'"
    client.force_login(starter)
    row = text_of(client.get("/admin/").content)
    assert "it needs the permission 'experiments.approve_stage' — for " in row and "you started this experiment" not in row


def test_roll_back_from_the_board_needs_a_reason(client):
    roller = person("roller", "view_experiment", "rollback_experiment")
    starter = person("starter", "add_experiment", "start_experiment")
    experiment_start(experiment=draft_experiment("qa_agent", actor=starter), actor=starter)
    assert launch_board(user=roller)[0][0].can_roll_back
    client.force_login(roller)
    refused = client.post("/admin/launch/act/qa_agent/rollback/", {"reason": " "}, follow=True)
    assert "a roll back needs a reason" in text_of(refused.content)
    client.post("/admin/launch/act/qa_agent/rollback/", {"reason": "angry customers"})
    assert Experiment.objects.get().status == "rolled_back"


def test_the_approvals_queue_lists_pending_requests(client):
    starter = person("starter", "add_experiment", "start_experiment", "request_stage")
    experiment = experiment_start(experiment=draft_experiment("qa_agent", actor=starter), actor=starter)
    stage_request_advance(experiment=experiment, actor=starter, note="looks good")
    client.force_login(person("approver", "view_experiment", "approve_stage"))
    page = text_of(client.get("/admin/launch/approvals/").content)
    assert "qa_agent-exp" in page and "25 %" in page and "starter" in page and "looks good" in page


def test_a_request_held_by_its_holds_says_until_when_in_the_queue_and_the_next_action(client):
    # Was: "approve 25 % (requested by starter)" and a queue row with no sign of the 48 h minimum.
    starter = person("starter", "view_experiment", "add_experiment", "start_experiment", "request_stage")
    experiment = experiment_start(experiment=draft_experiment("qa_agent", actor=starter, min_stage_hours=48), actor=starter)
    stage_request_advance(experiment=experiment, actor=starter)
    feed(experiment, arm="treatment", n=20, success_rate=0.9, seed=1)
    feed(experiment, arm="control", n=180, success_rate=0.9, seed=2)
    evaluate(experiment)
    experiment.refresh_from_db()
    clears = f"{experiment.current_stage.started_at + timedelta(hours=48):%Y-%m-%d %H:%M} UTC"
    for viewer in (starter, person("viewer", "view_experiment"), person("approver", "view_experiment", "approve_stage")):
        action = launch_board(user=viewer)[0][0].next_action
        assert action.text == f"approve 25 % after {clears} (min stage time) (requested by starter)"
    client.force_login(starter)
    assert f"can be approved after {clears} (min stage time)" in text_of(client.get("/admin/").content)
    queue = text_of(client.get("/admin/launch/approvals/").content)
    assert f"after {clears} (min stage time)" in queue


def test_a_request_waiting_for_data_says_which_holds(client):
    starter = person("starter", "view_experiment", "add_experiment", "start_experiment", "request_stage")
    experiment = experiment_start(experiment=draft_experiment("qa_agent", actor=starter), actor=starter)
    stage_request_advance(experiment=experiment, actor=starter)
    evaluate(experiment)
    assert launch_board(user=starter)[0][0].next_action.text == (
        "approve 25 % once min users and guardrails clear (requested by starter)")
    feed(experiment, arm="treatment", n=20, success_rate=0.9, seed=1)
    feed(experiment, arm="control", n=180, success_rate=0.9, seed=2)
    evaluate(experiment)
    assert launch_board(user=starter)[0][0].next_action.text == "approve 25 % (requested by starter)"
    client.force_login(starter)
    assert "now" in text_of(client.get("/admin/launch/approvals/").content).split("can be approved")[1]


def test_view_site_and_the_root_lead_to_the_board(client):
    client.force_login(UserFactory(username="root", is_superuser=True))
    assert client.get("/").headers["Location"] == "/admin/"
    assert 'href="/admin/"' in client.get("/admin/").content.decode()  # "View site"


def test_the_go_no_go_report_downloads(seeded_demo, client):
    client.force_login(member("adam", "Rollout approvers"))
    response = client.get("/admin/launch/report/?format=md")
    assert response.status_code == 200 and "attachment" in response["Content-Disposition"]
    assert "# Go/No-Go report" in response.content.decode() and "NO-GO" in response.content.decode()
    # HTML opens in the browser (was: downloaded); the download is still there.
    html = client.get("/admin/launch/report/?format=html")
    assert html["Content-Type"].startswith("text/html") and html["Content-Disposition"].startswith("inline;")
    assert client.get("/admin/launch/report/?format=html&download=1")["Content-Disposition"].startswith("attachment;")
    assert 'format=html&amp;download=1"' in client.get("/admin/").content.decode()


def test_spend_is_shown_only_to_people_who_may_read_costs(seeded_demo, client):
    # Was: per-agent spend, "Total all time" and the report's "cost so far" for a staff user to whom
    # the cost dashboard itself answers 403.
    import json

    outsider = person("outsider", "view_experiment")  # may read the launch pages, not costs
    rows, period = launch_board(user=outsider)
    assert period is None and all(row.spend is None for row in rows)
    client.force_login(outsider)
    board = text_of(client.get("/admin/").content)
    assert "Total" not in board and "spend" not in board and "$" not in board.split("Launch board")[1]
    report = client.get("/admin/launch/report/?format=md").content.decode()
    assert "cost so far" not in report.lower() and "$" not in report
    facts = json.loads(client.get("/admin/launch/report/?format=json").content)["agents"]
    assert not any("cost_usd" in agent or "cost_usd" in (agent.get("benchmark") or {}) for agent in facts)
    assert "spend" not in text_of(client.get("/admin/launch/agent/qa_agent/").content)
    # The model version page's lineage keeps its facts but not their costs.
    from django.contrib.auth.models import Permission

    from models_app.registry.models import ModelVersion

    outsider.user_permissions.add(Permission.objects.get(content_type__app_label="models_app", codename="view_modelversion"))
    version_page = f"/admin/models_app/modelversion/{ModelVersion.objects.filter(agent__slug='qa_agent').first().pk}/change/"
    lineage = client.get(version_page).content.decode()
    assert 'id="lineage-runs"' in lineage and 'id="lineage-costs"' not in lineage and ">cost</th>" not in lineage

    reader = member("adam", "Rollout approvers")  # the demo groups may read cost entries
    rows, period = launch_board(user=reader)
    assert period and all(row.spend is not None for row in rows)
    client.force_login(reader)
    assert "Total " in text_of(client.get("/admin/").content)
    assert "Cost so far (ledger)" in client.get("/admin/launch/report/?format=md").content.decode()
    assert 'id="lineage-costs"' in client.get(version_page).content.decode()


def test_the_report_download_refuses_an_unknown_agent_or_format_as_the_command_does(seeded_demo, client):
    # Was 200 {"all_go": true, "agents": []} for an agent that does not exist, and markdown for ?format=pdf.
    client.force_login(member("adam", "Rollout approvers"))
    nobody = client.get("/admin/launch/report/?format=json&agent=nope")
    assert nobody.status_code == 404 and nobody["Content-Type"].startswith("text/plain")
    assert nobody.content.decode().startswith("unknown agent 'nope'; known agents: analyst_agent, ")
    pdf = client.get("/admin/launch/report/?format=pdf")
    assert pdf.status_code == 400 and pdf["Content-Type"].startswith("text/plain")
    assert pdf.content.decode() == "unknown format 'pdf'; the report comes as md, html, json"
    one = client.get("/admin/launch/report/?format=json&agent=qa_agent")
    assert one.status_code == 200 and one["Content-Type"].startswith("application/json")


LAUNCH_PAGES = ("/admin/launch/agent/qa_agent/", "/admin/launch/approvals/", "/admin/launch/report/?format=json",
                "/admin/launch/report/?format=md")


@pytest.mark.parametrize("perms", [(), ("costs.view_costentry", "costs.view_budget")], ids=["no permission", "costs only"])
def test_staff_who_may_not_read_experiments_get_the_app_list_and_a_403_naming_the_permission(seeded_demo, client, perms):
    # Was: 200 and every agent's models, candidates, experiments and audit state for any staff user.
    client.force_login(person("nobody", *perms))
    home = client.get("/admin/")
    assert home.status_code == 200  # the admin's home stays every staff user's
    assert 'id="launch-board"' not in home.content.decode() and "candidate" not in text_of(home.content)
    if perms:
        assert "Cost entries" in text_of(home.content)  # what they may read is still listed
    for page in LAUNCH_PAGES:
        refused = client.get(page)
        assert refused.status_code == 403, page
        html = refused.content.decode()
        assert "needs the permission &#x27;experiments.view_experiment&#x27;" in html, page
        assert "The groups that have it: “Rollout approvers”, “Rollout operators”" in html
        assert "qa_agent" not in html.split('id="forbidden-reason"')[1]  # nothing of what the page holds
    agent = Agent.objects.get(slug="qa_agent")
    client.force_login(person("agent-reader", "models_app.view_agent"))
    agent_page = client.get(f"/admin/models_app/agent/{agent.pk}/change/").content.decode()
    assert 'id="agent-launch-page"' not in agent_page  # no link to a page that would refuse


@pytest.mark.parametrize("group", ["Rollout operators", "Rollout approvers"])
def test_the_demo_groups_read_every_launch_page(seeded_demo, client, group):
    client.force_login(member("someone", group))
    assert 'id="launch-board"' in client.get("/admin/").content.decode()
    for page in LAUNCH_PAGES:
        assert client.get(page).status_code == 200, page
    agent = Agent.objects.get(slug="qa_agent")
    assert 'id="agent-launch-page"' in client.get(f"/admin/models_app/agent/{agent.pk}/change/").content.decode()


# --- a running rollout as its latest guardrail evaluation judged it -----------------------------------


def _running_with_request(*, feed_treatment: int):
    """qa_agent's rollout at 10 %, its advance to 25 % requested by the starter, `feed_treatment`
    treatment users and 180 control users with outcomes; nothing evaluated yet."""
    starter = person("starter", "view_experiment", "add_experiment", "start_experiment", "request_stage")
    experiment = experiment_start(experiment=draft_experiment("qa_agent", actor=starter), actor=starter)
    stage_request_advance(experiment=experiment, actor=starter)
    feed(experiment, arm="control", n=180, success_rate=0.9, seed=2)
    feed(experiment, arm="treatment", n=feed_treatment, success_rate=0.9, seed=1)
    return experiment, starter, person("approver", "view_experiment", "approve_stage")


def test_the_board_shows_the_latest_guardrail_evaluation_as_of_its_time_not_the_outcomes_since(client):
    # Was: every view read each running rollout's outcomes afresh (seconds at a million outcomes, and
    # queries per rollout). Now the board shows what the guardrail task last judged, and when.
    from datetime import UTC

    experiment, _, approver = _running_with_request(feed_treatment=5)
    evaluate(experiment)
    at = Experiment.objects.get().guardrails_checked_at.astimezone(UTC)
    feed(experiment, arm="treatment", n=20, success_rate=0.9, seed=3)  # enough users now, not evaluated yet

    row = launch_board(user=approver)[0][0]
    assert row.rollout.detail == "waits for min users, guardrails"
    assert "control 180 and treatment 5 users with outcomes in this stage" in row.rollout.title  # the evaluation's figures
    assert row.guardrails.text == "waiting for data" and f"as of {at:%H:%M} UTC (" in row.guardrails.detail
    assert row.next_action.text == "approve 25 % once min users and guardrails clear (requested by starter)"
    client.force_login(approver)
    board = text_of(client.get("/admin/").content)
    assert f"as of {at:%H:%M} UTC (" in board and "waits for the holds" in board
    queue = text_of(client.get("/admin/launch/approvals/").content)
    assert f"once min users and guardrails clear holds as of {at:%H:%M} UTC (" in queue

    evaluate(experiment)  # beat's next run
    row = launch_board(user=approver)[0][0]
    assert (row.rollout.detail, row.guardrails.text, row.guardrails.tone) == ("holds clear", "healthy", "ok")
    assert row.guardrails.detail.startswith("as of ") and row.next_action.text == "approve 25 % (requested by starter)"
    html = client.get("/admin/").content.decode()
    assert 'name="approve">' in html and 'name="approve" disabled' not in html


def test_an_evaluation_older_than_ten_minutes_is_shown_as_stale(client):
    from django.utils import timezone

    experiment, _, approver = _running_with_request(feed_treatment=25)
    evaluate(experiment)
    row = launch_board(user=approver)[0][0]
    assert (row.guardrails.text, row.guardrails.tone) == ("healthy", "ok") and "stale" not in row.guardrails.detail
    # Beat stopped 25 minutes ago: the figures age, and the board says so rather than look healthy.
    Experiment.objects.filter(pk=experiment.pk).update(guardrails_checked_at=timezone.now() - timedelta(minutes=25))
    row = launch_board(user=approver)[0][0]
    assert (row.guardrails.text, row.guardrails.tone) == ("healthy", "attention")
    assert row.guardrails.detail.endswith("(25 min ago) — stale: is the guardrail task running (beat, a worker)?")
    assert "RolloutUnguarded" in row.guardrails.title
    facts = launch_facts(agent=experiment.agent)
    assert facts["rollout"]["evaluation_stale"] is True
    assert any("stale — is the guardrail task running (beat, a worker)?" in caution for caution in judge(facts).cautions)


def test_a_stage_the_guardrail_task_has_not_judged_for_ten_minutes_is_stale_not_a_calm_wait():
    # A second reviewer: with beat or the worker down since before the stage began, the row said "not
    # evaluated yet … within a minute" in the calm tone for ever, calmer than a 15-minute-old evaluation.
    from django.utils import timezone

    experiment, _, approver = _running_with_request(feed_treatment=25)
    stage = experiment.current_stage
    type(stage).objects.filter(pk=stage.pk).update(started_at=timezone.now() - timedelta(minutes=11))
    row = launch_board(user=approver)[0][0]
    assert (row.guardrails.text, row.guardrails.tone) == ("not evaluated", "attention")
    assert row.guardrails.detail == "not judged for 11 min — stale: is the guardrail task running (beat, a worker)?"
    assert "RolloutUnguarded" in row.guardrails.title
    facts = launch_facts(agent=experiment.agent)
    assert facts["rollout"]["guardrails"] is None and facts["rollout"]["evaluation_stale"] is True
    assert (f"the guardrails of {experiment.key} have not been evaluated in its current stage for over ten minutes: stale — "
            "is the guardrail task running (beat, a worker)?") in judge(facts).cautions

    type(stage).objects.filter(pk=stage.pk).update(started_at=timezone.now() - timedelta(minutes=9))
    row = launch_board(user=approver)[0][0]
    assert (row.guardrails.text, row.guardrails.tone) == ("not evaluated yet", "wait")
    assert launch_facts(agent=experiment.agent)["rollout"]["evaluation_stale"] is False


def test_a_stage_not_evaluated_yet_says_so_and_its_approval_is_judged_afresh_from_the_outcomes(client):
    experiment, _, approver = _running_with_request(feed_treatment=25)
    row = launch_board(user=approver)[0][0]
    assert (row.guardrails.text, row.guardrails.tone) == ("not evaluated yet", "wait")
    assert row.rollout.detail == "waits for the stage's first guardrail evaluation"
    assert row.next_action.text == "approve 25 % once the stage's first guardrail evaluation clears (requested by starter)"
    assert "the guardrail task has not judged this stage yet" in row.next_action.blocked_by
    facts = launch_facts(agent=experiment.agent)
    assert facts["rollout"]["guardrails"] is None and facts["rollout"]["evaluated_at"] is None
    assert "guardrails not evaluated in this stage yet" in render_markdown([facts], generated_at=timezone_now())
    client.force_login(approver)
    assert 'name="approve" disabled' in client.get("/admin/").content.decode()

    # The board is a view: the approval judges the outcomes themselves, which clear every hold.
    shown = {"approval": StageApproval.objects.get().pk, "config_version": 1}  # what the page shows
    done = client.post("/admin/launch/act/qa_agent/approve/", shown, follow=True)
    assert "qa_agent: Advanced to 25 %" in text_of(done.content)
    # At 25 % the row waits for that stage's first evaluation, then shows it.
    row = launch_board(user=approver)[0][0]
    assert (row.rollout.text, row.guardrails.text) == ("25 %", "not evaluated yet")
    evaluate(experiment)
    assert launch_board(user=approver)[0][0].guardrails.text == "healthy"


def test_holds_the_board_shows_clear_do_not_approve_what_the_outcomes_since_hold(client):
    experiment, _, approver = _running_with_request(feed_treatment=25)
    evaluate(experiment)
    assert launch_board(user=approver)[0][0].next_action.text == "approve 25 % (requested by starter)"
    feed(experiment, arm="treatment", n=200, success_rate=0.2, seed=4)  # the candidate fails, after the evaluation
    client.force_login(approver)
    shown = {"approval": StageApproval.objects.get().pk, "config_version": 1}
    refused = text_of(client.post("/admin/launch/act/qa_agent/approve/", shown, follow=True).content)
    assert "qa_agent: refused — cannot advance 'qa_agent-exp' to 25 % yet" in refused and "guardrails:" in refused
    assert Experiment.objects.get().current_stage.percent == 10


def test_the_board_agent_page_and_queue_name_every_field_and_button_and_scope_their_headers(client):
    """What a screen reader reads on the three launch pages an approver uses daily: the approve and
    roll-back fields named for their agent (a placeholder is no label), both buttons named, the roll-back
    button styled by class so its keyboard focus shows, every header scoped (tests/accessibility.py)."""
    starter = person("starter", "view_experiment", "add_experiment", "start_experiment", "request_stage")
    experiment = experiment_start(experiment=draft_experiment("qa_agent", actor=starter), actor=starter)
    stage_request_advance(experiment=experiment, actor=starter)
    feed(experiment, arm="treatment", n=20, success_rate=0.9, seed=1)
    feed(experiment, arm="control", n=180, success_rate=0.9, seed=2)
    evaluate(experiment)
    client.force_login(person("chief", superuser=True))

    for path in ("/admin/", "/admin/launch/agent/qa_agent/", "/admin/launch/approvals/"):
        assert accessibility_problems(client.get(path).content.decode()) == [], path
    board = client.get("/admin/").content.decode()
    assert 'aria-label="why approve qa_agent (optional)"' in board and 'aria-label="why roll back qa_agent"' in board
    assert 'class="button danger" name="rollback"' in board
