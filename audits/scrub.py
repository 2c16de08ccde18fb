"""Write a copy of a chat JSONL with its PII replaced.

Pure module (stdlib + :mod:`audits.pii`); no Django.

Two styles:

* ``placeholder`` — every occurrence becomes its type: ``[EMAIL]``, ``[PHONE]``…
* ``pseudonym`` — the same value always becomes the same numbered stand-in
  within the file (``<EMAIL_1>``, ``<EMAIL_2>``…), so a conversation that
  mentions one address three times still reads as one person.  Values are
  compared canonically: e-mails case-insensitively, numbers by their digits.

Replacement happens inside JSON string values, object keys and long integers
(which become placeholder strings), and tool-call ``arguments`` are parsed and
encoded again; the line is serialised again, so every line that was valid JSON
stays valid JSON; a line without PII
is copied byte for byte.  Lines that are not JSON are scrubbed as text, except that each complete
JSON string in them is decoded, scrubbed and written back as a JSON string.  The
output has exactly as many lines as the input (an over-long line, which the
audit skips, becomes an empty line), so line numbers keep pointing at the
same examples.  Auditing the output finds none of the scrubbed types: each
string is rescanned after replacement until nothing is left.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from audits.formats import (
    DEFAULT_MAX_LINE_BYTES,
    RawLine,
    check_line,
    is_long_integer,
    iter_raw_lines,
    parse_json,
    split_strings,
)
from audits.pii import DEFAULT_PHONE_REGIONS, PII_TYPES, normalised, scan_text, spelt_out_email_as_written

ScrubMode = Literal["placeholder", "pseudonym"]
SCRUB_MODES: tuple[str, ...] = ("placeholder", "pseudonym")
_MAX_ROUNDS = 4  # a replacement can expose a new match only at its edges; this settles it


def placeholder_for(pii_type: str) -> str:
    return f"[{pii_type.upper()}]"


def _canonical(value: str, pii_type: str) -> str:
    value = normalised(value)  # "jo\u200b@x.com" is "jo@x.com": one pseudonym
    if pii_type == "email":
        return spelt_out_email_as_written(value).casefold()  # "jo [at] x [dot] com" is "jo@x.com"
    if pii_type in ("phone", "credit_card", "ssn"):
        return "".join(char for char in value if char.isdigit())
    if pii_type == "iban":
        return value.replace(" ", "").upper()
    if pii_type == "ip_address":
        return value.lower()
    return value


@dataclass
class PseudonymTable:
    """The same (type, value) → the same ``<TYPE_n>`` for the life of the table."""

    _assigned: dict[tuple[str, str], str] = field(default_factory=dict)
    _next: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PII_TYPES, 1))

    def pseudonym(self, value: str, pii_type: str) -> str:
        key = (pii_type, _canonical(value, pii_type))
        name = self._assigned.get(key)
        if name is None:
            name = f"<{pii_type.upper()}_{self._next[pii_type]}>"
            self._next[pii_type] += 1
            self._assigned[key] = name
        return name

    def __len__(self) -> int:
        return len(self._assigned)


@dataclass
class Scrubber:
    """Replaces PII in strings; keeps counts and (for pseudonyms) the table."""

    mode: ScrubMode = "placeholder"
    types: frozenset[str] = frozenset(PII_TYPES)
    phone_regions: tuple[str, ...] = DEFAULT_PHONE_REGIONS
    pseudonyms: PseudonymTable = field(default_factory=PseudonymTable)
    replaced: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PII_TYPES, 0))

    def __post_init__(self) -> None:
        if self.mode not in SCRUB_MODES:
            raise ValueError(f"scrub mode must be one of {', '.join(SCRUB_MODES)}, got {self.mode!r}")
        unknown = set(self.types) - set(PII_TYPES)
        if unknown:
            raise ValueError(f"unknown PII types {sorted(unknown)}; known: {', '.join(PII_TYPES)}")

    def scrub_text(self, text: str, *, quoted: bool = False) -> str:
        """`text` with its PII replaced; ``quoted`` writes each replacement as a JSON string (for PII
        outside any string of a JSON line, i.e. a bare number, as :meth:`scrub_value` does)."""
        for _ in range(_MAX_ROUNDS):
            matches = scan_text(text, types=self.types, phone_regions=self.phone_regions)
            if not matches:
                return text
            pieces: list[str] = []
            position = 0
            for match in matches:
                value = text[match.start : match.end]
                pieces.append(text[position : match.start])
                if self.mode == "pseudonym":
                    replacement = self.pseudonyms.pseudonym(value, match.type)
                else:
                    replacement = placeholder_for(match.type)
                pieces.append(f'"{replacement}"' if quoted else replacement)  # neither holds '"' or '\\'
                self.replaced[match.type] += 1
                position = match.end
            pieces.append(text[position:])
            text = "".join(pieces)
        return text

    def scrub_value(self, value: Any) -> Any:
        """A copy of a parsed JSON value with its PII replaced wherever the audit looks for it
        (:func:`audits.formats.iter_texts`): string values, object keys (renamed), and long integers
        (replaced by a placeholder string). Tool-call ``arguments`` are JSON inside a string: they are
        parsed, scrubbed and encoded again, so a replaced number cannot leave them unparsable.

        Iterative (deeply nested lines must not hit the recursion limit), in document order so
        pseudonyms are numbered in reading order.
        """
        root = [value]
        stack: list[tuple[Any, Any, bool]] = [(root, 0, False)]  # (container, key, holds arguments)
        while stack:
            container, key, is_arguments = stack.pop()
            item = container[key]
            if isinstance(item, str):
                container[key] = self._scrub_arguments(item) if is_arguments else self.scrub_text(item)
            elif is_long_integer(item):
                digits = str(item)
                scrubbed = self.scrub_text(digits)
                if scrubbed != digits:
                    container[key] = scrubbed
            elif isinstance(item, list):
                list_copy = list(item)
                container[key] = list_copy
                stack.extend((list_copy, index, False) for index in reversed(range(len(list_copy))))
            elif isinstance(item, dict):
                dict_copy: dict[str, Any] = {}
                for child_key, child in item.items():
                    new_key = self.scrub_text(child_key)
                    while new_key in dict_copy or (new_key != child_key and new_key in item):
                        new_key += "_"  # two keys scrubbed to one placeholder stay two keys
                    dict_copy[new_key] = child
                container[key] = dict_copy
                stack.extend((dict_copy, child_key, child_key == "arguments") for child_key in reversed(list(dict_copy)))
        return root[0]

    def scrub_unparsed(self, text: str) -> str:
        """A line that is not JSON (or too deep to re-encode), string by string (see
        :func:`audits.formats.split_strings`): a string with PII is written back as a JSON string, the
        rest is scrubbed as text — so escapes stay escapes and escaped PII is replaced too."""
        if '"' not in text:
            return self.scrub_text(text)
        # In a line that looks like JSON, PII outside the strings is a bare number: replaced by a string,
        # the line keeps the shape it had (a repeated key still parses as JSON, as before the scrub).
        json_like = text.lstrip()[:1] in ("{", "[")
        pieces = []
        for raw, value in split_strings(text):
            if value is None:
                pieces.append(self.scrub_text(raw, quoted=json_like and not raw.startswith('"')))
                continue
            scrubbed = self.scrub_text(value)
            pieces.append(raw if scrubbed == value else json.dumps(scrubbed, ensure_ascii=False))
        return "".join(pieces)

    def _scrub_arguments(self, text: str) -> str:
        try:
            parsed = parse_json(text)
        except (ValueError, RecursionError):
            return self.scrub_text(text)  # not JSON (the audit reports it): scrubbed as text
        if isinstance(parsed, str):
            return self.scrub_text(text)
        return json.dumps(self.scrub_value(parsed), ensure_ascii=False)


@dataclass
class ScrubResult:
    source: str
    destination: str
    mode: str
    lines: int
    lines_changed: int
    replaced: dict[str, int]
    distinct_values: int  # pseudonym mode: how many different values were replaced
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "destination": self.destination,
            "mode": self.mode,
            "lines": self.lines,
            "lines_changed": self.lines_changed,
            "replaced": dict(self.replaced),
            "distinct_values": self.distinct_values,
            "notes": list(self.notes),
        }


def _scrubbed_line(scrubber: Scrubber, raw: RawLine, *, max_line_bytes: int, notes: list[str]) -> bytes | None:
    """The line with its PII replaced (the JSON re-encoded), or None when it holds none to replace."""
    checked = check_line(raw, max_line_bytes=max_line_bytes)
    before = sum(scrubber.replaced.values())
    if checked.parsed:
        try:
            output = json.dumps(scrubber.scrub_value(checked.record), ensure_ascii=False).encode("utf-8")
        except RecursionError:  # too deep for the JSON encoder: scrubbed as text instead
            notes.append(f"line {raw.number}: nested too deeply to re-encode; scrubbed as text")
            output = scrubber.scrub_unparsed(checked.text).encode("utf-8")
    else:
        output = scrubber.scrub_unparsed(checked.text).encode("utf-8")
    return None if sum(scrubber.replaced.values()) == before else output


def scrub_file(
    *,
    source: str | os.PathLike[str],
    destination: str | os.PathLike[str],
    mode: ScrubMode = "placeholder",
    types: Iterable[str] | None = None,
    phone_regions: Sequence[str] = DEFAULT_PHONE_REGIONS,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    progress: Callable[[int, int], None] | None = None,
) -> ScrubResult:
    """Stream ``source`` to ``destination`` with PII replaced (see the module doc).

    The output is written to a temporary file beside ``destination`` and moved
    into place at the end, so a failed run never leaves half a dataset.
    """
    scrubber = Scrubber(mode=mode, types=frozenset(PII_TYPES if types is None else types), phone_regions=tuple(phone_regions))
    source_path = os.fspath(source)
    destination_path = Path(destination)
    if destination_path.resolve() == Path(source_path).resolve():
        raise ValueError("the scrubbed copy must not overwrite the source file")
    size = os.path.getsize(source_path)
    temporary = destination_path.with_name(destination_path.name + ".partial")
    lines = 0
    changed = 0
    notes: list[str] = []
    try:
        with open(source_path, "rb") as reader, open(temporary, "wb") as writer:
            for raw in iter_raw_lines(reader, max_line_bytes=max_line_bytes):
                lines += 1
                if raw.overlong:
                    notes.append(f"line {raw.number}: longer than {max_line_bytes} bytes; written as an empty line")
                    writer.write(b"\n")
                    changed += 1
                    continue
                output = _scrubbed_line(scrubber, raw, max_line_bytes=max_line_bytes, notes=notes)
                if output is None:
                    output = raw.data  # untouched: keep the original bytes
                else:
                    changed += 1
                writer.write(output + b"\n")
                if progress is not None and lines % 10000 == 0:
                    progress(reader.tell(), size)
        os.replace(temporary, destination_path)
    finally:
        if temporary.exists():
            temporary.unlink()
    if progress is not None:
        progress(size, size)
    return ScrubResult(
        source=source_path,
        destination=str(destination_path),
        mode=mode,
        lines=lines,
        lines_changed=changed,
        replaced={t: n for t, n in scrubber.replaced.items()},
        distinct_values=len(scrubber.pseudonyms),
        notes=notes,
    )
