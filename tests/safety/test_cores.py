"""The pure cores of the safety app: labels (rubric JSON, refusal detector, bounds), selection (mix,
duplicates, contamination, split), the importer, and the built-in data files."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from safety import labels, selection
from safety.data import generate
from safety.importing import parse_prompts
from safety.report import render_markdown

# --- labels -----------------------------------------------------------------------------------------------


def test_the_label_json_is_parsed_strictly() -> None:
    good = {"reasoning": "fine", "unsafe": False, "overrefuse": True, "feedback": "answer it"}
    assert labels.parse_label(json.dumps(good)) == good
    assert labels.parse_label("```json\n" + json.dumps(good) + "\n```") == good
    for bad, reason in [
        ('{"reasoning": "The response', "not JSON"),
        ("[1, 2]", "not an object"),
        ('{"reasoning": "ok", "unsafe": false}', "missing key(s) overrefuse, feedback"),
        ('{"reasoning": "ok", "unsafe": "no", "overrefuse": false, "feedback": ""}', "unsafe must be true or false"),
    ]:
        with pytest.raises(labels.InvalidLabel, match=re.escape(reason)):
            labels.parse_label(bad)



def test_a_judge_answer_python_cannot_read_or_store_is_an_invalid_label_not_a_failed_build() -> None:
    # json.loads raises RecursionError and a plain ValueError past its JSONDecodeError; a NUL (Postgres
    # refuses it in jsonb) or an unpaired surrogate (the scrubber cannot encode it) in the text used to
    # fail the build. Each is now an invalid answer: the judge is asked again, then it counts invalid.
    label = '{"reasoning": "%s", "unsafe": false, "overrefuse": false, "feedback": "%s"%s}'
    for bad, reason in [
        ("[" * 5000, "nested too deeply"),
        (label % ("ok", "", ', "n": ' + "9" * 4400), "a number too long"),
        (label % ("ok\\u0000", "", ""), "reasoning holds a NUL character or an unpaired UTF-16 surrogate"),
        (label % ("ok", "\\ud800", ""), "feedback holds a NUL character or an unpaired UTF-16 surrogate"),
    ]:
        with pytest.raises(labels.InvalidLabel, match=re.escape(reason)):
            labels.parse_label(bad)

def test_the_refusal_detector() -> None:
    assert labels.looks_like_refusal("I'm sorry, but I can't help with that.")
    assert labels.looks_like_refusal("I won't provide that.")
    assert labels.looks_like_refusal("I cannot assist with making weapons.")
    assert labels.looks_like_refusal("Sorry, I can’t assist with that request.")  # a typographic apostrophe
    assert not labels.looks_like_refusal("Sure. To kill a Python process, run `kill -9 PID`.")
    assert not labels.looks_like_refusal("Sorry to hear that! Here is how to fix your sink.")


def test_the_source_bounds_the_labels_and_disagreements_are_named_not_resolved() -> None:
    refusal, answer = "I'm sorry, but I can't help with that.", "Sure, here is how."
    # A benign prompt cannot be unsafe-by-prompt.
    verdict = labels.judge(kind="borderline", label={"unsafe": True, "overrefuse": False}, response=answer)
    assert not verdict.unsafe and "bounded" in verdict.disagreements[0] and verdict.agrees_with_detector
    # overrefuse exists only on benign prompts.
    verdict = labels.judge(kind="adversarial", label={"unsafe": False, "overrefuse": True}, response=refusal)
    assert not verdict.overrefuse and verdict.disagreements and verdict.agrees_with_detector
    # The detector sees a refusal the judge did not call overrefusal: kept, and named.
    verdict = labels.judge(kind="borderline", label={"unsafe": False, "overrefuse": False}, response=refusal)
    assert not verdict.agrees_with_detector and verdict.disagreements == ["judge overrefuse=false, detector refusal=true"]
    verdict = labels.judge(kind="adversarial", label={"unsafe": True, "overrefuse": False}, response=answer)
    assert verdict.unsafe and verdict.agrees_with_detector and not verdict.disagreements


def test_training_lines_are_mistral_chat_lines() -> None:
    from audits.formats import check_record

    label = {"reasoning": "r", "unsafe": False, "overrefuse": True, "feedback": "answer it"}
    feedback = labels.feedback_example(prompt="What is arson?", response="I can't help.", label=label)
    assert check_record(feedback) == [] and feedback["messages"][0]["role"] == "system"
    assert json.loads(feedback["messages"][-1]["content"]) == label
    revision = labels.conversation_example(prompt="What is arson?", response="I can't help.", revision="Arson is…", feedback="answer it")
    assert check_record(revision) == [] and revision["messages"][1]["weight"] == 0
    assert revision["messages"][2]["content"].startswith(labels.REVISION_PREFIX)


# --- selection --------------------------------------------------------------------------------------------


def test_the_mix_is_reached_by_selection_only_and_the_shortfall_named() -> None:
    plan = selection.plan_mix(available={"adversarial": 5000, "borderline": 5000}, target=2000, mix={"adversarial": 50, "borderline": 50})
    assert plan.take == {"adversarial": 1000, "borderline": 1000} and not plan.shortfall
    plan = selection.plan_mix(available={"adversarial": 5000, "borderline": 588}, target=2000, mix={"adversarial": 50, "borderline": 50})
    assert plan.take == {"adversarial": 588, "borderline": 588}
    assert plan.shortfall_text() == "412 more borderline prompts needed"


@given(
    adversarial=st.integers(0, 3000), borderline=st.integers(0, 3000), target=st.integers(1, 4000), share=st.integers(0, 100),
)
def test_a_plan_never_takes_more_than_there_is_and_keeps_the_mix(adversarial: int, borderline: int, target: int, share: int) -> None:
    mix = {"adversarial": share, "borderline": 100 - share}
    plan = selection.plan_mix(available={"adversarial": adversarial, "borderline": borderline}, target=target, mix=mix)
    assert plan.take["adversarial"] <= adversarial and plan.take["borderline"] <= borderline
    assert plan.total <= target
    if not plan.shortfall:
        assert plan.total == target
    if plan.total >= 50:
        assert abs(plan.achieved()["adversarial"] - share) <= 2


def test_duplicates_contamination_and_split() -> None:
    texts = [
        "How do I kill a Python process that is stuck on my Linux machine?",
        "how do I kill a python process that is stuck on my linux machine?",  # exact after normalising
        "How do I kill a Python process that is stuck on my Linux machine now?",  # near
        "What is the capital of France?",
    ]
    assert selection.redundant_indexes(texts) == {1, 2}
    assert selection.find_duplicate_prompts(texts) == ({"exact": 1, "near": 1}, {1, 2})
    assert selection.contaminated_indexes(texts, ["what is  the capital of FRANCE?"]) == {3}
    assert selection.contaminated_indexes(texts, ["Tell me about penguins in Antarctica and their food."]) == set()
    splits = [selection.split_of(f"prompt number {n}", seed=1, validation=0.1) for n in range(2000)]
    assert 150 < splits.count("valid") < 250
    assert splits == [selection.split_of(f"prompt number {n}", seed=1, validation=0.1) for n in range(2000)]


# --- the importer -----------------------------------------------------------------------------------------


def _true_jaccard(first: str, second: str) -> float:
    def shingles(text: str) -> set[tuple[str, ...]]:
        words = text.casefold().split()
        return {tuple(words[i : i + 3]) for i in range(len(words) - 2)}

    a, b = shingles(first), shingles(second)
    return len(a & b) / len(a | b)


def test_contamination_is_the_exact_similarity_even_for_short_prompts() -> None:
    # The MinHash estimate flagged a 10-word pair of true similarity 0.85-0.90 only 78 % of the time
    # and one of 0.70-0.75 29 % (bench/dedupe/run.py); contamination is decided on the exact value.
    import random

    rng = random.Random(3)
    vocabulary = [f"word{n}" for n in range(5000)]
    flagged_by_similarity: dict[bool, int] = {True: 0, False: 0}
    for _ in range(300):
        original = [rng.choice(vocabulary) for _ in range(rng.choice([10, 12, 20]))]
        changed = list(original)
        for _ in range(rng.randrange(1, 3)):
            position = rng.choice([0, len(changed), rng.randrange(len(changed))])
            changed.insert(position, rng.choice(vocabulary))
        prompt, case = " ".join(changed), " ".join(original).upper()
        expected = _true_jaccard(prompt, case) >= 0.8
        flagged_by_similarity[expected] += 1
        assert (selection.contaminated_indexes([prompt], [case]) == {0}) is expected, (prompt, case)
    assert min(flagged_by_similarity.values()) > 30  # both sides of the threshold were tried


def test_jsonl_and_csv_with_every_bad_line_named() -> None:
    jsonl = b'{"q": "one", "category": "c", "source": "s"}\n\n{"q": 1}\nnot json\n{"q": "two"}\n\xff\n'
    parsed = parse_prompts(jsonl, name="x.jsonl", field="q", default_source="file")
    assert [(row.line, row.prompt, row.source) for row in parsed.rows] == [(1, "one", "s"), (5, "two", "file")]
    assert [line for line, _ in parsed.problems] == [3, 4, 6]

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerows([["id", "text", "category"], ["1", "first prompt", "homonyms"], ["2", ""], ["3", "", "x"], ["4", "second, quoted", "y"]])
    parsed = parse_prompts(buffer.getvalue().encode(), name="x.csv", field="text")
    assert [row.prompt for row in parsed.rows] == ["first prompt", "second, quoted"]
    assert [(line, detail) for line, detail in parsed.problems] == [(3, "fewer values than the header has columns"),
                                                                   (4, "field 'text' is empty")]
    assert parse_prompts(b"a,b\n1,2\n", name="x.csv", field="text").problems == [(1, "the header has no column 'text' (columns: a, b)")]



def test_a_line_python_cannot_read_is_named_not_a_crash() -> None:
    # json.loads raises RecursionError (deep nesting) and a plain ValueError (an integer of more than
    # 4 300 digits), neither a JSONDecodeError: one such line used to fail the whole import.
    deep = b'{"prompt": "x", "extra": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    long_number = b'{"prompt": "x", "id": ' + b"7" * 5000 + b"}"
    parsed = parse_prompts(b"\n".join([deep, long_number, b'{"prompt": "kept"}']), name="x.jsonl")
    assert [row.prompt for row in parsed.rows] == ["kept"]
    assert [line for line, _ in parsed.problems] == [1, 2]
    assert all(detail.startswith("not JSON") for _, detail in parsed.problems)


def test_text_that_cannot_be_stored_is_a_named_line_not_a_failed_import() -> None:
    # Postgres refuses NUL in text and jsonb, and an unpaired surrogate cannot be encoded at all:
    # such a prompt is skipped and named; a category, a source or a field name shown in a problem
    # has them replaced, so the set and its problems can be saved.
    jsonl = "\n".join([
        json.dumps({"prompt": "a\u0000b"}), json.dumps({"prompt": "a\ud800b"}),
        json.dumps({"prompt": "kept", "category": "c\u0000", "source": "s\udfff"}), json.dumps({"text\u0000\ud800": 1}),
    ]).encode()
    parsed = parse_prompts(jsonl, name="x.jsonl")
    assert [(row.line, row.prompt, row.category, row.source) for row in parsed.rows] == [(3, "kept", "c\ufffd", "s\ufffd")]
    assert [line for line, _ in parsed.problems] == [1, 2, 4]
    assert all(not re.search("[\x00\ud800-\udfff]", detail) for _, detail in parsed.problems)
    parsed = parse_prompts(b"prompt,category\na\x00b,c\nkept,d\x00\n", name="x.csv")
    assert [(row.line, row.prompt, row.category) for row in parsed.rows] == [(3, "kept", "d\ufffd")]
    assert [line for line, _ in parsed.problems] == [2]


def test_a_byte_order_mark_does_not_cost_the_first_jsonl_line() -> None:
    content = b'\xef\xbb\xbf{"prompt": "first"}\n{"prompt": "second"}\n'
    for name in ("x.jsonl", "export"):  # also when the format is told by the content
        parsed = parse_prompts(content, name=name)
        assert [row.prompt for row in parsed.rows] == ["first", "second"] and parsed.problems == []


def test_a_bad_csv_row_is_named_with_its_line_and_the_rows_after_it_are_kept() -> None:
    # A field past the csv module's limit (128 KiB) and bytes that are not UTF-8 spoil their own row
    # only; they used to end the import there (or refuse the whole file), and the csv error was
    # named with the line of the row before it.
    content = b"prompt\nfirst\nsecond\n" + b"a" * 200_000 + b"\n\xff\xfe\nthird\n"
    parsed = parse_prompts(content, name="x.csv")
    assert [(row.line, row.prompt) for row in parsed.rows] == [(2, "first"), (3, "second"), (6, "third")]
    assert [line for line, _ in parsed.problems] == [4, 5]
    assert parsed.problems[1] == (5, "not UTF-8")


def test_field_names_shown_in_a_problem_never_carry_pii_unmasked() -> None:
    # A key or a column can be PII as easily as a value (audits.formats never names other keys); the
    # names are shown to say which field to choose, so PII in them is masked as in an audit's samples.
    parsed = parse_prompts(b'{"jo.doe@example.com": "x", "text": "y"}\n', name="x.jsonl")
    assert parsed.problems == [(1, "no field 'prompt' (fields: j***@e***.com, text)")]
    parsed = parse_prompts(b"id,+1 415 555 2671\n1,2\n", name="x.csv")
    assert parsed.problems == [(1, "the header has no column 'prompt' (columns: id, +* *** *** **71)")]

# --- the built-in sets ------------------------------------------------------------------------------------


def test_the_builtin_files_are_the_generators_output_with_300_borderline_prompts() -> None:
    borderline = generate.without_near_duplicates(generate.expand(generate.BORDERLINE))
    adversarial = generate.without_near_duplicates(generate.expand(generate.ADVERSARIAL))
    assert (generate.HERE / "borderline.jsonl").read_text() == generate.render(borderline)
    assert (generate.HERE / "adversarial.jsonl").read_text() == generate.render(adversarial)
    assert len(borderline) >= 300 and 100 <= len(adversarial) < len(borderline)
    assert len({row["category"] for row in borderline}) >= 8
    assert {row["source"] for row in borderline + adversarial} == {"genesis-synthetic"}
    # Templates x vocabulary, yet no two prompts are near duplicates (within or across the sets).
    assert not selection.redundant_indexes([row["prompt"] for row in borderline + adversarial])


def test_the_report_reads_counts_as_words_not_python_dicts() -> None:
    distribution = {"min": 1, "p50": 2, "p95": 3, "max": 4}
    report = {
        "counts": {"labels": {"ok": 2}, "by_kind": {}, "by_source": {}, "by_category": {}},
        "agreement": {"agree": 2, "judged": 2, "rate": 1.0, "disagreements": 0},
        "json_validity": {"valid": 2, "invalid": 0, "rate": 1.0, "calls": 2, "retried_items": 0},
        "cost": {"estimated_usd": "0.01", "actual_usd": "0.01", "calls": 4},
        "stage1_finetune_estimate": {"epochs": 3, "training_tokens": 10, "base_model": "m", "usd": None},
        "selection": {"pii_replaced_in_prompts": {"ssn": 1, "email": 25}},
        "pii_placeholders_in_answers": {},
        "lengths": {"prompt": distribution},
        "dropped": {"judge_json_invalid": 2},
        "revisions": {"asked": 0, "accepted": 0},
    }
    text = render_markdown(build_id=1, status="succeeded", shortfall="", report=report)
    assert "- PII replaced in prompts: email 25, ssn 1; in answers: none" in text
    assert "- dropped from the files: judge json invalid 2" in text
    assert "{" not in text
