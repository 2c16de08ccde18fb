"""The Go/No-Go report: judges each agent's launch facts (launch/selectors.py `launch_facts`, plain
data) and renders them as markdown, HTML or JSON. Pure: no Django, no database — the same facts
always give the same report.

A candidate is GO when its last completed benchmark against the live model PASSed (or a person
overrode the verdict, which is named; a PASS against any other baseline is no approval), its training data's audit found no PII and no format error, and its rollout has neither
been rolled back nor breached a guardrail. Cautions (data not linked to an audit, duplicates, a
guardrail warning, tags where the candidate scored significantly lower) are listed but do not block.

A tag "regressed" only when the candidate lost on it more often than chance explains: a one-sided exact
sign test on the tag's cases where the two models scored differently (wins against losses, ties left out —
for right/wrong scores this is the exact McNemar test), its p-value Holm-adjusted across the run's tags,
below REGRESSION_ALPHA (5 %). A tag whose mean is lower within chance is named as such, not as a caution.
Without the test, a 48-case suite of six tags flagged some tag on most candidates that were better
everywhere; bench/launch/tag_cautions.py measures both rules and the README publishes the numbers."""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from costs.budgeting import format_usd
from models_app.benchmarks.reruns import confidence_text

GO, NO_GO = "GO", "NO-GO"


@dataclass(frozen=True)
class Judgement:
    decision: str | None  # GO, NO-GO, or None when the agent has no candidate
    blockers: list[str] = field(default_factory=list)
    cautions: list[str] = field(default_factory=list)
    passed: list[str] = field(default_factory=list)


def percent(value: float | None) -> str:
    """A relative change as a signed percent: 0.1234 → "+12.3 %"."""
    return "—" if value is None else f"{value * 100:+.1f} %"


