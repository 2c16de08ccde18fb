"""The experiment page: stage timeline, what each hold waits for, metrics, the audit trail, and the
start / request / approve / pause / resume / roll back buttons — each shown only to people the
service would allow, and each calling that service (which checks again)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.views.decorators.http import require_POST

from experiments import outcome_aggregate, results, rollout_settings, routing, selectors, services
from experiments.holds import stage_holds
from experiments.models import ACTIVE_STATUSES, FINAL_STATUSES, DataDeletion, Experiment, ExperimentStatus
from experiments.operating_characteristics import (
    SUCCESS_RATE_ROLLBACK_CURVE,
    curve_command,
    curve_differences,
    success_rate_rollback_rule,
)
from genesis.admin_base import ReadOnlyAdminMixin
from genesis.errors import AlreadyDone, DomainError
from genesis.permissions import Actor, request_actor
from models_app.registry.models import ModelStatus, ModelVersion
from models_app.registry.selectors import CANDIDATE_STATUSES

if TYPE_CHECKING:
    from django.contrib.auth.models import User

_GUARDRAIL_CHOICES = {
    "harmful_direction": (("decrease", "a decrease harms"), ("increase", "an increase harms")),
    "threshold_kind": (("absolute", "absolute"), ("relative", "relative to control")),
    "on_violation": (("breach", "roll back"), ("warning", "warn")),
}


class GuardrailsWidget(forms.Widget):
    """The guardrail rules as a table — metric, which way harms, threshold, kind, what happens — one
    row per rule and two empty rows to add one; an empty metric drops the row. The service validates
    the list (experiments.rollout_settings.validate_guardrails), so the form shows its messages."""

    def _rules(self, value: Any) -> list[dict[str, Any]]:
        if isinstance(value, str):
            try:
                value = json.loads(value) if value else []
            except ValueError:
                value = []
        return [rule for rule in value if isinstance(rule, dict)] if isinstance(value, list) else []

    def render(self, name: str, value: Any, attrs: dict | None = None, renderer: Any = None) -> SafeString:
        rows = [*self._rules(value), {}, {}]

        # Each control is named by its column and rule, as a screen reader has no <label> to read here.
        def select(field: str, index: int, current: str, choices: Any) -> str:
            options = format_html_join("", '<option value="{}"{}>{}</option>',
                                       ((key, " selected" if key == current else "", label) for key, label in choices))
            return format_html('<select name="{}-{}-{}" aria-label="rule {}: {}">{}</select>', name, index, field,
                               index + 1, field.replace("_", " "), options)

        body = format_html_join("", "<tr>{}</tr>", (
            (format_html(
                "<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
                select("metric", index, rule.get("metric", ""), (("", "— none —"), *((m, m) for m in rollout_settings.GUARDRAIL_METRICS))),
                select("harmful_direction", index, rule.get("harmful_direction", "decrease"), _GUARDRAIL_CHOICES["harmful_direction"]),
                format_html('<input type="number" step="any" min="0" name="{}-{}-threshold" value="{}" aria-label="rule {}: threshold"'
                            ' style="width:7em">',
                            name, index, "" if rule.get("threshold") is None else f"{rule['threshold']:g}", index + 1),
                select("threshold_kind", index, rule.get("threshold_kind", "absolute"), _GUARDRAIL_CHOICES["threshold_kind"]),
                select("on_violation", index, rule.get("on_violation", "breach"), _GUARDRAIL_CHOICES["on_violation"]),
            ),)
            for index, rule in enumerate(rows)
        ))
        return format_html(
            '<table class="guardrails-form"><thead><tr><th scope="col">metric</th><th scope="col">harmful direction</th>'
            '<th scope="col">threshold</th><th scope="col">kind</th><th scope="col">on violation</th></tr></thead>'
            "<tbody>{}</tbody></table>"
            '<input type="hidden" name="{}-count" value="{}">',
            body, name, len(rows),
        )

    def value_from_datadict(self, data: Any, files: Any, name: str) -> Any:
        if f"{name}-count" not in data:
            # A script posting the rules as JSON (the field's former shape) still works.
            raw = data.get(name)
            try:
                return json.loads(raw) if raw else None
            except ValueError:
                return raw  # the service says what is wrong with it
        rules = []
        for index in range(int(data.get(f"{name}-count") or 0)):
            metric = data.get(f"{name}-{index}-metric", "")
            if not metric:
                continue
            threshold: Any = data.get(f"{name}-{index}-threshold", "")
            try:
                threshold = float(threshold)
            except ValueError:
                pass  # the service names the row and the problem
            rules.append({"metric": metric, "harmful_direction": data.get(f"{name}-{index}-harmful_direction", ""),
                          "threshold": threshold, "threshold_kind": data.get(f"{name}-{index}-threshold_kind", ""),
                          "on_violation": data.get(f"{name}-{index}-on_violation", "")})
        return rules


class GuardrailsField(forms.Field):
    widget = GuardrailsWidget

    def to_python(self, value: Any) -> Any:
        return value

    def has_changed(self, initial: Any, data: Any) -> bool:
        return data is not None and initial != data


class ExperimentForm(forms.ModelForm):
    guardrails = GuardrailsField(
        required=False,
        help_text="Absolute thresholds are in the metric's own unit (success rate and quality as fractions: 0.05 = 5 "
                  "points); relative ones a fraction of control's value (0.30 = 30 %). A success-rate rule that rolls "
                  "back is required; once started, rules can only be tightened.",
    )

    class Meta:
        model = Experiment
        fields = ("agent", "treatment", "key", "description", "stage_plan", "min_stage_hours", "min_samples_per_arm",
                  "planned_samples_per_arm", "guardrails")
        help_texts = {
            "key": "Leave empty for AGENT-DATE-SEED. Letters, digits, hyphens, underscores.",
            "stage_plan": "e.g. [10, 25, 50, 100]; fixed once the experiment starts.",
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "treatment" in self.fields:
            cast(forms.ModelChoiceField, self.fields["treatment"]).queryset = ModelVersion.objects.filter(
                kind="fine_tuned", status__in=CANDIDATE_STATUSES
            ).exclude(status=ModelStatus.ROLLING_OUT).select_related("agent")
        if "key" in self.fields:
            self.fields["key"].required = False
        for name, default in (("stage_plan", _settings_default("stage_plan")), ("guardrails", _settings_default("guardrails")),
                              ("min_stage_hours", _settings_default("min_stage_hours")),
                              ("min_samples_per_arm", _settings_default("min_samples_per_arm"))):
            if name in self.fields and not self.instance.pk:
                self.fields[name].initial = default

    def clean(self) -> dict[str, Any]:
        # The service's own validators, so the form shows the same messages the API and CLI give.
        super().clean()
        cleaned = self.cleaned_data
        for name, validate in (("stage_plan", rollout_settings.validate_stage_plan), ("guardrails", rollout_settings.validate_guardrails)):
            if name in cleaned and cleaned[name] is not None:
                try:
                    cleaned[name] = validate(cleaned[name])
                except DomainError as exc:
                    self.add_error(name, ValidationError(exc.message))
        return cleaned


def _settings_default(name: str) -> Any:
    return {
        "stage_plan": list(settings.ROLLOUT_STAGES),
        "guardrails": services.default_guardrails(),
        "min_stage_hours": settings.ROLLOUT_MIN_STAGE_HOURS,
        "min_samples_per_arm": settings.ROLLOUT_MIN_SAMPLES_PER_ARM,
    }[name]


@admin.register(Experiment)
class ExperimentAdmin(admin.ModelAdmin):
    form = ExperimentForm
    change_form_template = "admin/experiments/experiment/change_form.html"
    list_display = ("key", "agent", "status", "stage", "treatment_model", "started_by", "created_at")
    list_filter = ("status", "agent")
    search_fields = ("key", "agent__slug", "treatment__model_id")
    list_select_related = ("agent", "treatment", "current_stage", "started_by")

    @admin.display(description="stage")
    def stage(self, experiment: Experiment) -> str:
        if experiment.status in ACTIVE_STATUSES and experiment.current_stage:
            return f"{experiment.current_stage.percent} %"
        return "—"

    @admin.display(description="candidate")
    def treatment_model(self, experiment: Experiment) -> str:
        return experiment.treatment.model_id

    def get_readonly_fields(self, request: HttpRequest, obj: Experiment | None = None) -> list[str]:
        if obj is None:
            return []
        fixed = ["agent", "treatment", "key", "seed", "config_version", "status", "guardrail_rules"]
        if obj.status != ExperimentStatus.DRAFT:
            fixed.append("stage_plan")
        if obj.status in (ExperimentStatus.ROLLED_BACK, ExperimentStatus.COMPLETED):
            fixed += ["description", "min_stage_hours", "min_samples_per_arm", "planned_samples_per_arm", "guardrails"]
        return fixed

    def get_fields(self, request: HttpRequest, obj: Experiment | None = None) -> tuple[str, ...]:
        if obj is None:
            return ExperimentForm.Meta.fields
        # Read only (a finished experiment, or a person who may only view it): the rules as the same
        # table the form edits, not the field's JSON.
        guardrails = "guardrails" if self.has_change_permission(request, obj) else "guardrail_rules"
        return ("key", "agent", "treatment", "status", "seed", "config_version", "description", "stage_plan",
                "min_stage_hours", "min_samples_per_arm", "planned_samples_per_arm", guardrails)

    @admin.display(description="guardrails")
    def guardrail_rules(self, experiment: Experiment) -> SafeString:
        labels = {name: dict(choices) for name, choices in _GUARDRAIL_CHOICES.items()}

        def label(rule: dict[str, Any], name: str) -> str:
            value = str(rule.get(name, ""))
            return labels[name].get(value, value)

        rows = format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", (
            (rule.get("metric", ""), label(rule, "harmful_direction"),
             f"{rule['threshold']:g}" if isinstance(rule.get("threshold"), int | float) else rule.get("threshold"),
             label(rule, "threshold_kind"), label(rule, "on_violation"))
            for rule in experiment.guardrails if isinstance(rule, dict)
        ))
        return format_html(
            '<table class="guardrails-form" id="guardrail-rules"><thead><tr><th>metric</th><th>harmful direction</th>'
            "<th>threshold</th><th>kind</th><th>on violation</th></tr></thead><tbody>{}</tbody></table>", rows,
        )

    def has_delete_permission(self, request: HttpRequest, obj: Experiment | None = None) -> bool:
        return False  # the audit trail must survive; roll back instead

    def has_change_permission(self, request: HttpRequest, obj: Experiment | None = None) -> bool:
        # A completed or rolled-back experiment is a record: its page is read-only (no Save buttons).
        if obj is not None and obj.status in FINAL_STATUSES:
            return False
        return super().has_change_permission(request, obj)

    # --- writes go through the services -----------------------------------------------------------

    def save_model(self, request: HttpRequest, obj: Experiment, form: forms.ModelForm, change: bool) -> None:
        data = form.cleaned_data
        try:
            if change:
                edits = {name: data[name] for name in form.changed_data if name in services.EDITABLE_SETTINGS}
                services.experiment_update(experiment=obj, actor=request_actor(request), **edits)
                messages.success(request, f"Experiment {obj.key} saved")
            else:
                created = services.experiment_create(
                    agent=data["agent"], treatment=data["treatment"], actor=request_actor(request), key=data.get("key") or "",
                    description=data.get("description") or "", stage_plan=data.get("stage_plan"),
                    min_stage_hours=data.get("min_stage_hours"), min_samples_per_arm=data.get("min_samples_per_arm"),
                    planned_samples_per_arm=data.get("planned_samples_per_arm"), guardrails=data.get("guardrails"),
                )
                obj.pk = created.pk
        except DomainError as exc:
            # Nothing was written; response_add / response_change redirect, and this says why.
            messages.error(request, f"{'Not saved' if change else 'Not created'}: {exc.message}")

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        pass  # nothing related is edited here; the service wrote what there is

    def response_add(self, request: HttpRequest, obj: Experiment, post_url_continue: str | None = None) -> HttpResponse:
        if obj.pk is None:  # the service refused to create it (save_model said why): the form again
            return HttpResponseRedirect(reverse("admin:experiments_experiment_add"))
        return HttpResponseRedirect(reverse("admin:experiments_experiment_change", args=[obj.pk]))

    def response_change(self, request: HttpRequest, obj: Experiment) -> HttpResponse:
        return HttpResponseRedirect(reverse("admin:experiments_experiment_change", args=[obj.pk]))

    # --- the experiment page ---------------------------------------------------------------------

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        experiment = Experiment.objects.filter(pk=object_id).first()
        extra_context = dict(extra_context or {})
        if experiment is not None and self.has_view_or_change_permission(request, experiment):
            extra_context["rollout"] = rollout_page_context(experiment=selectors.get_experiment(key=experiment.key), user=request_actor(request))
        return super().change_view(request, object_id, form_url, extra_context)

    def get_urls(self) -> list[URLPattern]:
        return [
            path("<int:pk>/act/<str:action>/", self.admin_site.admin_view(require_POST(self.act_view)),
                 name="experiments_experiment_act"),
            *super().get_urls(),
        ]

    def act_view(self, request: HttpRequest, pk: int, action: str) -> HttpResponse:
        experiment = get_object_or_404(Experiment, pk=pk)
        if not self.has_view_or_change_permission(request, experiment):
            raise DjangoPermissionDenied("the experiment's buttons need the permission 'experiments.view_experiment'")
        reason = request.POST.get("reason", "").strip()
        try:
            done = rollout_action(action, experiment=experiment, user=request_actor(request), reason=reason,
                               override_reason=request.POST.get("override_reason", ""), shown=request.POST)
        except AlreadyDone as exc:
            messages.info(request, exc.message[0].upper() + exc.message[1:])
        except DomainError as exc:
            messages.error(request, f"Refused: {exc.message}")
        else:
            messages.success(request, done)
        return HttpResponseRedirect(reverse("admin:experiments_experiment_change", args=[pk]))


def _shown_number(shown: Any, name: str) -> int:
    try:
        return int(shown.get(name, ""))
    except ValueError:
        raise DomainError("the approve form does not say which request it showed; reload the page") from None


def rollout_action(action: str, *, experiment: Experiment, user: Actor, reason: str, override_reason: str, shown: Any) -> str:
    """Press one of the rollout buttons (this page's, or the launch board's): call its service and
    say what happened. `shown` holds what the approve form showed (request id, settings version)."""
    if action == "start":
        services.experiment_start(experiment=experiment, actor=user, override_reason=override_reason)
        return f"Experiment {experiment.key} started at {experiment.stage_plan[0]} %"
    if action == "request":
        approval = services.stage_request_advance(experiment=experiment, actor=user, note=reason)
        return f"Advance to {approval.stage.percent} % requested; a second person must approve it"
    if action == "approve":
        # The page posts the request and config version it showed; the service refuses if either moved.
        stage = services.stage_approve_next(experiment=experiment, actor=user, approval_id=_shown_number(shown, "approval"),
                                            config_version=_shown_number(shown, "config_version"), reason=reason)
        return f"Advanced to {stage.percent} %" + (" — the candidate is now live" if stage.percent >= 100 else "")
    if action == "pause":
        services.experiment_pause(experiment=experiment, actor=user, reason=reason)
        return f"Experiment {experiment.key} paused: everyone gets the live model"
    if action == "resume":
        services.experiment_resume(experiment=experiment, actor=user, reason=reason)
        return f"Experiment {experiment.key} resumed"
    if action == "targets":
        services.experiment_set_stage_targets(experiment=experiment, actor=user, targets=_shown_targets(experiment, shown))
        return f"Launch calendar of {experiment.key} saved"
    if action == "rollback":
        services.experiment_rollback(experiment=experiment, actor=user, reason=reason)
        return f"Experiment {experiment.key} rolled back: everyone gets the live model; the candidate is rejected"
    raise DomainError(f"unknown action '{action}'")


def _shown_targets(experiment: Experiment, shown: Any) -> dict[int, Any]:
    """The calendar form's `target_<percent>` fields (datetime-local, UTC; empty clears a target)."""
    targets: dict[int, Any] = {}
    for percent in experiment.stage_plan:
        value = (shown.get(f"target_{percent}") or "").strip()
        if not value:
            targets[percent] = None
            continue
        try:
            targets[percent] = datetime.fromisoformat(value).replace(tzinfo=UTC)
        except ValueError:
            raise DomainError(f"target of {percent} %: '{value}' is not a date and time (YYYY-MM-DD HH:MM, UTC)") from None
    return targets


