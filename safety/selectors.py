"""Reads of the safety app: a build's contract summary and its report as markdown."""

from __future__ import annotations

from typing import Any

from safety.models import WaltzBuild
from safety.report import render_markdown


def waltz_build_summary(*, build: WaltzBuild) -> dict[str, Any]:
    """The `prepare_waltzrl --json` object: {"build", "conversation_agent": {"train", "valid"},
    "feedback_agent": {…}, "mix": {"adversarial", "borderline"}, "labels": {"unsafe", "overrefuse",
    "ok"}, "shortfall", "cost_usd"} — counts of examples; labels are those of the feedback agent's
    examples (train + valid); mix in percent of them."""
    report = build.report or {}
    files = report.get("files", {})

    def counts(name: str) -> dict[str, int]:
        return {"train": int(files.get(name, {}).get("train", 0)), "valid": int(files.get(name, {}).get("valid", 0))}

    return {
        "build": build.pk,
        "status": build.status,
        "conversation_agent": counts("conversation_agent"),
        "feedback_agent": counts("feedback_agent"),
        "mix": files.get("feedback_agent", {}).get("mix", {}),
        "labels": files.get("feedback_agent", {}).get("labels", {"unsafe": 0, "overrefuse": 0, "ok": 0}),
        "shortfall": build.shortfall or None,
        "cost_usd": str(build.cost_usd),
        "estimated_cost_usd": str(build.estimated_cost_usd),
        "agreement_rate": report.get("agreement", {}).get("rate"),
        "error": build.error or None,
    }


def waltz_build_markdown(*, build: WaltzBuild) -> str:
    return render_markdown(build_id=build.pk, status=build.status, shortfall=build.shortfall, report=build.report or {})
