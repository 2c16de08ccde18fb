"""The answer marker: how a benchmark case tells the simulator what the correct reply is.

A case's prompt (any message, normally the user's) may carry one marker:

    [[answer: Paris]]
    [[answer: Paris | Lyon | Marseille]]

The first alternative is the correct reply; the others, if any, are plausible wrong replies the
simulator picks from when its quality knob makes it miss. Answers must not contain `|` or `]]`.

Why a marker rather than a knowledge file: the simulator stays stateless (a restarted simulator, or
a second one, answers exactly the same), and the benchmark suite is the single place that knows the
answer. Real providers must never see the marker, so the provider layer strips it for every kind
except `simulator` (see `models_app.providers`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ANSWER_MARKER_PATTERN = re.compile(r"\[\[\s*answer\s*:(?P<body>[^\]]*?)\]\]", re.IGNORECASE)
_ALTERNATIVE_SEPARATOR = "|"


@dataclass(frozen=True)
class AnswerKey:
    correct: str
    wrong_alternatives: tuple[str, ...] = ()


def format_answer_marker(correct: str, wrong_alternatives: tuple[str, ...] | list[str] = ()) -> str:
    """The marker a benchmark suite appends to a case's prompt."""
    alternatives = [correct, *wrong_alternatives]
    for alternative in alternatives:
        if not alternative.strip() or _ALTERNATIVE_SEPARATOR in alternative or "]]" in alternative:
            raise ValueError(f"answer alternative {alternative!r} must be non-empty and contain neither '|' nor ']]'")
    return "[[answer: " + " | ".join(alternative.strip() for alternative in alternatives) + "]]"


def parse_answer_marker(text: str) -> AnswerKey | None:
    """The answer key of the last marker in `text`, or None when there is none (or it is empty)."""
    matches = list(ANSWER_MARKER_PATTERN.finditer(text))
    if not matches:
        return None
    alternatives = [part.strip() for part in matches[-1].group("body").split(_ALTERNATIVE_SEPARATOR)]
    alternatives = [alternative for alternative in alternatives if alternative]
    if not alternatives:
        return None
    return AnswerKey(correct=alternatives[0], wrong_alternatives=tuple(alternatives[1:]))


def strip_answer_markers(text: str) -> str:
    """`text` without any marker, so a real model never sees the expected answer."""
    stripped = ANSWER_MARKER_PATTERN.sub("", text)
    # Collapse the gap the marker leaves ("Capital of France? [[answer: Paris]]" -> "Capital of France?").
    return re.sub(r"[ \t]{2,}", " ", stripped).strip()