def _shown_value(value: Any) -> str:
    if isinstance(value, list | dict):
        return json.dumps(value, sort_keys=True)
    return "—" if value is None else str(value)


def _event_changes(event: Any) -> list[str]:
    """An edit's "field: before → after" lines (status moves are shown in their own column)."""
    if event.action != "edit":
        return []
    names = [name for name in {**event.before, **event.after} if name not in ("status", "stage_percent", "voided_approvals")]
    return [f"{name}: {_shown_value(event.before.get(name))} → {_shown_value(event.after.get(name))}" for name in names]


def _agent_config_version(experiment: Experiment) -> int | None:
    """The number GET /agents/{agent}/config answers as `config_version` (the agent's routing config),
    so the page and the API name the same thing the same way."""
    entry = routing.current_table(agent=experiment.agent.slug).agents.get(experiment.agent.slug)
    return entry.config_json.get("config_version") if entry is not None and entry.config_json else None


def rollout_page_context(*, experiment: Experiment, user: User) -> dict[str, Any]:
    """What the page shows, and which buttons this person gets (the services check again)."""
    running = experiment.status == ExperimentStatus.RUNNING
    # One read of the outcome aggregate for the holds and the results (each read it: two passes over
    # the experiment's outcomes, 0.36 s each at 100 000).
    started = experiment.status != ExperimentStatus.DRAFT
    metrics = outcome_aggregate.experiment_metrics(experiment=experiment, include_percentiles=True) if started else None
    holds = stage_holds(experiment=experiment, metrics=metrics) if running else []
    pending = selectors.pending_approval(experiment=experiment)
    open_holds = [hold for hold in holds if not hold.cleared]
    next_percent = None
    if running and experiment.current_stage is not None:
        following = experiment.stages.filter(index=experiment.current_stage.index + 1).first()
        next_percent = following.percent if following else None

    def can(codename: str) -> bool:
        return user.is_active and user.has_perm(f"experiments.{codename}")

    four_eyes_blocker = selectors.approval_blocker(experiment=experiment, pending=pending, user=user)
    candidate = experiment.treatment
    needs_override = candidate.status != ModelStatus.APPROVED_FOR_ROLLOUT
    buttons = {
        "start": experiment.status == ExperimentStatus.DRAFT and can("start_experiment") and (not needs_override or can("override_verdict")),
        "needs_override": needs_override,
        "request": running and pending is None and next_percent is not None and can("request_stage"),
        "approve": running and pending is not None and can("approve_stage") and not four_eyes_blocker,
        "approve_blocked_by": "; ".join(f"{hold.label}: {hold.detail}" for hold in open_holds),
        "pause": running and can("pause_experiment"),
        "resume": experiment.status == ExperimentStatus.PAUSED and can("pause_experiment"),
        "rollback": experiment.status in ACTIVE_STATUSES and can("rollback_experiment"),
    }
    return {
        "experiment": experiment,
        "timeline": selectors.experiment_timeline(experiment=experiment),
        "holds": holds,
        "pending": pending,
        "next_percent": next_percent,
        "four_eyes_blocker": four_eyes_blocker if can("approve_stage") else "",
        "results": results.experiment_results(experiment=experiment, metrics=metrics) if metrics is not None else None,
        "events": [(event, _event_changes(event)) for event in selectors.experiment_events(experiment=experiment)],
        "agent_config_version": _agent_config_version(experiment),
        "calendar": selectors.experiment_calendar(experiment=experiment),
        "can_plan": experiment.status not in FINAL_STATUSES and can("change_experiment"),
        **_operating_curve(experiment),
        "buttons": buttons,
        "any_button": any(buttons[name] for name in ("start", "request", "approve", "pause", "resume", "rollback")),
    }


