"""The Agent admin list with a health column (ok, degraded, failing, idle), the same status as
GET /agents/{agent}/health. The registry admin cannot import experiments (it sits below it), so this
app registers the Agent admin again, extended."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.http import HttpRequest
from django.utils.html import format_html

from experiments.selectors_monitoring import agents_health_statuses
from models_app.registry.admin import AgentAdmin
from models_app.registry.models import Agent

HEALTH_COLOURS = {"ok": "#2e7d32", "degraded": "#ef6c00", "failing": "#c62828", "idle": "#757575"}


class AgentWithHealthAdmin(AgentAdmin):
    list_display = (*AgentAdmin.list_display, "health")

    def get_changelist_instance(self, request: HttpRequest) -> ChangeList:
        # The column reads the statuses of the whole page at once (a query per window), not per row.
        changelist = super().get_changelist_instance(request)
        statuses = agents_health_statuses(agents=list(changelist.result_list))
        for agent in changelist.result_list:  # the evaluated page the rows are rendered from
            agent.health_status = statuses[agent.pk]
        return changelist

    @admin.display(description="health (5/15 min)")
    def health(self, agent: Agent) -> str:
        status = getattr(agent, "health_status", None) or agents_health_statuses(agents=[agent])[agent.pk]
        return format_html('<span class="agent-health" data-status="{}" style="color:{};font-weight:bold">{}</span>',
                           status, HEALTH_COLOURS[status], status)


admin.site.unregister(Agent)
admin.site.register(Agent, AgentWithHealthAdmin)
