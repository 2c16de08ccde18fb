"""Mistral fine-tuning format checks: each broken input gives a line-numbered, readable error."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audits.formats import (
    MAX_ERRORS_PER_LINE,
    RawLine,
    check_line,
    check_record,
    conversation_text,
    iter_raw_lines,
    iter_texts,
)
from audits.report import audit_file

USER = {"role": "user", "content": "What is the weather in Paris?"}
ANSWER = {"role": "assistant", "content": "Sunny, 21 °C."}
CALL = {
    "role": "assistant",
    "content": "",
    "tool_calls": [{"id": "D681PevKs", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}],
}
TOOL_REPLY = {"role": "tool", "tool_call_id": "D681PevKs", "name": "get_weather", "content": "{\"temp\": 21}"}


def errors_of(record: object) -> list[str]:
    return check_record(record)


def test_plain_and_tool_calling_examples_are_valid() -> None:
    assert errors_of({"messages": [USER, ANSWER]}) == []
    assert errors_of({"messages": [{"role": "system", "content": "Be brief."}, USER, CALL, TOOL_REPLY, ANSWER]}) == []
    # The final assistant message may end on calls the data does not answer.
    assert errors_of({"messages": [USER, CALL]}) == []
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "d", "parameters": {"type": "object"}}}]
    assert errors_of({"messages": [USER, CALL, TOOL_REPLY, ANSWER], "tools": tools}) == []


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ([1, 2], 'expected a JSON object with a "messages" list, got an array'),
        ("hello", 'expected a JSON object with a "messages" list, got a string'),
        ({"prompt": "x", "completion": "y"}, 'missing "messages" (the object has 2 keys)'),
        ({"messages": {"role": "user"}}, '"messages" must be a list, got an object'),
        ({"messages": []}, '"messages" is empty'),
        ({"messages": [USER, "hi"]}, "messages[1] must be an object, got a string"),
        ({"messages": [{"content": "x"}, ANSWER]}, 'messages[0] has no "role"'),
        ({"messages": [USER, {"role": "bot", "content": "hi"}]}, "messages[1].role is a 3-character string, not one of system, user, assistant, tool"),
        ({"messages": [{"role": "user", "content": ["a"]}, ANSWER]}, "messages[0].content must be a string, got an array"),
        ({"messages": [{"role": "user"}, ANSWER]}, 'messages[0] (user) has no "content"; it must be a string'),
        ({"messages": [USER, {"role": "assistant", "content": " "}]}, "messages[1] (assistant) needs non-empty content or tool_calls"),
        ({"messages": [{"role": "user", "content": ""}, ANSWER]}, "messages[0] (user) needs non-empty content"),
        ({"messages": [USER, ANSWER, {"role": "user", "content": " \n\t"}, ANSWER]}, "messages[2] (user) needs non-empty content"),
        ({"messages": [{**USER, "tool_calls": CALL["tool_calls"]}, ANSWER]}, "messages[0].tool_calls is only allowed on assistant messages (role is 'user')"),
        ({"messages": [USER, {**CALL, "tool_calls": [{**CALL["tool_calls"][0], "id": "call_123"}]}, TOOL_REPLY, ANSWER]}, "messages[1].tool_calls[0].id is a 8-character string; it must be 9 characters of a-z, A-Z, 0-9"),
        ({"messages": [USER, CALL, {**TOOL_REPLY, "tool_call_id": "Zz9Zz9Zz9"}, ANSWER]}, "messages[2].tool_call_id does not answer a tool call of the assistant message before it"),
        ({"messages": [USER, CALL, ANSWER]}, "messages[1] (assistant) makes 1 tool call that no tool message answers before messages[2]"),
        ({"messages": [USER, {**CALL, "tool_calls": [{"id": "D681PevKs", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]}, TOOL_REPLY, ANSWER]}, "messages[1].tool_calls[0].function.arguments must be a JSON-encoded string, got an object"),
        ({"messages": [USER, {**ANSWER, "weight": 0.5}]}, "messages[1].weight must be 0 or 1, got a number"),
        ({"messages": [USER, {**ANSWER, "weight": 0}]}, "no assistant message carries loss: every assistant message has weight 0"),
        ({"messages": [USER, ANSWER, USER]}, "the last message must be from the assistant, got 'user'"),
        ({"messages": [USER, TOOL_REPLY, ANSWER]}, "messages[1]: a tool message cannot follow a user message"),
        ({"messages": [USER, ANSWER], "tools": [{"type": "function", "function": {"name": "bad name!", "parameters": {}}}]}, "tools[0].function.name is a 9-character string; it must be 1–64 characters of a-z, A-Z, 0-9, _ or -"),
    ],
)
def test_each_rule_names_the_problem(record: object, expected: str) -> None:
    assert expected in " | ".join(errors_of(record))


def raw(data: bytes, *, number: int = 12, ended_with_newline: bool = True) -> RawLine:
    return RawLine(number, data, ended_with_newline)


def test_a_line_that_is_not_json() -> None:
    checked = check_line(raw(b'{"messages": [}'))
    assert not checked.valid and not checked.parsed
    assert checked.format_errors()[0].detail.startswith("line 12: invalid JSON at column 15:")


def test_a_truncated_last_line_says_so() -> None:
    checked = check_line(raw(b'{"messages": [{"role": "user", "cont', ended_with_newline=False))
    assert checked.errors[0] == (
        "invalid JSON: Unterminated string starting at column 32; "
        "the file ends without a newline here, so the last line looks truncated"
    )


def test_non_utf8_bytes_are_reported_with_their_position_and_still_parsed() -> None:
    line = json.dumps({"messages": [USER, ANSWER]}).encode().replace(b"Paris", b"Par\xe9s")
    checked = check_line(raw(line, number=3))
    position = line.index(b"\xe9") + 1
    assert checked.format_errors()[0].detail == f"line 3: not valid UTF-8 (byte 0xe9 at byte {position}); save the file as UTF-8"
    assert checked.parsed and "Par\ufffds" in checked.record["messages"][0]["content"]


def test_blank_lines_nan_and_bom() -> None:
    assert check_line(raw(b"   ")).errors == ["blank line; every line must be one JSON object"]
    assert "NaN is not valid JSON" in check_line(raw(b'{"messages": NaN}')).errors[0]
    good = json.dumps({"messages": [USER, ANSWER]}).encode()
    assert check_line(RawLine(1, b"\xef\xbb\xbf" + good + b"\r", True)).valid  # BOM and CRLF are harmless
    assert not check_line(RawLine(2, b"\xef\xbb\xbf" + good, True)).valid  # a BOM mid-file is not


def test_reading_is_line_by_line_and_caps_overlong_lines() -> None:
    stream = io.BytesIO(b"a\n" + b"x" * 100 + b"\nb\nlast")
    lines = list(iter_raw_lines(stream, max_line_bytes=10))
    assert [(line.number, line.data[:3], line.ended_with_newline, line.overlong) for line in lines] == [
        (1, b"a", True, False),
        (2, b"xxx", True, True),
        (3, b"b", True, False),
        (4, b"las", False, False),
    ]
    assert len(lines[1].data) == 10
    assert "longer than" in check_line(lines[1], max_line_bytes=10).errors[0]
    assert list(iter_raw_lines(io.BytesIO(b""))) == []


def test_audit_reports_every_bad_input_with_its_line_number(tmp_path: Path) -> None:
    good = json.dumps({"messages": [USER, ANSWER]})
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(
        b"\n".join(
            [
                good.encode(),  # 1
                b"[1, 2, 3]",  # 2: JSON, not an object
                b"",  # 3: blank
                good.replace("Paris", "Par\udce9s").encode("utf-8", "surrogateescape"),  # 4: bad UTF-8
                json.dumps({"messages": [USER, {"role": "bot", "content": "hi"}]}).encode(),  # 5
                b'{"messages": [{"role": "user", "content": "unfinish',  # 6: truncated, no newline
            ]
        )
    )
    report = audit_file(path)
    assert (report.lines, report.valid) == (6, 1)
    by_line = {error.line: error.detail for error in report.format_errors}
    assert sorted(by_line) == [2, 3, 4, 5, 6]
    assert by_line[2] == 'line 2: expected a JSON object with a "messages" list, got an array'
    assert by_line[3] == "line 3: blank line; every line must be one JSON object"
    assert by_line[4].startswith("line 4: not valid UTF-8 (byte 0xe9")
    assert by_line[5] == "line 5: messages[1].role is a 3-character string, not one of system, user, assistant, tool"
    assert by_line[6].startswith("line 6: invalid JSON") and by_line[6].endswith("looks truncated")


def test_an_empty_file_is_a_clear_finding(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    report = audit_file(path)
    assert report.to_contract_dict()["format_errors"] == [
        {"line": 0, "detail": "the file is empty: it has no lines, so no examples to train on"}
    ]
    assert (report.lines, report.valid, report.has_findings) == (0, 0, True)


def test_text_helpers() -> None:
    record = {"messages": [USER, CALL, TOOL_REPLY, ANSWER], "meta": {"tags": ["a", 1]}}
    # Values, keys and long numbers (where PII hides unquoted), in document order; short numbers not.
    assert list(iter_texts({"k": ["x", {"y": "z"}], "n": 1, "card": 4111111111111111, "t": True, "role": "user"})) == [
        "k", "x", "y", "z", "n", "card", "4111111111111111", "t", "user"
    ]
    assert "get_weather" in conversation_text(record) and "tags" not in conversation_text(record)


def test_conversation_text_leaves_out_system_messages() -> None:
    record = {"messages": [{"role": "system", "content": "You are a helpful bank assistant."}, USER, ANSWER]}
    assert "bank" not in conversation_text(record)
    assert conversation_text(record) == conversation_text({"messages": [USER, ANSWER]})


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
    | st.sampled_from(["user", "assistant", "tool", "system", "D681PevKs"]),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["messages", "role", "content", "tool_calls", "tool_call_id", "id", "function", "name", "arguments", "weight", "tools", "parameters"]), children, max_size=5),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(record=_json)
def test_any_json_value_gets_a_verdict_never_an_exception(record: object) -> None:
    errors = check_record(record)
    assert all(isinstance(error, str) and error for error in errors)


_json_ish_bytes = st.one_of(
    st.binary(max_size=200),
    # JSON text with \\u escapes, lone surrogates among them.
    st.lists(st.sampled_from(["\\ud800", "\\udfff", "\\ud83d\\ude00", "\\u00e9", "a", " ", '"', "\\\\"]), max_size=8).map(
        lambda parts: ('{"messages": [{"role": "user", "content": "' + "".join(parts) + '"}], "k": 1}').encode()
    ),
)


@settings(max_examples=300, deadline=None)
@given(data=_json_ish_bytes, ended=st.booleans())
def test_any_bytes_get_a_verdict_that_can_be_scanned_and_stored(data: bytes, ended: bool) -> None:
    checked = check_line(RawLine(5, data.replace(b"\n", b""), ended))
    # Valid exactly when nothing is wrong, and every problem is a sentence.
    assert checked.valid == (not checked.errors) and all(isinstance(e, str) and e for e in checked.errors)
    # Whatever the line held, what the scanners and the report see is encodable text: no lone surrogate.
    json.dumps(checked.record, ensure_ascii=False).encode("utf-8")
    checked.text.encode("utf-8")
    for text in iter_texts(checked.record):
        text.encode("utf-8")


def test_an_unpaired_surrogate_is_a_line_numbered_error_and_reads_as_a_replacement_character() -> None:
    line = b'{"messages": [{"role": "user", "content": "hi \\ud800 there"}, {"role": "assistant", "content": "ok"}]}'
    checked = check_line(RawLine(7, line, True))
    assert [error.detail for error in checked.format_errors()] == [
        "line 7: messages[0].content contains an unpaired UTF-16 surrogate; it is not valid Unicode (it was read as U+FFFD)"
    ]
    assert checked.record["messages"][0]["content"] == "hi \ufffd there"
    # A pair is one character (an emoji), not an error.
    pair = check_line(RawLine(1, line.replace(b"\\ud800", b"\\ud83d\\ude00"), True))
    assert pair.valid and pair.record["messages"][0]["content"] == "hi \U0001F600 there"


def test_a_surrogate_in_a_key_is_replaced_and_the_key_not_named() -> None:
    line = b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}], "jane\\udc00@example.org": 1}'
    checked = check_line(RawLine(1, line, True))
    assert checked.errors == ["the object has a key that contains an unpaired UTF-16 surrogate; it is not valid Unicode (it was read as U+FFFD)"]
    assert "jane\ufffd@example.org" in checked.record


def test_error_details_describe_values_and_never_echo_them() -> None:
    email, phone, ssn, key = "john.doe@example.com", "+44 20 7946 0958", "123-45-6789", "sk-proj-abcdefghijklmnop1234567890"
    record = {
        "messages": [
            {"role": f"call me at {phone} or {email}", "content": "hi"},
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": "ok", "weight": f"SSN {ssn}"},
            {"role": "user", "content": "y"},
            {"role": "assistant", "tool_calls": [{"id": key, "function": {"name": email, "arguments": "{}"}}]},
        ]
    }
    errors = check_record(record) + check_record({email: 1})
    text = " ".join(errors)
    for value in (email, phone, ssn, key, "john", "6789"):
        assert value not in text
    assert "messages[0].role is a 51-character string, not one of system, user, assistant, tool" in errors
    assert "messages[2].weight must be 0 or 1, got a 15-character string" in errors
    assert "messages[4].tool_calls[0].id is a 34-character string; it must be 9 characters of a-z, A-Z, 0-9" in errors
    assert 'missing "messages" (the object has 1 key)' in errors
    # An invalid weight is reported once, not also as "no assistant message carries loss".
    assert not any("carries loss" in error for error in errors)


def test_unanswered_tool_calls_are_counted_not_listed() -> None:
    call = {"id": "123456789", "function": {"name": "f", "arguments": "{}"}}  # an id can look like an SSN
    errors = check_record({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [call]},
                                        {"role": "user", "content": "y"}, {"role": "assistant", "content": "z"}]})
    assert errors[0] == "messages[1] (assistant) makes 1 tool call that no tool message answers before messages[2]"
    assert "123456789" not in " ".join(errors)


def test_tool_call_arguments_must_be_json() -> None:
    def calling(arguments: str) -> dict[str, object]:
        call = {"id": "abcdefghi", "function": {"name": "lookup", "arguments": arguments}}
        return {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [call]},
                             {"role": "tool", "tool_call_id": "abcdefghi", "content": "r"}, {"role": "assistant", "content": "z"}]}

    assert check_record(calling('{"phone": 4155552671}')) == []
    assert check_record(calling("{phone: 4155552671")) == [
        "messages[1].tool_calls[0].function.arguments is not valid JSON (Expecting property name enclosed in double quotes at column 2)"
    ]


def test_a_line_with_many_problems_counts_every_one_and_keeps_a_few_details() -> None:
    # Twelve messages with an unknown role: twelve problems, each its own error.
    record = {"messages": [USER] + [{"role": "bot", "content": f"hi {n}"} for n in range(12)] + [ANSWER]}
    assert len(check_record(record)) == 12
    checked = check_line(RawLine(4, json.dumps(record).encode(), True))
    assert checked.error_count == 12 and not checked.valid
    assert checked.errors == [
        f"messages[{index}].role is a 3-character string, not one of system, user, assistant, tool"
        for index in range(1, 1 + MAX_ERRORS_PER_LINE)
    ]
    # A problem found before the record's own (an unpaired surrogate) is counted with them.
    with_surrogate = json.dumps(record).replace("hi 0", "hi \\ud800").encode()
    assert check_line(RawLine(4, with_surrogate, True)).error_count == 13


def test_a_number_that_reads_as_infinity_is_named_without_its_digits() -> None:
    # Encoded again it could only be the literal Infinity, which is not JSON (see test_scrub).
    checked = check_line(RawLine(3, b'{"messages": [], "n": 41111111111111111e999}', True))
    assert checked.errors == ["invalid JSON: a number too large for a 64-bit float (it reads as infinity)"]
    call = dict(CALL, tool_calls=[{"id": "D681PevKs", "type": "function", "function": {"name": "f", "arguments": '{"n": -1e400}'}}])
    assert errors_of({"messages": [USER, call]}) == [
        "messages[1].tool_calls[0].function.arguments is not valid JSON (a number too large for a 64-bit float (it reads as infinity))"
    ]
    assert check_line(RawLine(1, b'{"messages": [], "n": 1e308, "m": 1e-999}', True)).errors == ['"messages" is empty; an example needs at least a user and an assistant message']


def test_a_key_given_twice_is_an_error_and_its_hidden_value_is_still_scanned(tmp_path: Path) -> None:
    # JSON readers keep the last value of a repeated key: the first one was lost without a word, and
    # the PII scan (which reads the parsed line) never saw it although the file still holds it.
    lines = [
        b'{"messages": [{"role": "user", "content": "mail jo@example.com", "content": "hi"}, {"role": "assistant", "content": "ok"}]}',
        b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}], "jo@example.com": 1, "jo@example.com": 2}',
        b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]}',
    ]
    assert check_line(RawLine(1, lines[0], True)).errors == [
        'invalid JSON: an object has "content" twice (JSON readers keep only the last value)'
    ]
    assert check_line(RawLine(2, lines[1], True)).errors == ["invalid JSON: an object has a key twice (JSON readers keep only the last value)"]
    path = tmp_path / "repeated.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    report = audit_file(path)
    assert (report.valid, [error.line for error in report.format_errors]) == (1, [1, 2])
    assert report.pii_lines["email"] == [1, 2]
    assert "jo@example.com" not in json.dumps(report.to_contract_dict())


def test_a_file_with_old_mac_line_endings_gets_a_hint(tmp_path: Path) -> None:
    # CR only: the whole file reads as one line without a newline, "Extra data" after its first record.
    line = json.dumps({"messages": [USER, ANSWER]})
    path = tmp_path / "mac.jsonl"
    path.write_bytes(f"{line}\r{line}\r{line}\r".encode())
    report = audit_file(path)
    assert report.lines == 1 and report.valid == 0
    assert report.format_errors[0].detail == (
        f"line 1: invalid JSON at column {len(line) + 2}: Extra data; the line holds carriage returns (CR): "
        "the file seems to use CR (old Mac) line endings; convert them to LF"
    )
    # A CR inside a line of an LF file that does not parse gets the hint too; a CRLF line end is harmless.
    assert "CR (old Mac) line endings" in check_line(raw(b'{"messages": [\r}')).errors[0]
    assert "carriage" not in check_line(raw(b'{"messages": [}\r')).errors[0]
    assert check_line(raw(line.encode() + b"\r")).valid
