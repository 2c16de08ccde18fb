"""The launch console in the admin: the board (the admin's home page), its buttons, an agent's launch
page (its row in full and its model versions' timeline), a model version's lineage (on the version's
own page), the approvers' queue and the Go/No-Go download.

Each button calls the service the experiment, benchmark or fine-tuning pages call (which checks the
permission and the four-eyes rule again); no row is written here. Mounted by genesis/urls.py before
the admin's own URLs, so /admin/ is the board."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, HttpResponseNotFound, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from costs.budgeting import format_usd
from experiments import selectors as experiment_selectors
from experiments import services as experiment_services
from experiments.admin import rollout_action
from experiments.admin_health import AgentWithHealthAdmin
from experiments.models import ACTIVE_STATUSES, Experiment, ExperimentStatus, StageStatus
from genesis.errors import AlreadyDone, Conflict, DomainError, NotFound
from genesis.permissions import require_page_permission
from launch import report as launch_report
from launch import selectors
from models_app.benchmarks.services import benchmark_run_create
from models_app.registry.admin import ModelVersionAdmin
from models_app.registry.models import Agent, ModelStatus, ModelVersion

admin.site.index_template = "admin/launch/index.html"
admin.site.site_url = "/admin/"  # "View site": the board, not a 404 at "/"
admin.site.empty_value_display = "—"  # an empty cell, never "None" or "-"

BOARD_ACTIONS = ("benchmark", "rollout", "request", "approve", "resume", "rollback")

# What the launch pages show — the board, an agent's page, the approvals queue, the Go/No-Go report — is
# the rollout of each agent's candidate: its experiments (who asked, who approved), with the benchmark,
# training data and job states that judge it. Reading an experiment is what every rollout role holds
# (seed_demo's "Rollout operators" and "Rollout approvers", and each rollout permission's holder in the
# tests), while a staff user with no permission, or one who only reads costs or datasets, holds none
# of it. Spend on the board and in the report needs costs.view_costentry besides.
LAUNCH_VIEW_PERMISSION = "experiments.view_experiment"


def board_index(request: HttpRequest) -> HttpResponse:
    """The admin's home: the launch board above Django's list of apps. What a row's button did is
    shown in that row, where its redirect lands; other messages stay at the top. Without
    LAUNCH_VIEW_PERMISSION, Django's list of apps alone: the home page of every staff user."""
    if not request.user.has_perm(LAUNCH_VIEW_PERMISSION):
        return admin.site.index(request, extra_context={"show_board": False, "page_messages": _messages_into_rows(request, [])})
    rows, period = selectors.launch_board(user=request.user)
    waiting = selectors.experiments_awaiting_approval()
    return admin.site.index(request, extra_context={
        "show_board": True, "board": rows, "spend_period": period, "awaiting_approval": waiting,
        "page_messages": _messages_into_rows(request, rows),
        "board_totals": format_usd(sum((row.spend or selectors.ZERO for row in rows), selectors.ZERO)) if period else None,
    })


ROW_MESSAGE_TAG = "board-row"


def _messages_into_rows(request: HttpRequest, rows: list[selectors.BoardRow]) -> list[Any]:
    """Hand each row the messages of its button (tagged by board_act); the rest, for the top of the page."""
    page_messages = []
    row_of = {f"{ROW_MESSAGE_TAG}-{row.agent.slug}": row for row in rows}
    for message in messages.get_messages(request):
        row = row_of.get(message.extra_tags.split()[-1]) if message.extra_tags else None
        if row is None:
            page_messages.append(message)
        else:
            row.messages.append(message)
    return page_messages


@require_POST
def board_act(request: HttpRequest, agent: str, action: str) -> HttpResponse:
    """Press a row's button; back to the page it was pressed on (the board at that row, or the
    agent page), with the outcome shown in the row."""
    agent_row = get_object_or_404(Agent, slug=agent)
    if action not in BOARD_ACTIONS:
        raise DjangoPermissionDenied(f"the board has no button '{action}'")
    tag = f"{ROW_MESSAGE_TAG}-{agent_row.slug}"
    try:
        done = _run(action, agent=agent_row, user=request.user, post=request.POST)
    except AlreadyDone as exc:
        messages.info(request, f"Agent {agent_row.slug}: {exc.message}", extra_tags=tag)
    except DomainError as exc:
        messages.error(request, f"Agent {agent_row.slug}: refused — {exc.message}", extra_tags=tag)
    else:
        messages.success(request, f"Agent {agent_row.slug}: {done}", extra_tags=tag)
    back = request.POST.get("next", "")
    if not (back.startswith("/admin/") and url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()})):
        back = reverse("admin:index")
    return HttpResponseRedirect(f"{back}#agent-{agent_row.slug}")


