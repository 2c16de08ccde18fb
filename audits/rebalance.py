"""Move a dataset toward a target easy / medium / hard mix.

Pure module (stdlib only); no Django.

Only valid, deduplicated examples are used (the first valid line of each
duplicate group is kept).  The copy then holds the mix as closely as those
examples allow, by down-sampling alone: its size is the largest that every
level with a share can fill from its own examples (and at most ``target_size``,
which defaults to the number of usable examples), so a short level shrinks the
copy instead of skewing it.  No example is written twice — a repeat adds
weight, not data, and the copy's own audit would flag it as a duplicate — and
nothing is invented.  A level the mix asks for but the file lacks entirely is
left out; the others keep the target's proportions among themselves.  The plan
says, per short level, how many more examples the full size would need
("1 hard example: 22 more needed").

Sampling is seeded (``seed``), so the same inputs give the same file.  Lines
keep their original order.
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
from audits.wording import counted

DEFAULT_MIX: Mapping[str, float] = {"easy": 0.30, "medium": 0.45, "hard": 0.25}


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
    wanted: int  # examples of this level the target mix asks for at the target size
    taken: int  # examples written

    @property
    def missing(self) -> int:
        """Examples of this level the file lacks for the target size at the target mix."""
        return max(0, self.wanted - self.available)


@dataclass
class RebalancePlan:
    target_mix: dict[str, float]
    target_size: int
    levels: dict[str, LevelPlan]
    lines: set[int]  # the lines written, each once
    dropped_duplicates: int = 0
    dropped_invalid: int = 0

    @property
    def output_size(self) -> int:
        return len(self.lines)

    @property
    def achieved_mix(self) -> dict[str, float]:
        total = self.output_size
        return {level: round(plan.taken / total, 4) if total else 0.0 for level, plan in self.levels.items()}

    @property
    def left_out(self) -> list[str]:
        """Levels the target mix gives a share but the file has no example of."""
        return [level for level, plan in self.levels.items() if self.target_mix[level] > 0 and plan.available == 0]

    @property
    def shortfalls(self) -> list[str]:
        """One sentence per level short of its share, and one on the size and mix that were achievable."""
        messages = []
        for level, plan in self.levels.items():
            if plan.missing:
                message = (
                    f"{counted(plan.available, f'{level} example')}: {plan.missing:,} more needed "
                    f"(target {self.target_mix[level]:.0%} of {self.target_size:,})"
                )
                if level in self.left_out:
                    message += f"; {level} is left out, the other levels keep the target's proportions"
                messages.append(message)
        if messages and self.output_size < self.target_size:
            achieved = " · ".join(f"{level} {share:.1%}" for level, share in self.achieved_mix.items())
            messages.append(
                f"achievable: {counted(self.output_size, 'example')} at {achieved} — the most the short "
                f"{'levels allow' if len(messages) > 1 else 'level allows'} without repeating an example"
            )
        return messages

    def to_dict(self) -> dict[str, Any]:
        return {
            "target_mix": {level: round(share, 4) for level, share in self.target_mix.items()},
            "achieved_mix": self.achieved_mix,
            "target_size": self.target_size,
            "output_size": self.output_size,
            "levels": {
                level: {"available": plan.available, "wanted": plan.wanted, "taken": plan.taken, "missing": plan.missing}
                for level, plan in self.levels.items()
            },
            "left_out": self.left_out,
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


def _largest_size(available: Mapping[str, int], mix: Mapping[str, float], cap: int) -> int:
    """The largest size ≤ ``cap`` at which every level's share (``_apportion``) is at hand.

    No larger size is tried even where rounding would still fit: the extra examples would all come
    from the levels that have plenty, moving the copy away from the mix.
    """
    bounds = [available[level] / share for level, share in mix.items() if share > 0]
    size = min(cap, math.floor(min(bounds) + 1e-9)) if bounds else 0
    while size > 0 and any(count > available[level] for level, count in _apportion(size, mix).items()):
        size -= 1
    return size


def plan_rebalance(
    *,
    levels_by_line: Mapping[int, str],
    mix: Mapping[str, float] = DEFAULT_MIX,
    seed: int = 0,
    target_size: int | None = None,
) -> RebalancePlan:
    """Which lines to keep for a mix; no I/O.

    ``levels_by_line`` holds the usable examples only (valid, deduplicated).
    """
    if set(mix) - set(LEVELS) or not math.isclose(sum(mix.values()), 1.0, abs_tol=1e-6):
        raise ValueError(f"mix must give shares for {', '.join(LEVELS)} that add up to 1, got {dict(mix)}")
    pools: dict[str, list[int]] = {level: [] for level in LEVELS}
    for line in sorted(levels_by_line):
        pools[levels_by_line[line]].append(line)
    size = len(levels_by_line) if target_size is None else target_size
    if size < 0:
        raise ValueError("target size must not be negative")
    target = {level: mix.get(level, 0.0) for level in LEVELS}
    available = {level: len(pool) for level, pool in pools.items()}
    # Levels with no example at all drop out; the rest keep their proportions among themselves.
    present = {level: share for level, share in target.items() if share > 0 and available[level]}
    present_total = sum(present.values())
    reachable = {level: present.get(level, 0.0) / present_total if present_total else 0.0 for level in LEVELS}
    taken = _apportion(_largest_size(available, reachable, size), reachable) if present_total else dict.fromkeys(LEVELS, 0)
    wanted = _apportion(size, target)
    rng = random.Random(seed)
    lines: set[int] = set()
    for level in LEVELS:
        lines.update(rng.sample(pools[level], taken[level]))
    return RebalancePlan(
        target_mix=target,
        target_size=size,
        levels={level: LevelPlan(level, available[level], wanted[level], taken[level]) for level in LEVELS},
        lines=lines,
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
    usable = report.examples_by_level(drop_duplicates=True)
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
                if raw.number not in plan.lines:
                    continue
                data = raw.data.rstrip(b"\r")
                if raw.number == 1:
                    data = data.removeprefix(b"\xef\xbb\xbf")  # the copy is written without a BOM
                writer.write(data + b"\n")
                written += 1
        os.replace(temporary, destination_path)
    finally:
        if temporary.exists():
            temporary.unlink()
    return RebalanceResult(
        source=os.fspath(source), destination=str(destination_path), plan=plan, lines_written=written
    )
