"""`manage.py rollout_models`: drive an agent's staged rollout from a terminal with the same services,
permissions and four-eyes checks as the admin buttons. Exit 0 done, 1 refused (reason printed), 2 usage."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from experiments import audit, outcome_aggregate, results, selectors, services, stats
from experiments.holds import EVALUATION_STALE_AFTER, judged_at, stage_holds
from experiments.models import Experiment, ExperimentStatus
from genesis.commands import command_agent
from genesis.errors import AlreadyDone, DomainError
from genesis.permissions import Actor
from models_app.registry.models import Agent

ACTIONS = ("status", "start", "request", "approve", "pause", "resume", "rollback")


class Command(BaseCommand):
    help = (
        "Show or move an agent's staged rollout: --status, --start, --request (ask for the next stage), "
        "--approve (a second person approves it), --pause/--resume, --rollback --reason TEXT. Acts as --as USERNAME."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--agent", metavar="NAME",
                            help="the agent slug, e.g. qa_agent (required except with --status, which then shows every agent)")
        action = parser.add_mutually_exclusive_group(required=True)
        action.add_argument("--status", action="store_const", const="status", dest="action", help="show stages, holds, guardrails")
        action.add_argument("--start", action="store_const", const="start", dest="action",
                            help="start the newest candidate's rollout, as the board's Start rollout: its draft, or a new experiment")
        action.add_argument("--request", action="store_const", const="request", dest="action", help="request the next stage")
        action.add_argument("--approve", action="store_const", const="approve", dest="action",
                            help="approve the next stage (not as the starter); without a --request by someone "
                                 "else it requests and approves in one go, as one approver")
        action.add_argument("--pause", action="store_const", const="pause", dest="action", help="pause: everyone gets the live model")
        action.add_argument("--resume", action="store_const", const="resume", dest="action", help="resume a paused experiment")
        action.add_argument("--rollback", action="store_const", const="rollback", dest="action",
                            help="roll back to the live model and reject the candidate (needs --reason)")
        parser.add_argument("--reason", default="", metavar="TEXT", help="why (required with --rollback; a note otherwise)")
        parser.add_argument("--as", dest="username", default="", metavar="USERNAME",
                            help="the person acting (required except with --status, which only reads)")
        parser.add_argument("--candidate", default="", metavar="MODEL",
                            help="--start: the candidate model id (default: the agent's newest candidate)")
        parser.add_argument("--override-reason", default="", metavar="TEXT",
                            help="--start a candidate without a PASS verdict (needs experiments.override_verdict)")
        parser.add_argument("--json", action="store_true", help="print one JSON object")

    def run_from_argv(self, argv: list[str]) -> None:
        self._from_terminal = True  # a refusal is then printed once, without Django's "CommandError:" prefix
        super().run_from_argv(argv)

    def handle(self, *args: Any, agent: str | None, action: str, reason: str, username: str, candidate: str,
               override_reason: str, **options: Any) -> None:
        as_json = bool(options["json"])
        if agent is None and action != "status":
            raise CommandError(f"--{action} needs --agent NAME (only --status shows every agent)", returncode=2)
        user = None
        if username or action != "status":
            # Checked before anything is shown: an unknown --as is a usage error even for --status.
            if not username:
                raise CommandError(f"--{action} needs --as USERNAME: the person acting", returncode=2)
            user = get_user_model().objects.filter(username=username).first()
            if user is None:
                raise CommandError(f"unknown user '{username}' (--as names the person acting)", returncode=2)
        if agent is None:
            self._status_of_all(as_json=as_json)
            return
        agent_row = command_agent(agent)
        if action == "rollback" and not reason.strip():
            raise CommandError("--rollback needs --reason TEXT: it goes on the audit trail and the alert", returncode=2)

        try:
            experiment = self._act(action, agent_row, user, reason=reason, candidate=candidate, override_reason=override_reason)
        except AlreadyDone as exc:
            # Done already (a second --approve of the same stage, by anyone): nothing refused, exit 0.
            self._report(selectors.experiment_for_agent(agent_slug=agent), agent=agent, action=action, ok=True,
                         detail=exc.message, as_json=as_json)
            return
        except DomainError as exc:
            experiment = selectors.experiment_for_agent(agent_slug=agent)
            self._report(experiment, agent=agent, action=action, ok=False, detail=exc.message, as_json=as_json)
            if getattr(self, "_from_terminal", False):
                self.stderr.write(f"refused: {exc.message}")
                sys.exit(1)
            raise CommandError(f"refused: {exc.message}", returncode=1) from None
        detail = {
            "status": "", "start": "started", "request": "next stage requested", "approve": "stage approved",
            "pause": "paused", "resume": "resumed", "rollback": "rolled back",
        }[action]
        self._report(experiment, agent=agent, action=action, ok=True, detail=detail, as_json=as_json)

    def _act(self, action: str, agent: Agent, user: Actor, *, reason: str, candidate: str, override_reason: str) -> Experiment | None:
        if action == "start":
            return services.experiment_start_for_agent(
                agent=agent, actor=user, candidate_model_id=candidate, override_reason=override_reason
            )
        experiment = selectors.experiment_for_agent(agent_slug=agent.slug)
        if action == "status":
            return experiment
        if experiment is None:
            raise DomainError(f"agent '{agent.slug}' has no experiment: --start one first")
        if action == "request":
            services.stage_request_advance(experiment=experiment, actor=user, note=reason)
        elif action == "approve":
            services.stage_approve_next(experiment=experiment, actor=user)
        elif action == "pause":
            services.experiment_pause(experiment=experiment, actor=user, reason=reason)
        elif action == "resume":
            services.experiment_resume(experiment=experiment, actor=user, reason=reason)
        elif action == "rollback":
            services.experiment_rollback(experiment=experiment, actor=user, reason=reason)
        return selectors.get_experiment(key=experiment.key)

    def _report(self, experiment: Experiment | None, *, agent: str, action: str, ok: bool, detail: str, as_json: bool) -> None:
        state = _state(experiment)
        if as_json:
            self.stdout.write(json.dumps({"agent": agent, "action": action, "ok": ok, "detail": detail, **state}, default=str))
            return
        if experiment is None:
            self.stdout.write(f"{agent}: no experiment")
            return
        if ok and detail:
            self.stdout.write(f"{experiment.key}: {detail}")
        stage = f" at {state['stage_percent']} %" if state["stage_percent"] is not None else ""
        self.stdout.write(
            f"{experiment.key} ({agent}): {_status_text(state)}{stage} — control {state['control']}, treatment {state['treatment']}"
        )
        self.stdout.write("stages: " + "  ".join(
            f"[{'>' if s['current'] else ' '}{s['percent']}% {s['status']}]" for s in state["stages"]
        ))
        if state["pending_request"]:
            request = state["pending_request"]
            self.stdout.write(f"requested: advance to {request['percent']} % by {request['requested_by']} — waits for a second person")
        if pause := state["pause"]:
            self.stdout.write(f"paused by {pause['by']} at {pause['at']:%Y-%m-%d %H:%M} UTC: {pause['reason']}")
        if state["status"] == ExperimentStatus.PAUSED and state["split"]:
            self.stdout.write("split when paused: " + _split_text(state["split"]))
        if state["guardrails_judged_at"] is not None:
            self.stdout.write(_judged_text(experiment, judged=state["guardrails_judged_at"]))
        for hold in state["holds"]:
            self.stdout.write(f"  {'ok  ' if hold['cleared'] else 'HOLD'} {hold['name']}: {hold['detail']}")


    def _status_of_all(self, *, as_json: bool) -> None:
        """--status without --agent: one line per agent (or a JSON list of the --json objects)."""
        states = []
        for agent in Agent.objects.order_by("slug"):
            experiment = selectors.experiment_for_agent(agent_slug=agent.slug) or (
                Experiment.objects.filter(agent=agent).order_by("-created_at").first()
            )
            states.append({"agent": agent.slug, **_state(experiment)})
        if as_json:
            self.stdout.write(json.dumps(states, default=str))
            return
        for state in states:
            if state["experiment"] is None:
                self.stdout.write(f"{state['agent']}: no experiment")
                continue
            stage = f" at {state['stage_percent']} %" if state["stage_percent"] is not None else ""
            waiting = [hold["name"] for hold in state["holds"] if not hold["cleared"]]
            pending = state["pending_request"]
            extra = f"; {pending['percent']} % requested by {pending['requested_by']}, waits for approval" if pending else ""
            extra += f"; holds: {', '.join(waiting)}" if waiting else ""
            self.stdout.write(f"{state['agent']}: {state['experiment']} {_status_text(state)}{stage}{extra}")


def _status_text(state: dict[str, Any]) -> str:
    """"running", "rolled back by ops at 2026-12-06 10:00 UTC: tone complaints", or "paused (srm)"."""
    text = str(state["status"]).replace("_", " ")
    if rollback := state["rollback"]:
        text += f" by {rollback['by']} at {rollback['at']:%Y-%m-%d %H:%M} UTC: {rollback['reason']}"
    if pause := state["pause"]:
        text += f" ({pause['reason_code'] or 'unspecified'})"
    return text


def _split_text(split: dict[str, Any]) -> str:
    """"control 180 and treatment 20 users vs planned 90/10 %; any-time SRM p = 0.0003 (test 1 …) — mismatch"."""
    text = (f"control {split['control_users']} and treatment {split['treatment_users']} users vs planned "
            f"{100 - split['planned_percent']}/{split['planned_percent']} %")
    if split["srm_p"] is None:
        return text + "; no control arm to compare with"
    return (text + f"; any-time SRM p = {stats.format_number(split['srm_p'])} ({split['srm_rule']})"
            + (" — mismatch" if split["srm_flagged"] else ""))


def _judged_text(experiment: Experiment, *, judged: datetime) -> str:
    """"guardrail task: last judged 2026-12-07 14:03:10 UTC", or "… has not judged this stage (started …)",
    and "— over 10 min ago: …" past the line RolloutUnguarded and the launch pages' "stale" take."""
    if experiment.guardrails_checked_at != judged:  # judged_at: then the stage's start
        text = f"guardrail task: has not judged this stage (started {judged:%Y-%m-%d %H:%M:%S} UTC)"
    else:
        text = f"guardrail task: last judged {judged:%Y-%m-%d %H:%M:%S} UTC"
    if timezone.now() - judged > EVALUATION_STALE_AFTER:
        text += (f" — over {EVALUATION_STALE_AFTER.total_seconds() / 60:.0f} min ago: no breach rolls it back and no "
                 "sample-ratio mismatch pauses it (docs/runbooks/rollout.md#rolloutunguarded)")
    return text


