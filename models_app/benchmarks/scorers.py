"""Benchmark scorers: how a model's reply to a case is graded. Pure (no Django).

A case names its scorer with a specification, a JSON object whose `name` picks the scorer and whose
other keys are its options:

    {"name": "normalized_match"}
    {"name": "contains_all", "values": ["refund", "5 business days"]}
    {"name": "numeric", "tolerance": 0.5}
    {"name": "json_schema", "schema": {"type": "object", "required": ["category"]}}
    {"name": "llm_judge", "rubric": "Polite, names the refund amount, no promises."}

Every scorer returns a `Score`: a number in [0, 1] and a short reason a person can read next to the
reply. Scorers are looked up by name in `SCORERS`, so a new one is a function plus one entry.

`reference` is the case's expected answer (a string, a number, or any JSON value); where a scorer
needs a list (contains_any/all) it may come from the options (`values`) or from the reference.

The LLM judge is the only scorer that calls a model. It receives a `JudgeContext` holding a callable
that asks the judge model (the caller wires it to the provider layer) and a cache; the verdict is
cached under a hash of everything the judge saw, so the same reply is never judged (or paid for) twice.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
import unicodedata
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import jsonschema
import jsonschema.protocols
import jsonschema.validators
import jsonschema_specifications  # type: ignore[import-untyped]  # ships no type information (no py.typed)
import referencing.exceptions
import referencing.jsonschema

REASON_MAX_CHARS = 300


@dataclass(frozen=True)
class Score:
    score: float  # 0..1
    reason: str
    # Tokens and money the scorer itself spent (the LLM judge); zero for the others.
    judge_prompt_tokens: int = 0
    judge_completion_tokens: int = 0
    judge_model: str = ""
    judge_cached: bool = False

    def __post_init__(self) -> None:
        if not (0.0 <= self.score <= 1.0) or math.isnan(self.score):
            raise ValueError(f"a score must be within [0, 1], got {self.score}")
        if len(self.reason) > REASON_MAX_CHARS:
            object.__setattr__(self, "reason", self.reason[: REASON_MAX_CHARS - 1] + "…")


class ScorerSpecError(ValueError):
    """A scorer specification that cannot be used; the message names the option."""


# ---- text helpers ------------------------------------------------------------------------------

_PUNCTUATION_CATEGORIES = ("P", "S")  # punctuation and symbols


def normalize_text(text: str) -> str:
    """Case-, accent-, punctuation- and whitespace-insensitive form: "  Yes, it IS! " -> "yes it is".

    Accents are dropped (NFKD) so that "café" and "cafe" match; symbols such as "$" and "%" are
    dropped with punctuation, so compare numbers with the `numeric` scorer instead."""
    decomposed = unicodedata.normalize("NFKD", text)
    kept = []
    for char in decomposed:
        category = unicodedata.category(char)
        if category == "Mn":  # combining accent
            continue
        kept.append(" " if category[0] in _PUNCTUATION_CATEGORIES else char)
    return " ".join("".join(kept).casefold().split())


def _short(text: str, limit: int = 60) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _string_list(value: Any, *, option: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Sequence) and value and all(isinstance(item, str) and item for item in value):
        return list(value)
    raise ScorerSpecError(f"{option}: needs a non-empty list of non-empty strings")


# ---- the scorers -------------------------------------------------------------------------------


def score_exact(*, output: str, reference: Any, options: Mapping[str, Any]) -> Score:
    """Equal after trimming surrounding whitespace (case-sensitive unless `ignore_case`)."""
    expected = _as_text(reference).strip()
    got = output.strip()
    if options.get("ignore_case"):
        equal = got.casefold() == expected.casefold()
    else:
        equal = got == expected
    if equal:
        return Score(1.0, "exact match")
    return Score(0.0, f"expected exactly {_short(expected)!r}, got {_short(got)!r}")


def score_normalized_match(*, output: str, reference: Any, options: Mapping[str, Any]) -> Score:
    """Equal after `normalize_text` on both sides; any of several references when given a list."""
    references = reference if isinstance(reference, list) else [reference]
    got = normalize_text(output)
    for candidate in references:
        if got == normalize_text(_as_text(candidate)):
            return Score(1.0, "matches the reference (normalised)")
    return Score(0.0, f"expected {_short(_as_text(references[0]))!r} (normalised), got {_short(output)!r}")


def _contains(needle: str, haystack: str, *, case_sensitive: bool) -> bool:
    if case_sensitive:
        return needle in haystack
    return normalize_text(needle) in normalize_text(haystack) if normalize_text(needle) else needle in haystack


def _contains_values(options: Mapping[str, Any], reference: Any) -> list[str]:
    source = options.get("values", reference)
    return _string_list(source, option="values")


def score_contains_any(*, output: str, reference: Any, options: Mapping[str, Any]) -> Score:
    values = _contains_values(options, reference)
    case_sensitive = bool(options.get("case_sensitive", False))
    for value in values:
        if _contains(value, output, case_sensitive=case_sensitive):
            return Score(1.0, f"contains {_short(value, 40)!r}")
    return Score(0.0, f"contains none of {', '.join(repr(_short(v, 30)) for v in values[:5])}")


def score_contains_all(*, output: str, reference: Any, options: Mapping[str, Any]) -> Score:
    """Fraction of the values present (1.0 when all are); `partial: false` makes it all or nothing."""
    values = _contains_values(options, reference)
    case_sensitive = bool(options.get("case_sensitive", False))
    missing = [value for value in values if not _contains(value, output, case_sensitive=case_sensitive)]
    if not missing:
        return Score(1.0, f"contains all {len(values)} required value(s)")
    fraction = (len(values) - len(missing)) / len(values)
    score = fraction if options.get("partial", True) else 0.0
    return Score(score, f"missing {len(missing)} of {len(values)}: {', '.join(repr(_short(v, 30)) for v in missing[:5])}")


_REGEX_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE}


def _compiled_pattern(options: Mapping[str, Any], reference: Any) -> re.Pattern[str]:
    pattern = options.get("pattern", reference if isinstance(reference, str) else None)
    if not isinstance(pattern, str) or not pattern:
        raise ScorerSpecError("pattern: needs a regular expression (in the options or as the reference)")
    flags_text = options.get("flags", "")
    if not isinstance(flags_text, str) or any(flag not in _REGEX_FLAGS for flag in flags_text):
        raise ScorerSpecError(f"flags: use letters among {''.join(_REGEX_FLAGS)}, got {flags_text!r}")
    flags = 0
    for flag in flags_text:
        flags |= _REGEX_FLAGS[flag]
    try:
        return re.compile(pattern, flags)
    except re.error as error:
        raise ScorerSpecError(f"pattern: not a valid regular expression: {error}") from None


def score_regex(*, output: str, reference: Any, options: Mapping[str, Any]) -> Score:
    """Pattern found in the reply (`search`), or matching all of it with `fullmatch: true`."""
    pattern = _compiled_pattern(options, reference)
    full = bool(options.get("fullmatch", False))
    text = output.strip() if full else output
    matched = pattern.fullmatch(text) if full else pattern.search(text)
    if matched:
        return Score(1.0, f"matches /{_short(pattern.pattern, 40)}/")
    return Score(0.0, f"does not {'fully ' if full else ''}match /{_short(pattern.pattern, 40)}/")


_JSON_TYPES = ("null", "boolean", "object", "array", "number", "string", "integer")
_FENCE = re.compile(r"^```(?:json)?\s*(?P<body>.*?)\s*```$", re.DOTALL | re.IGNORECASE)


def _parse_json_reply(output: str) -> tuple[Any, str | None]:
    """The JSON value of a reply (a ```json fence around it is accepted), or an error message."""
    text = output.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group("body")
    try:
        return json.loads(text, parse_constant=_refuse_constant), None
    except json.JSONDecodeError as error:
        return None, f"not valid JSON: {error.msg} at line {error.lineno} column {error.colno}"
    except (ValueError, RecursionError) as error:
        # The reply is the model's, so anything it can hold is graded, never raised: NaN/Infinity
        # (not JSON, and they break number checks), integers over Python's 4 300 digits, deep nesting.
        return None, f"not valid JSON: {_short(str(error), 80)}"


def _json_type_name(value: Any) -> str:
    """The JSON Schema type of a parsed value, the narrowest first: 3.0 is an integer, as in JSON Schema."""
    checker = jsonschema.Draft202012Validator.TYPE_CHECKER
    return next(name for name in ("null", "boolean", "integer", "number", "string", "array", "object") if checker.is_type(value, name))


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def score_valid_json(*, output: str, reference: Any, options: Mapping[str, Any]) -> Score:
    value, error = _parse_json_reply(output)
    if error:
        return Score(0.0, error)
    wanted = options.get("type")
    if wanted and not jsonschema.Draft202012Validator.TYPE_CHECKER.is_type(value, wanted):
        return Score(0.0, f"valid JSON, but a {_json_type_name(value)}, not a {wanted}")
    return Score(1.0, "valid JSON")


def score_json_schema(*, output: str, reference: Any, options: Mapping[str, Any]) -> Score:
    schema = options.get("schema", reference)
    if not isinstance(schema, Mapping):
        raise ScorerSpecError("schema: needs a JSON Schema object (in the options or as the reference)")
    # Checked before the reply is read, so the import's dry run on an empty reply finds a bad schema too.
    _checked_validator(schema)
    value, error = _parse_json_reply(output)
    if error:
        return Score(0.0, error)
    problems = json_schema_errors(value, schema)
    if problems:
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        return Score(0.0, f"schema: {problems[0]}{more}")
    return Score(1.0, "valid JSON matching the schema")


_NUMBER_IN_TEXT = re.compile(r"(?<![\w.])[-+−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?")


def extract_numbers(text: str) -> list[float]:
    """Numbers written in `text`: "−1,234.5", "12%", "$40" -> [-1234.5, 12.0, 40.0]."""
    numbers = []
    for match in _NUMBER_IN_TEXT.finditer(text):
        token = match.group(0).replace(",", "").replace("−", "-")
        try:
            numbers.append(float(token))
        except ValueError:
            continue
    return numbers


def score_numeric(*, output: str, reference: Any, options: Mapping[str, Any]) -> Score:
    """The first number in the reply (`pick: last` for the last) within `tolerance` (absolute) or
    `relative_tolerance` (a fraction of the reference) of the reference number."""
    try:
        expected = float(options.get("value", reference))
    except (TypeError, ValueError):
        raise ScorerSpecError(f"reference: needs a number, got {reference!r}") from None
    tolerance = float(options.get("tolerance", 0.0))
    relative = float(options.get("relative_tolerance", 0.0))
    if tolerance < 0 or relative < 0:
        raise ScorerSpecError("tolerance/relative_tolerance: must be >= 0")
    numbers = extract_numbers(output)
    if not numbers:
        return Score(0.0, f"no number in the reply (expected {expected:g})")
    got = numbers[-1] if options.get("pick") == "last" else numbers[0]
    allowed = max(tolerance, relative * abs(expected))
    difference = abs(got - expected)
    if difference <= allowed + 1e-12:
        return Score(1.0, f"{got:g} is within {allowed:g} of {expected:g}")
    return Score(0.0, f"{got:g} is {difference:g} away from {expected:g} (allowed {allowed:g})")


def score_length(*, output: str, reference: Any, options: Mapping[str, Any]) -> Score:
    """Characters within [min_chars, max_chars] and words within [min_words, max_words]."""
    bounds = {key: options.get(key) for key in ("min_chars", "max_chars", "min_words", "max_words")}
    if all(value is None for value in bounds.values()):
        raise ScorerSpecError("length: give at least one of min_chars, max_chars, min_words, max_words")
    for key, value in bounds.items():
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise ScorerSpecError(f"{key}: needs a non-negative integer, got {value!r}")
    text = output.strip()
    chars, words = len(text), len(text.split())
    problems = []
    if bounds["min_chars"] is not None and chars < bounds["min_chars"]:
        problems.append(f"{chars} characters < {bounds['min_chars']}")
    if bounds["max_chars"] is not None and chars > bounds["max_chars"]:
        problems.append(f"{chars} characters > {bounds['max_chars']}")
    if bounds["min_words"] is not None and words < bounds["min_words"]:
        problems.append(f"{words} words < {bounds['min_words']}")
    if bounds["max_words"] is not None and words > bounds["max_words"]:
        problems.append(f"{words} words > {bounds['max_words']}")
    if problems:
        return Score(0.0, "; ".join(problems))
    return Score(1.0, f"{chars} characters, {words} words: within bounds")


# ---- the LLM judge -------------------------------------------------------------------------------


class JudgeCache(Protocol):
    def get(self, key: str) -> Mapping[str, Any] | None: ...

    def set(self, key: str, value: Mapping[str, Any]) -> None: ...


@dataclass(frozen=True)
class JudgeReply:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


# (model, messages) -> the judge's reply; wired by the caller to the provider layer (with retries).
AskJudge = Callable[[str, list[dict[str, str]]], JudgeReply]


@dataclass
class JudgeContext:
    ask: AskJudge
    cache: JudgeCache
    default_model: str
    question: str = ""  # the case's prompt as the model saw it (markers stripped)
    extra: dict[str, Any] = field(default_factory=dict)


JUDGE_SYSTEM_PROMPT = (
    "You grade an AI assistant's reply against a rubric. Reply with one JSON object and nothing else: "
    '{"score": <number from 0 to 1>, "reason": "<one short sentence>"}. 1 means the reply fully meets '
    "the rubric, 0 that it does not meet it at all."
)


def judge_messages(*, rubric: str, question: str, reference: Any, output: str) -> list[dict[str, str]]:
    parts = [f"Rubric:\n{rubric}", f"Question:\n{question}" if question else ""]
    if reference not in (None, ""):
        parts.append(f"Reference answer:\n{_as_text(reference)}")
    parts.append(f"Reply to grade:\n{output}")
    return [
        {"role": "system", "content": JUDGE_SYSTEM_PROMPT},
        {"role": "user", "content": "\n\n".join(part for part in parts if part)},
    ]


def judge_cache_key(*, model: str, messages: list[dict[str, str]]) -> str:
    """The hash of everything the judge sees: same inputs, same verdict, paid once."""
    canonical = json.dumps({"model": model, "messages": messages}, sort_keys=True, ensure_ascii=False)
    return "judge:" + hashlib.sha256(canonical.encode()).hexdigest()


_SCORE_FIELD = re.compile(r"score\W{0,3}\s*(?P<value>-?\d+(?:\.\d+)?)\s*(?P<scale>/\s*(?:10|100|1)\b)?", re.IGNORECASE)


def parse_judge_reply(text: str) -> tuple[float, str] | None:
    """(score in [0, 1], reason) from a judge's reply, or None when it holds no score.

    Accepts the JSON object asked for (also inside a ```json fence or surrounded by text), or a
    "Score: 7/10" line; a score above 1 is read on the 10- or 100-point scale it implies."""
    value: float | None = None
    reason = ""
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        try:
            obj = json.loads(text[start : end + 1])
        except json.JSONDecodeError:
            obj = None
        if isinstance(obj, dict) and isinstance(obj.get("score"), (int, float)) and not isinstance(obj.get("score"), bool):
            value = float(obj["score"])
            reason = str(obj.get("reason") or "")
    if value is None:
        match = _SCORE_FIELD.search(text)
        if match is None:
            stripped = text.strip()
            try:
                value = float(stripped)
            except ValueError:
                return None
        else:
            value = float(match.group("value"))
            scale = (match.group("scale") or "").replace("/", "").strip()
            if scale:
                value = value / float(scale)
        reason = reason or text.strip()
    if math.isnan(value) or value < 0:
        return None
    if value > 1:
        value = value / 10 if value <= 10 else value / 100 if value <= 100 else math.nan
    if math.isnan(value):
        return None
    return min(1.0, value), reason


def score_llm_judge(*, output: str, reference: Any, options: Mapping[str, Any], judge: JudgeContext | None = None) -> Score:
    rubric = options.get("rubric")
    if not isinstance(rubric, str) or not rubric.strip():
        raise ScorerSpecError("rubric: the LLM judge needs a rubric (what a good reply does)")
    if judge is None:
        raise ScorerSpecError("llm_judge: no judge model is configured for this run")
    model = str(options.get("judge_model") or judge.default_model)
    messages = judge_messages(rubric=rubric, question=judge.question, reference=reference, output=output)
    key = judge_cache_key(model=model, messages=messages)
    cached = judge.cache.get(key)
    if cached is not None:
        return Score(float(cached["score"]), str(cached["reason"]), judge_model=model, judge_cached=True)
    reply = judge.ask(model, messages)
    parsed = parse_judge_reply(reply.text)
    if parsed is None:
        score, reason = 0.0, f"judge {model} gave no readable score: {_short(reply.text, 80)!r}"
    else:
        score, reason = parsed[0], f"judge {model}: {_short(parsed[1], 200)}"
    verdict = Score(
        score,
        reason,
        judge_prompt_tokens=reply.prompt_tokens,
        judge_completion_tokens=reply.completion_tokens,
        judge_model=model,
    )
    # Cached even when unreadable: the judge answered and was paid; asking again would pay twice.
    judge.cache.set(key, {"score": verdict.score, "reason": verdict.reason})
    return verdict


# ---- combining scorers ---------------------------------------------------------------------------


def score_all(
    *, output: str, reference: Any, options: Mapping[str, Any], judge: JudgeContext | None = None
) -> Score:
    """Every listed scorer must agree: the lowest of their scores, with the reasons of the failing ones.
    `{"name": "all", "scorers": [{"name": "contains_all", "values": ["BrightBrew"]}, {"name": "length", "max_chars": 60}]}`"""
    parts = options.get("scorers")
    if not isinstance(parts, list) or not parts or not all(isinstance(part, Mapping) for part in parts):
        raise ScorerSpecError("scorers: 'all' needs a non-empty list of scorer specifications")
    results = [score_output(spec=part, output=output, reference=reference, judge=judge) for part in parts]
    lowest = min(result.score for result in results)
    failing = [result.reason for result in results if result.score < 1.0]
    return Score(
        lowest,
        "; ".join(failing) if failing else "; ".join(result.reason for result in results),
        judge_prompt_tokens=sum(result.judge_prompt_tokens for result in results),
        judge_completion_tokens=sum(result.judge_completion_tokens for result in results),
        judge_model=next((result.judge_model for result in results if result.judge_model), ""),
        judge_cached=all(result.judge_cached for result in results if result.judge_model),
    )


# ---- registry and entry point ------------------------------------------------------------------

ScorerFunction = Callable[..., Score]

SCORERS: dict[str, ScorerFunction] = {
    "exact": score_exact,
    "normalized_match": score_normalized_match,
    "contains_any": score_contains_any,
    "contains_all": score_contains_all,
    "regex": score_regex,
    "valid_json": score_valid_json,
    "json_schema": score_json_schema,
    "numeric": score_numeric,
    "length": score_length,
    "llm_judge": score_llm_judge,
    "all": score_all,
}
# Alternative spellings people reach for.
SCORER_ALIASES = {"normalised_match": "normalized_match", "normalized": "normalized_match", "json": "valid_json",
                  "judge": "llm_judge", "numeric_tolerance": "numeric", "length_bounds": "length"}


# The options each scorer reads and what each must be. Checked at import and again before scoring, so a
# typo ("ignorecase") or a string where JSON wants a boolean ("partial": "no", which reads as true) is an
# error naming the option instead of a grade silently computed some other way. Options whose shape is
# richer (values, pattern, schema, scorers) are checked by the scorer itself.
_BOOLEAN = ("a boolean (true or false)", lambda value: isinstance(value, bool))
_NUMBER = ("a number", _is_number)
_COUNT = ("a non-negative integer", _is_count)
_TEXT = ("a string", lambda value: isinstance(value, str))
_CHECKED_BY_SCORER = ("", lambda value: True)
SCORER_OPTIONS: dict[str, dict[str, tuple[str, Callable[[Any], bool]]]] = {
    "exact": {"ignore_case": _BOOLEAN},
    "normalized_match": {},
    "contains_any": {"values": _CHECKED_BY_SCORER, "case_sensitive": _BOOLEAN},
    "contains_all": {"values": _CHECKED_BY_SCORER, "case_sensitive": _BOOLEAN, "partial": _BOOLEAN},
    "regex": {"pattern": _CHECKED_BY_SCORER, "flags": _CHECKED_BY_SCORER, "fullmatch": _BOOLEAN},
    "valid_json": {"type": (f"one of {', '.join(_JSON_TYPES)}", lambda value: value in _JSON_TYPES)},
    "json_schema": {"schema": _CHECKED_BY_SCORER},
    "numeric": {"value": _NUMBER, "tolerance": _NUMBER, "relative_tolerance": _NUMBER,
                "pick": ("'first' or 'last'", lambda value: value in ("first", "last"))},
    "length": {"min_chars": _COUNT, "max_chars": _COUNT, "min_words": _COUNT, "max_words": _COUNT},
    "llm_judge": {"rubric": _CHECKED_BY_SCORER, "judge_model": _TEXT},
    "all": {"scorers": _CHECKED_BY_SCORER},
}


# What a scorer raises when its specification cannot be used in a way no check above foresaw.
_SCORING_ERRORS = (re.error, TypeError, ValueError, ArithmeticError)


def _check_options(name: str, options: Mapping[str, Any]) -> None:
    known = SCORER_OPTIONS[name]
    for option, value in options.items():
        if option not in known:
            allowed = ", ".join(known) or "none"
            raise ScorerSpecError(f"{option}: not an option of the {name} scorer (its options: {allowed})")
        expected, accepts = known[option]
        if not accepts(value):
            raise ScorerSpecError(f"{option}: needs {expected}, got {json.dumps(value)}")


def scorer_name(spec: Mapping[str, Any]) -> str:
    name = spec.get("name") if isinstance(spec, Mapping) else None
    if not isinstance(name, str) or not name:
        raise ScorerSpecError(f"scorer: needs a 'name' among {', '.join(SCORERS)}")
    name = SCORER_ALIASES.get(name, name)
    if name not in SCORERS:
        raise ScorerSpecError(f"scorer: unknown name {name!r}; known: {', '.join(SCORERS)}")
    return name


def score_output(
    *, spec: Mapping[str, Any], output: str, reference: Any, judge: JudgeContext | None = None
) -> Score:
    """Grade `output` with the scorer `spec` names. Raises ScorerSpecError for an unusable spec."""
    name = scorer_name(spec)
    options = {key: value for key, value in spec.items() if key != "name"}
    _check_options(name, options)
    try:
        if name in ("llm_judge", "all"):
            return SCORERS[name](output=output, reference=reference, options=options, judge=judge)
        return SCORERS[name](output=output, reference=reference, options=options)
    except ScorerSpecError:
        raise
    except _SCORING_ERRORS as error:
        # An option the checks let through (a case imported before they existed, or a gap in them)
        # costs this case its grade with the reason, instead of stopping the whole run.
        raise ScorerSpecError(f"scorer {name}: {error}") from error


def validate_scorer_spec(spec: Any, reference: Any) -> list[str]:
    """Problems with a scorer specification, found without a reply (for imports). Empty when usable."""
    if not isinstance(spec, Mapping):
        return ["scorer: needs an object such as {\"name\": \"exact\"}"]
    try:
        name = scorer_name(spec)
    except ScorerSpecError as error:
        return [str(error)]
    options = {key: value for key, value in spec.items() if key != "name"}
    if name in ("exact", "normalized_match") and reference in (None, "", []):
        return [f"reference: the {name} scorer needs the expected answer"]
    try:
        _check_options(name, options)
        if name == "all":
            parts = options.get("scorers")
            if not isinstance(parts, list) or not parts:
                raise ScorerSpecError("scorers: 'all' needs a non-empty list of scorer specifications")
            return [f"scorers[{index}]: {problem}" for index, part in enumerate(parts)
                    for problem in validate_scorer_spec(part, reference)]
        if name == "llm_judge":
            if not isinstance(options.get("rubric"), str) or not options["rubric"].strip():
                raise ScorerSpecError("rubric: the LLM judge needs a rubric (what a good reply does)")
        else:
            # A dry run on an empty reply exercises the option parsing of every other scorer (the
            # json_schema scorer checks its schema before it reads the reply).
            SCORERS[name](output="", reference=reference, options=options)
    except ScorerSpecError as error:
        return [str(error)]
    except _SCORING_ERRORS as error:
        return [f"scorer {name}: {error}"]
    return []


# ---- JSON Schema (draft 2020-12, by the jsonschema library) ------------------------------------------
# A schema is checked against the draft's metaschema before it is used, so a keyword value of the
# wrong kind ({"minimum": "5"}, {"required": "name"}, a pattern that is not a regular expression) is
# refused at import with its path instead of raising or mis-grading while scoring. The metaschema alone
# lets any unknown keyword through — a typo such as "requried" would silently accept everything — so
# the check uses a stricter one, built the way the draft intends (a `$dynamicAnchor: meta` extension):
# every schema in the tree may hold only the draft's own keywords. `format` stays an annotation, as
# the draft says by default.

_STRICT_METASCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "urn:genesis:benchmark-scorer-schema",
    "$dynamicAnchor": "meta",
    "$ref": "https://json-schema.org/draft/2020-12/schema",
    "unevaluatedProperties": False,
}
_METASCHEMA_CHECKER = jsonschema.Draft202012Validator(
    _STRICT_METASCHEMA,
    registry=jsonschema_specifications.REGISTRY.with_resource(
        _STRICT_METASCHEMA["$id"], referencing.jsonschema.DRAFT202012.create_resource(_STRICT_METASCHEMA)
    ),
    format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,  # "format": "regex" checks each pattern
)
# Every keyword of the draft, from its vocabularies' metaschemas: what an unknown keyword is not.
_DRAFT_KEYWORDS = frozenset(
    keyword
    for uri, resource in jsonschema_specifications.REGISTRY.items()
    if uri.startswith("https://json-schema.org/draft/2020-12/meta/")
    for keyword in resource.contents.get("properties", {})
)


def _schema_path(error: jsonschema.ValidationError) -> str:
    return "/".join(["#", *(str(part) for part in error.absolute_path)])


def json_schema_check_schema(schema: Any) -> list[str]:
    """What is wrong with `schema` as a draft 2020-12 schema, each with its path ("#/properties/age/minimum:
    '5' is not of type 'number'"); empty when it can be used."""
    errors = sorted(_METASCHEMA_CHECKER.iter_errors(schema), key=lambda error: [str(part) for part in error.absolute_path])
    # A wrong keyword value stops the metaschema from counting the keywords around it as evaluated, so
    # the unknown-keyword errors are only meaningful once nothing else is wrong.
    wrong_values = [error for error in errors if error.validator != "unevaluatedProperties"]
    problems: list[str] = []
    for error in wrong_values or errors:
        if error.validator == "unevaluatedProperties":
            # A schema holding one with an unknown keyword is reported too (its keywords count as
            # unevaluated once a part fails): only the schema that holds the unknown keyword is named.
            unknown = ", ".join(f"'{key}'" for key in error.instance if key not in _DRAFT_KEYWORDS)
            if not unknown:
                continue
            problem = f"{_schema_path(error)}: unknown keyword {unknown} (not a JSON Schema 2020-12 keyword)"
        elif error.validator == "format" and error.validator_value == "regex":
            problem = f"{_schema_path(error)}: not a valid regular expression: {error.cause}"
        else:
            problem = f"{_schema_path(error)}: {error.message}"
        if problem not in problems:  # the metaschema reaches some keywords along several paths
            problems.append(problem)
    return problems


def _multiple_of(
    validator: jsonschema.protocols.Validator, divisor: float, value: Any, schema: Mapping[str, Any]
) -> Iterator[jsonschema.ValidationError]:
    """`multipleOf` without floating-point noise: 0.3 is a multiple of 0.1 (the library's division says
    it is not). The IEEE remainder is exact and cannot overflow, unlike value / divisor for a tiny one."""
    if validator.is_type(value, "number") and abs(math.remainder(value, divisor)) > 1e-9 * divisor:
        yield jsonschema.ValidationError(f"{value} is not a multiple of {divisor}")


_ReplyValidator = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"multipleOf": _multiple_of})


