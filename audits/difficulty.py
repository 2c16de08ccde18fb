"""An explainable difficulty score for a chat example: easy, medium or hard.

Pure module (stdlib only); no Django.

The score is a weighted sum of seven components, each scaled to 0–1, so an
admin can read why an example landed where it did:

=============  ======  ==========================================================
component      weight  1.0 means
=============  ======  ==========================================================
length         0.25    ≥ 1 000 words in the conversation (log scale: 50 words ≈ 0.23,
                       200 ≈ 0.53, 500 ≈ 0.79)
turns          0.10    ≥ 4 user turns (1 turn = 0)
reasoning      0.20    ≥ 4 different reasoning markers ("step by step", "because",
                       "therefore", "prove", "explain why", "compare", …)
constraints    0.15    ≥ 5 constraints in the user turns: different markers ("must",
                       "at most", "exactly", "do not", "format", "json", …) plus up
                       to 3 for numbers
code_math      0.15    code or mathematics: a fenced block counts 0.5, every other
                       kind of signal (``def``, ``return``, ``{``, ``;``, ``\\frac``,
                       ``=``, "equation", "integral" …) 0.1, capped at 1
vocabulary     0.10    average word length ≥ 6.5 letters (≤ 4 letters = 0): technical,
                       rarer words
tools          0.05    the example calls tools
=============  ======  ==========================================================

Cut points: score < 0.25 is **easy**, < 0.45 is **medium**, otherwise **hard**.
A one-line factual answer scores ≈ 0.05; a few paragraphs with some reasoning
≈ 0.3; a long multi-turn task with code, constraints and explicit reasoning
≈ 0.7.  Markers count once each however often they appear (an example that
says "because" ten times is not ten times harder).  The score is a heuristic
for balancing a dataset, not a judgement of quality.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from audits.formats import conversation_text

LEVELS = ("easy", "medium", "hard")
EASY_BELOW = 0.25
MEDIUM_BELOW = 0.45

WEIGHTS: Mapping[str, float] = {
    "length": 0.25,
    "turns": 0.10,
    "reasoning": 0.20,
    "constraints": 0.15,
    "code_math": 0.15,
    "vocabulary": 0.10,
    "tools": 0.05,
}

# Single words are looked up in the set of the example's words (one pass over
# the text); phrases and symbols with a substring test.  Both are C-fast; a
# regex or one str.count per marker cost more than the rest of the audit.
REASONING_WORDS = frozenset(
    {
        "because", "therefore", "thus", "hence", "implies", "consequently", "prove", "proof",
        "derive", "justify", "reason", "reasoning", "compare", "comparison", "analyze", "analyse",
        "analysis", "trade-off", "tradeoff", "assume", "assuming", "suppose", "why",
    }
)  # fmt: skip
REASONING_PHRASES = (
    "step by step", "so that", "which means", "it follows", "in other words", "first,", "second,", "finally,",
)  # fmt: skip
CONSTRAINT_WORDS = frozenset(
    {
        "must", "should", "exactly", "without", "only", "never", "always", "format", "json",
        "bullet", "bullets", "limit", "within", "ensure", "don't", "avoid", "maximum", "minimum",
    }
)  # fmt: skip
CONSTRAINT_PHRASES = ("at most", "at least", "no more than", "no less than", "do not", "less than", "more than")
CODE_MATH_WORDS = frozenset(
    {
        "def", "return", "function", "class", "import", "select", "lambda", "const", "var",
        "equation", "integral", "derivative", "matrix", "probability", "theorem",
    }
)  # fmt: skip
CODE_MATH_SYMBOLS = ("{", ";", "=>", "</", "\\frac", "\\sum", "\\int", "=", "^")

# Punctuation separates words, except the marks that belong to them ("don't",
# "trade-off", "snake_case").
_WORD_BREAKS = str.maketrans({char: " " for char in string.punctuation if char not in "'-_"})
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
_LENGTH_SCALE = math.log2(1 + 1000 / 50)
_REASONING_ENOUGH = 4
_CONSTRAINTS_ENOUGH = 5
_SIGNALS_ENOUGH = 10


@dataclass(frozen=True, slots=True)
class DifficultyComponent:
    name: str
    value: float  # 0–1
    weight: float
    evidence: str  # what was counted, for the admin: "412 words", "reasoning: because, therefore"

    @property
    def contribution(self) -> float:
        return self.value * self.weight


@dataclass(frozen=True, slots=True)
class DifficultyScore:
    score: float  # 0–1
    level: str  # "easy" | "medium" | "hard"
    components: tuple[DifficultyComponent, ...]

    def explain(self) -> str:
        """"hard (0.62): length 0.19 (812 words), reasoning 0.15 (because, …), …" — largest first."""
        parts = sorted(self.components, key=lambda c: c.contribution, reverse=True)
        detail = ", ".join(f"{c.name} {c.contribution:.2f} ({c.evidence})" for c in parts if c.contribution > 0)
        return f"{self.level} ({self.score:.2f}): {detail or 'nothing that makes it hard'}"


def level_for(score: float) -> str:
    if score < EASY_BELOW:
        return "easy"
    if score < MEDIUM_BELOW:
        return "medium"
    return "hard"


@dataclass(frozen=True, slots=True)
class _Measured:
    words: int
    average_word: float
    user_turns: int
    tool_calls: int
    reasoning: tuple[str, ...]
    constraints: tuple[str, ...]
    numbers: int
    fences: int
    signals: tuple[str, ...]

    def values(self) -> dict[str, float]:
        constraint_count = len(self.constraints) + min(self.numbers, 3)
        return {
            "length": min(1.0, math.log2(1 + self.words / 50) / _LENGTH_SCALE),
            "turns": min(1.0, max(0, self.user_turns - 1) / 3),
            "reasoning": min(1.0, len(self.reasoning) / _REASONING_ENOUGH),
            "constraints": min(1.0, constraint_count / _CONSTRAINTS_ENOUGH),
            "code_math": min(1.0, 0.5 * min(self.fences, 2) + 0.1 * min(len(self.signals), _SIGNALS_ENOUGH)),
            "vocabulary": min(1.0, max(0.0, (self.average_word - 4.0) / 2.5)),
            "tools": 1.0 if self.tool_calls else 0.0,
        }


def _measure(normalised_conversation: str, user_text: str, user_turns: int, tool_calls: int) -> _Measured:
    folded = normalised_conversation
    words = folded.count(" ") + 1 if folded else 0
    letters = len(folded) - max(0, words - 1)
    vocabulary = set(folded.translate(_WORD_BREAKS).split())
    reasoning = sorted(REASONING_WORDS & vocabulary) + [p for p in REASONING_PHRASES if p in folded]
    # Constraints are the user's: what the example asks for, not what it answers.
    user_folded = " ".join(user_text.casefold().split())
    user_vocabulary = set(user_folded.translate(_WORD_BREAKS).split())
    constraints = sorted(CONSTRAINT_WORDS & user_vocabulary) + [p for p in CONSTRAINT_PHRASES if p in user_folded]
    signals = sorted(CODE_MATH_WORDS & vocabulary) + [s for s in CODE_MATH_SYMBOLS if s in folded]
    return _Measured(
        words=words,
        average_word=letters / words if words else 0.0,
        user_turns=user_turns,
        tool_calls=tool_calls,
        reasoning=tuple(reasoning),
        constraints=tuple(constraints),
        numbers=len(_NUMBER.findall(user_folded)),
        fences=folded.count("```") // 2,
        signals=tuple(signals),
    )


def _user_text_and_counts(record: Mapping[str, Any]) -> tuple[str, int, int]:
    messages = record.get("messages")
    user_parts: list[str] = []
    user_turns = 0
    tool_calls = 0
    for message in messages if isinstance(messages, list) else ():
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        if role == "user":
            user_turns += 1
            if isinstance(message.get("content"), str):
                user_parts.append(message["content"])
        elif role == "tool":
            tool_calls += 1
        calls = message.get("tool_calls")
        if isinstance(calls, list):
            tool_calls += len(calls)
    if record.get("tools"):
        tool_calls = max(tool_calls, 1)
    return " ".join(user_parts), user_turns, tool_calls


def _fold(text: str) -> str:
    return " ".join(text.casefold().split())


def _total(values: Mapping[str, float]) -> float:
    # Components are rounded to 4 places first, exactly as score_texts shows them.
    return round(sum(round(value, 4) * WEIGHTS[name] for name, value in values.items()), 4)


def score_example(record: Mapping[str, Any], *, normalised_conversation: str | None = None) -> DifficultyScore:
    """Score one parsed example (a JSON object with a ``messages`` list), with its explanation.

    ``normalised_conversation`` is :func:`audits.dedupe.normalise` of
    :func:`audits.formats.conversation_text` when the caller already has it.
    """
    user_text, user_turns, tool_calls = _user_text_and_counts(record)
    if normalised_conversation is None:
        normalised_conversation = _fold(conversation_text(dict(record)))
    return score_texts(
        normalised_conversation=normalised_conversation,
        user_text=user_text,
        user_turns=user_turns,
        tool_calls=tool_calls,
    )


def quick_score(record: Mapping[str, Any], *, normalised_conversation: str) -> float:
    """The same score as :func:`score_example`, without building the explanation (hot path)."""
    user_text, user_turns, tool_calls = _user_text_and_counts(record)
    return _total(_measure(normalised_conversation, user_text, user_turns, tool_calls).values())


def _listed(markers: tuple[str, ...], noun: str) -> str:
    if not markers:
        return f"no {noun}"
    shown = ", ".join(markers[:4]) + (f" and {len(markers) - 4} more" if len(markers) > 4 else "")
    return f"{noun}: {shown}"


def score_texts(
    *, normalised_conversation: str, user_text: str, user_turns: int, tool_calls: int
) -> DifficultyScore:
    """The score from the example's text (all of it, case-folded and
    whitespace-collapsed), the user's part alone (raw) and two counts."""
    measured = _measure(normalised_conversation, user_text, user_turns, tool_calls)
    values = measured.values()
    numbers = min(measured.numbers, 3)
    evidence = {
        "length": f"{measured.words} word{'s' if measured.words != 1 else ''}",
        "turns": f"{user_turns} user turn{'s' if user_turns != 1 else ''}",
        "reasoning": _listed(measured.reasoning, "reasoning markers"),
        "constraints": _listed(measured.constraints, "constraints") + (f"; {numbers} number{'s' if numbers != 1 else ''}" if numbers else ""),
        "code_math": f"{measured.fences} code block{'s' if measured.fences != 1 else ''}; "
        + _listed(measured.signals, "signals"),
        "vocabulary": f"{measured.average_word:.1f} letters per word",
        "tools": f"{tool_calls} tool call{'s' if tool_calls != 1 else ''}",
    }
    components = tuple(
        DifficultyComponent(name, round(value, 4), WEIGHTS[name], evidence[name]) for name, value in values.items()
    )
    score = _total(values)
    return DifficultyScore(score, level_for(score), components)


def distribution(counts: Mapping[str, int]) -> dict[str, float]:
    """Fractions per level (each rounded to 4 places); all zero when there is nothing."""
    total = sum(counts.get(level, 0) for level in LEVELS)
    if total == 0:
        return dict.fromkeys(LEVELS, 0.0)
    return {level: round(counts.get(level, 0) / total, 4) for level in LEVELS}