def _pause(experiment: Experiment) -> dict[str, Any] | None:
    """Who paused the experiment, when, why and the reason code (srm, manual…); None unless it is paused."""
    if experiment.status != ExperimentStatus.PAUSED:
        return None
    event = selectors.experiment_pause_event(experiment=experiment)
    return ({"by": audit.actor_name(event.actor), "at": event.at, "reason": event.reason, "reason_code": event.reason_code}
            if event else None)


def _split(metrics: outcome_aggregate.ExperimentMetrics) -> dict[str, Any] | None:
    """The current stage's users per arm against its plan, and the sample-ratio test on them."""
    if metrics.stage_percent is None:
        return None
    return {"control_users": metrics.stage_users_control, "treatment_users": metrics.stage_users_treatment,
            "planned_percent": metrics.stage_percent, "srm_p": metrics.srm_p, "srm_threshold": metrics.srm_threshold,
            "srm_rule": metrics.srm_rule, "srm_flagged": metrics.srm_flagged}


def _rollback(experiment: Experiment) -> dict[str, Any] | None:
    """Who rolled the experiment back, when and why (None unless it was)."""
    if experiment.status != ExperimentStatus.ROLLED_BACK:
        return None
    event = selectors.experiment_rollback_event(experiment=experiment)
    return {"by": audit.actor_name(event.actor), "at": event.at, "reason": event.reason} if event else None