def age_text(age: timedelta) -> str:
    """How old something is, to the unit that matters: "40 s", "12 min", "3.5 h", "2 d"."""
    seconds = max(0, int(age.total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds // 86400} d"


def as_of_text(at: datetime, *, now: datetime) -> str:
    """When figures were taken, and how long ago: "as of 14:03 UTC (2 min ago)", with the date unless
    it is `now`'s — a running rollout's guardrails and holds as the latest guardrail evaluation judged them."""
    at, now = at.astimezone(UTC), now.astimezone(UTC)
    when = f"{at:%H:%M} UTC" if at.date() == now.date() else f"{at:%Y-%m-%d %H:%M} UTC"
    return f"as of {when} ({age_text(now - at)} ago)"


def interval(low: float | None, high: float | None, *, alpha: float | None = None) -> str:
    """A benchmark run's interval at the level the verdict read it: a re-run reads a wider one (its
    `alpha` is stored with the run); a run stored without one was read at 95 %."""
    if low is None or high is None:
        return "interval unbounded"
    return f"{confidence_text(0.95 if alpha is None else 1 - alpha)} interval {percent(low)} to {percent(high)}"


# Family-wise: the chance that a run flags any tag of a candidate no worse on any tag stays within this.
REGRESSION_ALPHA = 0.05


def sign_test_lower_p(*, wins: int, losses: int) -> float:
    """One-sided exact sign test: P(at most `wins` wins among the wins + losses cases where the two models
    differ, were either as likely to win each) — small when the candidate loses more than chance explains."""
    differing = wins + losses
    if differing == 0:
        return 1.0
    return sum(math.comb(differing, k) for k in range(wins + 1)) / 2**differing


def holm_adjusted(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment: compare each adjusted p-value with α and the family-wise error stays ≤ α."""
    order = sorted(range(len(p_values)), key=lambda index: p_values[index])
    adjusted = [1.0] * len(p_values)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def tag_regression_p(per_tag: list[dict[str, Any]]) -> list[float]:
    """Each tag's Holm-adjusted sign-test p-value for "the candidate is worse here", across all the run's tags."""
    return holm_adjusted([sign_test_lower_p(wins=tag.get("wins") or 0, losses=tag.get("losses") or 0) for tag in per_tag])


def tag_wins_and_regressions(
    per_tag: list[dict[str, Any]], *, alpha: float = REGRESSION_ALPHA,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(tags won: mean higher; tags regressed: mean lower and the adjusted sign test below `alpha`; tags lower
    within chance). Each regressed or lower tag carries its adjusted p-value as `regression_p`."""
    wins = [tag for tag in per_tag if (tag.get("mean_delta") or 0) > 0]
    regressions: list[dict[str, Any]] = []
    lower: list[dict[str, Any]] = []
    for tag, p_value in zip(per_tag, tag_regression_p(per_tag), strict=True):
        if (tag.get("mean_delta") or 0) < 0:
            (regressions if p_value < alpha else lower).append({**tag, "regression_p": p_value})
    return wins, regressions, lower


def _p_text(p_value: float) -> str:
    return f"p = {p_value:.3f}" if p_value >= 0.001 else "p < 0.001"


def _benchmark_judgement(benchmark: dict[str, Any] | None, judgement: Judgement) -> None:
    if benchmark is None:
        judgement.blockers.append("not benchmarked: run the suite (board › Start benchmark)")
        return
    verdict = benchmark["verdict"]
    line = (f"benchmark run #{benchmark['run']}: {verdict}, {percent(benchmark['relative_improvement'])} "
            f"({interval(benchmark['ci_low'], benchmark['ci_high'], alpha=benchmark.get('alpha'))}) on {benchmark['n']} paired cases")
    if verdict == "PASS" and benchmark.get("approves", True):
        judgement.passed.append(line)
    elif benchmark["overridden"]:
        judgement.cautions.append(f"{line} — verdict overridden by a person (see the run's overrides)")
    elif benchmark.get("note"):
        # A verdict against a baseline that was not the live version (facts from before this was recorded have
        # no "approves" and count as they did then).
        judgement.blockers.append(f"{line} — {benchmark['note']}: benchmark the candidate against the live model")
    else:
        more = f"; about {benchmark['more_cases_needed']} more cases would decide it" if benchmark.get("more_cases_needed") else ""
        judgement.blockers.append(f"{line}{more}")
    _, regressions, _ = tag_wins_and_regressions(benchmark["per_tag"])
    if regressions:
        judgement.cautions.append("regressed on tag(s) " + ", ".join(
            f"{tag['tag']} ({percent(tag.get('relative_improvement'))}, {tag.get('wins', 0)} wins / {tag.get('losses', 0)} losses, "
            f"sign test {_p_text(tag['regression_p'])} Holm-adjusted over {len(benchmark['per_tag'])} tags)" for tag in regressions
        ))


def _audit_judgement(training: dict[str, Any] | None, judgement: Judgement) -> None:
    audit_entry = (training or {}).get("audit")
    if not training or training.get("job") is None:
        judgement.cautions.append("no fine-tuning job here: the training data cannot be traced")
        return
    if audit_entry is None or audit_entry.get("audit") is None:
        judgement.cautions.append(f"training file {training['file']} is linked to no audited dataset")
        return
    audit = audit_entry["audit"]
    if audit["status"] != "succeeded":
        judgement.blockers.append(f"training data audit #{audit['id']} is {audit['status']}")
        return
    if audit["pii"] or audit["format_errors"]:
        judgement.blockers.append(
            f"training data audit #{audit['id']}: {audit['pii']} PII occurrence(s), {audit['format_errors']} format error(s)"
        )
    else:
        judgement.passed.append(f"training data audit #{audit['id']}: no PII, no format error")
    duplicates = (audit.get("duplicates") or {})
    if duplicates.get("exact") or duplicates.get("near"):
        judgement.cautions.append(
            f"training data has {duplicates.get('exact') or 0} exact and {duplicates.get('near') or 0} near duplicate lines"
        )


def override_text(rollout: dict[str, Any]) -> str:
    """"started without a PASS verdict — overridden by olivia: “…”" ("" for a rollout started on a PASS)."""
    override = rollout.get("verdict_override")
    if not override:
        return ""
    return f"started without a PASS verdict — overridden by {override['by']}: “{override['reason']}”"


def _rollout_judgement(rollout: dict[str, Any] | None, judgement: Judgement) -> None:
    if rollout is None:
        return
    if rollout.get("verdict_override"):
        judgement.cautions.append(f"experiment {rollout['experiment']} {override_text(rollout)}")
    status = rollout["status"]
    if status == "rolled_back":
        judgement.blockers.append(f"experiment {rollout['experiment']} was rolled back")
    elif status == "completed":
        judgement.passed.append(f"experiment {rollout['experiment']} completed at 100 %")
    elif status == "running" and rollout.get("guardrails") is None:
        stale = " for over ten minutes: stale — is the guardrail task running (beat, a worker)?" if rollout.get("evaluation_stale") else " yet"
        judgement.cautions.append(f"the guardrails of {rollout['experiment']} have not been evaluated in its current stage{stale}")
    elif status == "running" and rollout.get("evaluation_stale"):
        judgement.cautions.append(f"the guardrails of {rollout['experiment']} were last evaluated at {rollout['evaluated_at']:%Y-%m-%d %H:%M} "
                                  "UTC: stale — is the guardrail task running (beat, a worker)?")
    for guardrail in rollout.get("guardrails") or []:
        if guardrail["state"] == "breach":
            judgement.blockers.append(f"guardrail {guardrail['metric']} breached in {rollout['experiment']}")
        elif guardrail["state"] == "warning":
            judgement.cautions.append(f"guardrail {guardrail['metric']} warns in {rollout['experiment']}")


def judge(facts: dict[str, Any]) -> Judgement:
    if not facts.get("candidate"):
        return Judgement(decision=None)
    judgement = Judgement(decision=GO)
    _benchmark_judgement(facts.get("benchmark"), judgement)
    _audit_judgement(facts.get("training_data"), judgement)
    _rollout_judgement(facts.get("rollout"), judgement)
    return Judgement(GO if not judgement.blockers else NO_GO, judgement.blockers, judgement.cautions, judgement.passed)


def all_go(entries: list[dict[str, Any]]) -> bool:
    """True when every agent with a candidate is GO (the command's exit 0)."""
    return all(judge(facts).decision in (None, GO) for facts in entries)


def power_short(plan: dict[str, Any] | None) -> str:
    """The board's short form of a run's stored plan: "power 83 %; 25 cases for 80 %" ("" without a plan)."""
    if not plan:
        return ""
    target = f"{plan['power'] * 100:.0f} %"
    needed = f"{plan['cases_needed']} cases for {target}" if plan.get("cases_needed") is not None else f"no suite size reaches {target}"
    if plan.get("current_power") is None:
        return needed
    return f"power {plan['current_power'] * 100:.0f} %; {needed}"


def _power_line(benchmark: dict[str, Any]) -> str:
    """The suite's power as the gate stored it with the run: the rule applied, the power at the run's
    size to PASS the planned true improvement (by default twice the threshold), and the cases needed for the
    plan's power. A run decided before the planner says so and shows only its n."""
    plan = benchmark.get("plan")
    if not plan:
        return f"n = {benchmark['n']} paired cases (no power figure stored with the run: decided before the sample-size planner)"
    target = f"{plan['power'] * 100:.0f} %"
    parts = [f"rule `{benchmark.get('rule') or plan['rule']}`"]
    if plan.get("current_power") is not None:
        parts.append(f"power {plan['current_power'] * 100:.0f} % with {plan['current_cases']} cases to PASS a true "
                     f"improvement of {percent(plan['planned_improvement'])} (threshold {percent(plan['threshold'])})")
    if plan.get("cases_needed") is not None:
        parts.append(f"{plan['cases_needed']} cases needed for {target} power")
    else:
        parts.append(f"no suite size reaches {target} power at that improvement")
    return "; ".join(parts)


def as_dict(entries: list[dict[str, Any]], *, generated_at: datetime) -> dict[str, Any]:
    agents = []
    for facts in entries:
        judgement = judge(facts)
        agents.append({**facts, "recommendation": judgement.decision, "blockers": judgement.blockers,
                       "cautions": judgement.cautions, "passed": judgement.passed})
    return {"generated_at": generated_at.isoformat(), "all_go": all_go(entries), "agents": agents}


def render_json(entries: list[dict[str, Any]], *, generated_at: datetime) -> str:
    return json.dumps(as_dict(entries, generated_at=generated_at), indent=2, default=str)


def _markdown_agent(facts: dict[str, Any], *, generated_at: datetime) -> list[str]:
    judgement = judge(facts)
    lines = [f"## {facts['agent']}", ""]
    lines.append(f"- Live model: `{facts['live'] or 'none'}`")
    if not facts.get("candidate"):
        lines += ["- No candidate: nothing to decide.", ""]
        return lines
    lines.append(f"- Candidate: `{facts['candidate']}` ({facts['candidate_status'].replace('_', ' ')})")
    lines.append(f"- **Recommendation: {judgement.decision}**")
    benchmark = facts.get("benchmark")
    if benchmark:
        lines.append(
            f"- Benchmark run #{benchmark['run']} on {benchmark['suite']} ({benchmark['suite_cases']} cases): "
            f"**{benchmark['verdict']}**" + (f" ({benchmark['note']})" if benchmark.get("note") else "")
            + f", relative improvement {percent(benchmark['relative_improvement'])} "
            f"({interval(benchmark['ci_low'], benchmark['ci_high'], alpha=benchmark.get('alpha'))}); threshold {percent(benchmark['threshold'])}; "
            f"{_power_line(benchmark)}"
            + (f"; cost {format_usd(Decimal(benchmark['cost_usd']))}" if "cost_usd" in benchmark else "")
        )
        wins, regressions, lower = tag_wins_and_regressions(benchmark["per_tag"])
        if benchmark["per_tag"]:
            lines += ["", "| tag | n | baseline | candidate | relative | wins | losses |", "|---|---|---|---|---|---|---|"]
            for tag in benchmark["per_tag"]:
                lines.append(
                    f"| {tag['tag']} | {tag['n']} | {tag['baseline_mean']:.3f} | {tag['candidate_mean']:.3f} "
                    f"| {percent(tag.get('relative_improvement'))} | {tag['wins']} | {tag['losses']} |"
                )
            lines.append("")
        lines.append(f"- Tags won: {', '.join(t['tag'] for t in wins) or 'none'}; tags regressed (sign test, Holm, 5 %): "
                     f"{', '.join(t['tag'] for t in regressions) or 'none'}"
                     + (f"; lower within chance: {', '.join(t['tag'] for t in lower)}" if lower else ""))
    else:
        lines.append("- Benchmark: none completed")
    training = facts.get("training_data") or {}
    audit = ((training.get("audit") or {}).get("audit")) if training else None
    if audit:
        lines.append(
            f"- Training data: {training['file']} — audit #{audit['id']} {audit['status']}: {audit['valid']} of "
            f"{audit['lines']} lines valid, {audit['format_errors']} format errors, {audit['pii']} PII, "
            f"{audit['duplicates']['exact']} exact / {audit['duplicates']['near']} near duplicates"
        )
    else:
        lines.append(f"- Training data: {training.get('file') or 'no fine-tuning job'} — not audited")
    lines.append(_rollout_line(facts.get("rollout"), generated_at=generated_at))
    if "cost_usd" in facts:  # absent for a reader who may not see costs
        lines.append(f"- Cost so far (ledger): {format_usd(Decimal(facts['cost_usd']))}")
    lines += ["", "Reasons:"]
    lines += [f"- ✘ {reason}" for reason in judgement.blockers]
    lines += [f"- ⚠ {reason}" for reason in judgement.cautions]
    lines += [f"- ✔ {reason}" for reason in judgement.passed]
    lines.append("")
    return lines


def _rollout_line(rollout: dict[str, Any] | None, *, generated_at: datetime) -> str:
    if not rollout:
        return "- Rollout: not started"
    stage = f" at {rollout['stage_percent']} %" if rollout.get("stage_percent") is not None else ""
    override = f"; {override_text(rollout)}" if rollout.get("verdict_override") else ""
    evaluated = ""  # a running rollout's guardrails are the latest guardrail evaluation's
    if rollout.get("evaluated_at"):
        evaluated = f"; guardrails {as_of_text(rollout['evaluated_at'], now=generated_at)}"
    elif rollout["status"] == "running" and rollout.get("guardrails") is None:
        evaluated = "; guardrails not evaluated in this stage yet"
    return f"- Rollout: {rollout['experiment']} {rollout['status'].replace('_', ' ')}{stage}{override}{evaluated}"


def render_markdown(entries: list[dict[str, Any]], *, generated_at: datetime) -> str:
    with_candidate = [facts for facts in entries if facts.get("candidate")]
    go = [facts["agent"] for facts in with_candidate if judge(facts).decision == GO]
    # Facts made for a reader who may not see costs carry none: no cost column then.
    costs = not with_candidate or any("cost_usd" in facts for facts in with_candidate)
    lines = [
        f"# Go/No-Go report — {generated_at:%Y-%m-%d %H:%M} UTC",
        "",
        f"{len(go)} of {len(with_candidate)} agent(s) with a candidate are GO"
        + (f": {', '.join(go)}." if go else "."),
        "",
        "| agent | candidate | verdict | improvement | recommendation |" + (" cost so far |" if costs else ""),
        "|---|---|---|---|---|" + ("---|" if costs else ""),
    ]
    for facts in entries:
        benchmark = facts.get("benchmark") or {}
        decision = judge(facts).decision or "—"
        cost = format_usd(Decimal(facts["cost_usd"])) if facts.get("cost_usd") else "—"
        lines.append(
            f"| {facts['agent']} | {facts.get('candidate') or '—'} | {benchmark.get('verdict') or '—'} "
            f"| {percent(benchmark.get('relative_improvement')) if benchmark else '—'} | {decision} |"
            + (f" {cost} |" if costs else "")
        )
    lines.append("")
    for facts in entries:
        lines += _markdown_agent(facts, generated_at=generated_at)
    return "\n".join(lines)


def render_html(entries: list[dict[str, Any]], *, generated_at: datetime) -> str:
    """The markdown's content as a standalone page (tables and lists, escaped)."""
    body: list[str] = []
    in_table = in_list = False
    for line in render_markdown(entries, generated_at=generated_at).splitlines():
        if line.startswith("|"):
            if line.startswith("|---"):
                continue
            cells = [html.escape(cell.strip()) for cell in line.strip("|").split("|")]
            if not in_table:
                body.append("<table><tr>" + "".join(f"<th scope='col'>{c}</th>" for c in cells) + "</tr>")
                in_table = True
            else:
                body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
            continue
        if in_table:
            body.append("</table>")
            in_table = False
        if line.startswith("- "):
            if not in_list:
                body.append("<ul>")
                in_list = True
            body.append(f"<li>{_inline(line[2:])}</li>")
            continue
        if in_list:
            body.append("</ul>")
            in_list = False
        if line.startswith("## "):
            body.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line:
            body.append(f"<p>{_inline(line)}</p>")
    body.append("</table>" if in_table else "")
    body.append("</ul>" if in_list else "")
    style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 6px}")
    # lang: a screen reader picks its voice by it (WCAG 3.1.1); scope: it reads each cell with its column.
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Go/No-Go report</title><style>{style}</style>"
            f"</head><body>{''.join(body)}</body></html>")


def _inline(text: str) -> str:
    escaped = html.escape(text)
    parts = escaped.split("**")
    escaped = "".join(f"<strong>{part}</strong>" if i % 2 else part for i, part in enumerate(parts))
    parts = escaped.split("`")
    return "".join(f"<code>{part}</code>" if i % 2 else part for i, part in enumerate(parts))


# The report's formats and their media types: `launch_report --format` and the admin's download.
FORMATS = {"md": "text/markdown", "html": "text/html", "json": "application/json"}


def render(entries: list[dict[str, Any]], *, fmt: str, generated_at: datetime) -> str:
    return {"md": render_markdown, "html": render_html, "json": render_json}[fmt](entries, generated_at=generated_at)
