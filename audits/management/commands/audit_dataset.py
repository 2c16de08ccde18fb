"""`manage.py audit_dataset PATH [--json] [--scrub OUT] [--rebalance OUT [--mix 30,45,25]]`

Audits a chat JSONL file directly — format, PII, duplicates, difficulty — with no database and no
worker needed. `--json` prints one object (the contract's keys `lines`, `valid`, `format_errors`,
`pii`, `duplicates`, `difficulty`, plus extras: masked samples, line numbers, duplicate groups);
otherwise a summary for people. Neither ever shows a raw PII value: counts, line numbers and
masked samples only.

`--scrub OUT` also writes a copy with PII replaced, `--rebalance OUT` a copy down-sampled to an
easy/medium/hard mix (each example at most once: the copy's own audit finds no duplicates). `--record` keeps the file and its audit in the database (admin → Datasets).

Exit 0: clean. 1: findings (format errors, PII or duplicates). 2: usage error or unreadable file
(missing, a directory, a bad --mix, an output that would overwrite the input, --workers below 1, a
--mix, --seed, --target-size or --scrub-mode without the --rebalance or --scrub it shapes).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from audits import rebalance as rebalance_core
from audits import scrub as scrub_core
from audits.dedupe import DEFAULT_THRESHOLD, DuplicateReport, check_threshold
from audits.difficulty import LEVELS
from audits.pii import PII_TYPES
from audits.report import AuditReport, UnreadableDataset, audit_file
from audits.services import dataset_record_audit
from audits.wording import counted
from genesis.commands import command_agent, command_user, usage_error
from genesis.errors import DomainError

USAGE = 2
FINDINGS = 1
ERRORS_SHOWN = 20
LINES_SHOWN = 10


# A flag that only shapes another option's output: given without that option it would be ignored, and
# the person meant something by it, so it is a usage error.
_FLAGS_NEEDING = (
    ("mix", "--mix", "rebalance", "--rebalance OUT (it is the mix the rebalanced copy aims for)"),
    ("seed", "--seed", "rebalance", "--rebalance OUT (it shapes the rebalanced copy)"),
    ("target_size", "--target-size", "rebalance", "--rebalance OUT (it shapes the rebalanced copy)"),
    ("scrub_mode", "--scrub-mode", "scrub", "--scrub OUT (it is how the scrubbed copy replaces PII)"),
)


def _check_flags_in_company(options: dict[str, Any]) -> None:
    for key, flag, needs, what in _FLAGS_NEEDING:
        if options[key] is not None and not options[needs]:
            raise usage_error(f"{flag} goes with {what}")


class Command(BaseCommand):
    help = "Audit a chat JSONL file (format, PII, duplicates, difficulty); optionally scrub or rebalance it."
    # Auditing a file needs neither the database nor the system checks; it must work anywhere.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", metavar="PATH", help="the chat JSONL file")
        parser.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")
        parser.add_argument("--scrub", metavar="OUT", help="write a copy with PII replaced to OUT")
        parser.add_argument(
            "--scrub-mode", choices=scrub_core.SCRUB_MODES,
            help="placeholder: [EMAIL]; pseudonym: <EMAIL_1>, the same value → the same stand-in (default: placeholder)",
        )
        parser.add_argument("--rebalance", metavar="OUT", help="write a copy moved toward the --mix to OUT")
        parser.add_argument("--mix", metavar="E,M,H", help="easy,medium,hard percentages for --rebalance (default 30,45,25)")
        parser.add_argument("--seed", type=int, help="sampling seed for --rebalance (default 0)")
        parser.add_argument("--target-size", type=int, metavar="N", help="at most this many examples in the --rebalance copy (default: all usable examples)")
        parser.add_argument(
            "--near-threshold", type=float, default=DEFAULT_THRESHOLD, metavar="J",
            help=f"similarity at which two examples are near duplicates (default {DEFAULT_THRESHOLD})",
        )
        parser.add_argument("--no-near", action="store_true", help="look for exact duplicates only (faster)")
        parser.add_argument("--workers", type=int, default=2, metavar="N", help="processes for files over 8 MB (default 2)")
        parser.add_argument("--record", action="store_true", help="keep the file and its audit in the database (admin → Datasets)")
        parser.add_argument("--agent", metavar="NAME", help="with --record: the agent the dataset belongs to")
        parser.add_argument("--purpose", choices=("training", "validation", "benchmark"), help="with --record (default training)")
        parser.add_argument("--as", dest="as_user", metavar="USERNAME", help="with --record: the person recording it")

    def handle(self, *args: Any, **options: Any) -> None:
        path = Path(options["path"])
        mix = self._check_usage(path, options)
        # Who and for which agent are usage questions: answered before any file is read or written.
        owner = self._record_owner(options) if options["record"] else None
        progress = _Progress(sys.stderr) if not options["json"] and sys.stderr.isatty() else None
        try:
            report = audit_file(
                path, workers=options["workers"], near_threshold=options["near_threshold"],
                find_near_duplicates=not options["no_near"], progress=progress,
            )
        except UnreadableDataset as exc:
            raise usage_error(str(exc)) from None
        finally:
            if progress is not None:
                progress.clear()
        result: dict[str, Any] = report.to_contract_dict()
        if options["scrub"]:
            result["scrub"] = self._scrub(path, Path(options["scrub"]), options["scrub_mode"] or "placeholder")
        if options["rebalance"]:
            result["rebalance"] = self._rebalance(path, Path(options["rebalance"]), report, mix, options)
        if owner is not None:  # --record
            result["recorded"] = self._record(path, report, options, owner)
        if options["json"]:
            self.stdout.write(json.dumps(result, ensure_ascii=False))
        else:
            self.stdout.write(summary_text(report, result))
        if report.has_findings:
            raise SystemExit(FINDINGS)

    # --- usage ------------------------------------------------------------------------------------

    def _check_usage(self, path: Path, options: dict[str, Any]) -> dict[str, float]:
        _check_flags_in_company(options)
        if options["workers"] < 1:
            raise usage_error(f"--workers must be at least 1 (got {options['workers']})")
        try:
            mix = rebalance_core.parse_mix(options["mix"] or "30,45,25")
        except ValueError as exc:
            raise usage_error(f"--mix: {exc}") from None
        try:
            check_threshold(options["near_threshold"])
        except ValueError as exc:
            raise usage_error(f"--near-threshold: {exc}") from None
        if options["target_size"] is not None and options["target_size"] < 0:
            raise usage_error("--target-size must not be negative")
        if not options["record"]:
            given = [flag for flag, key in (("--agent", "agent"), ("--purpose", "purpose"), ("--as", "as_user")) if options[key]]
            if given:
                raise usage_error(f"{', '.join(given)} only mean something with --record")
        outputs = {name: Path(options[name]) for name in ("scrub", "rebalance") if options[name]}
        for name, out in outputs.items():
            if out.exists() and path.exists() and out.resolve() == path.resolve():
                raise usage_error(f"--{name} {out}: that is the file being audited; write the copy elsewhere")
            if out.is_dir():
                raise usage_error(f"--{name} {out}: is a directory; name the file to write")
            if not out.parent.is_dir():
                raise usage_error(f"--{name} {out}: the directory {out.parent} does not exist")
        if len(outputs) == 2 and outputs["scrub"].resolve() == outputs["rebalance"].resolve():
            raise usage_error("--scrub and --rebalance name the same file; give each its own")
        return mix

    # --- the extra work ---------------------------------------------------------------------------

    def _scrub(self, path: Path, out: Path, mode: scrub_core.ScrubMode) -> dict[str, Any]:
        try:
            return scrub_core.scrub_file(source=path, destination=out, mode=mode).to_dict()
        except (ValueError, OSError) as exc:
            raise usage_error(f"--scrub {out}: {exc}") from None

    def _rebalance(
        self, path: Path, out: Path, report: AuditReport, mix: dict[str, float], options: dict[str, Any]
    ) -> dict[str, Any]:
        try:
            rebalanced = rebalance_core.rebalance_file(
                source=path, destination=out, report=report, mix=mix, seed=options["seed"] or 0,
                target_size=options["target_size"],
            )
        except (ValueError, OSError) as exc:
            raise usage_error(f"--rebalance {out}: {exc}") from None
        return rebalanced.to_dict()

    def _record_owner(self, options: dict[str, Any]) -> tuple[Any, Any]:
        """(agent, actor) that --agent and --as name; a usage error when either does not exist."""
        agent = command_agent(options["agent"]) if options["agent"] else None
        return agent, command_user(options["as_user"])

    def _record(self, path: Path, report: AuditReport, options: dict[str, Any], owner: tuple[Any, Any]) -> dict[str, Any]:
        agent, actor = owner
        try:
            run = dataset_record_audit(path=path, report=report, purpose=options["purpose"] or "training", agent=agent, actor=actor)
        except DomainError as exc:
            raise usage_error(f"--record refused: {exc.message}") from None
        return {"dataset": run.dataset_id, "audit_run": run.pk, "admin": f"/admin/audits/dataset/{run.dataset_id}/change/"}


class _Progress:
    """A one-line percentage on a terminal's stderr while a big file is read."""

    def __init__(self, stream: Any) -> None:
        self.stream, self.shown = stream, -1

    def __call__(self, done: int, total: int) -> None:
        percent = int(100 * done / total) if total else 100
        if percent != self.shown:
            self.shown = percent
            self.stream.write(f"\rauditing… {percent:3d} %")
            self.stream.flush()

    def clear(self) -> None:
        if self.shown >= 0:
            self.stream.write("\r" + " " * 20 + "\r")
            self.stream.flush()