def _operating_curve(experiment: Experiment) -> dict[str, Any]:
    """The published success-rate curve only where it was measured at this experiment's settings (the
    defaults); otherwise what differs and the bench command that measures this experiment's own curve."""
    rules = list(experiment.guardrails or [])
    rule = success_rate_rollback_rule(rules)
    alpha = results.guardrail_alphas(rules=rules)[rules.index(rule)] if rule is not None else None
    settings_now: dict[str, Any] = {"stage_plan": list(experiment.stage_plan), "min_stage_hours": experiment.min_stage_hours,
                    "min_samples_per_arm": experiment.min_samples_per_arm,
                    "planned_samples_per_arm": experiment.planned_samples_per_arm, "guardrails": rules, "alpha": alpha}
    differences = curve_differences(**settings_now)
    if not differences:
        return {"operating_curve": SUCCESS_RATE_ROLLBACK_CURVE, "operating_curve_differs": None}
    return {"operating_curve": None, "operating_curve_differs": {
        "differences": differences, "command": curve_command(**settings_now) if rule is not None else None,
    }}


# The Agent list gains a health column (experiments/admin_health.py).
from experiments import admin_health  # noqa: E402,F401


@admin.register(DataDeletion)
class DataDeletionAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """The trail of deleted end-user data (prunes and erasures); written only by experiments/retention.py.
    Search by the hash `erase_user_data --dry-run` prints for an id to show that it was erased."""

    list_display = ("at", "kind", "actor", "agent", "outcomes_deleted", "assignments_deleted", "outcomes_before", "subject_hash")
    list_select_related = ("actor",)
    list_filter = ("kind",)
    search_fields = ("subject_hash",)
