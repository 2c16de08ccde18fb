"""Reading prompt files: JSONL or CSV, the prompt in a named field, optional category and source fields.
Pure (stdlib + audits.pii, to mask PII in the field names a problem shows): bytes in, rows and
line-numbered problems out. A bad line is named and skipped; the good lines are kept, so an export
with a few broken lines is still usable — and says which.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field

from audits.pii import mask, scan_text

MAX_PROMPT_CHARS = 8000
MAX_PROBLEMS_KEPT = 1000
_BOM = b"\xef\xbb\xbf"
# What Postgres cannot store: NUL (refused in text and jsonb) and unpaired UTF-16 surrogates (from a
# "\ud800" escape, or a byte that is not UTF-8 read with surrogateescape), which cannot be encoded.
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_NOT_UTF8 = re.compile("[\udc80-\udcff]")  # what surrogateescape makes of a byte that is not UTF-8


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
    return "jsonl" if head.removeprefix(_BOM).lstrip()[:1] in (b"{", b"[") else "csv"


def storable(text: str) -> str:
    """`text` with what Postgres cannot store (or the PII scrubber encode) replaced by U+FFFD: for a
    category, a source, a field name, and a model's answer in a WaltzRL build."""
    return UNSTORABLE.sub("\ufffd", text)


def _shown_names(names: list[str]) -> str:
    """Field names as a problem shows them: a key or a column can be PII as easily as a value, so what
    the PII scan finds in one is masked, as in an audit's samples."""
    shown = []
    for name in names:
        name = storable(str(name))
        for match in reversed(scan_text(name)):
            name = name[: match.start] + mask(match.value_in(name), match.type) + name[match.end :]
        shown.append(name)
    return ", ".join(shown)


def _text_field(record: dict, name: str) -> str:
    value = record.get(name)
    return storable(value.strip()) if isinstance(value, str) else ""


def _take(parsed: ParsedPrompts, line: int, record: dict, *, field: str, category_field: str, source_field: str,
          default_source: str) -> None:
    if field not in record:
        parsed.problem(line, f"no field '{field}' (fields: {_shown_names(sorted(map(str, record))[:8]) or 'none'})")
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
    if UNSTORABLE.search(prompt):
        parsed.problem(line, f"field '{field}' holds a NUL character or an unpaired UTF-16 surrogate, which cannot be stored")
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
    fields = {"field": field.strip() or "prompt", "category_field": category_field, "source_field": source_field,
              "default_source": default_source}
    if detect_format(name, content[:64]) == "jsonl":
        _parse_jsonl(parsed, content, **fields)
    else:
        _parse_csv(parsed, content, tab_separated=name.lower().endswith(".tsv"), **fields)
    return parsed


def _parse_jsonl(parsed: ParsedPrompts, content: bytes, *, field: str, category_field: str, source_field: str,
                 default_source: str) -> None:
    for number, raw in enumerate(content.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8-sig" if number == 1 else "utf-8"))
        except UnicodeDecodeError:
            parsed.problem(number, "not UTF-8")
            continue
        except json.JSONDecodeError as exc:
            parsed.problem(number, f"not JSON ({exc.msg} at column {exc.colno})")
            continue
        except RecursionError:
            parsed.problem(number, "not JSON (nested too deeply)")
            continue
        except ValueError:  # an integer longer than Python reads (4 300 digits); its value is not shown
            parsed.problem(number, "not JSON (a number too long to read)")
            continue
        if not isinstance(record, dict):
            parsed.problem(number, f"a JSON {type(record).__name__}, not an object")
            continue
        _take(parsed, number, record, field=field, category_field=category_field, source_field=source_field,
              default_source=default_source)


def _parse_csv(parsed: ParsedPrompts, content: bytes, *, tab_separated: bool, field: str, category_field: str,
               source_field: str, default_source: str) -> None:
    # Bytes that are not UTF-8 spoil their own row only (see _NOT_UTF8), not the file.
    text = content.decode("utf-8-sig", errors="surrogateescape")
    reader = csv.DictReader(io.StringIO(text, newline=""), dialect="excel-tab" if tab_separated else "excel")
    if reader.fieldnames is None:
        parsed.problem(1, "no header row")
        return
    if field not in reader.fieldnames:
        parsed.problem(1, f"the header has no column '{field}' (columns: {_shown_names(list(reader.fieldnames))})")
        return
    while True:
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # e.g. a field over the csv module's limit: that row is skipped
            # DictReader.line_num still names the row before; its reader's counts the line that failed.
            parsed.problem(reader.reader.line_num, f"not valid CSV ({exc})")
            continue
        line = reader.line_num
        if any(isinstance(value, str) and _NOT_UTF8.search(value) for value in record.values()):
            parsed.problem(line, "not UTF-8")
            continue
        if None in record:
            parsed.problem(line, f"{len(record[None])} more value(s) than the header has columns")
            continue
        if any(value is None for value in record.values()):
            parsed.problem(line, "fewer values than the header has columns")
            continue
        _take(parsed, line, record, field=field, category_field=category_field, source_field=source_field,
              default_source=default_source)
