"""The board and the Go/No-Go facts over agents at every point of the chain (launch_world.py), read
at once for all of them: each row says what the board said when it read every row on its own
(the values below were the old board's), and a row or an agent's facts are the same whether one
agent is read or all of them — no agent's rows leak into another's."""

from __future__ import annotations

import re

import pytest
from django.utils import timezone

from launch.chains import Chains
from launch.selectors import agent_candidate, launch_board, launch_facts, launch_report_facts
from models_app.registry.models import Agent
from tests.experiments.factories import person
from tests.factories import UserFactory
from tests.launch.launch_world import STATES, add_agents, default_budget

pytestmark = pytest.mark.django_db

# state → audit, job, benchmark, rollout, guardrails, next action (allowed?), spend: as the operator below reads them
EXPECTED_ROWS = {
    "demo": ("no training job", "none", "not benchmarked", "not started", "—",
             "benchmark the candidate against the live model", True, "0"),
    "passed_with_draft": ("findings", "#N success", "PASS +12.0 %", "draft world_01-exp", "—",
                          "start the rollout at the first stage", True, "1.670000"),
    "awaiting_approval": ("clean", "#N success", "PASS +12.0 %", "10 %", "healthy", "approve 25 % (requested by starter)", False,
                          "1.670000"),
    "paused": ("clean", "#N success", "PASS +12.0 %", "10 % — paused", "paused", "resume the paused rollout", False, "0.420000"),
    "rolled_back": ("—", "none", "—", "rolled back", "—", "fine-tune a candidate", False, "1.670000"),
    "benchmarking": ("auditing (40%)", "#N success", "run #N running (25 %)", "not started", "—", "wait for benchmark run #N", False,
                     "0"),
    "other_draft": ("no training job", "none", "not benchmarked", "not started", "—", "start the rollout at the first stage", True,
                    "0"),
    "running": ("clean", "#N success", "PASS +12.0 %", "10 %", "healthy", "request 25 %", True, "1.670000"),
    "just_started": ("clean", "#N success", "PASS +12.0 %", "10 %", "not evaluated yet", "request 25 %", True, "1.670000"),
}
# state → the report's cost, whether its run was overridden, its rollout's status
EXPECTED_FACTS = {
    "demo": ("0.00", None, None), "passed_with_draft": ("1.67", False, "draft"), "awaiting_approval": ("1.67", False, "running"),
    "paused": ("0.42", True, "paused"), "rolled_back": (None, None, None), "benchmarking": ("0.00", None, None),
    "other_draft": ("0.00", None, None), "running": ("1.67", False, "running"), "just_started": ("1.67", False, "running"),
}


def _no_ids(text: str) -> str:
    return re.sub(r"#\d+", "#N", text)


@pytest.fixture
def operator():
    team = {"root": UserFactory(username="root", is_superuser=True),
            "starter": person("starter", "add_experiment", "start_experiment", "request_stage"),
            "approver": person("approver", "view_experiment", "approve_stage", "pause_experiment", "rollback_experiment")}
    default_budget()
    add_agents(team=team)
    return person("olivia", "view_experiment", "start_experiment", "request_stage", "models_app.add_benchmarkrun",
                  "costs.view_costentry")


def test_every_row_of_the_board_says_where_its_agent_is(operator):
    rows, period = launch_board(user=operator)
    assert period == "this month"
    shown = {
        state: (row.audit.text, _no_ids(row.job.text), _no_ids(row.benchmark.text), row.rollout.text, row.guardrails.text,
                _no_ids(row.next_action.text), row.next_action.allowed, str(row.spend))
        for state, row in zip(STATES, rows, strict=True)
    }
    assert shown == EXPECTED_ROWS


def test_a_row_is_the_same_on_the_board_and_read_alone(operator):
    """Read at one moment. Each read took its own clock: a second ticking between the two turned "as
    of 14:03 UTC (0 s ago)" into "(1 s ago)", and midnight "as of 23:59 UTC" into "as of 2027-12-31
    23:59 UTC" — the test failed by the clock (it left the calendar out for the same reason)."""
    now = timezone.now()
    for row in launch_board(user=operator, now=now)[0]:
        assert launch_board(user=operator, agent=row.agent, now=now)[0][0] == row


def test_the_reports_facts_are_the_same_for_all_agents_and_for_each_alone(operator):
    facts = launch_report_facts()
    shown = {state: (entry.get("cost_usd"), (entry.get("benchmark") or {}).get("overridden"), (entry.get("rollout") or {}).get("status"))
             for state, entry in zip(STATES, facts, strict=True)}
    assert shown == EXPECTED_FACTS
    assert [launch_facts(agent=agent) for agent in Agent.objects.order_by("slug")] == facts


def test_the_buttons_candidate_is_the_rows_candidate(operator):
    # agent_candidate (one agent's queries, for a button press) and Chains.candidate (the board's lists)
    # write one rule twice; they must name the same version for an agent at every point of the chain.
    agents = list(Agent.objects.order_by("slug"))
    chains = Chains.of(agents)
    assert [agent_candidate(agent=agent) for agent in agents] == [chains.candidate(agent) for agent in agents]
    assert sum(chains.candidate(agent) is not None for agent in agents) >= len(STATES) - 1  # not all None
