"""The whole-file audit: the contract's JSON object, no raw PII, same answer with two workers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from audits import report as report_module
from audits.formats import MAX_ERRORS_PER_LINE
from audits.pii import PII_TYPES
from audits.report import UnreadableDataset, audit_file
from tests.audits.samples import PLANTED, chat_line, sentence_with, write_lines

CONTRACT_KEYS = {"lines", "valid", "format_errors", "pii", "duplicates", "difficulty"}


def dataset(path: Path) -> Path:
    lines = []
    for values in PLANTED.values():
        for value in values:
            lines.append(chat_line(sentence_with(value)))
    lines += [chat_line("How are you today?", "Fine, thanks.")] * 3  # a group of three
    lines.append(chat_line("How are you today, my friend?", "Fine, thanks."))
    lines.append('{"messages": [{"role": "bot", "content": "hi"}]}')
    lines.append(
        chat_line(
            "Write a function that must return the 3 largest values without sorting; explain step by step.",
            "First, because a heap keeps the k largest, therefore O(n log k).\n```python\ndef top(xs):\n    return xs\n```\n"
            + "We compare the trade-off. " * 40,
        )
    )
    return write_lines(path, lines)


def test_the_contract_object(tmp_path: Path) -> None:
    report = audit_file(dataset(tmp_path / "d.jsonl"))
    result = report.to_contract_dict()
    assert CONTRACT_KEYS <= set(result)
    planted = sum(len(values) for values in PLANTED.values())
    assert result["lines"] == planted + 6
    assert result["valid"] == planted + 5
    assert result["format_errors"] == [
        {"line": planted + 5, "detail": f"line {planted + 5}: messages[0].role is a 3-character string, not one of system, user, assistant, tool"}
    ]
    assert result["pii"] == {t: len(PLANTED[t]) for t in PII_TYPES}
    assert list(result["pii"]) == ["email", "phone", "credit_card", "iban", "ip_address", "ssn", "api_key"]
    assert result["duplicates"] == {"exact": 2, "near": 0}
    assert set(result["difficulty"]) == {"easy", "medium", "hard"}
    assert sum(result["difficulty"].values()) == pytest.approx(1.0, abs=1e-3)
    assert result["difficulty"]["hard"] > 0
    assert json.loads(json.dumps(result)) == result  # plain JSON
    assert report.has_findings


def test_the_report_never_contains_the_pii_it_found(tmp_path: Path) -> None:
    report = audit_file(dataset(tmp_path / "d.jsonl"))
    dumped = json.dumps(report.to_contract_dict(), ensure_ascii=False)
    for values in PLANTED.values():
        for value in values:
            assert value not in dumped, value
    samples = report.to_contract_dict()["pii_samples"]
    assert all(len(samples[t]) == min(5, len(PLANTED[t])) for t in PII_TYPES)
    assert samples["email"][0] == {"line": 1, "masked": "j***@e***.com"}


def test_line_numbers_for_pii_duplicates_and_difficulty(tmp_path: Path) -> None:
    report = audit_file(dataset(tmp_path / "d.jsonl"))
    assert report.pii_lines["email"] == [1, 2, 3, 4]
    first_copy = sum(len(values) for values in PLANTED.values()) + 1
    assert report.duplicates.exact_groups == [[first_copy, first_copy + 1, first_copy + 2]]
    assert report.level_of_line(1) == "easy"
    assert report.level_of_line(report.lines) == "hard"
    assert report.level_of_line(report.lines - 1) is None  # the broken line is no example to train on
    # The mix is of the valid lines only: the broken one is neither counted nor shown as an example.
    assert report.examples == sum(report.difficulty_counts.values()) == report.valid
    shown = [example["line"] for examples in report.to_contract_dict()["difficulty_examples"].values() for example in examples]
    assert report.lines - 1 not in shown
    assert first_copy + 1 not in report.examples_by_level()  # duplicates are not usable for rebalancing
    explained = report.to_contract_dict()["difficulty_examples"]["hard"][0]
    assert explained["line"] == report.lines and explained["explanation"].startswith("hard (")


def test_clean_file_has_no_findings(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "clean.jsonl", [chat_line("Hello there", "Hi, how can I help?"), chat_line("Thanks", "You are welcome.")])
    report = audit_file(path)
    assert not report.has_findings
    assert report.to_contract_dict()["format_errors"] == []


def test_two_workers_give_the_same_answer_as_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = dataset(tmp_path / "base.jsonl").read_text()
    path = tmp_path / "big.jsonl"
    path.write_text(base * 6)  # duplicates across the byte ranges of different workers
    single = audit_file(path, workers=1).to_contract_dict()
    monkeypatch.setattr(report_module, "_PARALLEL_MIN_BYTES", 0)
    progress: list[tuple[int, int]] = []
    parallel_report = audit_file(path, workers=2, progress=lambda done, total: progress.append((done, total)))
    parallel = parallel_report.to_contract_dict()
    assert parallel_report.workers == 2
    for key in ("seconds", "workers"):
        single.pop(key)
        parallel.pop(key)
    assert parallel == single
    assert progress[-1] == (path.stat().st_size, path.stat().st_size)


def test_progress_is_reported_in_one_process_too(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "many.jsonl", [chat_line(f"Question {i}?", f"Answer {i}.") for i in range(25000)])
    progress: list[tuple[int, int]] = []
    audit_file(path, progress=lambda done, total: progress.append((done, total)))
    size = path.stat().st_size
    assert len(progress) == 3  # lines 10 000 and 20 000, then the end
    assert progress[0][0] < progress[1][0] < progress[2][0] == size and {total for _, total in progress} == {size}


def test_unreadable_paths_raise(tmp_path: Path) -> None:
    with pytest.raises(UnreadableDataset, match="cannot read"):
        audit_file(tmp_path / "missing.jsonl")
    with pytest.raises(UnreadableDataset):
        audit_file(tmp_path)


def test_format_errors_are_capped_but_counted(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "bad.jsonl", ["[1]"] * 30)
    result = audit_file(path, max_format_errors=10).to_contract_dict()
    assert len(result["format_errors"]) == 10
    assert result["format_errors_total"] == 30 and result["format_errors_truncated"]


def many_problem_line(bad_messages: int) -> str:
    """A line whose every middle message has an unknown role: one problem each."""
    middle = [{"role": "bot", "content": f"hi {n}"} for n in range(bad_messages)]
    return json.dumps({"messages": [{"role": "user", "content": "Hello?"}, *middle, {"role": "assistant", "content": "Hi."}]})


@pytest.mark.parametrize("workers", [1, 2])
def test_every_problem_of_a_line_is_counted_though_only_a_few_are_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    monkeypatch.setattr(report_module, "_PARALLEL_MIN_BYTES", 0)
    lines = [chat_line("How are you?"), many_problem_line(12), chat_line("Fine?"), many_problem_line(7), "[1]"]
    result = audit_file(write_lines(tmp_path / "bad.jsonl", lines), workers=workers).to_contract_dict()
    assert result["format_errors_total"] == 12 + 7 + 1
    assert (result["lines"], result["valid"]) == (5, 2)
    listed = [error["line"] for error in result["format_errors"]]
    assert listed == [2] * MAX_ERRORS_PER_LINE + [4] * MAX_ERRORS_PER_LINE + [5]
    assert result["format_errors_truncated"]
    # The contract keys are the same as ever; only the count is exact now.
    assert list(result)[:6] == ["lines", "valid", "format_errors", "pii", "duplicates", "difficulty"]


def shared_prompt_lines(count: int = 500, seed: int = 3) -> list[str]:
    import random

    rng = random.Random(seed)
    vocabulary = [f"w{i}" for i in range(50000)]
    system = " ".join(rng.choice(vocabulary) for _ in range(250))
    lines = []
    for _ in range(count):
        question = " ".join(rng.choice(vocabulary) for _ in range(10))
        answer = " ".join(rng.choice(vocabulary) for _ in range(10))
        lines.append(json.dumps({"messages": [
            {"role": "system", "content": system}, {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ]}))
    return lines


def test_a_shared_system_prompt_does_not_make_examples_duplicates(tmp_path: Path) -> None:
    report = audit_file(write_lines(tmp_path / "prompted.jsonl", shared_prompt_lines()))
    assert (report.duplicates.exact, report.duplicates.near) == (0, 0)
    assert len(report.examples_by_level()) == 500  # a rebalanced copy may use every one


def test_the_system_prompt_does_not_make_an_example_harder(tmp_path: Path) -> None:
    bare = [json.dumps({"messages": json.loads(line)["messages"][1:]}) for line in shared_prompt_lines(50)]
    with_prompt = audit_file(write_lines(tmp_path / "prompted.jsonl", shared_prompt_lines(50)))
    without = audit_file(write_lines(tmp_path / "bare.jsonl", bare))
    assert with_prompt.levels.tolist() == without.levels.tolist()
    assert with_prompt.difficulty_counts == without.difficulty_counts


def test_an_unpaired_surrogate_is_reported_and_the_report_stays_encodable(tmp_path: Path) -> None:
    path = tmp_path / "surrogate.jsonl"
    path.write_text(
        chat_line("fine") + "\n" + '{"messages":[{"role":"user","content":"hi \\ud800 mail jo@example.com"},{"role":"assistant","content":"ok"}]}\n'
    )
    report = audit_file(path)
    result = report.to_contract_dict()
    assert result["format_errors"] == [{"line": 2, "detail": "line 2: messages[0].content contains an unpaired UTF-16 surrogate; it is not valid Unicode (it was read as U+FFFD)"}]
    assert result["pii"]["email"] == 1 and result["valid"] == 1
    json.dumps(result, ensure_ascii=False).encode("utf-8")


def test_pii_in_numbers_and_keys_is_counted(tmp_path: Path) -> None:
    line = chat_line("hello", meta={"card": 4111111111111111, "jane@example.org": "x", "count": 12345})
    report = audit_file(write_lines(tmp_path / "hidden.jsonl", [line]))
    assert report.pii_counts["credit_card"] == 1 and report.pii_counts["email"] == 1
    assert sum(report.pii_counts.values()) == 2


def test_format_errors_in_the_report_hold_no_planted_pii(tmp_path: Path) -> None:
    email, ssn, key = "john.doe@example.com", "123-45-6789", "sk-proj-abcdefghijklmnop1234567890"
    lines = [
        json.dumps({"messages": [{"role": f"mail {email}", "content": "hi"}, {"role": "assistant", "content": "ok"}]}),
        json.dumps({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "ok", "weight": f"SSN {ssn}"}]}),
        json.dumps({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [{"id": key, "function": {"name": "f", "arguments": "{}"}}]}]}),
        json.dumps({email: 1}),
    ]
    result = audit_file(write_lines(tmp_path / "bad.jsonl", lines)).to_contract_dict()
    assert [error["line"] for error in result["format_errors"]] == [1, 2, 3, 4]
    text = json.dumps(result)
    for value in (email, ssn, key, "john.doe", "45-6789"):
        assert value not in text


def test_duplicate_groups_are_stored_capped_with_their_size(tmp_path: Path) -> None:
    lines = [chat_line("How are you today?", "Fine, thanks.")] * 50
    groups = audit_file(write_lines(tmp_path / "same.jsonl", lines)).to_contract_dict()["duplicate_groups"]
    assert groups["exact"] == [{"lines": list(range(1, report_module.MAX_LINES_PER_GROUP + 1)), "total": 50}]


def test_pii_samples_are_of_distinct_values(tmp_path: Path) -> None:
    repeated = " ".join(["write to hans@example.com"] * 5)
    path = write_lines(tmp_path / "d.jsonl", [chat_line(repeated), chat_line("or to grete@example.org")])
    report = audit_file(path)
    assert report.pii_counts["email"] == 6
    samples = report.to_contract_dict()["pii_samples"]["email"]
    assert samples == [{"line": 1, "masked": "h***@e***.com"}, {"line": 2, "masked": "g***@e***.org"}]