def _active_experiment(agent: Agent) -> Experiment:
    experiment = Experiment.objects.filter(agent=agent, status__in=ACTIVE_STATUSES).first()
    if experiment is None:
        raise Conflict(f"agent '{agent.slug}' has no running experiment; reload the board")
    return experiment_selectors.get_experiment(key=experiment.key)


def _run(action: str, *, agent: Agent, user: Any, post: Any) -> str:
    reason = (post.get("reason") or "").strip()
    if action == "benchmark":
        candidate = selectors.agent_candidate(agent=agent)
        try:
            run = benchmark_run_create(agent=agent, candidate=candidate, actor=user, requested_via="launch board")
        except Conflict as refused:
            if refused.code != "budget_exceeded":
                raise
            # The refusal's "pass an override reason" needs a field this button does not have.
            raise Conflict(f"{refused.message} (the board takes no override reason: start the run from Benchmark runs › "
                           "Add, which does)", code=refused.code) from None
        return f"benchmark run #{run.pk} queued: {run.candidate.model_id} against {run.baseline.model_id} on {run.suite}"
    if action == "rollout":
        # The board's candidate: its draft if it has one, else a new experiment (the one rule of
        # `rollout_models --start`, experiments.services.experiment_start_for_agent).
        candidate = selectors.agent_candidate(agent=agent)
        if candidate is None:
            raise Conflict(f"agent '{agent.slug}' has no candidate to roll out")
        experiment = experiment_services.experiment_start_for_agent(agent=agent, actor=user, candidate_model_id=candidate.model_id)
        return f"rollout {experiment.key} of {candidate.model_id} started at {experiment.stage_plan[0]} %"
    if action == "rollback" and not reason:
        raise Conflict("a roll back needs a reason: it goes on the audit trail and the alert")
    # The experiment page's buttons, pressed from the board: the same services, words and checks.
    return rollout_action(action, experiment=_active_experiment(agent), user=user, reason=reason, override_reason="",
                          shown=post)


def _with_status_labels(lineage: dict[str, Any]) -> dict[str, Any]:
    """The lineage as the page shows it: statuses by their labels ("rolled back", not "rolled_back")."""
    models, experiments, stages = dict(ModelStatus.choices), dict(ExperimentStatus.choices), dict(StageStatus.choices)
    return {
        **lineage,
        "model_version": {**lineage["model_version"],
                          "status": models.get(lineage["model_version"]["status"], lineage["model_version"]["status"]).lower()},
        "experiments": [
            {**experiment, "status": experiments.get(experiment["status"], experiment["status"]).lower(),
             "stages": [{**stage, "status": stages.get(stage["status"], stage["status"]).lower()} for stage in experiment["stages"]]}
            for experiment in lineage["experiments"]
        ],
    }


def lineage_context(version: ModelVersion, *, user: Any) -> dict[str, Any]:
    """The page's lineage; its costs only for a user who may see costs (selectors.sees_costs), as on
    the board."""
    lineage = _with_status_labels(selectors.model_lineage(version=version))
    costs = lineage["costs"]
    return {
        "lineage": lineage,
        "show_costs": selectors.sees_costs(user),
        "lineage_total": format_usd(Decimal(costs["total_usd"])),
        "lineage_total_exact": costs["total_usd"],
        "lineage_costs": [(operation, format_usd(Decimal(amount))) for operation, amount in costs["by_operation"].items()],
        "lineage_runs": [
            {**run, "improvement": launch_report.percent(run["relative_improvement"]),
             "interval": launch_report.interval(*(run["ci95"] or (None, None)), alpha=run["alpha"]),
             "cost": format_usd(Decimal(run["cost_usd"]))}
            for run in lineage["benchmark_runs"]
        ],
        "lineage_job_cost": format_usd(Decimal(lineage["fine_tuning_job"]["cost_usd"]))
        if lineage["fine_tuning_job"] and lineage["fine_tuning_job"]["cost_usd"] is not None else None,
    }


