"""Render a cost report (costs.selectors.ReportData) as markdown, CSV or JSON. No Django, no I/O.

The CSV is the spend table — one row per (day, agent, operation, model) and a TOTAL row — with exact
ledger amounts (micro-dollars), so its sum agrees with the ledger to the cent and beyond; text cells
a spreadsheet would run as a formula are quoted (genesis/spreadsheets.py), amounts stay numbers. Budget
status, alerts and fine-tuning jobs are in the markdown and JSON forms."""

from __future__ import annotations

import io
import json
from collections import defaultdict
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from costs.budgeting import format_percent, format_share, format_usd, money_str, percent_shown
from genesis.spreadsheets import csv_writer

if TYPE_CHECKING:
    from costs.selectors import ReportData

FORMATS = ("md", "csv", "json")
CSV_HEADER = ["day", "agent", "operation", "model", "entries", "tokens", "amount_usd"]


def _totals_by(data: ReportData, attribute: str) -> dict[str, Decimal]:
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for row in data.rows:
        key = getattr(row, attribute)
        totals[key.isoformat() if hasattr(key, "isoformat") else (key or "—")] += row.amount
    return dict(sorted(totals.items()))


def render_csv(data: ReportData) -> str:
    out = io.StringIO()
    writer = csv_writer(out, lineterminator="\n")  # a model name or note starting with "=" stays text
    writer.writerow(CSV_HEADER)
    for row in data.rows:
        writer.writerow([row.day.isoformat(), row.agent, row.operation, row.model, row.entries, row.tokens, money_str(row.amount)])
    writer.writerow(["TOTAL", "", "", "", data.entry_count, sum(row.tokens for row in data.rows), money_str(data.total)])
    return out.getvalue()


def _table(title: str, totals: dict[str, Decimal], grand_total: Decimal) -> list[str]:
    lines = [f"### {title}", "", "| | spend | share |", "|---|---:|---:|"]
    for key, amount in totals.items():
        share = format_share(amount, grand_total)
        lines.append(f"| {key} | {format_usd(amount)} | {share} |")
    if not totals:
        lines.append("| (no spend) | $0.00 | |")
    return [*lines, ""]


def _estimated_part(data: ReportData) -> str:
    """" $0.42 of it from estimated token counts (…)." when some of the spend was charged for tokens the
    provider did not report (estimated at about four characters a token), else nothing."""
    estimated = data.estimated_total
    if not estimated:
        return ""
    return f" {format_usd(estimated)} of it from estimated token counts (the provider reported no usage)."


def render_markdown(data: ReportData) -> str:
    total = data.total
    lines = [
        f"# Genesis cost report — {data.as_of:%Y-%m-%d %H:%M %Z}",
        "",
        (f"Spend since {data.since.isoformat()}: **{format_usd(total)}** ({money_str(total)} USD exact) over {data.entry_count} entries."
         if data.since else f"Ledger total: **{format_usd(total)}** ({money_str(total)} USD exact) over {data.entry_count} entries.")
        + _estimated_part(data),
        "",
        "## Budgets",
        "",
    ]
    if data.budgets:
        lines += ["| budget | scope | period | spent | of | used | thresholds reached | hard limit | burn / day | projected exhaustion |",
                  "|---|---|---|---:|---:|---:|---|---|---:|---|"]
        for budget in data.budgets:
            reached = ", ".join(f"{percent} %" for percent in budget.reached) or "none"
            if budget.exhausted:
                projection = "exhausted"
            elif budget.exhaustion_at is None:
                # None: no spend in the window, or so little that the money lasts beyond the horizon.
                why = "more than 100 years at the current burn rate" if budget.burn_usd_per_day > 0 else "no recent spend"
                projection = f"not in sight ({why})"
            else:
                projection = f"{budget.exhaustion_at:%Y-%m-%d}" + ("" if budget.within_period else " (after the period resets)")
            lines.append(
                f"| {budget.name} | {budget.scope} | {budget.period} | {format_usd(budget.spent)} | {format_usd(budget.limit)} "
                f"| {format_percent(budget.percent)} | {reached} | {'on' if budget.hard_limit else 'off'} "
                f"| {format_usd(budget.burn_usd_per_day)} | {projection} |"
            )
    else:
        lines.append("No active budget.")
    lines += ["", "## Alerts", ""]
    if data.alerts:
        lines += ["| when | budget | period | threshold | severity | spent | of | delivery |", "|---|---|---|---:|---|---:|---:|---|"]
        for alert in data.alerts:
            lines.append(
                f"| {alert.created_at:%Y-%m-%d %H:%M} | {alert.budget} | {alert.period} | {alert.threshold} % | {alert.severity} "
                f"| {format_usd(alert.spent)} | {format_usd(alert.limit)} | {alert.delivery}"
                + (f" (re-armed {alert.rearmed_at:%Y-%m-%d %H:%M})" if alert.rearmed_at else "") + " |"
            )
    else:
        lines.append("No alert.")
    lines += ["", "## Spend", ""]
    lines += _table("By agent", _totals_by(data, "agent"), total)
    lines += _table("By operation", _totals_by(data, "operation"), total)
    lines += _table("By model", _totals_by(data, "model"), total)
    lines += _table("By day", _totals_by(data, "day"), total)
    lines += ["## Fine-tuning jobs", ""]
    if not data.fine_tuning_jobs:
        lines.append("No fine-tuning job.")
    else:
        lines += ["| job | agent | model | status | created | charged |", "|---|---|---|---|---|---:|"]
        for job in data.fine_tuning_jobs:
            created = f"{job.created_at:%Y-%m-%d %H:%M}" if job.created_at else ""
            lines.append(f"| {job.job} | {job.agent} | {job.model} | {job.status} | {created} | {format_usd(job.cost)} |")
    return "\n".join(lines) + "\n"


