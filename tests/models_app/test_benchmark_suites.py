"""Suites as JSONL: line-by-line validation with line numbers, versions, round trips, the demo suites."""

from __future__ import annotations

import json

import pytest

from genesis.errors import InvalidInput
from models_app.benchmarks.models import BenchmarkCase, BenchmarkSuite
from models_app.benchmarks.scorers import score_output
from models_app.benchmarks.selectors import benchmark_suite_jsonl
from models_app.benchmarks.services import benchmark_suite_import
from models_app.benchmarks.suites import demo_suite_path, parse_suite_jsonl, suite_jsonl
from models_app.registry.demo import DEMO_AGENTS
from models_app.registry.models import Agent
from models_app.simulator.markers import parse_answer_marker

GOOD = {"id": "q1", "messages": [{"role": "user", "content": "Is 17 prime?"}], "reference": "Yes",
        "scorer": {"name": "normalized_match"}, "tags": ["difficulty:easy"]}


def line(**changes) -> str:
    return json.dumps({**GOOD, **changes})


def test_every_problem_is_reported_with_its_line_number():
    text = [
        '{"suite": {"description": "demo"}}',
        line(),
        "",
        "{not json",
        line(id="q2", messages=[{"role": "robot", "content": "hi"}]),
        line(id="q3", scorer={"name": "bleu"}),
        line(id="q1"),
        line(id="q4", messages=[{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]),
        line(id="bad id!", tags="hard"),
        json.dumps({k: v for k, v in GOOD.items() if k != "scorer"} | {"id": "q5", "extra": 1}),
    ]
    parsed = parse_suite_jsonl(text)
    errors = [str(error) for error in parsed.errors]
    assert parsed.description == "demo" and [case.key for case in parsed.cases] == ["q1"]
    assert errors[0].startswith("line 4: not valid JSON")
    assert "line 5: messages[0].role: must be one of assistant, system, user" in errors
    assert any(e.startswith("line 6: scorer: unknown name 'bleu'") for e in errors)
    assert "line 7: id: 'q1' repeats the case on line 2" in errors
    assert "line 8: messages: the last message must be the user's (the model answers it)" in errors
    assert any(e.startswith("line 9: id:") for e in errors) and any(e.startswith("line 9: tags:") for e in errors)
    assert any(e.startswith("line 10: unknown key 'extra'") for e in errors)
    assert any(e.startswith("line 10: scorer: required") for e in errors)
    assert not parsed.valid


def test_an_empty_file_is_refused():
    assert [str(e) for e in parse_suite_jsonl(["", "  "]).errors] == ["line 0: the file holds no case"]


def test_jsonl_round_trip():
    parsed = parse_suite_jsonl([line(), line(id="q2", reference=None, scorer={"name": "length", "max_words": 5})])
    again = parse_suite_jsonl(suite_jsonl(description="d", cases=parsed.cases).splitlines())
    assert [case.as_json() for case in again.cases] == [case.as_json() for case in parsed.cases]
    assert again.description == "d"


@pytest.mark.parametrize("agent", sorted(DEMO_AGENTS))
def test_demo_suites_have_at_least_30_valid_cases_whose_marked_answer_scores_1(agent):
    parsed = parse_suite_jsonl(demo_suite_path(agent).read_text().splitlines())
    assert parsed.errors == [] and len(parsed.cases) >= 30
    for case in parsed.cases:
        key = parse_answer_marker(case.messages[-1]["content"])
        assert key is not None, case.key  # the simulator's quality knob decides the reply
        assert score_output(spec=case.scorer, output=key.correct, reference=case.reference).score == 1.0, case.key
        for wrong in key.wrong_alternatives:
            assert score_output(spec=case.scorer, output=wrong, reference=case.reference).score < 1.0, (case.key, wrong)
    assert {tag.split(":")[1] for case in parsed.cases for tag in case.tags if tag.startswith("difficulty:")} == {
        "easy", "medium", "hard"}


@pytest.mark.django_db
def test_import_makes_versions_only_when_the_cases_change(seeded_demo):
    agent = Agent.objects.get(slug="qa_agent")
    first = benchmark_suite_import(agent=agent, slug="smoke", lines=[line()], description="first")
    same = benchmark_suite_import(agent=agent, slug="smoke", lines=[line()], description="clearer description")
    changed = benchmark_suite_import(agent=agent, slug="smoke", lines=[line(), line(id="q2")])

    assert first.created and not same.created and changed.created
    assert same.suite.pk == first.suite.pk and same.suite.description == "clearer description"
    assert (first.suite.version, changed.suite.version) == (1, 2)
    assert BenchmarkCase.objects.filter(suite=first.suite).count() == 1  # version 1 is untouched
    assert BenchmarkCase.objects.filter(suite=changed.suite).count() == changed.suite.case_count == 2


@pytest.mark.django_db
def test_import_refuses_the_whole_file_with_line_numbers(seeded_demo):
    agent = Agent.objects.get(slug="qa_agent")
    with pytest.raises(InvalidInput) as refused:
        benchmark_suite_import(agent=agent, slug="broken", lines=[line(), "{", line(id="q2", scorer={"name": "regex", "pattern": "("})])
    assert "2 problem(s)" in refused.value.message and "line 2: not valid JSON" in refused.value.message
    assert "line 3: pattern: not a valid regular expression" in refused.value.message
    assert not BenchmarkSuite.objects.filter(slug="broken").exists()


@pytest.mark.django_db
def test_import_refuses_scorer_options_that_would_break_or_bend_the_run_naming_each_line(seeded_demo):
    # Each of these used to import and then fail the whole run (a regex or a comparison raising while
    # scoring) or grade silently otherwise ("partial": "no" is a true string).
    schema = {"type": "object", "properties": {"name": {"type": "string", "pattern": "("}, "age": {"minimum": "5"}}}
    lines = [
        line(),
        line(id="q2", reference=None, scorer={"name": "json_schema", "schema": schema}),
        line(id="q3", reference=None, scorer={"name": "json_schema", "schema": {"type": "object", "required": "name"}}),
        line(id="q4", reference=None, scorer={"name": "contains_all", "values": ["refund"], "partial": "no"}),
    ]
    with pytest.raises(InvalidInput) as refused:
        benchmark_suite_import(agent=Agent.objects.get(slug="qa_agent"), slug="options", lines=lines)

    message = refused.value.message
    assert message.startswith("suite file refused, 3 problem(s): ")
    # Every problem of line 2's schema, in path order.
    assert "line 2: schema: #/properties/age/minimum: '5' is not of type 'number'; #/properties/name/pattern: not a valid regular expression" in message
    assert "line 3: schema: #/required: 'name' is not of type 'array'" in message
    assert 'line 4: partial: needs a boolean (true or false), got "no"' in message
    assert not BenchmarkSuite.objects.filter(slug="options").exists()


@pytest.mark.django_db
def test_seeded_suites_export_to_the_file_they_came_from(seeded_demo):
    for slug in DEMO_AGENTS:
        suite = BenchmarkSuite.objects.get(agent__slug=slug, slug="core")
        exported = parse_suite_jsonl(benchmark_suite_jsonl(suite=suite).splitlines())
        original = parse_suite_jsonl(demo_suite_path(slug).read_text().splitlines())
        assert [c.as_json() for c in exported.cases] == [c.as_json() for c in original.cases]
        assert suite.case_count >= 30 and exported.description == original.description
