"""Admin pages of the registry. Every button calls a service; no row is written here directly."""

from __future__ import annotations

import os
from datetime import UTC
from typing import Any, cast

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db.models import QuerySet
from django.forms.formsets import BaseFormSet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from simple_history.admin import SimpleHistoryAdmin

from genesis.admin_base import (
    DeleteWhenUnusedMixin,
    ReadOnlyTabularInline,
    ServiceAddFormMixin,
    ServiceForm,
    ServiceFormAdminMixin,
    admin_page,
    service_action,
)
from genesis.errors import DomainError
from genesis.permissions import Actor, request_actor
from models_app.registry import lifecycle
from models_app.registry.gateway import destination_refusal, provider_destinations
from models_app.registry.models import Agent, ApiKey, ModelKind, ModelStatus, ModelVersion, ProviderAccount
from models_app.registry.selectors import (
    API_KEY_EXPIRY_WARNING_DAYS,
    API_KEY_UNUSED_DAYS,
    CANDIDATE_STATUSES,
    agent_has_live_version,
    api_key_attention,
    api_keys_expiring_q,
    api_keys_unused_q,
)
from models_app.registry.services import (
    API_KEY_MAX_EXPIRY_DAYS,
    agent_ensure,
    agent_upsert,
    api_key_create,
    api_key_revoke,
    model_version_change_status_by_hand,
    model_version_register,
    provider_account_upsert,
)


class ModelVersionInline(ReadOnlyTabularInline):
    model = ModelVersion
    fields = ("model_id", "kind", "status", "provider", "status_changed_at")
    show_change_link = True

    def get_queryset(self, request: HttpRequest) -> QuerySet[ModelVersion]:
        # Each row shows its provider and is named with its agent (ModelVersion.__str__): read with the
        # rows, not two queries a version (an agent with 120 versions took 250 queries).
        return super().get_queryset(request).select_related("agent", "provider")


@admin.register(Agent)
class AgentAdmin(DeleteWhenUnusedMixin, SimpleHistoryAdmin):
    list_display: tuple[str, ...] = ("slug", "name", "live_model", "candidates")  # extended by experiments/admin_health.py
    search_fields = ("slug", "name", "purpose")
    readonly_fields = ("created_at", "updated_at")
    # An agent just added by mistake goes; one with versions, outcomes or costs is part of the record.
    delete_instead = "An agent with a history stays in the registry; to stop its traffic, revoke its API keys."

    def get_readonly_fields(self, request: HttpRequest, obj: Agent | None = None) -> tuple[str, ...]:
        # API keys, experiments and the ledger refer to agents by slug: it never changes.
        return (*self.readonly_fields, "slug") if obj else self.readonly_fields
    inlines = [ModelVersionInline]
    fieldsets = (
        (None, {"fields": ("slug", "name", "purpose")}),
        ("Generation defaults", {"fields": ("system_prompt", "temperature", "max_tokens", "top_p")}),
        ("When", {"fields": ("created_at", "updated_at")}),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Agent]:
        return super().get_queryset(request).prefetch_related("versions")

    AGENT_FIELDS = ("name", "purpose", "system_prompt", "temperature", "max_tokens", "top_p")

    def save_model(self, request: HttpRequest, obj: Agent, form: forms.ModelForm[Agent], change: bool) -> None:
        values = {field: form.cleaned_data[field] for field in self.AGENT_FIELDS}
        try:
            saved = (agent_upsert if change else agent_ensure)(slug=obj.slug, actor=request_actor(request), **values)
        except DomainError as exc:
            raise DjangoPermissionDenied(exc.message) from None
        obj.pk = saved.pk

    @admin.display(description="live model")
    def live_model(self, agent: Agent) -> str:
        live = [v for v in agent.versions.all() if v.status == ModelStatus.LIVE]
        return live[0].model_id if live else "—"

    @admin.display(description="candidates")
    def candidates(self, agent: Agent) -> str:
        pending = [v for v in agent.versions.all() if v.kind == "fine_tuned" and v.status in CANDIDATE_STATUSES]
        if not pending:
            return "—"
        return format_html_join(", ", "{} ({})", ((v.model_id, v.get_status_display()) for v in pending))


