"""`manage.py api_keys`: list, revoke and rotate API keys from a terminal (they could only be revoked in
the admin), through the registry's services, leaving a trace in the key's history, never printing a
stored hash or a secret other than the new key a rotation makes."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from models_app.registry.models import ApiKey
from models_app.registry.services import api_key_authenticate, api_key_cache_clear, api_key_create
from tests.experiments.factories import person
from tests.factories import AgentFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def keys():
    """qa (raw, row), legal, everyone — made by the service, as create_api_key makes them."""
    qa, legal = AgentFactory(slug="qa_agent"), AgentFactory(slug="legal_agent")
    made = {
        "qa": api_key_create(label="qa service", agents=[qa]),
        "legal": api_key_create(label="legal service", agents=[legal]),
        "everyone": api_key_create(label="ops", all_agents=True),
    }
    return {name: (raw, key) for name, (key, raw) in made.items()}


@pytest.fixture
def keeper():
    return person("keeper", "models_app.change_apikey", "models_app.add_apikey")


def run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("api_keys", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def refused(*args: str) -> CommandError:
    with pytest.raises(CommandError) as raised:
        run(*args)
    return raised.value


def assert_no_secret(text: str, keys) -> None:
    for raw, key in keys.values():
        assert raw not in text and key.hashed_key not in text


def test_list_shows_every_key_and_its_scope_but_no_secret(keys):
    out, _ = run("--list")
    assert_no_secret(out, keys)
    header, *rows = out.splitlines()
    assert header.split() == ["id", "prefix", "label", "agents", "created", "(UTC)", "by", "last", "used", "expires", "(UTC)", "status"]
    assert [row.split()[1] for row in rows] == [keys[name][1].prefix for name in ("everyone", "legal", "qa")]  # newest first
    assert "qa service" in rows[2] and "qa_agent" in rows[2] and rows[2].endswith("active")
    assert "all agents" in rows[0]

    listed = json.loads(run("--list", "--agent", "qa_agent", "--json")[0])
    assert [key["label"] for key in listed] == ["ops", "qa service"]  # the keys that may act for qa_agent
    assert set(listed[1]) == {"id", "prefix", "label", "all_agents", "agents", "created_by", "created_at", "last_used_at",
                              "revoked", "revoked_at", "expires_at", "expired", "attention"}
    assert (listed[1]["agents"], listed[1]["all_agents"], listed[0]["all_agents"]) == (["qa_agent"], False, True)


def test_revoke_by_prefix_as_a_person_leaves_a_trace_and_the_key_stops_working(client, keys, keeper):
    raw, key = keys["qa"]
    assert api_key_authenticate(raw_key=raw) is not None
    out, _ = run("--revoke", key.prefix, "--as", "keeper", "--reason", "leaked in a CI log")
    assert out.startswith(f"revoked API key 'qa service' ({key.prefix}…, #{key.pk}) for qa_agent")
    assert_no_secret(out, keys)
    key.refresh_from_db()
    assert key.revoked and key.revoked_at is not None
    latest = key.history.latest()
    assert (latest.history_user, latest.history_change_reason, latest.revoked) == (keeper, "leaked in a CI log", True)
    assert not hasattr(latest, "hashed_key")  # the history keeps no copy of the hash
    api_key_cache_clear()  # other processes: within API_KEY_CACHE_SECONDS
    assert client.get("/api/v1/agents", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 401
    assert api_key_authenticate(raw_key=keys["legal"][0]) is not None  # only that key

    # Again, by id: nothing to do, said so, exit 0, no second history entry.
    again = json.loads(run("--revoke", str(key.pk), "--as", "keeper", "--reason", "once more", "--json")[0])
    assert (again["already_revoked"], again["revoked"]) == (True, True)
    assert key.history.count() == 2  # created, revoked


def test_rotate_prints_a_new_key_of_the_same_scope_once_and_revokes_the_old(keys, keeper):
    raw, key = keys["legal"]
    out, err = run("--rotate", f"{key.prefix}…", "--as", "keeper", "--reason", "yearly rotation")  # as --list shows it
    new_raw = out.strip()
    assert out.count("\n") == 1 and new_raw.startswith("gk_") and new_raw != raw
    assert "store the new key now" in err and key.prefix in err
    assert_no_secret(out + err, {"old": keys["legal"]})
    new = ApiKey.objects.get(prefix=new_raw[: len(key.prefix)])
    assert (new.label, new.all_agents, list(new.agents.values_list("slug", flat=True))) == ("legal service", False, ["legal_agent"])
    assert new.created_by == keeper
    assert new.history.get().history_change_reason == f"rotation of {key.prefix}…: yearly rotation"
    key.refresh_from_db()
    assert key.revoked
    assert key.history.latest().history_change_reason == f"rotated (replaced by {new.prefix}…): yearly rotation"
    api_key_cache_clear()
    assert api_key_authenticate(raw_key=raw) is None
    assert api_key_authenticate(raw_key=new_raw).agent_slugs == frozenset({"legal_agent"})

    rotated = json.loads(run("--rotate", new.prefix, "--as", "keeper", "--reason", "again", "--json")[0])
    assert set(rotated) == {"revoked", "created", "key"} and rotated["revoked"]["id"] == new.pk
    assert api_key_authenticate(raw_key=rotated["key"]).agent_slugs == frozenset({"legal_agent"})


def test_refusals_exit_1_and_change_nothing(keys, keeper):
    person("reader", "models_app.view_apikey")
    _, key = keys["qa"]
    no_permission = refused("--revoke", key.prefix, "--as", "reader", "--reason", "r")
    assert no_permission.returncode == 1
    assert str(no_permission) == "refused: user 'reader' may not revoke API keys: it needs the permission 'models_app.change_apikey'"
    person("revoker", "models_app.change_apikey")
    assert "needs the permission 'models_app.add_apikey'" in str(refused("--rotate", key.prefix, "--as", "revoker", "--reason", "r"))
    assert not ApiKey.objects.filter(revoked=True).exists() and ApiKey.objects.count() == 3

    run("--revoke", key.prefix, "--as", "keeper", "--reason", "gone")
    revoked = refused("--rotate", key.prefix, "--as", "keeper", "--reason", "r")
    assert revoked.returncode == 1 and "is revoked" in str(revoked) and "create_api_key" in str(revoked)
    assert ApiKey.objects.count() == 3


def test_usage_errors_exit_2(keys, keeper):
    _, key = keys["qa"]
    twin = ApiKey.objects.create(label="twin", prefix=key.prefix, hashed_key="0" * 64)  # 8 random characters rarely collide
    cases = {
        ("--revoke", str(twin.pk), "--reason", "r"): "--revoke needs --as USERNAME",
        ("--revoke", str(twin.pk), "--as", "keeper"): "--revoke needs --reason TEXT",
        ("--revoke", "gk_nothing", "--as", "keeper", "--reason", "r"): "--revoke: no API key has the prefix 'gk_nothing'",
        ("--revoke", "999999", "--as", "keeper", "--reason", "r"): "--revoke: no API key has the id 999999",
        # A whole key typed on a command line stays in the shell's history: refused, even a real one.
        ("--revoke", keys["qa"][0], "--as", "keeper", "--reason", "r"): "give the prefix",
        ("--rotate", key.prefix, "--as", "keeper", "--reason", "r"): f"keys #{key.pk}, #{twin.pk}",
        ("--revoke", str(twin.pk), "--as", "nobody", "--reason", "r"): "--as: no user 'nobody'",
        ("--list", "--agent", "ghost_agent"): "--agent: unknown agent 'ghost_agent'; known agents: legal_agent, qa_agent",
        ("--list", "--as", "keeper"): "--as: only with --revoke or --rotate",
        ("--revoke", str(twin.pk), "--agent", "qa_agent", "--as", "keeper", "--reason", "r"): "--agent goes with --list",
    }
    for args, message in cases.items():
        error = refused(*args)
        assert error.returncode == 2 and message in str(error), (args, str(error))
    assert not ApiKey.objects.filter(revoked=True).exists()


def test_the_process_exits_2_on_a_usage_error(keys):
    from tests.conftest import child_environment

    result = subprocess.run([sys.executable, "manage.py", "api_keys", "--revoke", "gk_nothing", "--as", "x", "--reason", "r"],
                            cwd=Path(__file__).resolve().parents[2], env=child_environment(), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""


def test_the_admin_shows_the_trace_and_its_revoke_action_leaves_one(admin_client, keys, keeper):
    _, key = keys["qa"]
    run("--revoke", key.prefix, "--as", "keeper", "--reason", "leaked in a CI log")
    page = admin_client.get(f"/admin/models_app/apikey/{key.pk}/history/")
    assert page.status_code == 200 and "leaked in a CI log" in page.content.decode() and "keeper" in page.content.decode()
    assert key.hashed_key not in page.content.decode()

    _, other = keys["legal"]
    admin_client.post("/admin/models_app/apikey/", {"action": "revoke_selected", "_selected_action": [other.pk]})
    other.refresh_from_db()
    latest = other.history.latest()
    assert other.revoked and latest.history_change_reason == "revoked in the admin" and latest.history_user.username == "admin"
