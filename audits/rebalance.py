"""Move a dataset toward a target easy / medium / hard mix.

Pure module (stdlib only); no Django.

Only valid, deduplicated examples are used (the first valid line of each
duplicate group is kept).  Each level is then down-sampled at random, or up-sampled by
repeating its examples — each at most ``max_upsample`` (2) times in total.
Nothing is ever invented: a level that has too few examples stays short, and
the plan says how many are missing ("0 hard examples: 2500 more needed").

The output size defaults to the number of usable examples.  Sampling is
seeded (``seed``), so the same inputs give the same file.  Lines keep their
original order; a repeated line follows its original.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audits.difficulty import LEVELS
from audits.formats import iter_raw_lines
from audits.report import AuditReport, audit_file

DEFAULT_MIX: Mapping[str, float] = {"easy": 0.30, "medium": 0.45, "hard": 0.25}
MAX_UPSAMPLE = 2


def parse_mix(text: str) -> dict[str, float]:
    """"30,45,25" (percent) or "0.3,0.45,0.25" → {"easy": 0.3, "medium": 0.45, "hard": 0.25}."""
    usage = f"the mix needs three numbers for easy,medium,hard that add up to 100, e.g. 30,45,25; got {text!r}"
    parts = [part.strip() for part in text.split(",")]
    if len(parts) != 3:
        raise ValueError(usage)
    try:
        numbers = [float(part) for part in parts]
    except ValueError:
        raise ValueError(usage) from None
    if any(number < 0 or not math.isfinite(number) for number in numbers):
        raise ValueError(usage)
    total = sum(numbers)
    if math.isclose(total, 100, abs_tol=0.5):
        numbers = [number / 100 for number in numbers]
    elif not math.isclose(total, 1, abs_tol=0.005):
        raise ValueError(usage)
    total = sum(numbers)
    return {level: number / total for level, number in zip(LEVELS, numbers)}


@dataclass(frozen=True, slots=True)
class LevelPlan:
    level: str
    available: int  # usable distinct examples of this level
    wanted: int  # examples of this level the target mix asks for
    taken: int  # examples written (repeats included)
    repeated: int  # how many of those are second copies

    @property
    def missing(self) -> int:
        return max(0, self.wanted - self.taken)

    @property
    def new_examples_needed(self) -> int:
        """Distinct new examples that would close the gap, each used up to twice."""
        return max(0, math.ceil(self.wanted / MAX_UPSAMPLE) - self.available) if self.missing else 0


@dataclass
class RebalancePlan:
    target_mix: dict[str, float]
    target_size: int
    levels: dict[str, LevelPlan]
    copies: dict[int, int]  # line → 1 or 2 copies in the output
    dropped_duplicates: int = 0
    dropped_invalid: int = 0

    @property
    def output_size(self) -> int:
        return sum(self.copies.values())

    @property
    def achieved_mix(self) -> dict[str, float]:
        total = self.output_size
        return {level: round(plan.taken / total, 4) if total else 0.0 for level, plan in self.levels.items()}

    @property
    def shortfalls(self) -> list[str]:
        """One sentence per level that could not reach its share."""
        messages = []
        for level, plan in self.levels.items():
            if plan.missing:
                messages.append(
                    f"{plan.available} {level} examples: {plan.missing} more needed "
                    f"(target {self.target_mix[level]:.0%} of {self.target_size}; "
                    f"at least {plan.new_examples_needed} new distinct ones, each used twice)"
                )
        return messages

    def to_dict(self) -> dict[str, Any]:
        return {
            "target_mix": {level: round(share, 4) for level, share in self.target_mix.items()},
            "achieved_mix": self.achieved_mix,
            "target_size": self.target_size,
            "output_size": self.output_size,
            "levels": {
                level: {
                    "available": plan.available,
                    "wanted": plan.wanted,
                    "taken": plan.taken,
                    "repeated": plan.repeated,
                    "missing": plan.missing,
                }
                for level, plan in self.levels.items()
            },
            "shortfalls": self.shortfalls,
            "dropped_duplicates": self.dropped_duplicates,
            "dropped_invalid": self.dropped_invalid,
        }


def _apportion(total: int, mix: Mapping[str, float]) -> dict[str, int]:
    """Integer shares of ``total`` that add up to it exactly (largest remainder)."""
    exact = {level: mix.get(level, 0.0) * total for level in LEVELS}
    shares = {level: math.floor(value) for level, value in exact.items()}
    leftover = total - sum(shares.values())
    for level in sorted(LEVELS, key=lambda lvl: exact[lvl] - shares[lvl], reverse=True)[:leftover]:
        shares[level] += 1
    return shares


def plan_rebalance(
    *,
    levels_by_line: Mapping[int, str],
    mix: Mapping[str, float] = DEFAULT_MIX,
    seed: int = 0,
    target_size: int | None = None,
    max_upsample: int = MAX_UPSAMPLE,
) -> RebalancePlan:
    """Which lines to keep, and how often, for a mix; no I/O.

    ``levels_by_line`` holds the usable examples only (valid, deduplicated).
    """
    if set(mix) - set(LEVELS) or not math.isclose(sum(mix.values()), 1.0, abs_tol=1e-6):
        raise ValueError(f"mix must give shares for {', '.join(LEVELS)} that add up to 1, got {dict(mix)}")
    if max_upsample < 1:
        raise ValueError("max_upsample must be at least 1")
    pools: dict[str, list[int]] = {level: [] for level in LEVELS}
    for line in sorted(levels_by_line):
        pools[levels_by_line[line]].append(line)
    size = len(levels_by_line) if target_size is None else target_size
    if size < 0:
        raise ValueError("target size must not be negative")
    wanted = _apportion(size, mix)
    rng = random.Random(seed)
    copies: dict[int, int] = {}
    plans: dict[str, LevelPlan] = {}
    for level in LEVELS:
        pool = pools[level]
        taken = min(wanted[level], max_upsample * len(pool))
        if taken <= len(pool):
            chosen = rng.sample(pool, taken)
            repeated = 0
            for line in chosen:
                copies[line] = 1
        else:
            for line in pool:
                copies[line] = 1
            # Spread repeats evenly: nobody gets a third copy before everyone has a second.
            repeated = taken - len(pool)
            full_rounds, remainder = divmod(repeated, len(pool))
            extra = rng.sample(pool, remainder)
            for line in pool:
                copies[line] += full_rounds
            for line in extra:
                copies[line] += 1
        plans[level] = LevelPlan(level, len(pool), wanted[level], taken, repeated)
    return RebalancePlan(
        target_mix={level: mix.get(level, 0.0) for level in LEVELS},
        target_size=size,
        levels=plans,
        copies=copies,
    )


@dataclass
class RebalanceResult:
    source: str
    destination: str
    plan: RebalancePlan
    lines_written: int
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "destination": self.destination, "lines_written": self.lines_written,
                **self.plan.to_dict(), "notes": list(self.notes)}  # fmt: skip


def rebalance_file(
    *,
    source: str | os.PathLike[str],
    destination: str | os.PathLike[str],
    report: AuditReport | None = None,
    mix: Mapping[str, float] = DEFAULT_MIX,
    seed: int = 0,
    target_size: int | None = None,
) -> RebalanceResult:
    """Write the rebalanced dataset.

    ``report`` is the :class:`audits.report.AuditReport` of ``source`` (it is
    audited here when not given).  Invalid lines and all but the first line of
    each duplicate group are left out; the rest follows :func:`plan_rebalance`.
    """
    if report is None:
        report = audit_file(source)
    usable = report.examples_by_level(valid_only=True, drop_duplicates=True)
    plan = plan_rebalance(levels_by_line=usable, mix=mix, seed=seed, target_size=target_size)
    plan.dropped_duplicates = len(report.redundant_lines())
    plan.dropped_invalid = int(report.lines - int(report.valid_lines.sum()))
    destination_path = Path(destination)
    if destination_path.resolve() == Path(os.fspath(source)).resolve():
        raise ValueError("the rebalanced copy must not overwrite the source file")
    temporary = destination_path.with_name(destination_path.name + ".partial")
    written = 0
    try:
        with open(source, "rb") as reader, open(temporary, "wb") as writer:
            for raw in iter_raw_lines(reader):
                count = plan.copies.get(raw.number, 0)
                if not count:
                    continue
                data = raw.data.rstrip(b"\r")
                if raw.number == 1:
                    data = data.removeprefix(b"\xef\xbb\xbf")  # a BOM must not be repeated mid-file
                for _ in range(count):
                    writer.write(data + b"\n")
                    written += 1
        os.replace(temporary, destination_path)
    finally:
        if temporary.exists():
            temporary.unlink()
    return RebalanceResult(
        source=os.fspath(source), destination=str(destination_path), plan=plan, lines_written=written
    )