def manual_targets_of(version: ModelVersion) -> list[str]:
    """What "Change status…" offers: the service refuses anything else (lifecycle.py)."""
    return lifecycle.manual_targets(
        current=version.status, kind=version.kind,
        agent_has_live=agent_has_live_version(agent_id=version.agent_id, other_than=version.pk),
    )


class TransitionForm(forms.Form):
    to_status = forms.ChoiceField(label="Move to")
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), required=True)

    def __init__(self, *args: Any, version: ModelVersion, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        allowed = manual_targets_of(version)
        cast(forms.ChoiceField, self.fields["to_status"]).choices = [(status, ModelStatus(status).label) for status in allowed]


class ModelVersionRegisterForm(forms.Form):
    agent = forms.ModelChoiceField(queryset=Agent.objects.order_by("slug"))
    provider = forms.ModelChoiceField(queryset=ProviderAccount.objects.order_by("name"))
    model_id = forms.CharField(max_length=200, help_text="The provider's model id, e.g. open-mistral-7b or ft:open-mistral-7b:…")
    base_model = forms.CharField(max_length=120)
    kind = forms.ChoiceField(
        choices=ModelKind.choices,
        help_text="A baseline is a provider's base model: an agent's first one may be put live by hand. Any later "
        "model — a fine-tune (ft:…) or another baseline — replaces the live one only by a benchmark and a rollout.",
    )
    reason = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}), help_text="Why it is registered.")


@admin.register(ModelVersion)
class ModelVersionAdmin(ServiceAddFormMixin, DeleteWhenUnusedMixin, SimpleHistoryAdmin):
    list_display = ("model_id", "agent", "kind", "status", "provider", "registered_by", "created_at")
    list_select_related = ("agent", "provider", "registered_by")  # registered_by may be NULL: not followed by default
    list_filter = ("status", "kind", "agent", "provider")
    search_fields = ("model_id", "base_model", "agent__slug")
    readonly_fields = ("status", "status_changed_at", "created_at", "registered_by", "change_status_link")
    fields = ("agent", "provider", "model_id", "base_model", "kind", "reason", "status", "change_status_link",
              "status_changed_at", "registered_by", "created_at")

    def get_readonly_fields(self, request: HttpRequest, obj: ModelVersion | None = None) -> tuple[str, ...]:
        # The add page is the register form above. The identity of a registered version never changes; register a new one instead.
        return ("agent", "provider", "model_id", "base_model", "kind", "reason", *self.readonly_fields)

    def get_fields(self, request: HttpRequest, obj: ModelVersion | None = None) -> tuple[str, ...]:
        # "Change status…" only for people who may change it (the service checks again).
        if obj is not None and not self.has_change_permission(request, obj):
            return tuple(name for name in self.fields if name != "change_status_link")
        return self.fields

    # A version an experiment, a benchmark, a fine-tuning job or the ledger (its storage charges) names is
    # part of the record; only one registered by mistake and never used goes.
    delete_instead = (
        "Retire it instead (Change status… → retired; a live version is retired when its successor goes live): "
        "a retired version is no longer charged for storage."
    )

    def has_delete_permission(self, request: HttpRequest, obj: ModelVersion | None = None) -> bool:
        # A live or rolling-out version serves users; retire it (another goes live) or roll back instead.
        if obj is not None and obj.status in (ModelStatus.LIVE, ModelStatus.ROLLING_OUT):
            return False
        return super().has_delete_permission(request, obj)

    add_form = ModelVersionRegisterForm
    add_page = {"title": "Register a model version", "submit_label": "Register"}

    def add_through_service(self, request: HttpRequest, form: forms.Form) -> ModelVersion:
        data = form.cleaned_data
        return model_version_register(
            agent=data["agent"], provider=data["provider"], model_id=data["model_id"].strip(),
            base_model=data["base_model"].strip(), kind=data["kind"], actor=request_actor(request), reason=data["reason"],
        )

    def add_done(self, request: HttpRequest, version: ModelVersion) -> HttpResponse:
        messages.success(request, f"{version} is registered ({version.get_status_display()})")
        return HttpResponseRedirect(reverse("admin:models_app_modelversion_change", args=[version.pk]))

    def save_model(
        self, request: HttpRequest, obj: ModelVersion, form: forms.ModelForm[ModelVersion], change: bool
    ) -> None:
        pass  # nothing is editable on a registered version (added above); its status moves through services

    @admin.display(description="change status")
    def change_status_link(self, version: ModelVersion) -> str:
        if not version.pk or not manual_targets_of(version):
            return "—"
        url = reverse("admin:models_app_modelversion_transition", args=[version.pk])
        return format_html('<a class="button" href="{}">Change status…</a>', url)

    def get_urls(self) -> list[URLPattern]:
        return [
            path("<int:pk>/transition/", self.admin_site.admin_view(self.transition_view),
                 name="models_app_modelversion_transition"),
            *super().get_urls(),
        ]

    def transition_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        version = get_object_or_404(ModelVersion.objects.select_related("agent"), pk=pk)
        if not self.has_change_permission(request, version):
            raise DjangoPermissionDenied("changing a model version's status needs the permission 'models_app.change_modelversion'")
        form = TransitionForm(request.POST or None, version=version)
        if request.method == "POST" and form.is_valid():
            try:
                model_version_change_status_by_hand(
                    version=version, to_status=form.cleaned_data["to_status"], actor=request_actor(request),
                    reason=form.cleaned_data["reason"],
                )
            except DomainError as exc:
                messages.error(request, exc.message)
            else:
                messages.success(request, f"{version.model_id} is now {form.cleaned_data['to_status']}")
                return HttpResponseRedirect(reverse("admin:models_app_modelversion_change", args=[pk]))
        context = {"title": f"Change status of {version}", "version": version, "form": form}
        return admin_page(self, request, "admin/models_app/modelversion/transition.html", context)


