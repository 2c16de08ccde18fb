"""The Agent admin list with a health column (ok, degraded, failing, idle), the same status as
GET /agents/{agent}/health. The registry admin cannot import experiments (it sits below it), so this
app registers the Agent admin again, extended."""

from __future__ import annotations

from django.contrib import admin
from django.utils.html import format_html

from experiments.selectors_monitoring import agents_health_statuses
from models_app.registry.admin import AgentAdmin
from models_app.registry.models import Agent

HEALTH_COLOURS = {"ok": "#2e7d32", "degraded": "#ef6c00", "failing": "#c62828", "idle": "#757575"}


class AgentWithHealthAdmin(AgentAdmin):
    list_display = (*AgentAdmin.list_display, "health")

    @admin.display(description="health (5/15 min)")
    def health(self, agent: Agent) -> str:
        status = agents_health_statuses(agents=[agent])[agent.pk]
        return format_html('<span class="agent-health" data-status="{}" style="color:{};font-weight:bold">{}</span>',
                           status, HEALTH_COLOURS[status], status)


admin.site.unregister(Agent)
admin.site.register(Agent, AgentWithHealthAdmin)