def _checked_validator(schema: Any) -> jsonschema.protocols.Validator:
    """The validator of `schema` once checked (ScorerSpecError naming every problem otherwise)."""
    return _validator_of_checked_schema(json.dumps(schema, sort_keys=True))


@functools.lru_cache(maxsize=256)
def _validator_of_checked_schema(schema_json: str) -> jsonschema.protocols.Validator:
    # Kept: every reply to a case is checked against the same schema, and the check is the costly part.
    schema = json.loads(schema_json)
    problems = json_schema_check_schema(schema)
    if problems:
        raise ScorerSpecError(f"schema: {'; '.join(problems)}")
    return _ReplyValidator(schema)


def json_schema_errors(value: Any, schema: Any) -> list[str]:
    """Why `value` does not satisfy `schema` (empty when it does), each naming the JSON path
    ("$.months[2]: 'x' is not of type 'integer'"). ScorerSpecError when the schema cannot be used."""
    validator = _checked_validator(schema)
    try:
        return [f"{error.json_path}: {error.message}" for error in validator.iter_errors(value)]
    except referencing.exceptions.Unresolvable as error:
        raise ScorerSpecError(f"schema: a $ref points to nothing: {error}") from None


DEFAULT_JUDGE_MODEL = "mistral-large-latest"


def uses_judge(spec: Any) -> bool:
    if not isinstance(spec, Mapping):
        return False
    if spec.get("name") in ("llm_judge", "judge"):
        return True
    return any(uses_judge(part) for part in spec.get("scorers", []) or [])