PROVIDER_FIELDS = ("base_url", "api_key_env", "rate_limit_per_minute", "max_concurrency", "timeout_seconds", "enabled")


class ProviderAccountForm(ServiceForm):
    # A URL typed without a scheme is taken as https://, as Django 6 will.
    base_url = forms.URLField(max_length=300, assume_scheme="https")

    class Meta:
        model = ProviderAccount
        fields = ("name", "kind", *PROVIDER_FIELDS)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "base_url" in self.fields:
            allowed = ", ".join(str(rule) for rule in provider_destinations().rules)
            self.fields["base_url"].help_text = (
                "Requests, with the key, go only to a host the environment allows for the key variable "
                f"(GENESIS_PROVIDER_HOSTS): {allowed}."
            )

    def save_through_service(self, *, actor: Actor) -> ProviderAccount:
        account = self.instance  # the name comes from the row when it is read-only
        return provider_account_upsert(
            name=account.name, kind=account.kind, actor=actor, **{field: getattr(account, field) for field in PROVIDER_FIELDS}
        )


@admin.register(ProviderAccount)
class ProviderAccountAdmin(ServiceFormAdminMixin, DeleteWhenUnusedMixin, SimpleHistoryAdmin):
    form = ProviderAccountForm
    delete_instead = "Disable it instead (untick Enabled): no new fine-tuning job or benchmark uses a disabled provider."
    list_display = ("name", "kind", "base_url", "api_key_env", "key_present", "destination_allowed", "max_concurrency", "enabled")
    list_filter = ("kind", "enabled")

    def get_readonly_fields(self, request: HttpRequest, obj: ProviderAccount | None = None) -> tuple[str, ...]:
        return ("name",) if obj else ()  # model versions name their provider; it is not renamed

    @admin.display(boolean=True, description="key set in environment")
    def key_present(self, provider: ProviderAccount) -> bool:
        return bool(provider.api_key_env and os.environ.get(provider.api_key_env))

    @admin.display(boolean=True, description="destination allowed")
    def destination_allowed(self, provider: ProviderAccount) -> bool:
        """False for a row the environment's allow-list no longer admits: its calls are refused."""
        return destination_refusal(provider) is None


class ApiKeyCreateForm(forms.ModelForm):
    expires_in_days = forms.IntegerField(
        required=False, min_value=1, max_value=API_KEY_MAX_EXPIRY_DAYS, label="Expires in (days)",
        help_text=f"The key stops working this many days from now (1 to {API_KEY_MAX_EXPIRY_DAYS}). Leave empty for a key "
        "that never expires.",
    )

    class Meta:
        model = ApiKey
        fields = ("label", "all_agents", "agents")


