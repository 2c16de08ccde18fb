"""The WaltzRL validation report as markdown. Pure: the stored report dict in, text out."""

from __future__ import annotations

from typing import Any

# What the agreement is not: shown beside it wherever it is (here and on the admin page).
AGREEMENT_CAVEAT = ("How often two automatic labellers agree — a consistency check, not the accuracy of either (with the "
                    "simulator it measures the simulator's own label noise). Their precision and recall on real responses "
                    "are measured only against a person's labels: `manage.py review_waltzrl --build ID --sample N`.")


def _table(rows: dict[str, Any], header: tuple[str, str]) -> list[str]:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in sorted(rows.items(), key=lambda kv: (-kv[1], kv[0]) if isinstance(kv[1], int) else (0, kv[0]))]
    return lines


def _counts(counts: dict[str, int] | None) -> str:
    """{"email": 25, "ssn": 1} → "email 25, ssn 1" (largest first); "none" when empty."""
    if not counts:
        return "none"
    return ", ".join(f"{name.replace('_', ' ')} {count:,}" for name, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def render_markdown(*, build_id: int, status: str, shortfall: str, report: dict[str, Any]) -> str:
    if not report:
        return f"# WaltzRL build #{build_id}\n\nStatus: {status}; no report yet.\n"
    counts, agreement, validity = report["counts"], report["agreement"], report["json_validity"]
    cost, stage1, selection = report["cost"], report["stage1_finetune_estimate"], report.get("selection", {})
    lines = [f"# WaltzRL build #{build_id}", "", f"Status: **{status}**" + (f" — short of target: {shortfall}" if shortfall else ""), ""]
    lines += ["## Files", "", "| file | train | valid | mix (adv/bord %) | duplicates removed | train/valid overlap | shortfall |",
              "|---|---|---|---|---|---|---|"]
    for name, summary in report.get("files", {}).items():
        mix = summary.get("mix", {})
        lines.append(f"| {name} | {summary.get('train', 0)} | {summary.get('valid', 0)} | "
                     f"{mix.get('adversarial', 0)} / {mix.get('borderline', 0)} | {summary.get('duplicates_removed', 0)} | "
                     f"{summary.get('train_valid_overlap', 0)} | {summary.get('shortfall') or '—'} |")
    lines += ["", "## Labels", "", *_table(counts["labels"], ("label", "items")), ""]
    lines += ["## Judge vs refusal detector", "",
              f"Agreement: {agreement['agree']} of {agreement['judged']} judged items"
              + (f" ({agreement['rate']:.1%})" if agreement["rate"] is not None else ""),
              AGREEMENT_CAVEAT,
              f"Disagreements kept for review (not in the files): {agreement['disagreements']}", ""]
    for example in agreement.get("examples", [])[:10]:
        lines.append(f"- item {example['item']} ({example['kind']}): {example['detail']} — “{example['prompt']}”")
    lines += ["", "## Judge JSON validity", "",
              f"Valid: {validity['valid']}, invalid after retries: {validity['invalid']}"
              + (f" (validity {validity['rate']:.1%})" if validity["rate"] is not None else "")
              + f"; judge calls {validity['calls']}, items retried {validity['retried_items']}", ""]
    lines += ["## Counts", "", *_table(counts["by_kind"], ("kind", "items")), "", *_table(counts["by_source"], ("source", "items")),
              "", *_table(counts["by_category"], ("category", "items")), ""]
    lengths = report["lengths"]
    lines += ["## Lengths (characters)", "", "| text | min | p50 | p95 | max |", "|---|---|---|---|---|"]
    for name, dist in lengths.items():
        lines.append(f"| {name} | {dist['min']} | {dist['p50']} | {dist['p95']} | {dist['max']} |")
    duplicates = selection.get("duplicate_prompts_removed", {})
    contamination = selection.get("contamination", {})
    lines += ["", "## Cleaning", "",
              f"- duplicate prompts removed: {duplicates.get('total', 0)} (exact {duplicates.get('exact', 0)}, near {duplicates.get('near', 0)})",
              f"- PII replaced in prompts: {_counts(selection.get('pii_replaced_in_prompts'))}; "
              f"in answers: {_counts(report.get('pii_placeholders_in_answers'))}",
              f"- contamination: {contamination.get('prompts_removed', 0)} prompts removed as near duplicates of "
              f"{contamination.get('benchmark_cases_checked', 0)} benchmark case turns",
              f"- dropped from the files: {_counts(report.get('dropped')) if report.get('dropped') else 'nothing'}",
              f"- revisions asked {report['revisions']['asked']}, accepted {report['revisions']['accepted']}", ""]
    lines += ["## Cost", "", f"- estimated ${cost['estimated_usd']}, actual ${cost['actual_usd']} over {cost['calls']} calls (ledger operation data_prep)",
              f"- Stage-1 fine-tune (feedback agent, {stage1['epochs']} epochs of ~{stage1['training_tokens']} tokens on "
              f"{stage1['base_model']}): " + (f"${stage1['usd']}" if stage1["usd"] is not None else "no training price in the price table"), ""]
    return "\n".join(lines)
