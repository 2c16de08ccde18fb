"""Benchmark suites as JSONL (pure: no Django), and the demo suites shipped as `<agent>.jsonl` here.

One case per line:

    {"id": "qa-001",
     "messages": [{"role": "user", "content": "Is 17 prime? Answer Yes or No."}],
     "reference": "Yes",
     "scorer": {"name": "normalized_match"},
     "tags": ["difficulty:easy", "arithmetic"]}

`id` (unique in the file), `messages` (a non-empty chat ending with a user message) and `scorer`
(see models_app/benchmarks/scorers.py) are required; `reference` and `tags` are optional. An optional first
line `{"suite": {"description": "..."}}` carries the suite's description. Blank lines are skipped.
Every problem is reported with its line number, all at once, so a file can be fixed in one go.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models_app.benchmarks.scorers import validate_scorer_spec

DEMO_SUITES_DIR = Path(__file__).resolve().parent
CASE_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$")
TAG_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/ -]{0,63}$")
ROLES = frozenset({"system", "user", "assistant"})
CASE_KEYS = frozenset({"id", "messages", "reference", "scorer", "tags"})
MAX_CASES = 20_000


@dataclass(frozen=True)
class SuiteCase:
    key: str
    messages: list[dict[str, str]]
    reference: Any
    scorer: dict[str, Any]
    tags: list[str]
    line: int = 0

    def as_json(self) -> dict[str, Any]:
        return {"id": self.key, "messages": self.messages, "reference": self.reference, "scorer": self.scorer,
                "tags": self.tags}


@dataclass(frozen=True)
class LineError:
    line: int
    detail: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.detail}"


@dataclass
class ParsedSuite:
    description: str = ""
    cases: list[SuiteCase] = field(default_factory=list)
    errors: list[LineError] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.errors and bool(self.cases)


def _case_problems(obj: Any) -> list[str]:
    if not isinstance(obj, dict):
        return [f"a case must be a JSON object, got {type(obj).__name__}"]
    problems = [f"unknown key '{key}' (allowed: {', '.join(sorted(CASE_KEYS))})" for key in obj if key not in CASE_KEYS]
    key = obj.get("id")
    if not isinstance(key, str) or not CASE_ID_PATTERN.match(key):
        problems.append("id: needs 1-100 characters of letters, digits, '_', '.', ':' or '-'")
    messages = obj.get("messages")
    if not isinstance(messages, list) or not messages:
        problems.append("messages: needs a non-empty list of {\"role\", \"content\"} objects")
    else:
        for index, message in enumerate(messages):
            if not isinstance(message, dict) or set(message) - {"role", "content"}:
                problems.append(f"messages[{index}]: needs exactly the keys 'role' and 'content'")
                continue
            if message.get("role") not in ROLES:
                problems.append(f"messages[{index}].role: must be one of {', '.join(sorted(ROLES))}")
            if not isinstance(message.get("content"), str) or not message["content"].strip():
                problems.append(f"messages[{index}].content: needs non-empty text")
        if isinstance(messages[-1], dict) and messages[-1].get("role") != "user":
            problems.append("messages: the last message must be the user's (the model answers it)")
    tags = obj.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(tag, str) and TAG_PATTERN.match(tag) for tag in tags):
        problems.append("tags: needs a list of short strings such as \"difficulty:hard\"")
    if "scorer" not in obj:
        problems.append("scorer: required, e.g. {\"name\": \"exact\"}")
    else:
        problems += validate_scorer_spec(obj["scorer"], obj.get("reference"))
    return problems


def parse_suite_jsonl(lines: Iterable[str]) -> ParsedSuite:
    """Parse and validate a suite, line by line; see `ParsedSuite.errors` for what is wrong."""
    parsed = ParsedSuite()
    seen: dict[str, int] = {}
    first_content_line = True
    for number, raw in enumerate(lines, start=1):
        text = raw.strip()
        if not text:
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as error:
            parsed.errors.append(LineError(number, f"not valid JSON: {error.msg} (column {error.colno})"))
            first_content_line = False
            continue
        if first_content_line and isinstance(obj, dict) and set(obj) == {"suite"}:
            first_content_line = False
            header = obj["suite"]
            if not isinstance(header, dict) or not isinstance(header.get("description", ""), str):
                parsed.errors.append(LineError(number, "suite: needs an object such as {\"description\": \"…\"}"))
            else:
                parsed.description = header.get("description", "")
            continue
        first_content_line = False
        problems = _case_problems(obj)
        if not problems and obj["id"] in seen:
            problems.append(f"id: '{obj['id']}' repeats the case on line {seen[obj['id']]}")
        if problems:
            parsed.errors.extend(LineError(number, problem) for problem in problems)
            continue
        seen[obj["id"]] = number
        parsed.cases.append(
            SuiteCase(key=obj["id"], messages=[dict(m) for m in obj["messages"]], reference=obj.get("reference"),
                      scorer=dict(obj["scorer"]), tags=list(obj.get("tags", [])), line=number)
        )
        if len(parsed.cases) > MAX_CASES:
            parsed.errors.append(LineError(number, f"a suite holds at most {MAX_CASES} cases"))
            break
    if not parsed.cases and not parsed.errors:
        parsed.errors.append(LineError(0, "the file holds no case"))
    return parsed


def cases_fingerprint(cases: Iterable[SuiteCase]) -> str:
    """A hash of the cases' content: an import that changes nothing makes no new version."""
    canonical = json.dumps([case.as_json() for case in cases], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def suite_jsonl(*, description: str, cases: Iterable[SuiteCase]) -> str:
    """The JSONL text of a suite; `parse_suite_jsonl` reads it back unchanged."""
    lines = [json.dumps({"suite": {"description": description}}, ensure_ascii=False)] if description else []
    lines += [json.dumps(case.as_json(), ensure_ascii=False) for case in cases]
    return "\n".join(lines) + "\n"


def demo_suite_path(agent_slug: str) -> Path:
    return DEMO_SUITES_DIR / f"{agent_slug}.jsonl"


def case_messages(*, case_messages: list[dict[str, str]], system_prompt: str) -> list[dict[str, str]]:
    """What the model is sent: the agent's system prompt first, unless the case brings its own."""
    messages = [dict(message) for message in case_messages]
    if system_prompt and (not messages or messages[0].get("role") != "system"):
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages
