"""Scrub: placeholders or consistent pseudonyms, valid JSON kept, and the audit of the output finds nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audits.pii import PII_TYPES, scan_text
from audits.report import audit_file
from audits.scrub import PseudonymTable, Scrubber, scrub_file
from tests.audits.samples import PLANTED, chat_line, sentence_with, write_lines


def planted_dataset(path: Path) -> Path:
    lines = [chat_line(sentence_with(value), assistant=f"I have noted {value}.") for values in PLANTED.values() for value in values]
    lines.append(chat_line("Nothing personal here at all."))
    lines.append("not json, but mail ops@example.org")
    return write_lines(path, lines)


@pytest.mark.parametrize("mode", ["placeholder", "pseudonym"])
def test_auditing_the_scrubbed_file_finds_no_pii_of_any_type(tmp_path: Path, mode: str) -> None:
    source = planted_dataset(tmp_path / "source.jsonl")
    before = audit_file(source)
    expected = {t: 2 * len(PLANTED[t]) for t in PII_TYPES}  # user and assistant message
    expected["email"] += 1  # the broken line
    assert before.pii_counts == expected

    destination = tmp_path / "scrubbed.jsonl"
    result = scrub_file(source=source, destination=destination, mode=mode)
    after = audit_file(destination)
    assert after.pii_counts == dict.fromkeys(PII_TYPES, 0)
    assert result.replaced == expected
    assert after.lines == before.lines and after.valid == before.valid  # valid JSON stays valid
    text = destination.read_text()
    for values in PLANTED.values():
        for value in values:
            assert value not in text


def test_placeholders_name_the_type(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "s.jsonl", [chat_line("Mail john.doe@example.com, card 4111 1111 1111 1111")])
    scrub_file(source=source, destination=tmp_path / "d.jsonl")
    record = json.loads((tmp_path / "d.jsonl").read_text())
    assert record["messages"][0]["content"] == "Mail [EMAIL], card [CREDIT_CARD]"


def test_pseudonyms_are_consistent_within_a_file(tmp_path: Path) -> None:
    source = write_lines(
        tmp_path / "s.jsonl",
        [
            chat_line("I am john.doe@example.com, call 415-555-2671", "Hi John.Doe@Example.com"),
            chat_line("Also jane@example.org and (415) 555-2671", "And john.doe@example.com again"),
        ],
    )
    result = scrub_file(source=source, destination=tmp_path / "d.jsonl", mode="pseudonym")
    first, second = (json.loads(line) for line in (tmp_path / "d.jsonl").read_text().splitlines())
    assert first["messages"][0]["content"] == "I am <EMAIL_1>, call <PHONE_1>"
    assert first["messages"][1]["content"] == "Hi <EMAIL_1>"  # same address, other case
    assert second["messages"][0]["content"] == "Also <EMAIL_2> and <PHONE_1>"  # same number, other layout
    assert second["messages"][1]["content"] == "And <EMAIL_1> again"
    assert result.distinct_values == 3


def test_lines_without_pii_are_copied_byte_for_byte(tmp_path: Path) -> None:
    untouched = '{"messages":[{"role":"user","content":"Hi"},  {"role":"assistant","content":"Hello"}]}'
    source = write_lines(tmp_path / "s.jsonl", [untouched, "", chat_line("ip 10.0.0.1")])
    result = scrub_file(source=source, destination=tmp_path / "d.jsonl")
    lines = (tmp_path / "d.jsonl").read_text().split("\n")
    assert lines[0] == untouched and lines[1] == ""
    assert "[IP_ADDRESS]" in lines[2]
    assert (result.lines, result.lines_changed) == (3, 1)


def test_only_the_chosen_types_are_scrubbed(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "s.jsonl", [chat_line("john.doe@example.com 415-555-2671")])
    scrub_file(source=source, destination=tmp_path / "d.jsonl", types=["email"])
    after = audit_file(tmp_path / "d.jsonl")
    assert after.pii_counts["email"] == 0 and after.pii_counts["phone"] == 1


def test_refuses_to_overwrite_its_source_and_unknown_modes(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "s.jsonl", [chat_line("x")])
    with pytest.raises(ValueError, match="must not overwrite"):
        scrub_file(source=source, destination=source)
    with pytest.raises(ValueError, match="scrub mode"):
        Scrubber(mode="redact")


def test_pseudonym_table_canonicalises_values() -> None:
    table = PseudonymTable()
    assert table.pseudonym("4111 1111 1111 1111", "credit_card") == table.pseudonym("4111-1111-1111-1111", "credit_card")
    assert table.pseudonym("a@example.com", "email") != table.pseudonym("b@example.com", "email")


_ALL_VALUES = [value for values in PLANTED.values() for value in values]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    values=st.lists(st.sampled_from(_ALL_VALUES), min_size=1, max_size=4),
    glue=st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12), min_size=5, max_size=5),
    mode=st.sampled_from(["placeholder", "pseudonym"]),
)
def test_scrubbed_text_never_scans_as_pii(values: list[str], glue: list[str], mode: str) -> None:
    text = glue[0] + "".join(f" {value} {piece}" for value, piece in zip(values, glue[1:]))
    scrubbed = Scrubber(mode=mode).scrub_text(text)
    assert scan_text(scrubbed) == []
    # And the round trip through JSON keeps it valid and clean.
    record = json.loads(json.dumps(Scrubber(mode=mode).scrub_value({"messages": [{"content": text}]})))
    assert scan_text(record["messages"][0]["content"]) == []


def test_pii_in_keys_and_numbers_is_scrubbed_and_the_audit_finds_none(tmp_path: Path) -> None:
    line = chat_line("hello", meta={"card": 4111111111111111, "jane@example.org": "x", "john@example.org": "y", "count": 12345})
    source = write_lines(tmp_path / "hidden.jsonl", [line])
    scrub_file(source=source, destination=tmp_path / "out.jsonl")
    meta = json.loads((tmp_path / "out.jsonl").read_text())["meta"]
    assert meta == {"card": "[CREDIT_CARD]", "[EMAIL]": "x", "[EMAIL]_": "y", "count": 12345}  # two keys stay two
    assert not any(audit_file(tmp_path / "out.jsonl").pii_counts.values())


def tool_call_line(arguments: str) -> str:
    call = {"id": "abcdefghi", "function": {"name": "lookup", "arguments": arguments}}
    return json.dumps({"messages": [
        {"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "abcdefghi", "content": "r"}, {"role": "assistant", "content": "z"},
    ]})


@pytest.mark.parametrize("mode", ["placeholder", "pseudonym"])
def test_tool_call_arguments_stay_valid_json(tmp_path: Path, mode: str) -> None:
    arguments = json.dumps({"phone": 4155552671, "note": "mail jo@example.com", "card": "4111 1111 1111 1111"})
    source = write_lines(tmp_path / "calls.jsonl", [tool_call_line(arguments)])
    assert audit_file(source).valid == 1
    scrub_file(source=source, destination=tmp_path / "out.jsonl", mode=mode)
    scrubbed = audit_file(tmp_path / "out.jsonl")
    assert scrubbed.valid == 1 and not any(scrubbed.pii_counts.values())
    record = json.loads((tmp_path / "out.jsonl").read_text())
    parsed = json.loads(record["messages"][1]["tool_calls"][0]["function"]["arguments"])
    assert set(parsed) == {"phone", "note", "card"} and isinstance(parsed["phone"], str)


def test_deeply_nested_lines_are_scrubbed_without_a_recursion_error(tmp_path: Path) -> None:
    deep = '{"messages": [{"role": "user", "content": "mail jo@example.com"}, {"role": "assistant", "content": "ok"}], "x": ' + "[" * 900 + '"jo@example.com"' + "]" * 900 + "}"
    source = write_lines(tmp_path / "deep.jsonl", [deep])
    result = scrub_file(source=source, destination=tmp_path / "out.jsonl")
    assert result.replaced["email"] == 2
    assert "jo@example.com" not in (tmp_path / "out.jsonl").read_text()


@pytest.mark.parametrize("number", ["1e999", "-1e400"])
def test_the_scrub_never_turns_a_line_into_one_the_audit_refuses(tmp_path: Path, number: str) -> None:
    # 1e999 is a JSON number Python reads as infinity; re-encoded it became the literal Infinity, which
    # is not JSON: the scrubbed copy had a format error its source did not. The audit now names such a
    # number itself, and the scrub leaves it as it was.
    lines = [
        chat_line("mail jo@example.com").removesuffix("}") + f', "n": {number}}}',
        tool_call_line('{"to": "jo@example.com", "amount": ' + number + "}"),
    ]
    source = write_lines(tmp_path / "big.jsonl", lines)
    scrub_file(source=source, destination=tmp_path / "out.jsonl")
    before, after = audit_file(source), audit_file(tmp_path / "out.jsonl")
    assert [error.line for error in before.format_errors] == [1, 2]
    assert [error.detail for error in after.format_errors] == [error.detail for error in before.format_errors]
    assert not any(after.pii_counts.values()) and "Infinity" not in (tmp_path / "out.jsonl").read_text()


def test_pii_in_the_hidden_value_of_a_repeated_key_is_scrubbed(tmp_path: Path) -> None:
    # A JSON reader sees only the last "content": the email before it used to pass the audit and be
    # copied byte for byte into the "clean" copy.
    line = '{"messages": [{"role": "user", "content": "mail jo@example.com", "content": "hi"}, {"role": "assistant", "content": "ok"}]}'
    number = '{"messages": [], "card": 4111111111111111, "card": 1}'  # a bare number becomes a string, as in a parsed line
    source = write_lines(tmp_path / "repeated.jsonl", [line, number])
    result = scrub_file(source=source, destination=tmp_path / "out.jsonl")
    assert (result.replaced["email"], result.replaced["credit_card"]) == (1, 1)
    first, second = (tmp_path / "out.jsonl").read_text().splitlines()
    assert "jo@example.com" not in first and json.loads(second)["messages"] == []


@pytest.mark.parametrize("mode", ["placeholder", "pseudonym"])
def test_a_line_that_is_not_json_is_scrubbed_string_by_string(tmp_path: Path, mode: str) -> None:
    # A line the audit cannot parse (truncated, a repeated key) was scanned and scrubbed as raw text:
    # PII written with escapes ("jo\u0040example.com") was neither reported nor replaced, and a
    # replacement right after an escape ("\njo@…" → "\[EMAIL]") made an invalid escape. Each
    # complete string is now read as a parser reads it, and written back as a JSON string.
    lines = [
        r'{"messages": [{"role": "user", "content": "mail\njo\u0040example.com or \u0034111 1111 1111 1111", "content": "x"}]}',
        r'{"messages": [{"role": "user", "content": "call \"+1 415 555 2671\"\tplease"}, {"role": "assistant", "content": "ok"',
    ]
    source = write_lines(tmp_path / "broken.jsonl", lines)
    before = audit_file(source)
    assert before.valid == 0 and (before.pii_counts["email"], before.pii_counts["credit_card"], before.pii_counts["phone"]) == (1, 1, 1)
    scrub_file(source=source, destination=tmp_path / "out.jsonl", mode=mode)
    after = audit_file(tmp_path / "out.jsonl")
    assert not any(after.pii_counts.values())
    assert [error.line for error in after.format_errors] == [error.line for error in before.format_errors] == [1, 2]
    first, second = (tmp_path / "out.jsonl").read_text().splitlines()
    assert json.loads(first.replace('"content": "x"', '"other": "x"'))["messages"][0]["content"].startswith("mail\n")
    assert '"call \\"' in second and '\\"\\tplease"' in second  # the escapes around the phone are kept