class ModelVersionLineageAdmin(ModelVersionAdmin):
    """The registry's version page with the version's lineage below its fields."""

    change_form_template = "admin/launch/modelversion_change_form.html"

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        version = ModelVersion.objects.select_related("agent", "provider").filter(pk=object_id).first()
        extra_context = dict(extra_context or {})
        if version is not None and self.has_view_or_change_permission(request, version):
            extra_context.update(lineage_context(version, user=request.user))
        return super().change_view(request, object_id, form_url, extra_context)


admin.site.unregister(ModelVersion)
admin.site.register(ModelVersion, ModelVersionLineageAdmin)


def report_download(request: HttpRequest) -> HttpResponse:
    """The Go/No-Go report (?format=md|html|json, default md; ?agent=A for one agent): HTML shown in
    the browser, or as a file with ?download=1; markdown and JSON as files. An
    unknown format (400) or agent (404) is refused as `launch_report` refuses them, in plain text."""
    require_page_permission(request, LAUNCH_VIEW_PERMISSION, page="the Go/No-Go report")
    fmt = request.GET.get("format", "md")
    if fmt not in launch_report.FORMATS:
        return HttpResponseBadRequest(
            f"unknown format '{fmt}'; the report comes as {', '.join(launch_report.FORMATS)}",
            content_type="text/plain; charset=utf-8",
        )
    try:
        facts = selectors.launch_report_facts(agent_slug=request.GET.get("agent") or None, user=request.user)
    except NotFound as exc:
        return HttpResponseNotFound(exc.message, content_type="text/plain; charset=utf-8")
    now = timezone.now()
    text = launch_report.render(facts, fmt=fmt, generated_at=now)
    response = HttpResponse(text, content_type=f"{launch_report.FORMATS[fmt]}; charset=utf-8")
    # HTML opens in the browser (the board's "HTML" link) unless ?download=1; markdown and JSON are files.
    inline = fmt == "html" and not request.GET.get("download")
    response["Content-Disposition"] = f'{"inline" if inline else "attachment"}; filename="launch_report_{now:%Y%m%d}.{fmt}"'
    return response


def agent_view(request: HttpRequest, agent: str) -> HttpResponse:
    """An agent's launch page: its board row in full, its model versions' timeline, links below."""
    require_page_permission(request, LAUNCH_VIEW_PERMISSION, page="an agent's launch page")
    page = selectors.agent_page(agent=get_object_or_404(Agent, slug=agent), user=request.user)
    row = page.row
    cells = [("training data audit", row.audit), ("fine-tuning job", row.job), ("benchmark", row.benchmark),
             ("rollout", row.rollout), ("guardrails", row.guardrails)]
    page_messages = _messages_into_rows(request, [row])
    context = {**admin.site.each_context(request), "title": f"Agent {row.agent.slug}", "row": row,
               "page_messages": page_messages,
               "spend_period": page.spend_period, "cells": cells, "timeline": page.timeline}
    return TemplateResponse(request, "admin/launch/agent.html", context)


class AgentLaunchAdmin(AgentWithHealthAdmin):
    """The agent admin as the apps below extend it (the registry's form, the health column of
    experiments) with a link to the agent's launch page."""

    change_form_template = "admin/launch/agent_change_form.html"


admin.site.unregister(Agent)
admin.site.register(Agent, AgentLaunchAdmin)


def approvals_waiting(request: HttpRequest) -> HttpResponse:
    require_page_permission(request, LAUNCH_VIEW_PERMISSION, page="the approvals queue")
    context = {**admin.site.each_context(request), "title": "Stage advances waiting for approval",
               "awaiting_approval": selectors.experiments_awaiting_approval()}
    return TemplateResponse(request, "admin/launch/approvals.html", context)


def launch_urls() -> list[Any]:
    """URL patterns genesis/urls.py mounts before admin.site.urls."""
    view = admin.site.admin_view
    return [
        path("admin/", view(board_index), name="launch_board"),
        path("admin/launch/act/<slug:agent>/<slug:action>/", view(board_act), name="launch_board_act"),
        path("admin/launch/report/", view(report_download), name="launch_report_download"),
        path("admin/launch/approvals/", view(approvals_waiting), name="launch_approvals"),
        path("admin/launch/agent/<slug:agent>/", view(agent_view), name="launch_agent"),
    ]

