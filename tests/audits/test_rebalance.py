"""Rebalance: toward a target mix, at most 2× up-sampling, never inventing examples."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from audits.rebalance import DEFAULT_MIX, parse_mix, plan_rebalance, rebalance_file
from audits.report import audit_file


def levels(easy: int, medium: int, hard: int) -> dict[int, str]:
    names = ["easy"] * easy + ["medium"] * medium + ["hard"] * hard
    return {line: level for line, level in enumerate(names, start=1)}


def test_parse_mix() -> None:
    assert parse_mix("30,45,25") == pytest.approx({"easy": 0.30, "medium": 0.45, "hard": 0.25})
    assert parse_mix("0.5, 0.5, 0") == pytest.approx({"easy": 0.5, "medium": 0.5, "hard": 0.0})
    for bad in ("30,45", "30,45,20", "a,b,c", "-10,60,50"):
        with pytest.raises(ValueError, match="three numbers for easy,medium,hard that add up to 100"):
            parse_mix(bad)


def test_no_hard_examples_reports_the_shortfall_and_invents_nothing() -> None:
    plan = plan_rebalance(levels_by_line=levels(58, 42, 0))
    assert plan.target_size == 100
    assert {level: p.wanted for level, p in plan.levels.items()} == {"easy": 30, "medium": 45, "hard": 25}
    assert {level: p.taken for level, p in plan.levels.items()} == {"easy": 30, "medium": 45, "hard": 0}
    assert plan.shortfalls == [
        "0 hard examples: 25 more needed (target 25% of 100; at least 13 new distinct ones, each used twice)"
    ]
    assert plan.achieved_mix == {"easy": 0.4, "medium": 0.6, "hard": 0.0}
    assert set(plan.copies) <= set(range(1, 101))


def test_down_sampling_and_at_most_double_up_sampling() -> None:
    plan = plan_rebalance(levels_by_line=levels(80, 15, 5))
    taken = {level: p.taken for level, p in plan.levels.items()}
    assert taken == {"easy": 30, "medium": 30, "hard": 10}  # medium and hard doubled, no more
    assert max(plan.copies.values()) == 2
    assert plan.levels["medium"].repeated == 15 and plan.levels["hard"].repeated == 5
    assert plan.levels["easy"].repeated == 0
    assert [s.split(":")[0] for s in plan.shortfalls] == ["15 medium examples", "5 hard examples"]


def test_a_balanced_pool_is_kept_whole() -> None:
    plan = plan_rebalance(levels_by_line=levels(30, 45, 25))
    assert plan.shortfalls == [] and plan.output_size == 100 and set(plan.copies.values()) == {1}


def test_sampling_is_seeded() -> None:
    pool = levels(200, 50, 50)
    assert plan_rebalance(levels_by_line=pool, seed=7).copies == plan_rebalance(levels_by_line=pool, seed=7).copies
    assert plan_rebalance(levels_by_line=pool, seed=7).copies != plan_rebalance(levels_by_line=pool, seed=8).copies


def test_custom_mix_and_size() -> None:
    plan = plan_rebalance(levels_by_line=levels(50, 50, 50), mix={"easy": 0.0, "medium": 0.5, "hard": 0.5}, target_size=60)
    assert {level: p.taken for level, p in plan.levels.items()} == {"easy": 0, "medium": 30, "hard": 30}
    with pytest.raises(ValueError, match="add up to 1"):
        plan_rebalance(levels_by_line=levels(1, 1, 1), mix={"easy": 0.5, "medium": 0.2, "hard": 0.2})


def chat(user: str, assistant: str) -> str:
    return json.dumps({"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]})


def test_rebalance_file_drops_duplicates_and_invalid_lines(tmp_path: Path) -> None:
    easy = [chat(f"Capital of country number {i}?", f"City {i}.") for i in range(10)]
    medium = [
        chat(f"Explain why topic {i} matters in at most 3 sentences.", f"Because of reason {i}, therefore it matters a lot. " * 6)
        for i in range(4)
    ]
    lines = easy + medium + [easy[0], "not json", medium[1]]  # two duplicates, one broken line
    source = tmp_path / "source.jsonl"
    source.write_text("\n".join(lines) + "\n")
    report = audit_file(source)
    assert report.difficulty_counts == {"easy": 11, "medium": 5, "hard": 0}
    destination = tmp_path / "balanced.jsonl"
    result = rebalance_file(source=source, destination=destination, report=report, mix=DEFAULT_MIX, seed=1)

    written = destination.read_text().splitlines()
    assert len(written) == result.lines_written == result.plan.output_size
    assert set(written) <= set(easy + medium)  # nothing invented, nothing broken
    counts = Counter(written)
    assert max(counts.values()) <= 2
    assert result.plan.dropped_duplicates == 2 and result.plan.dropped_invalid == 1
    assert result.plan.levels["hard"].available == 0
    assert result.plan.shortfalls[0].startswith("0 hard examples: 4 more needed")
    assert result.to_dict()["achieved_mix"]["hard"] == 0.0
    # Without a report it audits the source itself, and the same seed writes the same file.
    again = rebalance_file(source=source, destination=tmp_path / "again.jsonl", seed=1)
    assert (tmp_path / "again.jsonl").read_bytes() == destination.read_bytes()
    assert again.plan.copies == result.plan.copies


def test_a_valid_example_whose_earlier_duplicate_is_invalid_is_kept(tmp_path: Path) -> None:
    bad = json.dumps({"messages": [{"role": "customer", "content": "Where is my refund?"}, {"role": "assistant", "content": "On its way."}]})
    good = chat("Where is my refund?", "On its way.")
    other = chat("How do I reset my password?", "Use the link on the login page.")
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join([bad, good, other]) + "\n")
    report = audit_file(source)
    assert report.duplicates.exact_groups == [[1, 2]]  # same words: the role is not part of the text
    result = rebalance_file(source=source, destination=tmp_path / "out.jsonl", report=report, mix={"easy": 1.0, "medium": 0.0, "hard": 0.0})
    assert (tmp_path / "out.jsonl").read_text().splitlines() == [good, other]
    assert (result.plan.dropped_duplicates, result.plan.dropped_invalid) == (0, 1)
