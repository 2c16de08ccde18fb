"""Checks an uploaded fine-tuning file the way Mistral does: one chat sample per JSONL line."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

ALLOWED_ROLES = frozenset({"system", "user", "assistant", "tool"})
MAX_REPORTED_PROBLEMS = 20


@dataclass(frozen=True)
class LineProblem:
    line: int  # 1-based, as an editor shows it
    detail: str


@dataclass(frozen=True)
class TrainingFileSummary:
    num_lines: int  # non-empty lines, i.e. samples
    tokens: int  # about one per four characters of sample text
    problems: tuple[LineProblem, ...] = ()
    line_digests: frozenset[int] = field(default_factory=frozenset)  # to spot train/validation overlap

    @property
    def valid(self) -> bool:
        return not self.problems and self.num_lines > 0


def summarize_training_file(content: bytes, *, stable_hash: Callable[[str], int]) -> TrainingFileSummary:
    """Count samples and tokens; collect every problem (up to MAX_REPORTED_PROBLEMS), naming its line."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as error:
        return TrainingFileSummary(0, 0, (LineProblem(1, f"file is not UTF-8 text ({error.reason})"),))
    problems: list[LineProblem] = []
    samples = 0
    characters = 0
    digests: set[int] = set()
    for number, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.strip()
        if not line:
            continue
        samples += 1
        characters += len(line)
        digests.add(stable_hash(line))
        detail = _sample_problem(line)
        if detail and len(problems) < MAX_REPORTED_PROBLEMS:
            problems.append(LineProblem(number, detail))
    if samples == 0:
        problems.append(LineProblem(1, "file holds no samples"))
    return TrainingFileSummary(
        num_lines=samples,
        tokens=max(1, characters // 4) if samples else 0,
        problems=tuple(problems),
        line_digests=frozenset(digests),
    )


def _sample_problem(line: str) -> str | None:
    try:
        sample = json.loads(line)
    except json.JSONDecodeError as error:
        return f"not valid JSON ({error.msg} at column {error.colno})"
    if not isinstance(sample, dict):
        return "a sample must be a JSON object"
    messages = sample.get("messages")
    if not isinstance(messages, list) or not messages:
        return "a sample needs a non-empty 'messages' list"
    has_assistant = False
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            return f"messages[{index}] must be an object"
        role = message.get("role")
        if role not in ALLOWED_ROLES:
            return f"messages[{index}] has role {role!r}; expected one of {', '.join(sorted(ALLOWED_ROLES))}"
        content = message.get("content")
        if role == "assistant":
            has_assistant = True
            if not (isinstance(content, str) and content.strip()) and not message.get("tool_calls"):
                return f"messages[{index}] (assistant) needs non-empty 'content' or 'tool_calls'"
        elif not isinstance(content, (str, list)):
            return f"messages[{index}] ({role}) needs a 'content' string"
    if not has_assistant:
        return "a sample needs at least one assistant message"
    return None
