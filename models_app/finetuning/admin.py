"""Admin pages of fine-tuning: upload a training file, create / submit / start / cancel / sync a job,
adopt the provider job a lost creation answer left untracked, and read its status, events, checkpoints, cost, the provider's answer and the registered version.

Every button calls a service (models_app/finetuning/services.py); no row is written here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, cast

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import flatten_fieldsets
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join
from simple_history.admin import SimpleHistoryAdmin

from audits.models import AuditRun, AuditStatus, Dataset, DatasetStatus
from costs.budgeting import format_usd
from genesis.admin_base import RecordAdminMixin, ServiceAddFormMixin, admin_page
from genesis.errors import DomainError, InvalidInput
from genesis.permissions import request_actor
from models_app.finetuning import rules
from models_app.finetuning.adoption import finetuning_adoption_candidates, finetuning_job_adopt
from models_app.finetuning.models import FineTuningJob, TrainingFile, TrainingFilePurpose
from models_app.finetuning.services import (
    finetuning_job_cancel,
    finetuning_job_create,
    finetuning_job_start,
    finetuning_job_submit,
    finetuning_job_sync,
)
from models_app.finetuning.training_files import (
    TrainingFileInvalid,
    training_file_audit,
    training_file_from_dataset,
    training_file_upload,
)
from models_app.registry.models import Agent, ProviderAccount

# The admin's colour variables (and ours in templates/admin/base_site.html), so a status keeps its
# contrast in dark mode too; the label says the status, the colour only repeats it.
STATUS_COLOURS = {
    rules.SUCCESS: "var(--genesis-ok-fg)",
    rules.RUNNING: "var(--link-fg)",
    rules.FAILED: "var(--error-fg)",
    rules.FAILED_VALIDATION: "var(--error-fg)",
    rules.REFUSED: "var(--error-fg)",
    rules.CANCELLED: "var(--body-quiet-color)",
    rules.NOT_CREATED: "var(--genesis-warning-fg)",
}


def _status_badge(status: str, label: str) -> str:
    colour = STATUS_COLOURS.get(status, "var(--body-fg)")
    return format_html('<strong style="color:{}">{}</strong>', colour, label)


def _human_time(value: Any) -> str:
    """The provider's ISO timestamp (or epoch seconds) as people read it: "2026-12-06 00:19:04 UTC"."""
    if value in (None, ""):
        return "—"
    try:
        moment = datetime.fromtimestamp(value, tz=UTC) if isinstance(value, int | float) else datetime.fromisoformat(str(value))
    except (ValueError, OverflowError, OSError):
        return str(value)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _show_problems(form: forms.Form, field: str, error: TrainingFileInvalid) -> None:
    """The invalid lines of a training file under the form field it was uploaded with."""
    shown = [detail for _, detail in error.problems]
    if error.invalid_lines > len(shown):
        shown.append(f"… {error.invalid_lines} invalid lines in all")
    for problem in shown:
        form.add_error(field, problem)


def audit_findings(audit: AuditRun) -> rules.TrainingDataFindings:
    return rules.training_data_findings(audit.report or {})


