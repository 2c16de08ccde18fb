"""The database out of reach (issue 18, finding 4): a 503 with Retry-After and a JSON code, not a 500;
and a process that has already seen a key keeps routing from memory. Real processes and a real
unreachable database (a port nothing listens on), no mocks."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import ROOT, child_environment

pytestmark = pytest.mark.django_db(transaction=True)

UNREACHABLE_DATABASE = "postgres://postgres@127.0.0.1:1/nowhere"

CLIENT = textwrap.dedent("""
    import json, os, sys
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "genesis.settings")
    import django
    django.setup()
    from django.db import connections
    from django.test import Client
    from models_app.registry import services as registry

    client = Client()

    def ask(method, path, key, body=None):
        headers = {"HTTP_AUTHORIZATION": f"Bearer {key}"}
        if method == "post":
            response = client.post(path, json.dumps(body), content_type="application/json", **headers)
        else:
            response = client.get(path, **headers)
        return {"status": response.status_code, "retry_after": response.get("Retry-After"), "body": response.json()}

    known, unknown = sys.argv[1], sys.argv[2]
    route = {"agent": "qa_agent", "user_id": "user-1"}
    answers = {"before": ask("post", "/api/v1/route", known, route)}
    if sys.argv[3] == "cut":
        # The database goes away under a running process: its connection is closed and every new
        # one goes to a port nothing listens on. Keys are looked up again on every request.
        connection = connections["default"]
        connection.close()
        connection.settings_dict["PORT"] = 1
        registry.API_KEY_CACHE_SECONDS = 0
    answers["route"] = ask("post", "/api/v1/route", known, route)
    answers["agents"] = ask("get", "/api/v1/agents", known)
    answers["unknown_key"] = ask("post", "/api/v1/route", unknown, route)
    print(json.dumps(answers))
""")


def run_client(*, database_url: str, known_key: str, unknown_key: str, mode: str) -> dict:
    env = child_environment()
    env["DATABASE_URL"] = database_url
    done = subprocess.run([sys.executable, "-c", CLIENT, known_key, unknown_key, mode], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def assert_unavailable(answer: dict) -> None:
    assert answer["status"] == 503, answer
    assert answer["retry_after"] == "5"
    assert answer["body"]["code"] == "service_unavailable"
    assert "127.0.0.1" not in answer["body"]["detail"] and "postgres" not in answer["body"]["detail"]


def test_a_fresh_process_without_its_database_answers_503_with_retry_after(seeded_demo, api_key_for):
    answers = run_client(database_url=UNREACHABLE_DATABASE, known_key=api_key_for("qa_agent"),
                         unknown_key="gk_never-seen", mode="as-is")
    for name in ("before", "route", "agents", "unknown_key"):
        assert_unavailable(answers[name])


def test_a_process_that_has_seen_the_key_keeps_routing_when_the_database_goes(seeded_demo, api_key_for):
    from tests.conftest import test_database_url

    answers = run_client(database_url=test_database_url(), known_key=api_key_for("qa_agent"),
                         unknown_key=api_key_for("qa_agent"), mode="cut")
    assert answers["before"]["status"] == 200, answers["before"]
    # /route answers from memory: the key from the process cache, the decision from the routing table.
    assert answers["route"]["status"] == 200, answers["route"]
    assert answers["route"]["body"] == answers["before"]["body"]
    # What needs the database says so; a key this process never saw cannot be checked.
    assert_unavailable(answers["agents"])
    assert_unavailable(answers["unknown_key"])