# --- the readable summary ------------------------------------------------------------------------------


def _count(number: int) -> str:
    return f"{number:,}"


def _lines_list(lines: list[int], total: int) -> str:
    shown = ", ".join(str(line) for line in lines[:LINES_SHOWN])
    more = total - min(len(lines), LINES_SHOWN)
    return shown + (f" and {more:,} more" if more > 0 else "")


def summary_text(report: AuditReport, result: dict[str, Any]) -> str:
    out: list[str] = []
    size_mb = report.size_bytes / 1e6
    out.append(
        f"{report.path}: {_count(report.lines)} lines, {_count(report.valid)} valid, {size_mb:.1f} MB, "
        f"audited in {report.seconds:.1f} s ({report.workers} process{'es' if report.workers > 1 else ''})"
    )
    for note in report.notes:
        out.append(f"  note: {note}")

    out.append("")
    if report.format_error_total:
        shown = report.format_errors[:ERRORS_SHOWN]
        out.append(f"Format errors: {_count(report.format_error_total)}" + (f" (first {len(shown)})" if report.format_error_total > len(shown) else ""))
        out.extend(f"  {error.detail}" for error in shown)
    else:
        out.append("Format: every line follows Mistral's fine-tuning format")

    out.append("")
    pii_total = sum(report.pii_counts.values())
    out.extend(_pii_lines(report, pii_total))
    out.append("")
    duplicates = report.duplicates
    out.extend(_duplicate_lines(duplicates))
    out.append("")
    difficulty = report.difficulty
    out.append(
        "Difficulty: " + " · ".join(f"{level} {difficulty[level]:.1%} ({_count(report.difficulty_counts[level])})" for level in LEVELS)
        + f" of {counted(report.examples, 'valid example')}"
    )

    out.extend(_derived_lines(result))
    out.append("")
    if report.has_findings:
        found = [name for name, present in (
            ("format errors", report.format_error_total), ("PII", pii_total),
            ("duplicates", duplicates.exact + duplicates.near)) if present]
        out.append(f"Findings: {', '.join(found)} (exit 1)")
    else:
        out.append("Clean: no format errors, PII or duplicates (exit 0)")
    return "\n".join(out)


