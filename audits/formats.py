"""Mistral fine-tuning format checks for chat JSONL, line by line, streamed.

Pure module (stdlib only); no Django.

The rules are Mistral's (``mistral-finetune``'s data loader and
``mistral_common``'s request validator in fine-tuning mode):

* every line is one JSON object with a non-empty ``messages`` list;
* each message is an object whose ``role`` is system, user, assistant or tool;
* system, user and tool messages have string ``content`` — a user message's
  not empty or blank (a system prompt or a tool result may be empty); an
  assistant message has non-blank string ``content`` or ``tool_calls`` (or both);
* ``tool_calls`` appear only on assistant messages; each call has a 9-character
  ``id`` of a-z, A-Z, 0-9 and a ``function`` with a ``name`` (a-z, A-Z, 0-9,
  ``_``, ``-``; at most 64) and string ``arguments``;
* the tool calls of an assistant message are answered by the tool messages
  right after it, one per call, each with the ``tool_call_id`` of its call
  (only the final assistant message may leave its calls unanswered);
* roles follow Mistral's order (after user: user, assistant or system; after
  assistant: assistant, user or tool; after tool: tool or assistant; after
  system: system, user or assistant);
* ``weight``, when given on an assistant message, is 0 or 1, and at least one
  assistant message carries loss (has no ``weight: 0``);
* the last message is from the assistant;
* a top-level ``tools`` list, when given, holds ``{"type": "function",
  "function": {"name", "description", "parameters": {…}}}`` entries.

Reading never holds more than one line (capped at ``max_line_bytes``) in
memory, so a 1 GB file — or a 1 GB file with no newline at all — is fine.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any, TypeGuard

ROLES = ("system", "user", "assistant", "tool")
_ROLE_SET = frozenset(ROLES)
_ALLOWED_NEXT = {
    "system": frozenset({"system", "user", "assistant"}),
    "user": frozenset({"user", "assistant", "system"}),
    "assistant": frozenset({"assistant", "user", "tool"}),
    "tool": frozenset({"tool", "assistant"}),
}


@dataclass(frozen=True)
class _Identifier:
    """A kind of name Mistral checks against a pattern, and how an error says what it must be."""

    pattern: re.Pattern[str]
    rule: str


_TOOL_CALL_ID = _Identifier(re.compile(r"[a-zA-Z0-9]{9}"), "9 characters of a-z, A-Z, 0-9")
_FUNCTION_NAME = _Identifier(re.compile(r"[a-zA-Z0-9_-]{1,64}"), "1–64 characters of a-z, A-Z, 0-9, _ or -")

#: Lines longer than this are reported and skipped without being read whole.
DEFAULT_MAX_LINE_BYTES = 8 * 1024 * 1024
#: Problem details kept per line (every problem is still counted): past a few, more details of one
#: broken line add nothing useful, and a line of 100 000 broken messages must not become 100 000 strings.
MAX_ERRORS_PER_LINE = 5
_READ_CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class FormatError:
    """One problem, located: ``line`` is 1-based; 0 means the file as a whole."""

    line: int
    detail: str  # human-readable and self-contained: "line 12: messages[2].role …"


@dataclass(frozen=True, slots=True)
class RawLine:
    """One physical line of a JSONL file, as bytes without its newline."""

    number: int
    data: bytes
    ended_with_newline: bool
    overlong: bool = False  # longer than max_line_bytes: ``data`` holds only the start


@dataclass(slots=True)
class Problems:
    """Problems found, all counted; only the first ``keep`` are kept as details (None: all)."""

    keep: int | None = MAX_ERRORS_PER_LINE
    details: list[str] = field(default_factory=list)
    count: int = 0

    def append(self, detail: str) -> None:
        self.count += 1
        if self.keep is None or len(self.details) < self.keep:
            self.details.append(detail)


@dataclass(slots=True)
class CheckedLine:
    """A line after parsing and checking."""

    number: int
    record: Any = None  # the parsed JSON value (any JSON type), None when it did not parse
    parsed: bool = False
    text: str = ""  # the decoded line (invalid UTF-8 replaced), for scanning unparsable lines
    problems: Problems = field(default_factory=Problems)
    blank: bool = False

    @property
    def errors(self) -> list[str]:
        """The first MAX_ERRORS_PER_LINE problems, as details without the "line N: " prefix."""
        return self.problems.details

    @property
    def error_count(self) -> int:
        """Every problem of the line, also those past the details kept."""
        return self.problems.count

    @property
    def valid(self) -> bool:
        return not self.problems.count

    @property
    def is_example(self) -> bool:
        """A JSON object with a non-empty messages list: worth deduplicating and grading."""
        return (
            isinstance(self.record, dict)
            and isinstance(self.record.get("messages"), list)
            and bool(self.record["messages"])
        )

    def format_errors(self) -> list[FormatError]:
        return [FormatError(self.number, f"line {self.number}: {detail}") for detail in self.errors]


# --------------------------------------------------------------------------- reading


def iter_raw_lines(
    stream: IO[bytes],
    *,
    first_line_number: int = 1,
    end_offset: int | None = None,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> Iterator[RawLine]:
    """Physical lines of a binary stream, from its current position.

    ``end_offset`` stops before the line that starts at or after that byte
    offset (for reading one slice of a file in a worker).  A final line without
    a newline is still a line; an empty file has none.
    """
    number = first_line_number
    while True:
        if end_offset is not None and stream.tell() >= end_offset:
            return
        data = stream.readline(max_line_bytes + 1)
        if not data:
            return
        if data.endswith(b"\n"):
            yield RawLine(number, data[:-1], True)
        elif len(data) <= max_line_bytes:
            yield RawLine(number, data, False)  # the last line, without a newline
        else:
            # Too long to hold: keep the start for the report, skip to the newline.
            ended = False
            while True:
                chunk = stream.readline(_READ_CHUNK)
                if not chunk:
                    break
                if chunk.endswith(b"\n"):
                    ended = True
                    break
            yield RawLine(number, data[:max_line_bytes], ended, overlong=True)
        number += 1


# --------------------------------------------------------------------------- checking


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _shape(value: object) -> str:
    """What a value is, never what it says: a field that should hold a role or an id may hold
    anything a person typed, PII included, and error details end up in reports, logs and the admin."""
    if isinstance(value, str):
        return f"a {len(value)}-character string"
    if isinstance(value, (list, dict)):
        return f"{_describe(value)} of {len(value)} item{'s' if len(value) != 1 else ''}"
    return _describe(value)


# Lone surrogates can only come from \uD800-\uDFFF escapes (strict UTF-8 decoding never yields one),
# so lines without such an escape skip the walk.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_SURROGATE = re.compile("[\ud800-\udfff]")
# Keys of the chat format; other keys are named by position only (a key may be PII too).
_KNOWN_KEYS = frozenset({
    "messages", "role", "content", "tool_calls", "tool_call_id", "id", "type", "function", "name",
    "arguments", "weight", "tools", "parameters", "description",
})


def _path_step(path: str, key: object, index: int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    name = key if key in _KNOWN_KEYS else f"<key {index + 1}>"
    return f"{path}.{name}" if path else str(name)


def replace_lone_surrogates(record: Any) -> tuple[Any, str | None, int]:
    """``record`` with every unpaired UTF-16 surrogate (in values and keys) replaced by U+FFFD.

    JSON allows ``"\\ud800"`` but such a string cannot be encoded as UTF-8: hashing, scanning or
    storing it (Postgres jsonb refuses it) would fail. Returns (record, path of the first string that
    had one, strings changed). Changes the parsed containers in place; iterative, for deep values.
    """
    if isinstance(record, str):
        if _SURROGATE.search(record) is None:
            return record, None, 0
        return _SURROGATE.sub("\ufffd", record), "the value", 1
    first: str | None = None
    changed = 0
    stack: list[tuple[Any, str]] = [(record, "")]
    while stack:
        container, path = stack.pop()
        if isinstance(container, dict):
            if any(isinstance(key, str) and _SURROGATE.search(key) for key in container):
                items = list(container.items())
                container.clear()
                for key, item in items:
                    if _SURROGATE.search(key):
                        changed += 1
                        first = first or f"{path or 'the object'} has a key that"
                        key = _SURROGATE.sub("\ufffd", key)
                    container[key] = item
            slots = [(key, _path_step(path, key, index)) for index, key in enumerate(container)]
        else:
            slots = [(index, _path_step(path, index, index)) for index in range(len(container))]
        children = []
        for key, where in slots:
            item = container[key]
            if isinstance(item, str):
                if _SURROGATE.search(item):
                    container[key] = _SURROGATE.sub("\ufffd", item)
                    changed += 1
                    first = first or where
            elif isinstance(item, (dict, list)):
                children.append((item, where))
        stack.extend(reversed(children))
    return record, first, changed


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(literal: str) -> float:
    value = float(literal)
    if math.isinf(value):
        # 1e999 is grammatical JSON, but read as infinity it can only be written back as Infinity, which is
        # not: a scrubbed copy would break. Its digits are not repeated (a number can be PII).
        raise ValueError("a number too large for a 64-bit float (it reads as infinity)")
    return value


def _object_without_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    record = dict(pairs)
    if len(record) != len(pairs):
        # The first value would be lost to every reader, and hidden from the PII scan of the parsed line.
        counts: dict[str, int] = {}
        for key, _ in pairs:
            counts[key] = counts.get(key, 0) + 1
        repeated = next(key for key, count in counts.items() if count > 1)
        name = f'"{repeated}"' if repeated in _KNOWN_KEYS else "a key"  # other keys may be PII
        raise ValueError(f"an object has {name} twice (JSON readers keep only the last value)")
    return record


# One decoder for every line: json.loads with options builds a new one per call.
_DECODER = json.JSONDecoder(
    parse_constant=_refuse_constant, parse_float=_finite_float, object_pairs_hook=_object_without_repeated_keys
)


def parse_json(text: str) -> Any:
    """JSON as the audit reads it: NaN, Infinity, numbers that overflow to infinity and keys repeated
    in one object are refused (ValueError), so what it accepts is what every reader sees and can be
    encoded again as JSON."""
    return _DECODER.decode(text)


def check_line(
    raw: RawLine, *, first_in_file: bool | None = None, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
) -> CheckedLine:
    """Decode, parse and check one line; every problem is counted, the first few become detail
    strings (see :class:`Problems`).

    ``first_in_file`` (default: line number 1) allows a UTF-8 byte-order mark.
    """
    checked = CheckedLine(raw.number)
    data = raw.data
    if data.endswith(b"\r"):
        data = data[:-1]  # CRLF files are common and harmless
    if first_in_file is None:
        first_in_file = raw.number == 1
    if first_in_file and data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]  # a UTF-8 byte-order mark is an editor artefact, not content
    if raw.overlong:
        checked.text = data.decode("utf-8", errors="replace")
        checked.problems.append(
            f"line is longer than {max_line_bytes // (1024 * 1024)} MiB; it was skipped "
            "(a single example that large is not usable for fine-tuning)"
        )
        return checked
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        text = data.decode("utf-8", errors="replace")
        checked.problems.append(
            f"not valid UTF-8 (byte 0x{data[error.start]:02x} at byte {error.start + 1}); "
            "save the file as UTF-8"
        )
    checked.text = text
    if not text.strip():
        checked.blank = True
        checked.problems.append("blank line; every line must be one JSON object")
        return checked
    parsed, record = _parse_record(text, raw, checked.problems)
    if parsed:
        checked.record = record
        checked.parsed = True
        _check_record(record, checked.problems)
    return checked


def _invalid_json_hint(text: str, *, ended_with_newline: bool) -> str:
    """What to add to an "invalid JSON" problem: the likely cause when the line shows one."""
    if "\r" in text:
        # A file with old-Mac line endings (CR only) reads as one line ("Extra data" after its first
        # record), without a final newline: the CRs explain both.
        return "; the line holds carriage returns (CR): the file seems to use CR (old Mac) line endings; convert them to LF"
    if not ended_with_newline:
        return "; the file ends without a newline here, so the last line looks truncated"
    return ""


def _parse_record(text: str, raw: RawLine, problems: Problems) -> tuple[bool, Any]:
    """(True, the JSON value) of a line, or (False, None) with the reason added to `problems`.
    Lone surrogates are replaced by U+FFFD (and reported), so the value can be stored and printed."""
    try:
        record = parse_json(text)
    except ValueError as error:
        position = getattr(error, "colno", None)
        reason = getattr(error, "msg", str(error))
        hint = _invalid_json_hint(text, ended_with_newline=raw.ended_with_newline)
        if position is None:
            problems.append(f"invalid JSON: {reason}{hint}")
        elif reason.endswith(" at"):  # json's "Unterminated string starting at" is finished by its position
            problems.append(f"invalid JSON: {reason} column {position}{hint}")
        else:
            problems.append(f"invalid JSON at column {position}: {reason}{hint}")
        return False, None
    except RecursionError:
        problems.append("invalid JSON: nested too deeply")
        return False, None
    if _SURROGATE_ESCAPE.search(text):
        record, where, changed = replace_lone_surrogates(record)
        if where is not None:
            more = f" (and {changed - 1} more string{'s' if changed > 2 else ''})" if changed > 1 else ""
            problems.append(
                f"{where} contains an unpaired UTF-16 surrogate{more}; it is not valid Unicode "
                "(it was read as U+FFFD)"
            )
    return True, record


def check_record(record: object) -> list[str]:
    """Every Mistral fine-tuning rule a parsed line breaks, as readable details (all of them;
    :func:`check_line` keeps only the first few of a line)."""
    problems = Problems(keep=None)
    _check_record(record, problems)
    return problems.details


def _check_record(record: object, errors: Problems) -> None:
    if not isinstance(record, dict):
        errors.append(f'expected a JSON object with a "messages" list, got {_describe(record)}')
        return
    if "messages" not in record:
        # Key names are not echoed: a key can be PII as easily as a value.
        errors.append(f'missing "messages" (the object has {len(record)} key{"s" if len(record) != 1 else ""})')
        return
    messages = record["messages"]
    if not isinstance(messages, list):
        errors.append(f'"messages" must be a list, got {_describe(messages)}')
        return
    if not messages:
        errors.append('"messages" is empty; an example needs at least a user and an assistant message')
        return
    if "tools" in record:
        _check_tools(record["tools"], errors)

    conversation = _Conversation()
    for index, message in enumerate(messages):
        role = _check_message(index, message, conversation, errors)
        conversation.previous_role = role

    last = messages[-1]
    last_role = last.get("role") if isinstance(last, dict) else None
    if isinstance(last_role, str) and last_role in _ROLE_SET and last_role != "assistant":
        errors.append(f"the last message must be from the assistant, got {last_role!r}")
    elif last_role == "assistant" and conversation.loss_bearing == 0:
        errors.append("no assistant message carries loss: every assistant message has weight 0")


@dataclass(slots=True)
class _Conversation:
    """What the check of one message needs to know about the messages before it."""

    previous_role: str | None = None
    pending_calls: dict[str, int] = field(default_factory=dict)  # tool call id → index of the assistant message
    calling_message: int | None = None
    loss_bearing: int = 0  # assistant messages whose weight is not 0


def _check_message(index: int, message: object, conversation: _Conversation, errors: Problems) -> str | None:
    """Check messages[index]; its role when it has a valid one, else None."""
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        errors.append(f"{where} must be an object, got {_describe(message)}")
        return None
    role = message.get("role")
    if role is None:
        errors.append(f'{where} has no "role"')
        return None
    if not isinstance(role, str) or role not in _ROLE_SET:
        errors.append(f"{where}.role is {_shape(role)}, not one of {', '.join(ROLES)}")
        return None
    if conversation.pending_calls and role != "tool":
        unanswered = len(conversation.pending_calls)
        errors.append(
            f"messages[{conversation.calling_message}] (assistant) makes {unanswered} tool "
            f"call{'s' if unanswered != 1 else ''} that no tool message answers before {where}"
        )
        conversation.pending_calls.clear()
    previous_role = conversation.previous_role
    if previous_role is not None and role not in _ALLOWED_NEXT[previous_role]:
        errors.append(f"{where}: a {role} message cannot follow a {previous_role} message")
    if message.get("tool_calls") is not None and role != "assistant":
        errors.append(f"{where}.tool_calls is only allowed on assistant messages (role is {role!r})")
    if role == "assistant":
        _check_assistant_message(index, where, message, conversation, errors)
    else:
        content = message.get("content")
        if "content" not in message:
            errors.append(f'{where} ({role}) has no "content"; it must be a string')
        elif not isinstance(content, str):
            errors.append(f"{where}.content must be a string, got {_describe(content)}")
        elif role == "user" and not content.strip():
            # Nothing to answer: the assistant turn after it would be learnt as a reply to silence.
            errors.append(f"{where} (user) needs non-empty content")
        if "weight" in message:
            errors.append(f"{where}.weight is only allowed on assistant messages")
    if role == "tool":
        _check_tool_message(where, message, conversation.pending_calls, previous_role, errors)
    return role


def _check_assistant_message(
    index: int, where: str, message: dict[str, Any], conversation: _Conversation, errors: Problems
) -> None:
    content = message.get("content")
    tool_calls = message.get("tool_calls")
    has_calls = isinstance(tool_calls, list) and bool(tool_calls)
    if content is not None and not isinstance(content, str):
        errors.append(f"{where}.content must be a string, got {_describe(content)}")
    elif not (isinstance(content, str) and content.strip()) and not has_calls:
        errors.append(f"{where} (assistant) needs non-empty content or tool_calls")
    if tool_calls is not None:
        call_ids = _check_tool_calls(where, tool_calls, errors)
        conversation.pending_calls = {call_id: index for call_id in call_ids}
        conversation.calling_message = index
    weight = message.get("weight")
    if weight is not None and (isinstance(weight, bool) or weight not in (0, 1)):
        errors.append(f"{where}.weight must be 0 or 1, got {_shape(weight)}")
    # An invalid weight is its own error, not a weight of 0: it must not also be reported
    # as "no assistant message carries loss".
    if weight is None or weight != 0 or isinstance(weight, bool):
        conversation.loss_bearing += 1


def _check_identifier(value: object, identifier: _Identifier, where: str, errors: Problems) -> TypeGuard[str]:
    """Whether `value` is a string `identifier` accepts; when it is not, says so at `where`."""
    if isinstance(value, str) and identifier.pattern.fullmatch(value) is not None:
        return True
    errors.append(f"{where} is {_shape(value)}; it must be {identifier.rule}")
    return False


def _check_tool_calls(where: str, tool_calls: object, errors: Problems) -> list[str]:
    if not isinstance(tool_calls, list):
        errors.append(f"{where}.tool_calls must be a list, got {_describe(tool_calls)}")
        return []
    call_ids: list[str] = []
    for call_index, call in enumerate(tool_calls):
        call_where = f"{where}.tool_calls[{call_index}]"
        if not isinstance(call, dict):
            errors.append(f"{call_where} must be an object, got {_describe(call)}")
            continue
        call_id = call.get("id")
        if _check_identifier(call_id, _TOOL_CALL_ID, f"{call_where}.id", errors):
            call_ids.append(call_id)
        function = call.get("function")
        if not isinstance(function, dict):
            errors.append(f'{call_where} needs a "function" object with "name" and "arguments"')
            continue
        _check_identifier(function.get("name"), _FUNCTION_NAME, f"{call_where}.function.name", errors)
        arguments = function.get("arguments")
        if not isinstance(arguments, str):
            errors.append(f"{call_where}.function.arguments must be a JSON-encoded string, got {_describe(arguments)}")
        else:
            # Mistral parses the arguments; so does scrubbing (to replace PII without breaking them).
            try:
                parse_json(arguments)
            except ValueError as error:
                errors.append(
                    f"{call_where}.function.arguments is not valid JSON "
                    f"({getattr(error, 'msg', error)}"
                    + (f" at column {error.colno})" if isinstance(error, json.JSONDecodeError) else ")")
                )
            except RecursionError:
                errors.append(f"{call_where}.function.arguments is not valid JSON (nested too deeply)")
    return call_ids


def _check_tool_message(
    where: str,
    message: dict[str, Any],
    pending_calls: dict[str, int],
    previous_role: str | None,
    errors: Problems,
) -> None:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str):
        errors.append(f'{where} (tool) needs a "tool_call_id" naming the call it answers')
    elif _check_identifier(call_id, _TOOL_CALL_ID, f"{where}.tool_call_id", errors):
        if call_id in pending_calls:
            del pending_calls[call_id]
        else:
            errors.append(f"{where}.tool_call_id does not answer a tool call of the assistant message before it")
        return
    if previous_role not in ("assistant", "tool"):
        errors.append(f"{where} (tool) must follow an assistant message with tool_calls")


def _check_tools(tools: object, errors: Problems) -> None:
    if not isinstance(tools, list):
        errors.append(f'"tools" must be a list, got {_describe(tools)}')
        return
    for index, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict):
            errors.append(f'tools[{index}] must be {{"type": "function", "function": {{…}}}}')
            continue
        _check_identifier(function.get("name"), _FUNCTION_NAME, f"tools[{index}].function.name", errors)
        if not isinstance(function.get("parameters"), dict):
            errors.append(f"tools[{index}].function.parameters must be a JSON Schema object")


# --------------------------------------------------------------------------- text of a line


def is_long_integer(value: object) -> bool:
    """A JSON integer of 8–19 digits: long enough to be a card, phone, SSN or account number.

    PII is not always quoted (``{"card": 4111111111111111}``), so the audit scans such numbers and
    the scrub replaces them; shorter ones (counts, ids, years) cannot be any PII type here.
    """
    return isinstance(value, int) and not isinstance(value, bool) and 10_000_000 <= abs(value) < 10**19


def iter_texts(value: object) -> Iterator[str]:
    """Every piece of a parsed JSON value that can hold PII, in document order: string values,
    object keys (other than the chat format's own), and long integers (:func:`is_long_integer`) as their digits.

    Iterative rather than recursive: it runs once per line of every audit,
    and deep nesting must not hit the recursion limit.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            for key, child in reversed(item.items()):
                stack.append(child)
                if key not in _KNOWN_KEYS:  # the format's own keys hold no PII; skip scanning them
                    stack.append(key)
        elif isinstance(item, list):
            stack.extend(reversed(item))
        elif is_long_integer(item):
            yield str(item)


# The rest of a JSON string literal after its opening quote: escapes and other characters, the closing quote.
_STRING_REST = re.compile(r'[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)


def split_strings(text: str) -> list[tuple[str, str | None]]:
    """A line that did not parse, in pieces: (the raw piece, its value when it is a complete JSON string
    literal, else None). So a line the audit cannot parse is still read as a parser reads its strings:
    PII written with escapes (``"jo\\u0040example.com"``) is found, and a scrub can write each string
    back as a JSON string instead of replacing text in the middle of an escape. A piece that starts
    with '"' is (the start of) a string; the others are outside any. Linear: an unterminated string ends
    the splitting, as it runs to the end of the line.
    """
    pieces: list[tuple[str, str | None]] = []
    position = 0
    while (quote := text.find('"', position)) != -1:
        if quote > position:
            pieces.append((text[position:quote], None))
            position = quote
        rest = _STRING_REST.match(text, quote + 1)
        if rest is None:
            break
        literal = text[quote : rest.end()]
        try:
            value: str | None = _SURROGATE.sub("\ufffd", json.loads(literal, strict=False))
        except ValueError:  # e.g. an invalid escape: left as text
            value = None
        pieces.append((literal, value))
        position = rest.end()
    if position < len(text):
        pieces.append((text[position:], None))
    return pieces


def unparsed_text(text: str) -> str:
    """What the PII scan reads of a line that did not parse: its strings decoded (:func:`split_strings`),
    the rest as it is, joined by "\\x00" (which no detector matches across)."""
    if '"' not in text:
        return text
    return "\x00".join(raw if value is None else value for raw, value in split_strings(text))


def conversation_text(record: dict[str, Any]) -> str:
    """The words of an example: user, assistant and tool message contents and tool-call arguments,
    in order.

    What duplicates and difficulty are judged on (roles and ids are not). System messages are left
    out: a dataset often gives every example the same long system prompt, which would make every
    pair of examples look alike and every example look long.
    """
    parts: list[str] = []
    for message in record.get("messages") or ():
        if not isinstance(message, dict) or message.get("role") == "system":
            continue
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        tool_calls = message.get("tool_calls")
        if isinstance(tool_calls, list):
            for call in tool_calls:
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict):
                    parts.append(f"{function.get('name', '')} {function.get('arguments', '')}")
    return "\n".join(parts)
