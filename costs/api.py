"""HTTP endpoints of the costs app, mounted under /api/v1 by genesis/api.py.

Agents authenticate with API keys, not as people, so nothing here can override a budget: an override
needs a user with costs.override_budget (the admin or a command run `--as` that user)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Field, Router, Schema

from costs import budgeting, selectors, services
from genesis.validation import MoneyUSD, Slug
from models_app.registry.models import Agent
from models_app.registry.services import ensure_agent_access, ensure_object_access, request_principal

router = Router(tags=["costs"])



class CostSummaryOut(Schema):
    budget_usd: str = Field(..., description='Decimal string, e.g. "30.00"')
    spent_usd: str = Field(..., description="Decimal string: the exact ledger amount, at least two decimals")
    percent: float = Field(..., description="spent / budget × 100, two decimals rounded down (24.995 → 24.99)")
    thresholds_crossed: list[int] = Field(..., description="Thresholds (percent) the current period's spend has reached")
    by_agent: dict[str, str] = Field(
        ..., description="Spend per agent (decimal strings), only of the agents this key may act for; "
        "spent_usd and by_operation stay the budget's totals, so for a key of some agents by_agent may add "
        "up to less than spent_usd",
    )
    by_operation: dict[str, str]


@router.get("/costs/summary", response=CostSummaryOut, summary="Spend against a budget, by agent and operation")
def costs_summary(request: HttpRequest, budget: Slug = "default") -> dict[str, Any]:
    """`?budget=NAME` picks another budget than `default` (the one seed_demo makes). `by_agent` names
    only the agents this key may act for; `spent_usd` stays the budget's total."""
    selected = selectors.budget_by_name(name=budget)
    principal = request_principal(request)
    if selected.agent is not None:
        # A budget of one agent is that agent's business.
        ensure_object_access(principal=principal, owner_slug=selected.agent.slug, what=f"budget '{selected.name}'")
    return selectors.cost_summary(
        budget=selected, visible_agents=None if principal.all_agents else principal.agent_slugs,
    )


class BudgetCheckIn(Schema):
    agent: Slug
    estimate_usd: MoneyUSD = Field(..., description="What the work is expected to cost, in dollars.")


class BudgetCheckOut(Schema):
    allowed: bool
    estimate_usd: str
    budgets_checked: list[str]


@router.post(
    "/costs/budget-check",
    response=BudgetCheckOut,
    summary="Ask before starting paid work: 200 if the estimate fits every hard-limit budget, else 409",
)
def costs_budget_check(request: HttpRequest, payload: BudgetCheckIn) -> dict[str, Any]:
    ensure_agent_access(principal=request_principal(request), agent_slug=payload.agent)
    agent = Agent.objects.get(slug=payload.agent)
    check = services.budget_check(agent=agent, estimate_usd=payload.estimate_usd, actor=None)
    return {"allowed": True, "estimate_usd": budgeting.money_str(check.estimate_usd), "budgets_checked": check.checked}