def report_as_dict(data: ReportData) -> dict[str, Any]:
    def money_map(totals: dict[str, Decimal]) -> dict[str, str]:
        return {key: money_str(value) for key, value in totals.items()}

    return {
        "as_of": data.as_of.isoformat(),
        "total_usd": money_str(data.total),
        "estimated_usd": money_str(data.estimated_total),  # of the total, charged for estimated token counts
        "entries": data.entry_count,
        "by_agent": money_map(_totals_by(data, "agent")),
        "by_operation": money_map(_totals_by(data, "operation")),
        "by_model": money_map(_totals_by(data, "model")),
        "by_day": money_map(_totals_by(data, "day")),
        "rows": [
            {"day": row.day.isoformat(), "agent": row.agent, "operation": row.operation, "model": row.model,
             "entries": row.entries, "tokens": row.tokens, "amount_usd": money_str(row.amount)}
            for row in data.rows
        ],
        "budgets": [
            {"name": b.name, "scope": b.scope, "period": b.period, "budget_usd": money_str(b.limit),
             "spent_usd": money_str(b.spent), "percent": float(percent_shown(b.percent, places=2)),
             "thresholds": [t.as_dict() for t in b.thresholds], "thresholds_crossed": b.reached,
             "hard_limit": b.hard_limit, "burn_rate_usd_per_day": money_str(b.burn_usd_per_day),
             "exhausted": b.exhausted,
             "projected_exhaustion_at": b.exhaustion_at.isoformat() if b.exhaustion_at else None}
            for b in data.budgets
        ],
        "alerts": [
            {"budget": a.budget, "period": a.period, "threshold": a.threshold, "severity": a.severity,
             "spent_usd": money_str(a.spent), "budget_usd": money_str(a.limit), "created_at": a.created_at.isoformat(),
             "delivery": a.delivery, "rearmed_at": a.rearmed_at.isoformat() if a.rearmed_at else None}
            for a in data.alerts
        ],
        "fine_tuning_jobs": [
            {"job": j.job, "agent": j.agent, "model": j.model, "status": j.status,
             "created_at": j.created_at.isoformat() if j.created_at else None, "cost_usd": money_str(j.cost)}
            for j in data.fine_tuning_jobs
        ],
    }


def render_json(data: ReportData) -> str:
    return json.dumps(report_as_dict(data), indent=2) + "\n"


def render(data: ReportData, *, fmt: str) -> str:
    renderers = {"md": render_markdown, "csv": render_csv, "json": render_json}
    if fmt not in renderers:
        raise ValueError(f"format '{fmt}' is not one of {', '.join(FORMATS)}")
    return renderers[fmt](data)


def report_summary_text(data: ReportData) -> str:
    """A few lines for a chat channel or an email body."""
    lines = [f"Genesis cost report {data.as_of:%Y-%m-%d}: {format_usd(data.total)} over {data.entry_count} entries."
             + _estimated_part(data)]
    for budget in data.budgets:
        lines.append(
            f"- budget '{budget.name}' ({budget.scope}, {budget.period}): {format_usd(budget.spent)} of "
            f"{format_usd(budget.limit)} ({format_percent(budget.percent)})"
        )
    top = sorted(_totals_by(data, "agent").items(), key=lambda item: item[1], reverse=True)[:5]
    if top:
        lines.append("Top agents: " + ", ".join(f"{agent} {format_usd(amount)}" for agent, amount in top))
    return "\n".join(lines)