class ApiKeyAttentionFilter(admin.SimpleListFilter):
    """The keys a person should look at: about to expire (rotate them) or unused (revoke them)."""

    title = "needs attention"
    parameter_name = "attention"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]) -> list[tuple[str, str]]:
        return [
            ("stale", f"expiring within {API_KEY_EXPIRY_WARNING_DAYS} days or unused for {API_KEY_UNUSED_DAYS}"),
            ("expiring", f"expiring within {API_KEY_EXPIRY_WARNING_DAYS} days (or expired)"),
            ("unused", f"unused for {API_KEY_UNUSED_DAYS} days"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> QuerySet[ApiKey]:
        now = timezone.now()
        condition = {
            "stale": lambda: api_keys_expiring_q(now=now) | api_keys_unused_q(now=now),
            "expiring": lambda: api_keys_expiring_q(now=now),
            "unused": lambda: api_keys_unused_q(now=now),
        }.get(self.value() or "")
        return queryset.filter(condition()) if condition else queryset


@admin.register(ApiKey)
class ApiKeyAdmin(SimpleHistoryAdmin):  # "History": who created, revoked or rotated the key, and why
    list_display = ("label", "prefix", "scope", "created_by", "created_at", "last_used_at", "expires", "status")
    list_filter = (ApiKeyAttentionFilter, "revoked", "all_agents")
    search_fields = ("label", "prefix")
    actions = ["revoke_selected"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[ApiKey]:
        # The creator and the agents each row names, read with the list instead of once per key.
        return super().get_queryset(request).select_related("created_by").prefetch_related("agents")

    def get_form(
        self, request: HttpRequest, obj: ApiKey | None = None, change: bool = False, **kwargs: Any
    ) -> type[forms.ModelForm[ApiKey]]:
        if obj is None:
            kwargs["form"] = ApiKeyCreateForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> tuple[str, ...]:
        if obj is None:
            return ("label", "all_agents", "agents", "expires_in_days")
        return ("label", "prefix", "all_agents", "agents", "created_by", "created_at", "last_used_at", "expires", "status",
                "revoked", "revoked_at")

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> tuple[str, ...]:
        if obj is None:
            return ()
        return self.get_fields(request, obj)

    @admin.display(description="agents")
    def scope(self, key: ApiKey) -> str:
        return "all agents" if key.all_agents else ", ".join(a.slug for a in key.agents.all())

    # In UTC and said so, as the 401 detail, `api_keys --list` and the key's history give it — not in the
    # site's TIME_ZONE beside a status ("expires in 3 hours") that a reader would then check against UTC.
    @admin.display(description="expires at (UTC)", ordering="expires_at")
    def expires(self, key: ApiKey) -> str:
        return f"{key.expires_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC" if key.expires_at else "never"

    @admin.display(description="status")
    def status(self, key: ApiKey) -> str:
        if key.revoked:
            return "revoked"
        return "; ".join(api_key_attention(key, now=timezone.now())) or "active"

    def save_model(self, request: HttpRequest, obj: ApiKey, form: forms.ModelForm[ApiKey], change: bool) -> None:
        if change:
            return
        key, raw_key = api_key_create(
            label=form.cleaned_data["label"], agents=list(form.cleaned_data["agents"]),
            all_agents=form.cleaned_data["all_agents"], actor=request_actor(request),
            expires_in_days=form.cleaned_data["expires_in_days"],
        )
        obj.pk = key.pk
        messages.warning(request, f"The new key, shown only this once: {raw_key}")

    def save_related(
        self, request: HttpRequest, form: forms.ModelForm[ApiKey], formsets: list[BaseFormSet[Any]], change: bool
    ) -> None:
        pass  # the service stored the agents

    def has_delete_permission(self, request: HttpRequest, obj: ApiKey | None = None) -> bool:
        return False  # revoke instead, so the audit trail keeps the key's record

    @service_action(description="Revoke selected keys", permissions=("change",))
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        keys = list(queryset)
        for key in keys:
            api_key_revoke(key=key, actor=request_actor(request), reason="revoked in the admin")
        self.message_user(request, f"revoked {len(keys)} key(s)")
