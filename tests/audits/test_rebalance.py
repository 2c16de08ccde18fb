"""Rebalance: as close to a target mix as the examples allow, by down-sampling — no example
written twice, none invented."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


def test_no_hard_examples_leaves_hard_out_and_keeps_the_others_proportions() -> None:
    plan = plan_rebalance(levels_by_line=levels(58, 42, 0))
    assert plan.target_size == 100
    assert {level: p.wanted for level, p in plan.levels.items()} == {"easy": 30, "medium": 45, "hard": 25}
    # easy : medium stays 30 : 45; the 42 medium examples set the size.
    assert {level: p.taken for level, p in plan.levels.items()} == {"easy": 28, "medium": 42, "hard": 0}
    assert plan.achieved_mix == {"easy": 0.4, "medium": 0.6, "hard": 0.0}
    assert plan.left_out == ["hard"]
    assert plan.shortfalls == [
        "42 medium examples: 3 more needed (target 45% of 100)",
        "0 hard examples: 25 more needed (target 25% of 100); hard is left out, the other levels keep the target's proportions",
        "achievable: 70 examples at easy 40.0% · medium 60.0% · hard 0.0% — the most the short levels allow "
        "without repeating an example",
    ]
    assert plan.lines <= set(range(1, 101))


def test_short_levels_shrink_the_copy_so_the_mix_holds_and_nothing_is_repeated() -> None:
    plan = plan_rebalance(levels_by_line=levels(80, 15, 5))
    # 5 hard examples are 25 % of 20: the copy is 20 examples at exactly the target mix.
    assert {level: p.taken for level, p in plan.levels.items()} == {"easy": 6, "medium": 9, "hard": 5}
    assert plan.achieved_mix == {"easy": 0.3, "medium": 0.45, "hard": 0.25}
    assert plan.output_size == len(plan.lines) == 20
    assert [s.split(":")[0] for s in plan.shortfalls] == ["15 medium examples", "5 hard examples", "achievable"]
    assert plan.shortfalls[1] == "5 hard examples: 20 more needed (target 25% of 100)"


def test_one_example_is_worded_in_the_singular() -> None:
    plan = plan_rebalance(levels_by_line=levels(93, 0, 1), mix={"easy": 0.9, "medium": 0.0, "hard": 0.1})
    assert plan.shortfalls[0] == "1 hard example: 8 more needed (target 10% of 94)"
    assert {level: p.taken for level, p in plan.levels.items()} == {"easy": 9, "medium": 0, "hard": 1}


@settings(max_examples=200, deadline=None)
@given(
    available=st.tuples(*[st.integers(min_value=0, max_value=300)] * 3),
    weights=st.tuples(*[st.integers(min_value=0, max_value=10)] * 3).filter(any),
    target_size=st.none() | st.integers(min_value=0, max_value=400),
)
def test_the_copy_never_takes_more_than_there_is_and_keeps_the_reachable_mix(available, weights, target_size) -> None:
    mix = {level: weight / sum(weights) for level, weight in zip(("easy", "medium", "hard"), weights)}
    plan = plan_rebalance(levels_by_line=levels(*available), mix=mix, target_size=target_size)
    size = plan.output_size
    assert size <= plan.target_size
    present = {level: mix[level] for level, count in zip(mix, available) if count and mix[level] > 0}
    for (level, level_plan), count in zip(plan.levels.items(), available):
        assert level_plan.taken <= count
        if level not in present:
            assert level_plan.taken == 0
        else:  # within rounding of its share among the levels at hand
            assert abs(level_plan.taken - size * present[level] / sum(present.values())) < 1


def test_a_balanced_pool_is_kept_whole() -> None:
    plan = plan_rebalance(levels_by_line=levels(30, 45, 25))
    assert plan.shortfalls == [] and plan.output_size == 100 and plan.lines == set(range(1, 101))


def test_sampling_is_seeded() -> None:
    pool = levels(200, 50, 50)
    assert plan_rebalance(levels_by_line=pool, seed=7).lines == plan_rebalance(levels_by_line=pool, seed=7).lines
    assert plan_rebalance(levels_by_line=pool, seed=7).lines != plan_rebalance(levels_by_line=pool, seed=8).lines


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
    assert max(Counter(written).values()) == 1
    assert result.plan.dropped_duplicates == 2 and result.plan.dropped_invalid == 1
    assert result.plan.levels["hard"].available == 0
    assert result.plan.shortfalls[0] == "4 medium examples: 2 more needed (target 45% of 14)"
    assert result.plan.shortfalls[1].startswith("0 hard examples: 4 more needed (target 25% of 14); hard is left out")
    assert result.to_dict()["achieved_mix"]["hard"] == 0.0
    # Without a report it audits the source itself, and the same seed writes the same file.
    again = rebalance_file(source=source, destination=tmp_path / "again.jsonl", seed=1)
    assert (tmp_path / "again.jsonl").read_bytes() == destination.read_bytes()
    assert again.plan.lines == result.plan.lines


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


def skewed_lines(easy: int, hard: int) -> list[str]:
    """A walk-through's skewed set: ``easy`` one-line answers and ``hard`` coding tasks that differ in
    a number only (near duplicates of each other: one usable hard example), no medium."""
    hard_lines = [
        chat(
            f"Implement a binary heap in Python step by step. You must explain why each step is correct, compare it "
            f"with a naive approach, and return exactly 3 functions; do not use any library. The answer must be at "
            f"most {200 + i} lines and formatted as JSON.",
            f"First, we define the structure because it needs invariants. Therefore insert keeps them.\n```python\n"
            f"def build_{i}(items):\n    result = {{}}\n    for item in items:\n        result[item] = len(result)\n"
            f"    return result\n```\nSecond, compare this with the naive approach: hence the heap wins. Finally, the "
            f"proof follows by induction on n = {i + 3}.",
        )
        for i in range(hard)
    ]
    return [chat(f"Capital of country number {i}?", f"City {i}.") for i in range(easy)] + hard_lines


@pytest.mark.parametrize(
    ("mix", "taken", "achieved"),
    [
        ({"easy": 0.9, "medium": 0.0, "hard": 0.1}, {"easy": 9, "medium": 0, "hard": 1}, {"easy": 0.9, "medium": 0.0, "hard": 0.1}),
        (DEFAULT_MIX, {"easy": 1, "medium": 0, "hard": 1}, {"easy": 0.5, "medium": 0.0, "hard": 0.5}),
    ],
)
def test_a_skewed_file_is_rebalanced_to_the_mix_and_the_copy_audits_clean(tmp_path: Path, mix, taken, achieved) -> None:
    source = tmp_path / "skewed.jsonl"
    source.write_text("\n".join(skewed_lines(92, 8)) + "\n")
    report = audit_file(source)
    assert report.difficulty_counts == {"easy": 92, "medium": 0, "hard": 8}
    destination = tmp_path / "balanced.jsonl"
    result = rebalance_file(source=source, destination=destination, report=report, mix=mix)
    assert result.plan.dropped_duplicates == 7 and result.plan.levels["hard"].available == 1
    assert {level: p.taken for level, p in result.plan.levels.items()} == taken
    assert result.plan.achieved_mix == achieved
    copy = audit_file(destination)
    assert not copy.has_findings  # no repeats: the copy passes the audit it will get
    assert copy.difficulty == achieved