def _state(experiment: Experiment | None) -> dict[str, Any]:
    """What --status shows (and every --json object carries)."""
    if experiment is None:
        return {"experiment": None, "status": None, "rollback": None, "pause": None, "stage_percent": None, "stages": [],
                "split": None, "guardrails_judged_at": None, "pending_request": None, "holds": [], "guardrails": []}
    experiment = selectors.get_experiment(key=experiment.key)
    running = experiment.status == ExperimentStatus.RUNNING
    # A paused experiment's split too: why an SRM pause paused it is the first thing to confirm.
    in_stage = experiment.status in (ExperimentStatus.RUNNING, ExperimentStatus.PAUSED)
    metrics = outcome_aggregate.experiment_metrics(experiment=experiment) if in_stage else None
    pending = selectors.pending_approval(experiment=experiment)
    timeline = selectors.experiment_timeline(experiment=experiment)
    return {
        "experiment": experiment.key,
        "status": experiment.status,
        "rollback": _rollback(experiment),
        "pause": _pause(experiment),
        "stage_percent": experiment.current_stage.percent if experiment.current_stage and experiment.status in ("running", "paused") else None,
        "config_version": experiment.config_version,
        "control": experiment.control.model_id,
        "treatment": experiment.treatment.model_id,
        "stages": [{"percent": s["percent"], "status": s["status"], "current": bool(s.get("current")),
                    "started_at": s["started_at"], "ended_at": s["ended_at"]} for s in timeline],
        "split": _split(metrics) if metrics else None,
        # When beat's guardrail task last judged it (its stage's start before the first): what /metrics
        # exports for RolloutUnguarded.
        "guardrails_judged_at": judged_at(experiment=experiment),
        "pending_request": (
            {"percent": pending.stage.percent, "requested_by": pending.requested_by.get_username() if pending.requested_by else None,
             "requested_at": pending.requested_at, "config_version": pending.config_version} if pending else None
        ),
        "holds": [hold.as_json() for hold in stage_holds(experiment=experiment, metrics=metrics)] if running else [],
        "guardrails": (
            [g.as_json() for g in results.experiment_guardrail_results(experiment=experiment, metrics=metrics)]
            if running and metrics else []
        ),
    }
