"""Reading prompt files: JSONL or CSV, the prompt in a named field, optional category and source fields.
Pure (stdlib): bytes in, rows and line-numbered problems out. A bad line is named and skipped; the
good lines are kept, so an export with a few broken lines is still usable — and says which.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field

MAX_PROMPT_CHARS = 8000
MAX_PROBLEMS_KEPT = 1000


@dataclass(frozen=True)
class PromptRow:
    line: int
    prompt: str
    category: str = ""
    source: str = ""


@dataclass
class ParsedPrompts:
    rows: list[PromptRow] = field(default_factory=list)
    problems: list[tuple[int, str]] = field(default_factory=list)  # (line, detail)
    problem_count: int = 0

    def problem(self, line: int, detail: str) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_PROBLEMS_KEPT:
            self.problems.append((line, detail))


def detect_format(name: str, head: bytes) -> str:
    lowered = name.lower()
    if lowered.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    if lowered.endswith((".csv", ".tsv")):
        return "csv"
    return "jsonl" if head.lstrip()[:1] in (b"{", b"[") else "csv"


def _text_field(record: dict, name: str) -> str:
    value = record.get(name)
    return value.strip() if isinstance(value, str) else ""


def _take(parsed: ParsedPrompts, line: int, record: dict, *, field: str, category_field: str, source_field: str,
          default_source: str) -> None:
    if field not in record:
        parsed.problem(line, f"no field '{field}' (fields: {', '.join(sorted(map(str, record))[:8]) or 'none'})")
        return
    value = record[field]
    if not isinstance(value, str):
        parsed.problem(line, f"field '{field}' is a {type(value).__name__}, not text")
        return
    prompt = value.strip()
    if not prompt:
        parsed.problem(line, f"field '{field}' is empty")
        return
    if len(prompt) > MAX_PROMPT_CHARS:
        parsed.problem(line, f"field '{field}' has {len(prompt)} characters (at most {MAX_PROMPT_CHARS})")
        return
    parsed.rows.append(PromptRow(
        line=line, prompt=prompt, category=_text_field(record, category_field)[:100] if category_field else "",
        source=(_text_field(record, source_field) if source_field else "")[:100] or default_source,
    ))


def parse_prompts(
    content: bytes, *, name: str, field: str = "prompt", category_field: str = "category",
    source_field: str = "source", default_source: str = "",
) -> ParsedPrompts:
    """Rows of a JSONL (one object a line) or CSV (a header row) file. Every line that is not
    UTF-8, not an object, lacks the field or has it empty is a problem with its line number."""
    parsed = ParsedPrompts()
    field = field.strip() or "prompt"
    if detect_format(name, content[:64]) == "jsonl":
        for number, raw in enumerate(content.split(b"\n"), start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                parsed.problem(number, "not UTF-8")
                continue
            except json.JSONDecodeError as exc:
                parsed.problem(number, f"not JSON ({exc.msg} at column {exc.colno})")
                continue
            if not isinstance(record, dict):
                parsed.problem(number, f"a JSON {type(record).__name__}, not an object")
                continue
            _take(parsed, number, record, field=field, category_field=category_field, source_field=source_field,
                  default_source=default_source)
        return parsed
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = content[: exc.start].count(b"\n") + 1
        parsed.problem(line, "not UTF-8; the CSV cannot be read")
        return parsed
    reader = csv.DictReader(io.StringIO(text, newline=""), dialect="excel-tab" if name.lower().endswith(".tsv") else "excel")
    if reader.fieldnames is None:
        parsed.problem(1, "no header row")
        return parsed
    if field not in reader.fieldnames:
        parsed.problem(1, f"the header has no column '{field}' (columns: {', '.join(reader.fieldnames)})")
        return parsed
    try:
        for record in reader:
            line = reader.line_num
            if None in record:
                parsed.problem(line, f"{len(record[None])} more value(s) than the header has columns")
                continue
            if any(value is None for value in record.values()):
                parsed.problem(line, "fewer values than the header has columns")
                continue
            _take(parsed, line, record, field=field, category_field=category_field, source_field=source_field,
                  default_source=default_source)
    except csv.Error as exc:
        parsed.problem(reader.line_num, f"not valid CSV ({exc})")
    return parsed
