"""Every scorer, with replies that must pass and replies that must not (pure: no database)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models_app.benchmarks.scorers import (
    SCORER_OPTIONS,
    SCORERS,
    JudgeContext,
    JudgeReply,
    Score,
    ScorerSpecError,
    extract_numbers,
    json_schema_errors,
    judge_cache_key,
    normalize_text,
    parse_judge_reply,
    score_output,
    validate_scorer_spec,
)


def grade(spec: dict, output: str, reference=None, judge=None) -> Score:
    return score_output(spec=spec, output=output, reference=reference, judge=judge)


# ---- exact and normalised -------------------------------------------------------------------------


def test_exact_ignores_surrounding_whitespace_only():
    assert grade({"name": "exact"}, "  phone\n", "phone").score == 1.0
    miss = grade({"name": "exact"}, "Phone", "phone")
    assert miss.score == 0.0 and "expected exactly 'phone'" in miss.reason
    assert grade({"name": "exact", "ignore_case": True}, "Phone", "phone").score == 1.0


def test_normalized_match_ignores_case_accents_punctuation_and_spacing():
    assert normalize_text("  Yes, it IS — café! ") == "yes it is cafe"
    assert grade({"name": "normalized_match"}, "yes.", "Yes").score == 1.0
    assert grade({"name": "normalised_match"}, "Enterprise!", "enterprise").score == 1.0  # the British alias
    assert grade({"name": "normalized_match"}, "No", "Yes").score == 0.0
    assert grade({"name": "normalized_match"}, "the EMEA region", ["EMEA", "the emea region"]).score == 1.0


# ---- contains ---------------------------------------------------------------------------------------


def test_contains_any_passes_on_one_value():
    spec = {"name": "contains_any", "values": ["refund", "credit note"]}
    assert grade(spec, "We issued a Refund today.").score == 1.0
    miss = grade(spec, "We looked into it.")
    assert miss.score == 0.0 and "contains none of" in miss.reason


def test_contains_all_gives_partial_credit_unless_told_not_to():
    spec = {"name": "contains_all", "values": ["refund", "5 business days", "card"]}
    assert grade(spec, "Your refund reaches your card within 5 business days.").score == 1.0
    partial = grade(spec, "Your refund is on its way.")
    assert partial.score == pytest.approx(1 / 3) and "missing 2 of 3" in partial.reason
    assert grade({**spec, "partial": False}, "Your refund is on its way.").score == 0.0
    assert grade({"name": "contains_all", "values": ["ABC"], "case_sensitive": True}, "abc").score == 0.0


def test_contains_takes_the_values_from_the_reference_when_the_spec_has_none():
    assert grade({"name": "contains_all"}, "clause 7 of the agreement", ["clause 7"]).score == 1.0


# ---- regex ------------------------------------------------------------------------------------------


def test_regex_search_fullmatch_and_flags():
    assert grade({"name": "regex", "pattern": r"\bclause\s+12[.]2\b", "flags": "i"}, "See Clause 12.2.").score == 1.0
    assert grade({"name": "regex", "pattern": r"\bclause\s+12[.]2\b"}, "See Clause 12.2.").score == 0.0
    assert grade({"name": "regex", "pattern": "PASS", "fullmatch": True}, " PASS ").score == 1.0
    assert grade({"name": "regex", "pattern": "PASS", "fullmatch": True}, "PASS: fine").score == 0.0


def test_a_broken_regex_is_a_spec_error_naming_the_option():
    with pytest.raises(ScorerSpecError, match="pattern: not a valid regular expression"):
        grade({"name": "regex", "pattern": "("}, "x")
    with pytest.raises(ScorerSpecError, match="flags"):
        grade({"name": "regex", "pattern": "x", "flags": "q"}, "x")


# ---- JSON -------------------------------------------------------------------------------------------


def test_valid_json_accepts_a_fenced_object_and_reports_where_parsing_failed():
    assert grade({"name": "valid_json"}, '```json\n{"a": 1}\n```').score == 1.0
    broken = grade({"name": "valid_json"}, '{"a": 1,}')
    assert broken.score == 0.0 and "line 1 column" in broken.reason
    assert grade({"name": "valid_json", "type": "object"}, "[1, 2]").score == 0.0


TICKET_SCHEMA = {
    "type": "object",
    "required": ["category", "priority"],
    "additionalProperties": False,
    "properties": {"category": {"enum": ["billing", "account", "sales"]}, "priority": {"const": "high"}},
}


def test_json_schema_checks_required_enum_const_and_extra_properties():
    spec = {"name": "json_schema", "schema": TICKET_SCHEMA}
    assert grade(spec, '{"category": "billing", "priority": "high"}').score == 1.0
    assert "schema: $: 'priority' is a required property" == grade(spec, '{"category": "billing"}').reason
    assert "$.category: 'other' is not one of" in grade(spec, '{"category": "other", "priority": "high"}').reason
    assert "$.priority: 'high' was expected" in grade(spec, '{"category": "sales", "priority": "low"}').reason
    assert "('note' was unexpected)" in grade(spec, '{"category": "sales", "priority": "high", "note": 1}').reason
    assert grade(spec, "billing, high").score == 0.0


def test_json_schema_known_answers():
    schema = {
        "type": "object",
        "properties": {
            "region": {"type": "string", "minLength": 2, "pattern": "^[A-Z]"},
            "change": {"type": "number", "minimum": -100, "exclusiveMaximum": 1000, "multipleOf": 0.25},
            "months": {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 3, "uniqueItems": True},
            "trend": {"anyOf": [{"const": "up"}, {"const": "down"}]},
            "owner": {"oneOf": [{"type": "string"}, {"type": "null"}]},
            "code": {"not": {"const": "XX"}},
        },
    }
    good = {"region": "EMEA", "change": 12.5, "months": [1, 2], "trend": "up", "owner": None, "code": "FR"}
    assert json_schema_errors(good, schema) == []
    bad = {"region": "e", "change": 12.3, "months": [1, 1, 2, 3], "trend": "flat", "owner": 3, "code": "XX"}
    assert json_schema_errors(bad, schema) == [
        "$.change: 12.3 is not a multiple of 0.25",
        "$.code: 'XX' should not be valid under {'const': 'XX'}",
        "$.months: [1, 1, 2, 3] is too long",
        "$.months: [1, 1, 2, 3] has non-unique elements",
        "$.owner: 3 is not valid under any of the given schemas",  # oneOf: none of them
        "$.region: 'e' is too short",
        "$.region: 'e' does not match '^[A-Z]'",
        "$.trend: 'flat' is not valid under any of the given schemas",  # anyOf
    ]
    assert json_schema_errors(["a"], {"type": "array", "items": {"type": "integer"}}) == ["$[0]: 'a' is not of type 'integer'"]
    assert json_schema_errors(3.0, {"type": "integer"}) == []  # JSON makes no difference between 3 and 3.0
    assert json_schema_errors(True, {"type": "integer"}) == ["$: True is not of type 'integer'"]


def test_unknown_schema_keywords_are_refused_at_import_not_silently_ignored():
    # A typo would otherwise make the keyword an annotation that accepts everything.
    problems = validate_scorer_spec({"name": "json_schema", "schema": {"type": "object", "requried": ["a"]}}, None)
    assert problems == ["schema: #: unknown keyword 'requried' (not a JSON Schema 2020-12 keyword)"]
    nested = {"type": "object", "properties": {"a": {"type": "array", "items": {"minimun": 1}}}}
    assert validate_scorer_spec({"name": "json_schema", "schema": nested}, None) == [
        "schema: #/properties/a/items: unknown keyword 'minimun' (not a JSON Schema 2020-12 keyword)"
    ]
    # Every keyword of the draft is understood now, e.g. dependentRequired and $ref to $defs.
    schema = {"$defs": {"id": {"type": "integer"}}, "properties": {"id": {"$ref": "#/$defs/id"}},
              "dependentRequired": {"id": ["name"]}}
    assert validate_scorer_spec({"name": "json_schema", "schema": schema}, None) == []
    assert json_schema_errors({"id": "7"}, schema) == ["$: 'name' is a dependency of 'id'", "$.id: '7' is not of type 'integer'"]


def test_a_ref_to_nothing_is_a_spec_error_for_the_case():
    with pytest.raises(ScorerSpecError, match=r"schema: a \$ref points to nothing"):
        grade({"name": "json_schema", "schema": {"$ref": "#/$defs/missing"}}, "1")


# ---- numeric and length --------------------------------------------------------------------------------


def test_numeric_reads_the_number_in_the_reply_within_tolerance():
    assert extract_numbers("Revenue grew 15.0 % to $1,234.50 (−3 vs plan)") == [15.0, 1234.5, -3.0]
    assert grade({"name": "numeric", "tolerance": 0.05}, "15.0", 15).score == 1.0
    assert grade({"name": "numeric", "tolerance": 0.05}, "Growth was 15.04 %.", 15).score == 1.0
    miss = grade({"name": "numeric", "tolerance": 0.05}, "17.0", 15)
    assert miss.score == 0.0 and "2 away from 15" in miss.reason
    assert grade({"name": "numeric", "relative_tolerance": 0.01}, "$6,080", 6050).score == 1.0
    assert grade({"name": "numeric", "relative_tolerance": 0.001}, "$6,080", 6050).score == 0.0
    assert grade({"name": "numeric", "pick": "last"}, "From 120 to 138", 138).score == 1.0
    assert grade({"name": "numeric"}, "I'm not sure about that.", 29).reason == "no number in the reply (expected 29)"


def test_numeric_needs_a_numeric_reference():
    assert validate_scorer_spec({"name": "numeric"}, "about ten") == ["reference: needs a number, got 'about ten'"]


def test_length_bounds_in_characters_and_words():
    spec = {"name": "length", "min_words": 3, "max_words": 8, "max_chars": 60}
    assert grade(spec, "PedalPro: ride further, sweat less").score == 1.0
    too_long = grade(spec, "PedalPro is the product that finally brings together everything you ever wanted")
    assert too_long.score == 0.0 and "words > 8" in too_long.reason and "characters > 60" in too_long.reason
    assert grade(spec, "Ride.").reason == "1 words < 3"
    assert validate_scorer_spec({"name": "length"}, None) == [
        "length: give at least one of min_chars, max_chars, min_words, max_words"
    ]


# ---- combining ---------------------------------------------------------------------------------------------


def test_all_takes_the_lowest_score_and_the_reasons_of_what_failed():
    spec = {"name": "all", "scorers": [{"name": "contains_all", "values": ["BrightBrew"]}, {"name": "length", "max_chars": 20}]}
    assert grade(spec, "BrightBrew: cold brew").score == 0.0  # 21 characters
    assert grade(spec, "BrightBrew, weekly").score == 1.0
    result = grade(spec, "Coffee delivered weekly to you")
    assert result.score == 0.0 and "missing 1 of 1" in result.reason and "characters > 20" in result.reason


# ---- the LLM judge -------------------------------------------------------------------------------------------


class MemoryCache:
    def __init__(self) -> None:
        self.data: dict[str, dict] = {}

    def get(self, key):
        return self.data.get(key)

    def set(self, key, value):
        self.data[key] = dict(value)


def test_llm_judge_asks_the_judge_once_per_input_and_caches_the_verdict():
    calls: list[tuple[str, list]] = []

    def ask(model: str, messages: list) -> JudgeReply:
        calls.append((model, messages))
        return JudgeReply('{"score": 0.8, "reason": "polite and names the amount"}', prompt_tokens=120, completion_tokens=15)

    judge = JudgeContext(ask=ask, cache=MemoryCache(), default_model="mistral-large-latest", question="Refund?")
    spec = {"name": "llm_judge", "rubric": "Polite, names the refund amount."}
    first = grade(spec, "We refunded $29.", judge=judge)
    again = grade(spec, "We refunded $29.", judge=judge)
    other = grade(spec, "No.", judge=judge)

    assert first.score == pytest.approx(0.8) and "polite" in first.reason
    assert (first.judge_prompt_tokens, first.judge_completion_tokens, first.judge_cached) == (120, 15, False)
    assert again.score == first.score and again.judge_cached and again.judge_prompt_tokens == 0
    assert len(calls) == 2 and other.score == pytest.approx(0.8)
    model, messages = calls[0]
    assert model == "mistral-large-latest" and "Polite, names the refund amount." in messages[1]["content"]
    assert "We refunded $29." in messages[1]["content"]


def test_llm_judge_model_can_be_chosen_per_case_and_the_cache_key_follows_the_inputs():
    messages = [{"role": "user", "content": "x"}]
    assert judge_cache_key(model="a", messages=messages) != judge_cache_key(model="b", messages=messages)
    seen = []
    judge = JudgeContext(ask=lambda model, m: seen.append(model) or JudgeReply("Score: 7/10"), cache=MemoryCache(),
                         default_model="default-judge")
    assert grade({"name": "llm_judge", "rubric": "r", "judge_model": "small-judge"}, "x", judge=judge).score == pytest.approx(0.7)
    assert seen == ["small-judge"]


@pytest.mark.parametrize(
    "reply, expected",
    [
        ('{"score": 1, "reason": "ok"}', 1.0),
        ('Here you go: ```json\n{"score": 0.25, "reason": "vague"}\n```', 0.25),
        ("SCORE: 8/10 - mostly right", 0.8),
        ("score = 45/100", 0.45),
        ("0.6", 0.6),
        ('{"score": 7, "reason": "out of ten"}', 0.7),
    ],
)
def test_judge_replies_are_read_on_their_scale(reply, expected):
    parsed = parse_judge_reply(reply)
    assert parsed is not None and parsed[0] == pytest.approx(expected)


def test_an_unreadable_judge_reply_scores_zero_and_says_so():
    assert parse_judge_reply("I think it is fine.") is None
    judge = JudgeContext(ask=lambda model, m: JudgeReply("Looks fine to me."), cache=MemoryCache(), default_model="j")
    result = grade({"name": "llm_judge", "rubric": "r"}, "x", judge=judge)
    assert result.score == 0.0 and "no readable score" in result.reason


def test_llm_judge_without_a_rubric_or_a_judge_is_a_spec_error():
    assert validate_scorer_spec({"name": "llm_judge"}, None) == [
        "rubric: the LLM judge needs a rubric (what a good reply does)"
    ]
    with pytest.raises(ScorerSpecError, match="no judge model"):
        grade({"name": "llm_judge", "rubric": "r"}, "x")


# ---- the registry ---------------------------------------------------------------------------------------------


def judge_saying_good_is_right() -> JudgeContext:
    """A judge that gives 1 to the reply "good" and 0 to anything else."""
    def ask(model: str, messages: list) -> JudgeReply:
        right = messages[1]["content"].endswith("Reply to grade:\ngood")
        return JudgeReply(f'{{"score": {1 if right else 0}, "reason": "r"}}')

    return JudgeContext(ask=ask, cache=MemoryCache(), default_model="j")


# For every registered scorer: a specification, its reference, a reply it must pass and one it must not.
EXAMPLES = {
    "exact": ({"name": "exact", "ignore_case": True}, "phone", "Phone", "phones"),
    "normalized_match": ({"name": "normalized_match"}, "Yes", "yes.", "No"),
    "contains_any": ({"name": "contains_any", "values": ["refund", "credit"]}, None, "a refund", "nothing"),
    "contains_all": ({"name": "contains_all", "values": ["a1", "b2"], "partial": False}, None, "a1 b2", "a1 only"),
    "regex": ({"name": "regex", "pattern": r"\d{3}", "fullmatch": True}, None, "123", "1234"),
    "valid_json": ({"name": "valid_json", "type": "object"}, None, '{"a": 1}', "[1]"),
    "json_schema": ({"name": "json_schema", "schema": {"type": "object", "required": ["a"]}}, None, '{"a": 1}', '{"b": 1}'),
    "numeric": ({"name": "numeric", "tolerance": 0.5, "pick": "last"}, 10, "from 3 to 10.4", "from 10 to 11"),
    "length": ({"name": "length", "max_words": 3}, None, "one two three", "one two three four"),
    "llm_judge": ({"name": "llm_judge", "rubric": "r"}, None, "good", "bad"),
    "all": ({"name": "all", "scorers": [{"name": "contains_any", "values": ["a"]}, {"name": "length", "max_chars": 5}]},
            None, "a b", "a b c d"),
}


def test_every_registered_scorer_has_an_example_and_an_options_table():
    # A scorer added to SCORERS without an example below (or without the options it reads, which the
    # import checks) fails here, naming it.
    assert set(SCORERS) - set(EXAMPLES) == set()
    assert set(SCORERS) ^ set(SCORER_OPTIONS) == set()


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_each_scorer_imports_its_example_and_tells_a_right_reply_from_a_wrong_one(name):
    spec, reference, right, wrong = EXAMPLES[name]
    assert validate_scorer_spec(spec, reference) == []
    judge = judge_saying_good_is_right()
    assert grade(spec, right, reference, judge=judge).score == 1.0
    assert grade(spec, wrong, reference, judge=judge).score < 1.0


# ---- options that cannot be used --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, reference, problem",
    [
        ({"name": "json_schema", "schema": {"type": "string", "pattern": "("}}, None,
         "schema: #/pattern: not a valid regular expression: missing ), unterminated subpattern at position 0"),
        ({"name": "json_schema", "schema": {"type": "number", "minimum": "5"}}, None, "schema: #/minimum: '5' is not of type 'number'"),
        ({"name": "json_schema", "schema": {"type": "object", "required": "name"}}, None,
         "schema: #/required: 'name' is not of type 'array'"),
        ({"name": "json_schema", "schema": {"properties": {"n": {"multipleOf": 0}}}}, None,
         "schema: #/properties/n/multipleOf: 0 is less than or equal to the minimum of 0"),
        ({"name": "json_schema", "schema": {"items": "string"}}, None,
         "schema: #/items: 'string' is not of type 'object', 'boolean'"),
        ({"name": "json_schema", "schema": {"properties": "name"}}, None, "schema: #/properties: 'name' is not of type 'object'"),
        ({"name": "json_schema", "schema": {"type": "dict"}}, None,
         "schema: #/type: 'dict' is not valid under any of the given schemas"),
        ({"name": "contains_all", "values": ["a"], "partial": "no"}, None, 'partial: needs a boolean (true or false), got "no"'),
        ({"name": "exact", "ignore_case": "yes"}, "x", 'ignore_case: needs a boolean (true or false), got "yes"'),
        ({"name": "regex", "pattern": "x", "fullmatch": 1}, None, "fullmatch: needs a boolean (true or false), got 1"),
        ({"name": "exact", "ignorecase": True}, "x", "ignorecase: not an option of the exact scorer (its options: ignore_case)"),
        ({"name": "numeric", "tolerance": "0.5"}, 3, 'tolerance: needs a number, got "0.5"'),
        ({"name": "numeric", "pick": "largest"}, 3, "pick: needs 'first' or 'last', got \"largest\""),
        ({"name": "valid_json", "type": "dict"}, None,
         'type: needs one of null, boolean, object, array, number, string, integer, got "dict"'),
        ({"name": "all", "scorers": [{"name": "contains_all", "values": ["a"], "partial": "no"}]}, None,
         'scorers[0]: partial: needs a boolean (true or false), got "no"'),
    ],
)
def test_unusable_options_are_refused_at_import_and_are_a_spec_error_when_scored(spec, reference, problem):
    assert validate_scorer_spec(spec, reference) == [problem]
    # A case stored before these checks existed: scoring it is a spec error for that case (the run
    # records "scorer error: …" for it), never another exception that would stop the run.
    with pytest.raises(ScorerSpecError):
        grade(spec, '{"a": "x"}', reference)


def test_an_error_raised_inside_a_scorer_is_a_spec_error_for_that_case():
    class UnreadableCache(MemoryCache):
        def get(self, key):
            return {"score": "high", "reason": "written by something else"}

    judge = JudgeContext(ask=lambda model, m: JudgeReply('{"score": 1}'), cache=UnreadableCache(), default_model="j")
    with pytest.raises(ScorerSpecError, match="scorer llm_judge: could not convert string to float: 'high'"):
        grade({"name": "llm_judge", "rubric": "r"}, "x", judge=judge)


@pytest.mark.parametrize("reply", ["NaN", "Infinity", "-Infinity", "1" * 5000, "[" * 100_000 + "]" * 100_000])
def test_whatever_the_model_replies_is_graded_never_raised(reply):
    # NaN and Infinity are not JSON (and would break number checks), Python refuses integers of more
    # than 4 300 digits, and deep nesting exhausts the recursion limit: each is a reply worth 0.
    for spec in ({"name": "valid_json"}, {"name": "json_schema", "schema": {"type": "number", "multipleOf": 0.25}}):
        result = grade(spec, reply)
        assert result.score == 0.0 and result.reason.startswith("not valid JSON")


def test_multiple_of_a_tiny_divisor_does_not_overflow():
    # 2¹⁰⁰⁰ / 2⁻¹⁰⁰⁰ is infinite as a float, and rounding infinity raised OverflowError mid-run. Powers of
    # two are exact in binary, so these are true multiples.
    assert json_schema_errors(2.0**1000, {"multipleOf": 2.0**-1000}) == []
    assert json_schema_errors(1.5, {"multipleOf": 2.0**-1070}) == []
    assert json_schema_errors(3 * 2.0**-1000, {"multipleOf": 2.0**-999}) == [f"$: {3 * 2.0**-1000} is not a multiple of {2.0**-999}"]
    assert json_schema_errors(0.3, {"multipleOf": 0.1}) == []  # floating-point noise is not a remainder
    assert json_schema_errors(12.3, {"multipleOf": 0.25}) == ["$: 12.3 is not a multiple of 0.25"]


def test_unknown_or_missing_scorer_names_list_the_known_ones():
    assert "known: exact, normalized_match" in validate_scorer_spec({"name": "bleu"}, None)[0]
    assert validate_scorer_spec("exact", None) == ['scorer: needs an object such as {"name": "exact"}']
    assert validate_scorer_spec({"name": "exact"}, None) == ["reference: the exact scorer needs the expected answer"]


@given(st.text(max_size=200), st.sampled_from(["exact", "normalized_match", "contains_any", "numeric", "valid_json"]))
def test_scores_always_lie_in_the_unit_interval(output, name):
    spec = {"name": name, "values": ["a"]} if name == "contains_any" else {"name": name}
    result = grade(spec, output, 3 if name == "numeric" else "a")
    assert 0.0 <= result.score <= 1.0 and result.reason