def _pii_lines(report: AuditReport, pii_total: int) -> list[str]:
    out = [f"PII: {_count(pii_total)} occurrence{'s' if pii_total != 1 else ''}" + (" (masked samples only)" if pii_total else "")]
    for pii_type in PII_TYPES:
        count = report.pii_counts[pii_type]
        if not count:
            out.append(f"  {pii_type:<12} {0:>8}")
            continue
        out.append(f"  {pii_type:<12} {count:>8,}  on lines {_lines_list(report.pii_lines[pii_type], report.pii_line_total[pii_type])}")
        samples = ", ".join(f"{sample.masked} (line {sample.line})" for sample in report.pii_samples[pii_type])
        out.append(f"  {'':<12} {'':>8}  e.g. {samples}")
    return out


def _duplicate_lines(duplicates: DuplicateReport) -> list[str]:
    out = [
        f"Duplicates: {_count(duplicates.exact)} exact, {_count(duplicates.near)} near "
        f"(similarity ≥ {duplicates.threshold:g}) — lines that repeat an earlier one"
    ]
    for kind, groups in (("exact", duplicates.exact_groups), ("near", duplicates.near_groups)):
        for group in groups[:5]:
            out.append(f"  {kind}: lines {_lines_list(group, len(group))}")
        if len(groups) > 5:
            out.append(f"  … {len(groups) - 5:,} more {kind} groups (see --json)")
    return out


def _derived_lines(result: dict[str, Any]) -> list[str]:
    """What --scrub, --rebalance and --record did."""
    out: list[str] = []
    if "scrub" in result:
        scrubbed = result["scrub"]
        replaced = ", ".join(f"{t} {n:,}" for t, n in scrubbed["replaced"].items() if n) or "nothing"
        out += ["", f"Scrubbed copy ({scrubbed['mode']}): {scrubbed['destination']} — {scrubbed['lines_changed']:,} of "
                    f"{scrubbed['lines']:,} lines changed; replaced {replaced}"]
        out.extend(f"  note: {note}" for note in scrubbed["notes"])
    if "rebalance" in result:
        plan = result["rebalance"]
        achieved = " · ".join(f"{level} {plan['achieved_mix'][level]:.1%}" for level in LEVELS)
        target = " · ".join(f"{level} {plan['target_mix'][level]:.0%}" for level in LEVELS)
        out += ["", f"Rebalanced copy: {plan['destination']} — {counted(plan['lines_written'], 'example')}, each once; "
                    f"achieved {achieved} (target {target})",
                f"  dropped {counted(plan['dropped_duplicates'], 'duplicate')} and {counted(plan['dropped_invalid'], 'invalid line')}"]
        out.extend(f"  shortfall: {message}" for message in plan["shortfalls"])
    if "recorded" in result:
        recorded = result["recorded"]
        out += ["", f"Recorded as dataset #{recorded['dataset']} with audit #{recorded['audit_run']} ({recorded['admin']})"]
    return out
