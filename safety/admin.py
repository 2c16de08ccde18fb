"""Admin pages of the safety app: prompt sets (import a JSONL/CSV export, see every skipped line),
WaltzRL builds (start one, watch its progress, read the validation report) and the "Fine-tune the
feedback agent (Stage 1)" button. Every button is a POST that calls one service; rows are records,
never edited or deleted here."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join

from genesis.admin_base import RecordAdminMixin, ServiceAddFormMixin, admin_page
from genesis.errors import DomainError
from genesis.permissions import request_actor
from models_app.benchmarks.scorers import DEFAULT_JUDGE_MODEL
from models_app.registry.models import Agent
from safety import selectors, services
from safety.models import PromptKind, PromptSet, WaltzBuild

FINETUNE_PERMISSION = "safety.finetune_waltzbuild"


class PromptSetImportForm(forms.Form):
    file = forms.FileField(help_text="JSONL (one object a line) or CSV with a header row.")
    kind = forms.ChoiceField(choices=PromptKind.choices)
    field = forms.CharField(initial="prompt", help_text="The field (or column) holding the prompt.")
    category_field = forms.CharField(initial="category", required=False)
    source_field = forms.CharField(initial="source", required=False)


class BuildStartForm(forms.Form):
    agent = forms.ModelChoiceField(queryset=Agent.objects.order_by("slug"), help_text="Its live (else baseline) model answers the prompts.")
    prompt_sets = forms.ModelMultipleChoiceField(
        queryset=PromptSet.objects.all(), required=False, help_text="None chosen: the built-in synthetic sets.",
    )
    judge_model = forms.CharField(initial=DEFAULT_JUDGE_MODEL)
    target = forms.IntegerField(initial=services.DEFAULT_TARGET, min_value=1, max_value=services.MAX_TARGET)
    mix = forms.CharField(initial="50,50", help_text="adversarial,borderline percent")
    validation = forms.FloatField(initial=services.DEFAULT_VALIDATION, min_value=0, max_value=0.5)
    seed = forms.IntegerField(initial=0)
    override_reason = forms.CharField(required=False, help_text="Only to start over budget (needs costs.override_budget).")


@admin.register(PromptSet)
class PromptSetAdmin(RecordAdminMixin, ServiceAddFormMixin):
    list_display = ("id", "name", "kind", "origin", "prompt_field", "prompt_count", "problem_count", "created_at")
    list_filter = ("kind", "origin")
    search_fields = ("name", "file_name")
    readonly_fields = ("name", "kind", "origin", "file_name", "prompt_field", "sha256", "prompt_count", "problem_count",
                       "problem_lines", "created_by", "created_at")
    exclude = ("problems",)
    add_form = PromptSetImportForm
    add_page = {"title": "Import a prompt set", "submit_label": "Import",
                "intro": "Bring an export of WildJailbreak, OR-Bench, Do-Not-Answer or HarmBench; bad lines are skipped and named."}

    @admin.display(description="skipped lines")
    def problem_lines(self, prompt_set: PromptSet) -> str:
        if not prompt_set.problems:
            return "none"
        return format_html("<ul>{}</ul>", format_html_join(
            "", "<li>line {}: {}</li>", ((problem["line"], problem["detail"]) for problem in prompt_set.problems[:200])
        ))

    def add_through_service(self, request: HttpRequest, form: forms.Form) -> PromptSet:
        upload = form.cleaned_data["file"]
        return services.prompt_set_import(
            content=upload.read(), name=upload.name, kind=form.cleaned_data["kind"], field=form.cleaned_data["field"],
            category_field=form.cleaned_data["category_field"], source_field=form.cleaned_data["source_field"],
            actor=request_actor(request),
        )

    def add_done(self, request: HttpRequest, prompt_set: PromptSet) -> HttpResponse:
        note = f"; {prompt_set.problem_count} malformed line(s) skipped, each listed below" if prompt_set.problem_count else ""
        messages.success(request, f"{prompt_set.prompt_count} prompts imported as set #{prompt_set.pk}{note}")
        return HttpResponseRedirect(reverse("admin:safety_promptset_change", args=[prompt_set.pk]))


@admin.register(WaltzBuild)
class WaltzBuildAdmin(RecordAdminMixin, ServiceAddFormMixin):
    list_display = ("id", "agent", "status", "progress_percent", "total_items", "estimated_cost_usd", "cost_usd",
                    "shortfall_short", "created_at", "finished_at")
    list_filter = ("status", "agent")
    list_select_related = ("agent",)
    add_form = BuildStartForm
    add_page = {"title": "Start a WaltzRL build", "submit_label": "Check the budget and start",
                "intro": "The conversation agent answers each prompt, the judge labels it, a rule-based detector "
                         "cross-checks; the files are audited and the report lists where judge and detector disagree, and the cost."}

    @admin.display(description="progress")
    def progress_percent(self, build: WaltzBuild) -> str:
        return f"{build.progress:.0%}"

    @admin.display(description="shortfall")
    def shortfall_short(self, build: WaltzBuild) -> str:
        return (build.shortfall[:80] + "…") if len(build.shortfall) > 80 else (build.shortfall or "—")

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path("<int:pk>/finetune/", view(self.finetune_view), name="safety_waltzbuild_finetune"),
            *super().get_urls(),
        ]

    def add_through_service(self, request: HttpRequest, form: forms.Form) -> WaltzBuild:
        data = form.cleaned_data
        return services.waltz_build_create(
            agent=data["agent"], prompt_sets=list(data["prompt_sets"]) or None, judge_model=data["judge_model"],
            target=data["target"], mix=services.parse_mix(data["mix"]), validation=data["validation"], seed=data["seed"],
            actor=request_actor(request), via="admin", override_reason=data["override_reason"] or None,
        )

    def add_done(self, request: HttpRequest, build: WaltzBuild) -> HttpResponse:
        messages.success(request, f"WaltzRL build #{build.pk} queued: {build.total_items} prompts, "
                                  f"estimated ${build.estimated_cost_usd} (held against the budget)")
        return HttpResponseRedirect(reverse("admin:safety_waltzbuild_change", args=[build.pk]))

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None) -> HttpResponse:
        build = WaltzBuild.objects.select_related("agent", "conversation_model", "finetuning_job").filter(
            pk=int(object_id) if str(object_id).isdigit() else 0).first()
        if build is None:
            raise Http404(f"WaltzRL build #{object_id} does not exist")
        if not self.has_view_permission(request, build):
            raise DjangoPermissionDenied
        report = build.report or {}
        files = [
            {**report.get("files", {}).get(name, {}), "name": name, "train_id": dataset_train, "valid_id": dataset_valid}
            for name, dataset_train, dataset_valid in (
                ("conversation_agent", build.conversation_train_id, build.conversation_valid_id),
                ("feedback_agent", build.feedback_train_id, build.feedback_valid_id),
            )
        ]
        context = {
            "title": f"WaltzRL build #{build.pk}",
            "build": build, "report": report, "files": files, "summary": selectors.waltz_build_summary(build=build),
            "markdown": selectors.waltz_build_markdown(build=build), "agreement_caveat": selectors.AGREEMENT_CAVEAT,
            "can_finetune": request.user.has_perm(FINETUNE_PERMISSION) and build.status == "succeeded"
                            and build.feedback_train_id is not None and build.finetuning_job_id is None,
        }
        return admin_page(self, request, "admin/safety/waltzbuild/detail.html", context)

    def finetune_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        build = WaltzBuild.objects.filter(pk=pk).first()
        if build is None:
            raise Http404(f"WaltzRL build #{pk} does not exist")
        back = HttpResponseRedirect(reverse("admin:safety_waltzbuild_change", args=[pk]))
        if request.method != "POST":
            return back
        try:
            job = services.waltz_build_finetune(build=build, actor=request_actor(request),
                                                override_reason=request.POST.get("override_reason") or None)
        except DomainError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, f"Stage-1 fine-tuning job #{job.pk} created ({job.status}), "
                                      f"estimated ${job.estimated_cost_usd} — within the budget")
        return back