def _html_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A plain HTML table for a read-only field: a header row, then one row a sequence, every cell escaped."""
    header = format_html_join("", "<th>{}</th>", ((name,) for name in headers))
    body = format_html_join("", "<tr>{}</tr>", ((format_html_join("", "<td>{}</td>", ((cell,) for cell in row)),) for row in rows))
    return format_html("<table><tr>{}</tr>{}</table>", header, body)


# --- training files -------------------------------------------------------------------------------


class TrainingFileUploadForm(forms.Form):
    agent = forms.ModelChoiceField(queryset=Agent.objects.all(), to_field_name="slug")
    file = forms.FileField(help_text="Chat JSONL: one {\"messages\": [...]} sample per line. Checked line by line before upload.")
    purpose = forms.ChoiceField(choices=TrainingFilePurpose.choices, initial=TrainingFilePurpose.TRAINING)
    provider = forms.ModelChoiceField(
        queryset=ProviderAccount.objects.filter(enabled=True), required=False,
        help_text="Empty: the provider serving the agent's baseline.",
    )
    audit_override_reason = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 2}), label="Audit override reason",
        help_text="Only when the data's audit found PII or format errors: why it should be used anyway "
                  "(needs models_app.override_training_audit). Otherwise train on its scrubbed copy.",
    )


@admin.register(TrainingFile)
class TrainingFileAdmin(RecordAdminMixin, ServiceAddFormMixin):
    """An uploaded file is what the provider holds (upload a new one instead of changing it); jobs refer
    to it and the audit trail needs it, so none is deleted."""

    list_display = ("filename", "agent", "purpose", "line_count", "estimated_tokens", "provider", "provider_file_id", "uploaded_by", "uploaded_at")
    list_select_related = ("agent", "provider", "uploaded_by")  # uploaded_by may be NULL: not followed by default
    list_filter = ("purpose", "agent", "provider")
    search_fields = ("filename", "provider_file_id", "sha256", "agent__slug")
    readonly_fields = ("agent", "provider", "provider_file_id", "filename", "purpose", "line_count", "size_bytes", "sha256",
                       "estimated_tokens", "uploaded_by", "uploaded_at")
    add_form = TrainingFileUploadForm
    add_page = {"title": "Upload a training file", "submit_label": "Check and upload"}

    def add_through_service(self, request: HttpRequest, form: forms.Form) -> TrainingFile:
        upload = form.cleaned_data["file"]
        try:
            return training_file_upload(
                agent=form.cleaned_data["agent"], content=upload, filename=upload.name,
                purpose=form.cleaned_data["purpose"], provider=form.cleaned_data["provider"], actor=request_actor(request),
                audit_override_reason=form.cleaned_data["audit_override_reason"] or None,
            )
        except TrainingFileInvalid as exc:
            _show_problems(form, "file", exc)
            raise

    def add_refused(self, request: HttpRequest, form: forms.Form, error: DomainError) -> None:
        messages.error(request, error.message)

    def add_done(self, request: HttpRequest, training_file: TrainingFile) -> HttpResponse:
        messages.success(
            request, f"{training_file.filename}: {training_file.line_count} samples at provider "
            f"'{training_file.provider.name}' as {training_file.provider_file_id}",
        )
        return HttpResponseRedirect(reverse("admin:models_app_trainingfile_changelist"))


# --- jobs -----------------------------------------------------------------------------------------


class FineTuningJobAdoptForm(forms.Form):
    provider_job_id = forms.CharField(
        max_length=100, label="Provider job id",
        help_text="The provider's id of the job this row's lost creation made (see the provider's jobs above).",
    )
    reason = forms.CharField(required=False, max_length=200, help_text="Optional: kept in the job's history.")


class AuditedDatasetChoiceField(forms.ModelChoiceField):
    """Datasets named with their agent, size and audit outcome, so the right one can be picked."""

    def label_from_instance(self, obj: Dataset) -> str:
        audit = obj.latest_audit
        findings = "findings" if audit and audit.has_findings else "clean"
        agent = obj.agent.slug if obj.agent else "no agent"  # the form lists only datasets of an agent
        return f"{agent}: {obj.original_name} (#{obj.pk}, {obj.line_count} lines, audit {findings})"


class FineTuningJobCreateForm(forms.Form):
    agent = forms.ModelChoiceField(queryset=Agent.objects.all(), to_field_name="slug")
    training_upload = forms.FileField(required=False, label="Upload a training file",
                                      help_text="Chat JSONL, checked line by line, then uploaded to the provider.")
    training_file = forms.ModelChoiceField(
        queryset=TrainingFile.objects.filter(purpose=TrainingFilePurpose.TRAINING).select_related("agent"),
        required=False, label="…or a training file uploaded before",
    )
    training_dataset = AuditedDatasetChoiceField(
        queryset=Dataset.objects.none(), required=False, label="…or an audited dataset",
        help_text="A dataset of the Training-data audits whose audit has finished; it is uploaded to the provider "
                  "and linked, so the model's lineage shows its audit.",
    )
    validation_upload = forms.FileField(required=False, label="Upload a validation file (optional)")
    validation_file = forms.ModelChoiceField(
        queryset=TrainingFile.objects.filter(purpose=TrainingFilePurpose.VALIDATION).select_related("agent"),
        required=False, label="…or a validation file uploaded before",
    )
    validation_dataset = AuditedDatasetChoiceField(
        queryset=Dataset.objects.none(), required=False, label="…or an audited validation dataset",
    )
    base_model = forms.CharField(required=False, max_length=120, help_text="Empty: the base model of the agent's baseline.")
    epochs = forms.FloatField(required=False, min_value=0.01, help_text="Passes over the data (give epochs or training steps).")
    training_steps = forms.IntegerField(required=False, min_value=1)
    learning_rate = forms.FloatField(required=False, min_value=0, initial=0.0001)
    suffix = forms.CharField(required=False, max_length=rules.MAX_SUFFIX_LENGTH)
    auto_start = forms.BooleanField(required=False, help_text="Let the provider start training as soon as the data is validated.")
    override_reason = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Only when the estimate does not fit a hard budget: why it should go ahead (needs costs.override_budget).",
    )
    audit_override_reason = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 2}), label="Audit override reason",
        help_text="Only when the data's audit found PII or format errors: why it should be used anyway "
                  "(needs models_app.override_training_audit). Otherwise train on its scrubbed copy.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        audited = (
            Dataset.objects.filter(status=DatasetStatus.READY, agent__isnull=False, latest_audit__status=AuditStatus.SUCCEEDED)
            .select_related("agent", "latest_audit").order_by("agent__slug", "-created_at")
        )
        for name, purpose in (("training_dataset", "training"), ("validation_dataset", "validation")):
            cast(forms.ModelChoiceField, self.fields[name]).queryset = audited.filter(purpose=purpose)

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        if sum(bool(data.get(name)) for name in ("training_upload", "training_file", "training_dataset")) != 1:
            raise forms.ValidationError(
                "Upload a training file, choose one uploaded before, or choose an audited dataset (one of the three)."
            )
        if sum(bool(data.get(name)) for name in ("validation_upload", "validation_file", "validation_dataset")) > 1:
            raise forms.ValidationError("Upload a validation file or choose one, not both.")
        if data.get("epochs") and data.get("training_steps"):
            raise forms.ValidationError("Give epochs or training steps, not both.")
        agent = data.get("agent")
        for name in ("training_dataset", "validation_dataset"):
            if agent is not None and data.get(name) and data[name].agent_id != agent.pk:
                self.add_error(name, f"this dataset belongs to {data[name].agent.slug}, not {agent.slug}")
        return data

    def hyperparameters(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {name: data[name] for name in ("epochs", "training_steps", "learning_rate") if data.get(name) not in (None, "")}


@admin.register(FineTuningJob)
class FineTuningJobAdmin(ServiceAddFormMixin, SimpleHistoryAdmin):
    list_display = ("id", "agent", "base_model", "status_display", "trained_tokens", "cost_display", "fine_tuned_model",
                    "model_version_link", "last_synced_at", "created_by", "created_at")
    list_filter = ("status", "agent", "provider", "base_model")
    search_fields = ("provider_job_id", "fine_tuned_model", "agent__slug", "training_file__filename")
    list_select_related = ("agent", "model_version", "created_by")
    change_form_template = "admin/models_app/finetuningjob/change_form.html"
    fieldsets = (
        ("Job", {"fields": ("agent", "provider", "provider_job_id", "base_model", "training_file", "validation_file",
                            "hyperparameters_display", "suffix", "auto_start")}),
        ("Training data audit", {"fields": ("training_audit_display", "audit_override_reason")}),
        ("Status", {"fields": ("status_display", "provider_status", "provider_answer_display", "last_error",
                               "last_error_at", "submitted_at", "started_at", "finished_at", "last_synced_at",
                               "trained_tokens")}),
        ("Cost", {"fields": ("estimated_cost_usd", "cost_display", "cost_recorded_at", "budget_override_reason")}),
        ("Result", {"fields": ("fine_tuned_model", "model_version_link")}),
        ("Events", {"fields": ("events_table",)}),
        ("Checkpoints", {"fields": ("checkpoints_table",)}),
        ("Provider's last answer about the job", {"fields": ("snapshot_display",), "classes": ("collapse",)}),
        ("Who", {"fields": ("created_by", "created_at", "updated_at")}),
    )

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return flatten_fieldsets(self.fieldsets)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # a job is a record of money spent; cancel it instead

    # --- columns --------------------------------------------------------------------------------
    @admin.display(description="status", ordering="status")
    def status_display(self, job: FineTuningJob) -> str:
        return _status_badge(job.status, job.get_status_display())

    @admin.display(description="cost (provider)")
    def cost_display(self, job: FineTuningJob) -> str:
        ended_uncharged = job.cost_recorded_at is None and job.status in rules.UNCHARGED_STATUSES
        if ended_uncharged and (job.cost_usd is None or job.status not in rules.TERMINAL_STATUSES):
            return f"— ({job.get_status_display().lower()}, not charged)"
        if job.cost_usd is None:
            return f"≈ {format_usd(job.estimated_cost_usd)} (estimate)" if job.estimated_cost_usd is not None else "—"
        # Only a SUCCESS goes on the ledger: what the provider reported for a job it ended otherwise (failed,
        # cancelled) is shown as its figure, not as a charge. A REFUSED job's figure was a running estimate.
        state = (f"reported by the provider; {job.get_status_display().lower()}, not on the ledger" if ended_uncharged
                 else "charged" if job.cost_recorded_at else "reported, not yet charged")
        if job.cost_currency in ("", "USD"):
            return f"{format_usd(job.cost_usd)} ({state})"
        return f"{job.cost_usd} {job.cost_currency} ({state})"

    @admin.display(description="model version")
    def model_version_link(self, job: FineTuningJob) -> str:
        version = job.model_version
        if version is None:
            return "—"
        url = reverse("admin:models_app_modelversion_change", args=[version.pk])
        return format_html('<a href="{}">{} ({})</a>', url, version.model_id, version.get_status_display())

    @admin.display(description="audit of the training file")
    def training_audit_display(self, job: FineTuningJob) -> str:
        audit = training_file_audit(job.training_file)
        if audit is None:
            return "no audit recorded for this file (uploaded before audits were kept)"
        findings = audit_findings(audit)
        url = reverse("admin:audits_dataset_change", args=[audit.dataset_id])
        summary = "; ".join(
            [f"{audit.lines} lines, {audit.pii_total} PII, {audit.format_error_total} format errors, "
             f"{audit.duplicates_exact} exact / {audit.duplicates_near} near duplicates"]
            + [f"blocking: {found}" for found in findings.blocking] + [f"warning: {found}" for found in findings.warnings]
        )
        return format_html('<a href="{}">dataset #{}, audit #{}</a> — {}', url, audit.dataset_id, audit.pk, summary)

    @admin.display(description="hyperparameters")
    def hyperparameters_display(self, job: FineTuningJob) -> str:
        return ", ".join(f"{key}={value}" for key, value in sorted(job.hyperparameters.items())) or "provider defaults"

    @admin.display(description="provider's answer")
    def provider_answer_display(self, job: FineTuningJob) -> str:
        if not job.provider_answer and not job.provider_answer_status:
            return "—"
        return format_html(
            '<div style="border-left:4px solid #c62828;padding:4px 8px;white-space:pre-wrap">'
            "<strong>HTTP {}</strong>\n{}</div>",
            job.provider_answer_status or "—", job.provider_answer or "(no body)",
        )

    @admin.display(description="events (oldest first)")
    def events_table(self, job: FineTuningJob) -> str:
        if not job.events:
            return "—"
        return _html_table(
            ("when", "event", "data"),
            ((_human_time(event.get("created_at")), event.get("name", ""), json.dumps(event.get("data", {}))) for event in job.events),
        )

    @admin.display(description="checkpoints")
    def checkpoints_table(self, job: FineTuningJob) -> str:
        if not job.checkpoints:
            return "—"
        return _html_table(
            ("step", "when", "train loss", "valid loss", "valid accuracy"),
            (
                (c.get("step_number"), _human_time(c.get("created_at")), c["metrics"].get("train_loss"),
                 c["metrics"].get("valid_loss"), c["metrics"].get("valid_mean_token_accuracy"))
                for c in job.checkpoints
            ),
        )

    @admin.display(description="JSON")
    def snapshot_display(self, job: FineTuningJob) -> str:
        return format_html("<pre>{}</pre>", json.dumps(job.provider_snapshot, indent=2, sort_keys=True)) if job.provider_snapshot else "—"

    # --- buttons --------------------------------------------------------------------------------
    ACTIONS = {
        "submit": ("Submit to the provider", finetuning_job_submit),
        "start": ("Start training", finetuning_job_start),
        "cancel": ("Cancel job", finetuning_job_cancel),
        "sync": ("Sync now", finetuning_job_sync),
    }

    def available_actions(self, job: FineTuningJob) -> list[str]:
        actions = []
        if job.status == rules.NOT_CREATED and not job.provider_job_id:
            actions.append("adopt")
        if job.status in (rules.NOT_CREATED, rules.REFUSED) and not job.provider_job_id:
            actions.append("submit")
        if job.status in rules.STARTABLE_STATUSES:
            actions.append("start")
        if job.status in rules.CANCELLABLE_STATUSES or job.status == rules.NOT_CREATED:
            actions.append("cancel")
        if job.provider_job_id:
            actions.append("sync")
        return actions

    def get_urls(self) -> list[URLPattern]:
        return [
            path("<int:pk>/do/<slug:action>/", self.admin_site.admin_view(self.action_view),
                 name="models_app_finetuningjob_action"),
            path("<int:pk>/adopt/", self.admin_site.admin_view(self.adopt_view), name="models_app_finetuningjob_adopt"),
            *super().get_urls(),
        ]

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None) -> HttpResponse:
        job = self.get_object(request, object_id)
        extra_context = dict(extra_context or {})
        # While the provider moves the job (beat syncs it every minute), the page follows it.
        extra_context["refresh_seconds"] = 10 if job is not None and job.is_moving else None
        if job is not None and self.has_change_permission(request, job):
            extra_context["job_actions"] = [
                {"name": name, "label": "Adopt a provider job", "link": True,
                 "url": reverse("admin:models_app_finetuningjob_adopt", args=[job.pk])}
                if name == "adopt" else
                {"name": name, "label": self.ACTIONS[name][0],
                 "url": reverse("admin:models_app_finetuningjob_action", args=[job.pk, name])}
                for name in self.available_actions(job)
            ]
        return super().change_view(request, object_id, form_url, extra_context)

    def save_model(self, request: HttpRequest, obj: FineTuningJob, form: Any, change: bool) -> None:
        # Every field is read-only and the page has no save button; a forged POST must not write the row.
        return None

    def action_view(self, request: HttpRequest, pk: int, action: str) -> HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        job = get_object_or_404(FineTuningJob, pk=pk)
        if action not in self.ACTIONS:
            raise DjangoPermissionDenied
        if not self.has_change_permission(request, job):
            raise DjangoPermissionDenied
        label, service = self.ACTIONS[action]
        try:
            job = service(job=job, actor=request_actor(request))
        except DomainError as exc:
            messages.error(request, exc.message)
        else:
            self._report(request, job, done=label)
        return HttpResponseRedirect(reverse("admin:models_app_finetuningjob_change", args=[pk]))

    def adopt_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """Link a NOT_CREATED job to the provider job its lost creation answer left untracked: the
        provider's untracked jobs are listed, matching ones first, and the chosen one is checked by
        the service (it exists, no other row tracks it, same model and files) before it is linked."""
        job = get_object_or_404(FineTuningJob.objects.select_related("agent", "provider", "training_file"), pk=pk)
        if not self.has_change_permission(request, job):
            raise DjangoPermissionDenied
        change_url = reverse("admin:models_app_finetuningjob_change", args=[pk])
        form = FineTuningJobAdoptForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                job = finetuning_job_adopt(job=job, provider_job_id=form.cleaned_data["provider_job_id"],
                                           actor=request_actor(request), reason=form.cleaned_data["reason"])
            except DomainError as exc:
                messages.error(request, exc.message)
            else:
                self._report(request, job, done=f"Adopted provider job {job.provider_job_id}")
                return HttpResponseRedirect(change_url)
        candidates = []
        try:
            candidates = finetuning_adoption_candidates(job=job, actor=request_actor(request))
        except DomainError as exc:
            messages.warning(request, f"Could not list the provider's jobs ({exc.message}); give the job id by hand.")
        matching = [candidate for candidate in candidates if candidate.matches]
        if request.method != "POST" and len(matching) == 1:
            form = FineTuningJobAdoptForm(initial={"provider_job_id": matching[0].snapshot.id})
        context = {
            "title": f"Adopt a provider job for fine-tuning job #{job.pk}", "form": form, "job": job,
            "change_url": change_url, "candidates": candidates, "submit_label": "Check at the provider and adopt",
            "explanation": f"Job #{job.pk} ({job.agent.slug}, {job.base_model}, {job.training_file.filename}) is "
                     f"{job.get_status_display().lower()}: its creation may have reached provider "
                     f"'{job.provider.name}' without the answer reaching us. Adopting links this row to the "
                     "provider's job, so it is followed, charged and holds its budget as if the creation had "
                     "answered. The provider is asked first; a job it does not have, one another row tracks, "
                     "or one trained on something else is refused.",
        }
        return admin_page(self, request, "admin/models_app/finetuningjob/adopt.html", context)

    def _report(self, request: HttpRequest, job: FineTuningJob, *, done: str) -> None:
        answer = f" — the provider said: {job.provider_answer}" if job.provider_answer else ""
        if job.status == rules.REFUSED:
            messages.error(request, f"{done}: job #{job.pk} is refused; {job.last_error or 'the provider refused it'}{answer}")
        elif job.last_error:
            messages.warning(request, f"{done}: job #{job.pk} is {job.status}; {job.last_error}{answer}")
        else:
            messages.success(request, f"{done}: job #{job.pk} is {job.get_status_display()}")

    # --- creating -------------------------------------------------------------------------------
    add_form = FineTuningJobCreateForm
    add_page = {
        "title": "Create a fine-tuning job", "submit_label": "Check the budget and create",
        "intro": "The training file is checked line by line and uploaded, the job's cost is estimated and "
                 "checked against the agent's budgets, then the job is created at the provider. "
                 "Start it from its page once it is validated (or tick auto start).",
    }

    def add_form_initial(self, request: HttpRequest) -> dict[str, Any] | None:
        return {"agent": request.GET.get("agent")} if request.GET.get("agent") else None

    def add_through_service(self, request: HttpRequest, form: forms.Form) -> FineTuningJob:
        data = form.cleaned_data
        training_file = self._chosen_file(request, form, TrainingFilePurpose.TRAINING)
        validation_file = self._chosen_file(request, form, TrainingFilePurpose.VALIDATION)
        if training_file is None:  # not reached: the form's clean() asks for one of the three
            raise InvalidInput("Upload a training file, choose one uploaded before, or choose an audited dataset.")
        return finetuning_job_create(
            agent=data["agent"], training_file=training_file, validation_file=validation_file,
            base_model=data["base_model"] or None, hyperparameters=cast(FineTuningJobCreateForm, form).hyperparameters(),
            suffix=data["suffix"], auto_start=data["auto_start"], actor=request_actor(request),
            override_reason=data["override_reason"] or None, audit_override_reason=data["audit_override_reason"] or None,
        )

    def _chosen_file(self, request: HttpRequest, form: forms.Form, purpose: TrainingFilePurpose) -> TrainingFile | None:
        """The training or validation file the form names (its fields `<purpose>_upload`, `_dataset`,
        `_file`): an upload or an audited dataset (either uploaded to the provider now), one uploaded
        before, or none."""
        data = form.cleaned_data
        dataset, upload = data.get(f"{purpose.value}_dataset"), data.get(f"{purpose.value}_upload")
        reason = data["audit_override_reason"] or None
        if dataset:
            return training_file_from_dataset(dataset=dataset, actor=request_actor(request), audit_override_reason=reason)
        if upload:
            try:
                return training_file_upload(
                    agent=data["agent"], content=upload, filename=upload.name, purpose=purpose, actor=request_actor(request),
                    audit_override_reason=reason,
                )
            except TrainingFileInvalid as exc:
                _show_problems(form, f"{purpose.value}_upload", exc)
                raise
        return data.get(f"{purpose.value}_file")

    def add_refused(self, request: HttpRequest, form: forms.Form, error: DomainError) -> None:
        messages.error(request, error.message)

    def add_done(self, request: HttpRequest, job: FineTuningJob) -> HttpResponse:
        if job.status == rules.REFUSED:
            done = "Not created — the provider refused it"
        elif job.status == rules.NOT_CREATED:
            done = "Saved, not yet created at the provider"
        else:
            done = "Created"
        self._report(request, job, done=done)
        for training_file in filter(None, (job.training_file, job.validation_file)):
            audit = training_file_audit(training_file)
            for warning in audit_findings(audit).warnings if audit is not None else ():
                messages.warning(request, f"{training_file.filename}: its audit warns — {warning}")
        return HttpResponseRedirect(reverse("admin:models_app_finetuningjob_change", args=[job.pk]))
