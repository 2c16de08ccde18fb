"""The launch calendar: earliest start of each stage from the minimum hours, the operator's targets,
late and at-risk stages — pure (experiments/calendar.py), through the service, and on the page."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse

from experiments.calendar import PlannedStage, rollout_calendar
from experiments.models import EventAction, ExperimentEvent
from experiments.selectors import experiment_calendar
from experiments.services import experiment_rollback, experiment_set_stage_targets, experiment_start
from genesis.errors import Conflict, InvalidInput, PermissionDenied
from launch.selectors import launch_board
from tests.experiments.factories import draft_experiment, person

MONDAY = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


def test_each_stage_can_start_a_minimum_stage_after_the_one_before():
    stages = [PlannedStage(10, "active", MONDAY), PlannedStage(25, "pending", None), PlannedStage(50, "pending", None),
              PlannedStage(100, "pending", None)]
    targets = {25: MONDAY + timedelta(days=2), 50: MONDAY + timedelta(days=3), 100: MONDAY + timedelta(days=7)}
    entries = rollout_calendar(stages=stages, min_stage_hours=48, targets=targets, now=MONDAY + timedelta(hours=1))
    assert [e.earliest_start for e in entries] == [MONDAY, MONDAY + timedelta(days=2), MONDAY + timedelta(days=4),
                                                   MONDAY + timedelta(days=6)]
    # Wednesday 25 % is reachable; Friday 50 % is not (48 h after Wednesday is Friday 09:00 + a day): at risk.
    assert [e.flag for e in entries] == ["", "", "at risk", ""]


def test_a_stage_still_waiting_past_its_target_is_late():
    stages = [PlannedStage(10, "done", MONDAY), PlannedStage(25, "active", MONDAY + timedelta(days=3)),
              PlannedStage(50, "pending", None)]
    targets = {25: MONDAY + timedelta(days=2), 50: MONDAY + timedelta(days=4)}
    entries = rollout_calendar(stages=stages, min_stage_hours=48, targets=targets, now=MONDAY + timedelta(days=5))
    assert [e.flag for e in entries] == ["", "late", "late"]
    assert entries[2].earliest_start == MONDAY + timedelta(days=5)  # 25 % started Thursday: Saturday, but not before now


@pytest.mark.django_db
def test_targets_are_set_by_an_operator_recorded_and_shown_on_the_page_and_the_board(client):
    starter = person("starter", "view_experiment", "add_experiment", "change_experiment", "start_experiment")
    experiment = experiment_start(experiment=draft_experiment("qa_agent", actor=starter, min_stage_hours=48), actor=starter)
    yesterday = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=1)
    with pytest.raises(PermissionDenied):
        experiment_set_stage_targets(experiment=experiment, actor=person("viewer", "view_experiment"), targets={25: yesterday})
    with pytest.raises(InvalidInput, match="33 %"):
        experiment_set_stage_targets(experiment=experiment, actor=starter, targets={33: yesterday})
    with pytest.raises(InvalidInput, match="after the one before"):
        experiment_set_stage_targets(experiment=experiment, actor=starter, targets={25: yesterday, 50: yesterday - timedelta(hours=1)})
    version = experiment.config_version

    client.force_login(starter)
    url = reverse("admin:experiments_experiment_act", args=[experiment.pk, "targets"])
    client.post(url, {"target_25": yesterday.strftime("%Y-%m-%dT%H:%M")})
    experiment.refresh_from_db()
    assert experiment.stage_targets == {"25": yesterday.isoformat()} and experiment.config_version == version
    event = ExperimentEvent.objects.filter(action=EventAction.EDIT).get()
    assert event.before == {"stage_targets": {}} and event.after["stage_targets"] == {"25": yesterday.isoformat()}
    assert [e.flag for e in experiment_calendar(experiment=experiment)][:2] == ["", "late"]

    page = client.get(reverse("admin:experiments_experiment_change", args=[experiment.pk])).content.decode()
    assert 'id="calendar"' in page and "<strong class=\"state-breach\">late</strong>" in page
    board_row = launch_board(user=starter)[0][0]
    assert board_row.calendar[1].late
    assert "(target" in client.get("/admin/").content.decode()

    experiment_rollback(experiment=experiment, actor=person("roller", "rollback_experiment"), reason="test")
    with pytest.raises(Conflict, match="history"):
        experiment_set_stage_targets(experiment=experiment, actor=starter, targets={25: None})


@pytest.mark.django_db
def test_the_calendar_form_shows_its_targets_in_utc_so_saving_it_unchanged_moves_nothing(client, settings):
    """Calendar review: the form reads its times as UTC (its header says so), but the page wrote them in
    TIME_ZONE: with Europe/Paris a 23:30 UTC target showed as 00:30 the next day, and "Save the
    calendar" with nothing changed moved it an hour later — every save another hour."""
    settings.TIME_ZONE = "Europe/Paris"
    starter = person("starter", "view_experiment", "add_experiment", "change_experiment", "start_experiment")
    experiment = experiment_start(experiment=draft_experiment("qa_agent", actor=starter, min_stage_hours=48), actor=starter)
    target = datetime(2027, 1, 31, 23, 30, tzinfo=UTC)  # 00:30 on 1 February in Paris
    experiment_set_stage_targets(experiment=experiment, actor=starter, targets={25: target})
    client.force_login(starter)

    page = client.get(reverse("admin:experiments_experiment_change", args=[experiment.pk])).content.decode()
    shown = re.search(r'name="target_25" value="([^"]*)"', page)
    assert shown is not None and shown.group(1) == "2027-01-31T23:30"
    client.post(reverse("admin:experiments_experiment_act", args=[experiment.pk, "targets"]), {"target_25": shown.group(1)})

    experiment.refresh_from_db()
    assert experiment.stage_targets == {"25": target.isoformat()}
