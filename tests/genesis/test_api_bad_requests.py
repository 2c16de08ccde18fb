"""Bad requests are 4xx with a JSON {"detail", "code"}, never a 500 (issue 18, findings 1–3, 5, 7, 11):
NUL and over-long identifiers in every kind of parameter, Django's request-parsing errors, money that
would overflow Decimal, repeated multipart fields; and an OpenAPI document that tells the truth."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from costs.services import budget_upsert
from genesis.errors import ERROR_CODES
from tests.factories import AgentFactory

pytestmark = pytest.mark.django_db


def bearer(key: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {key}"}


@pytest.fixture
def key(api_key_for):
    AgentFactory(slug="qa_agent")
    AgentFactory(slug="legal_agent")
    budget_upsert(name="default", amount_usd="30", period="total", hard_limit=True)
    return api_key_for("qa_agent")


@pytest.fixture
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


def assert_invalid_field(response, field: str) -> None:
    assert response.status_code == 422, response.content
    body = response.json()
    assert body["code"] == "invalid_field", body
    assert field in body["detail"], body
    assert_names_fields(body)


def assert_names_fields(body: dict) -> None:
    # Every 422 has the `errors` list, one {"field", "message"} per refused field (README).
    assert isinstance(body.get("errors"), list) and body["errors"], body
    for error in body["errors"]:
        assert set(error) == {"field", "message"} and error["field"] and error["message"], body


NUL_GETS = [
    ("/api/v1/agents/qa%00agent", "agent"),
    ("/api/v1/agents/qa%00agent/config", "agent"),
    ("/api/v1/experiments/exp%00/results", "key"),
    ("/api/v1/costs/summary?budget=def%00ault", "budget"),
    ("/api/v1/benchmarks/runs?agent=qa%00agent", "agent"),
    ("/api/v1/benchmarks/runs?status=queued%00", "status"),
    ("/api/v1/fine-tuning/jobs?agent=qa%00agent", "agent"),
]


@pytest.mark.parametrize(("url", "field"), NUL_GETS)
def test_a_nul_in_a_path_or_query_parameter_is_a_422_naming_it(client, key, url, field):
    assert_invalid_field(client.get(url, **bearer(key)), field)


@pytest.mark.parametrize(("url", "payload", "field"), [
    ("/api/v1/costs/budget-check", {"agent": "qa\u0000agent", "estimate_usd": "1"}, "agent"),
    ("/api/v1/benchmarks/runs", {"agent": "qa\u0000agent"}, "agent"),
    ("/api/v1/benchmarks/runs", {"agent": "qa_agent", "suite": "s\u0000"}, "suite"),
    ("/api/v1/benchmarks/runs", {"agent": "qa_agent", "candidate": "m\u0000"}, "candidate"),
    ("/api/v1/route", {"agent": "qa_agent", "user_id": "u\u0000"}, "user_id"),
    ("/api/v1/costs/budget-check", {"agent": "a" * 65, "estimate_usd": "1"}, "agent"),
    ("/api/v1/benchmarks/runs", {"agent": "qa_agent", "baseline": "m" * 201}, "baseline"),
    # A lone surrogate cannot be encoded for PostgreSQL either.
    ("/api/v1/costs/budget-check", {"agent": "qa\ud800", "estimate_usd": "1"}, "agent"),
])
def test_a_nul_or_over_long_body_field_is_a_422_naming_it(client, key, url, payload, field):
    response = client.post(url, json.dumps(payload), content_type="application/json", **bearer(key))
    assert_invalid_field(response, field)


def test_a_nul_in_a_multipart_form_field_or_file_name_is_a_422(client, key, media_root):
    upload = SimpleUploadedFile("train.jsonl", b'{"messages": []}\n')
    response = client.post("/api/v1/audits/datasets", {"file": upload, "agent": "qa\x00agent"}, **bearer(key))
    assert_invalid_field(response, "agent")
    # Django's multipart parser drops what follows a NUL in a file name; what is stored has none.
    named = SimpleUploadedFile("train\x00.jsonl", b'{"messages": []}\n')
    stored = client.post("/api/v1/audits/datasets", {"file": named, "agent": "qa_agent"}, **bearer(key))
    assert stored.status_code in (201, 422), stored.content
    assert "\x00" not in stored.json().get("name", "")


def test_a_repeated_multipart_field_is_refused_not_silently_picked(client, key, media_root):
    upload = SimpleUploadedFile("train.jsonl", b'{"messages": []}\n')
    response = client.post("/api/v1/audits/datasets", {"file": upload, "agent": ["qa_agent", "legal_agent"]}, **bearer(key))
    assert_invalid_field(response, "agent: sent more than once")
    files = [SimpleUploadedFile("a.jsonl", b"{}\n"), SimpleUploadedFile("b.jsonl", b"{}\n")]
    assert_invalid_field(client.post("/api/v1/audits/datasets", {"file": files, "agent": "qa_agent"}, **bearer(key)), "file")


def test_a_422_that_is_not_pydantics_still_names_the_field(client, key, media_root):
    # The repeated multipart field (refused by the validation layer, not the schema) names the field…
    upload = SimpleUploadedFile("train.jsonl", b'{"messages": []}\n')
    repeated = client.post("/api/v1/audits/datasets", {"file": upload, "agent": ["qa_agent", "qa_agent"]}, **bearer(key))
    assert repeated.status_code == 422, repeated.content
    assert repeated.json()["errors"] == [
        {"field": "agent", "message": "sent more than once; send each multipart field once"}
    ]
    # …and a body that is not JSON names the body.
    unparsable = client.post("/api/v1/route", "notjson", content_type="application/json", **bearer(key))
    assert (unparsable.status_code, unparsable.json()["code"]) == (422, "invalid_field")
    assert [error["field"] for error in unparsable.json()["errors"]] == ["body"]
    # …and so does an empty body (was "payload", the view's parameter name).
    empty = client.post("/api/v1/outcomes", "", content_type="application/json", **bearer(key))
    assert empty.status_code == 422 and [error["field"] for error in empty.json()["errors"]] == ["body"]
    assert empty.json()["detail"].startswith("body: ")


def test_field_errors_reads_the_field_a_refusal_begins_with():
    from genesis.errors import field_errors

    assert field_errors("estimate_usd: cannot be negative") == [{"field": "estimate_usd", "message": "cannot be negative"}]
    assert field_errors("guardrails[0].metric: 'x' is not one of a, b") == [
        {"field": "guardrails[0].metric", "message": "'x' is not one of a, b"}
    ]
    assert field_errors("Cannot parse request body") == [{"field": "body", "message": "Cannot parse request body"}]


def test_a_body_over_the_limit_is_a_413_that_says_the_limit(client, key, settings):
    too_big = b'{"events": [' + b" " * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1) + b"]}"
    response = client.generic("POST", "/api/v1/outcomes", too_big, content_type="application/json", **bearer(key))
    assert response.status_code == 413
    body = response.json()
    assert body["code"] == "payload_too_large"
    assert f"{settings.DATA_UPLOAD_MAX_MEMORY_SIZE:,} bytes" in body["detail"]


def test_a_full_batch_of_long_outcome_events_fits_the_limit(client, key):
    # 1 000 events with every id at its longest plus an ignored extra field: about 10 MB (the batch
    # that got a 500 from the 2.5 MB default).
    events = [
        {"event_id": f"{index:06d}" + "e" * 194, "agent": "qa_agent", "user_id": "u" * 200, "model": "m" * 200,
         "success": True, "latency_ms": 12.5, "note": "n" * 9_000}
        for index in range(1000)
    ]
    payload = json.dumps({"events": events})
    assert len(payload) > 9_000_000
    response = client.post("/api/v1/outcomes", payload, content_type="application/json", **bearer(key))
    assert response.status_code == 202, response.content[:300]
    assert response.json()["accepted"] + response.json()["duplicates"] + len(response.json()["rejected"]) == 1000


@pytest.mark.parametrize("content_type", [
    "multipart/form-data",  # no boundary
    "multipart/form-data; boundary=" + "b" * 300,  # longer than the 70 characters RFC 2046 allows
])
def test_a_multipart_body_django_cannot_parse_is_a_400_not_a_500(client, key, content_type):
    response = client.generic("POST", "/api/v1/audits/datasets", b"--x\r\n\r\n", content_type=content_type, **bearer(key))
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "malformed_request"


def test_a_very_long_file_name_is_not_a_500(client, key, media_root):
    named = SimpleUploadedFile("n" * 5000 + ".jsonl", b'{"messages": []}\n')
    response = client.post("/api/v1/audits/datasets", {"file": named, "agent": "qa_agent"}, **bearer(key))
    # Django keeps the last 255 characters of a file name (with its extension).
    assert response.status_code == 201, response.content
    assert len(response.json()["name"]) <= 255 and response.json()["name"].endswith(".jsonl")


@pytest.mark.parametrize("estimate", ["1e1000000", "1e400", "", "NaN", "-1", "1.1234567", "99999999999", True, -0.5, 1e300])
def test_money_that_would_overflow_or_is_malformed_is_a_422(client, key, estimate):
    response = client.post("/api/v1/costs/budget-check", json.dumps({"agent": "qa_agent", "estimate_usd": estimate}),
                           content_type="application/json", **bearer(key))
    assert_invalid_field(response, "estimate_usd")


def test_the_service_refuses_an_overflowing_estimate_too():
    # The command line (track_costs, fine_tune) reaches the service without the API's schema.
    from costs.services import budget_check
    from genesis.errors import InvalidInput

    agent = AgentFactory(slug="qa_agent")
    with pytest.raises(InvalidInput, match="estimate_usd"):
        budget_check(agent=agent, estimate_usd="1e1000000", actor=None)


@pytest.mark.parametrize("estimate", ["0", "2.40", "0.000001", 3, 2.5])
def test_money_the_schema_allows_is_accepted(client, key, estimate):
    response = client.post("/api/v1/costs/budget-check", json.dumps({"agent": "qa_agent", "estimate_usd": estimate}),
                           content_type="application/json", **bearer(key))
    assert response.status_code == 200, response.content


def test_an_unknown_api_path_and_a_wrong_method_answer_json_errors(client, key):
    missing = client.get("/api/v1/no-such-thing", **bearer(key))
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
    wrong = client.delete("/api/v1/costs/summary", **bearer(key))
    assert (wrong.status_code, wrong.json()["code"]) == (405, "method_not_allowed")
    assert "GET" in wrong["Allow"]


def test_every_error_body_has_a_detail_and_a_listed_code(client, key, api_key_for):
    answers = [
        client.get("/api/v1/agents"),  # 401
        client.get("/api/v1/agents/legal_agent", **bearer(key)),  # 403
        client.get("/api/v1/agents/ghost_agent", **bearer(api_key_for(all_agents=True))),  # 404 (403 to a key of qa_agent)
        client.get("/api/v1/benchmarks/runs?limit=0", **bearer(key)),  # 422
        client.post("/api/v1/costs/budget-check", "{not json", content_type="application/json", **bearer(key)),
        client.post("/api/v1/costs/budget-check", json.dumps({"agent": "qa_agent", "estimate_usd": "31"}),
                    content_type="application/json", **bearer(key)),  # 409
    ]
    assert [answer.status_code for answer in answers] == [401, 403, 404, 422, 422, 409]
    for answer in answers:
        body = answer.json()
        assert isinstance(body["detail"], str) and body["detail"]
        assert body["code"] in ERROR_CODES
        if answer.status_code == 422:
            assert_names_fields(body)
    assert answers[-1].json()["code"] == "budget_exceeded"


# --- the OpenAPI document ---------------------------------------------------------------------------


@pytest.fixture
def openapi(client):
    return client.get("/api/v1/openapi.json").json()


def operations(openapi):
    for path, item in openapi["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


def test_every_operation_declares_its_error_statuses_with_the_error_schema(openapi):
    error = openapi["components"]["schemas"]["Error"]
    assert error["required"] == ["detail", "code"]
    assert set(error["properties"]["code"]["enum"]) == set(ERROR_CODES)
    for path, method, operation in operations(openapi):
        expected = {"400", "403", "404", "409", "422", "500", "503"}  # 400: also a Host not in ALLOWED_HOSTS
        if operation.get("security"):
            expected.add("401")
        if "requestBody" in operation:
            expected.add("413")
        declared = {str(status) for status in operation["responses"]}
        assert expected <= declared, (method, path, expected - declared)
        for status in expected:
            schema = operation["responses"][status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/Error"}, (method, path, status)
        assert "Retry-After" in operation["responses"]["503"]["headers"]
    # 405 answers a method no operation declares, so it is described once, with its Allow header.
    method_not_allowed = openapi["components"]["responses"]["MethodNotAllowed"]
    assert method_not_allowed["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    assert "Allow" in method_not_allowed["headers"]


def test_the_contracts_enums_and_the_config_etag_are_in_the_schema(openapi):
    schemas = openapi["components"]["schemas"]
    assert schemas["RouteOut"]["properties"]["variant"]["enum"] == ["control", "treatment", "live"]
    assert schemas["AgentHealthOut"]["properties"]["status"]["enum"] == ["ok", "degraded", "failing", "idle"]
    responses = openapi["paths"]["/api/v1/agents/{agent}/config"]["get"]["responses"]
    for status in ("200", "304"):
        etag = responses[status]["headers"]["ETag"]
        assert etag["required"] is True and etag["schema"] == {"type": "string"}, status
    assert responses["200"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/AgentConfigOut"}


def test_the_schema_bounds_match_what_the_api_accepts(openapi):
    schemas = openapi["components"]["schemas"]
    estimate = schemas["BudgetCheckIn"]["properties"]["estimate_usd"]
    string_form = next(option for option in estimate["anyOf"] if option["type"] == "string")
    import re

    assert not re.search(string_form["pattern"], "")  # "" is not money, for the schema either
    assert re.search(string_form["pattern"], "2.40")
    upload = openapi["paths"]["/api/v1/audits/datasets"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert upload["properties"]["purpose"]["enum"] == ["training", "validation", "benchmark"]
    assert (upload["properties"]["near_threshold"]["minimum"], upload["properties"]["near_threshold"]["maximum"]) == (0.3, 1.0)
    agent = schemas["BudgetCheckIn"]["properties"]["agent"]
    assert agent["maxLength"] == 64 and agent["pattern"] == "^[^\\u0000]*$"


def test_outcome_events_are_documented_field_by_field(openapi):
    events = openapi["components"]["schemas"]["OutcomesIn"]["properties"]["events"]
    assert events["maxItems"] == 1000
    assert "#/components/schemas/OutcomeEvent" in events["items"]["description"]
    item = openapi["components"]["schemas"]["OutcomeEvent"]
    assert set(item["required"]) == {"event_id", "agent", "user_id", "model", "success", "latency_ms"}
    properties = item["properties"]
    assert properties["latency_ms"]["maximum"] == 3_600_000 and properties["latency_ms"]["minimum"] == 0
    assert properties["success"]["type"] == "boolean"
    assert properties["event_id"]["maxLength"] == 200
    assert {"input_tokens", "output_tokens", "quality", "occurred_at"} <= set(properties)


def test_the_two_config_versions_say_which_they_are(openapi):
    # The same name means two things: a cache version of the agent's routing config, and the version
    # of an experiment's settings. Clients use both names, so each field says what it is.
    schemas = openapi["components"]["schemas"]
    routing = schemas["AgentConfigOut"]["properties"]["config_version"]["description"]
    settings = schemas["ResultsOut"]["properties"]["config_version"]["description"]
    assert "routing config" in routing and "milliseconds" in routing and "/experiments/{key}/results" in routing
    assert "settings" in settings and "approval" in settings and "/agents/{agent}/config" in settings


def test_the_outcomes_schema_takes_every_batch_the_server_answers_202(openapi):
    # Was: items declared as event objects, while a batch with any other item is answered 202 with
    # that item in `rejected` — the document said such a request is invalid (schemathesis ST201).
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator({"$ref": "#/components/schemas/OutcomesIn", "components": openapi["components"]})
    event = {"event_id": "e", "agent": "qa_agent", "user_id": "u", "model": "m", "success": True, "latency_ms": 1}
    for batch in ([event], ["not an object", [None, None], 3, None, {"event_id": "e"}, {**event, "latency_ms": -1}], []):
        assert validator.is_valid({"events": batch}), batch
    # What the server does refuse (422), the schema refuses too.
    for body in ({}, {"events": "e"}, {"events": [event] * 1001}):
        assert not validator.is_valid(body)


def test_a_nul_that_slips_past_validation_is_still_a_422(rf, key):
    # Backstop for an endpoint that forgets the validation layer: the database's own refusal of a NUL
    # (a real DataError from a real query) is the client's bad text, not a server error.
    from django.db import DataError, transaction

    from genesis.api import api
    from models_app.registry.models import Agent

    with pytest.raises(DataError) as raised, transaction.atomic():
        Agent.objects.filter(slug="qa\x00agent").exists()
    response = api.on_exception(rf.get("/api/v1/somewhere"), raised.value)
    assert response.status_code == 422
    assert json.loads(response.content)["code"] == "invalid_field"
