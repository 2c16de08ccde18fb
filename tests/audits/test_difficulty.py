"""Difficulty: a documented, explainable score and its cut points."""

from __future__ import annotations

import math

import pytest

from audits.dedupe import normalise
from audits.difficulty import EASY_BELOW, MEDIUM_BELOW, WEIGHTS, distribution, level_for, quick_score, score_example
from audits.formats import conversation_text


def example(*turns: tuple[str, str], system: str | None = None, **extra: object) -> dict:
    messages = [{"role": "system", "content": system}] if system else []
    for user, assistant in turns:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return {"messages": messages, **extra}


FACTUAL = example(("What is the capital of France?", "Paris."))
EXPLAINED = example(
    (
        "Explain why the sky is blue. Answer in at most 3 sentences.",
        "Sunlight scatters off air molecules, and because shorter wavelengths scatter more, blue light "
        "reaches us from every direction. Therefore the sky looks blue, while sunsets look red since the "
        "light crosses more air. " * 2,
    )
)
HARD = example(
    (
        "Write a Python function that must return the 3 largest values without sorting the whole list. "
        "Explain the complexity step by step and output JSON with exactly 2 keys.",
        "First, we use a heap because it keeps only the k largest values; therefore the cost is O(n log k).\n"
        "```python\nimport heapq\ndef top3(values):\n    return heapq.nlargest(3, values)\n```\n"
        + "Second, we compare the alternatives and analyse the trade-off between memory and time. " * 15,
    ),
    ("Now prove that no comparison-based method can do better.", "Suppose one did; it follows that ... hence a contradiction. " * 8),
)


def test_levels_follow_the_documented_cut_points() -> None:
    assert (EASY_BELOW, MEDIUM_BELOW) == (0.25, 0.45)
    assert [level_for(score) for score in (0.0, 0.2499, 0.25, 0.4499, 0.45, 1.0)] == [
        "easy", "easy", "medium", "medium", "hard", "hard",
    ]  # fmt: skip


@pytest.mark.parametrize(("record", "level"), [(FACTUAL, "easy"), (EXPLAINED, "medium"), (HARD, "hard")])
def test_examples_land_where_a_person_would_put_them(record: dict, level: str) -> None:
    assert score_example(record).level == level


def test_the_score_is_the_sum_of_its_weighted_components() -> None:
    result = score_example(HARD)
    assert math.isclose(sum(WEIGHTS.values()), 1.0)
    assert [c.name for c in result.components] == list(WEIGHTS)
    assert all(0.0 <= c.value <= 1.0 for c in result.components)
    assert math.isclose(result.score, sum(c.value * c.weight for c in result.components), abs_tol=1e-3)
    by_name = {c.name: c for c in result.components}
    assert by_name["turns"].evidence == "2 user turns"
    assert by_name["code_math"].evidence == "1 code block; signals: def, function, import, return and 1 more"
    assert by_name["reasoning"].evidence.startswith("reasoning markers: analyse, because, compare")
    assert by_name["tools"].value == 0.0


def test_the_explanation_names_what_made_it_hard() -> None:
    explanation = score_example(HARD).explain()
    assert explanation.startswith("hard (")
    assert "reasoning 0.20 (reasoning markers: " in explanation
    assert "words" in explanation
    assert score_example({"messages": []}).explain() == "easy (0.00): nothing that makes it hard"


def test_each_signal_raises_the_score() -> None:
    plain = score_example(example(("Tell me about cats.", "Cats are small domesticated animals.")))
    reasoning = score_example(example(("Tell me about cats.", "Cats purr because they are content; therefore they purr often.")))
    constrained = score_example(example(("Tell me about cats in at most 3 bullet points. You must use JSON.", "Cats are small domesticated animals.")))
    tools = score_example(
        {
            "messages": [
                {"role": "user", "content": "Tell me about cats."},
                {"role": "assistant", "tool_calls": [{"id": "abcdefghi", "function": {"name": "wiki", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "abcdefghi", "content": "Cats are small domesticated animals."},
                {"role": "assistant", "content": "Cats are small domesticated animals."},
            ]
        }
    )
    for harder in (reasoning, constrained, tools):
        assert harder.score > plain.score


def test_distribution_is_fractions_of_examples() -> None:
    assert distribution({"easy": 1, "medium": 2, "hard": 1}) == {"easy": 0.25, "medium": 0.5, "hard": 0.25}
    assert distribution({}) == {"easy": 0.0, "medium": 0.0, "hard": 0.0}


@pytest.mark.parametrize("record", [FACTUAL, EXPLAINED, HARD])
def test_the_quick_score_used_by_the_audit_equals_the_explained_one(record: dict) -> None:
    normalised = normalise(conversation_text(record))
    assert quick_score(record, normalised_conversation=normalised) == score_example(record).score
