"""docs/runbooks: every alert's runbook_url names an existing runbook and a section of it; every command a
runbook quotes exists and its flags parse (manage.py commands by their own parsers, celery subcommands
by celery, Redis commands by the Redis server), and every curl is answered, not redirected to HTTPS, by
the app under production settings at the addresses docs/runbooks/README.md gives; every runbook has the
four parts."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml
from django.conf import settings
from django.core.management import get_commands, load_command_class

from tests.conftest import child_environment

ROOT = Path(__file__).resolve().parents[2]
RUNBOOKS = ROOT / "docs" / "runbooks"
RULES = ROOT / "ops" / "prometheus" / "alerts.yml"
SH_BLOCK = re.compile(r"```sh\n(.*?)```", re.DOTALL)


def alert_rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def runbook_files() -> list[Path]:
    return sorted(path for path in RUNBOOKS.glob("*.md") if path.name != "README.md")


def quoted_commands() -> list[tuple[str, str]]:
    """(runbook, command line) for every line of every sh block."""
    lines = []
    for path in runbook_files():
        for block in SH_BLOCK.findall(path.read_text()):
            lines += [(path.name, line.strip()) for line in block.splitlines() if line.strip()]
    return lines


def test_every_rule_links_an_existing_runbook_section() -> None:
    for rule in alert_rules():
        url = urlparse(rule["annotations"]["runbook_url"])
        assert url.scheme == "https" and url.path.startswith("/docs/runbooks/"), rule["alert"]
        path = ROOT / url.path.lstrip("/")
        assert path.is_file(), f"{rule['alert']}: {path} does not exist"
        headings = {line[3:].strip().lower() for line in path.read_text().splitlines() if line.startswith("## ")}
        assert url.fragment == rule["alert"].lower() and url.fragment in headings, f"{rule['alert']}: no section #{url.fragment}"


def test_every_rule_is_in_the_runbooks_index_and_the_readme_alert_list() -> None:
    # An alert added to alerts.yml with its runbook but left out of the two lists people read first.
    index = {alert.strip(): runbook for alerts, runbook in
             re.findall(r"^\| ([A-Za-z, ]+) \| \[[a-z-]+\.md\]\(([a-z-]+\.md)\) \|$", (RUNBOOKS / "README.md").read_text(), re.MULTILINE)
             for alert in alerts.split(",")}
    readme = (ROOT / "README.md").read_text().split("\nAlerts (each with `severity`", 1)[1].split("\n\n", 1)[0]
    for rule in alert_rules():
        runbook = urlparse(rule["annotations"]["runbook_url"]).path.rsplit("/", 1)[1]
        assert index.get(rule["alert"]) == runbook, f"{rule['alert']}: not listed with {runbook} in docs/runbooks/README.md"
        assert re.search(rf"\b{rule['alert']}\b", readme), f"{rule['alert']}: not in README › Monitoring's list of alerts"


def test_every_runbook_section_says_what_it_means_how_to_confirm_act_and_verify() -> None:
    for path in runbook_files():
        sections = re.split(r"^## ", path.read_text(), flags=re.MULTILINE)[1:]
        assert sections, path.name
        for section in sections:
            for part in ("**Meaning.**", "**Confirm.**", "**Act.**", "**Verify recovery.**"):
                assert part in section, f"{path.name} / {section.splitlines()[0]}: no {part}"


def test_the_main_alerts_have_their_runbooks() -> None:
    names = {path.name for path in runbook_files()}
    assert {"model-failure.md", "high-latency.md", "cost-overrun.md"} <= names
    text = "\n".join(line for _, line in quoted_commands())
    assert "rollout_models --agent qa_agent --rollback" in text and "track_costs --report" in text


def _check_manage_py(arguments: list[str]) -> None:
    name, rest = arguments[0], arguments[1:]
    commands = get_commands()
    assert name in commands, f"manage.py {name}: no such command"
    command = load_command_class(commands[name], name)
    parser = command.create_parser("manage.py", name)
    parser.parse_args(rest)  # raises CommandError on an unknown flag or a missing required one


def _check_celery(arguments: list[str]) -> None:
    assert arguments[:2] == ["-A", "genesis"], arguments
    subcommand = arguments[2]
    # `celery -A genesis <sub> --help` exits 0 only for a real subcommand; flags are checked by celery's
    # own parser when the options are known to it (every option we quote is in the subcommand's help).
    result = subprocess.run([sys.executable, "-m", "celery", "-A", "genesis", subcommand, "--help"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for flag in (arg for arg in arguments[3:] if arg.startswith("-")):
        assert flag in result.stdout, f"celery {subcommand}: no option {flag}"
    if subcommand == "inspect":
        from celery.worker.control import Panel

        assert arguments[3] in Panel.meta, f"celery inspect: no method {arguments[3]}"
    if subcommand == "call":
        from genesis.celery import app

        app.loader.import_default_modules()  # the apps' tasks modules, as a worker loads them
        assert arguments[3] in app.tasks, f"celery call: no task named {arguments[3]}"


def _check_redis(arguments: list[str]) -> None:
    import redis

    assert arguments[:2] == ["-u", "$REDIS_URL"], arguments
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        names = {name.decode() if isinstance(name, bytes) else name for name in client.command_list()}
    finally:
        client.close()
    assert arguments[2].lower() in names, f"redis-cli: no Redis command {arguments[2]}"


ADDRESS_VARIABLES = ("$GENESIS_URL", "$GENESIS_INSTANCE_URL")
# What the app answers over plain HTTP under production settings instead of redirecting to HTTPS.
PLAIN_HTTP_PATHS = {"/healthz", "/readyz", "/metrics"}


@dataclass(frozen=True)
class CurlRequest:
    variable: str
    method: str
    path: str
    headers: dict[str, str]
    body: str


def curl_request(arguments: list[str]) -> CurlRequest:
    """The request a quoted `curl` line makes (the options the runbooks use: -s -S -H -d)."""
    headers: dict[str, str] = {}
    body, url = "", ""
    words = iter(arguments)
    for word in words:
        if word in ("-H", "--header"):
            name, _, value = next(words).partition(":")
            headers[name.strip()] = value.strip()
        elif word in ("-d", "--data"):
            body = next(words)
        elif word.startswith("-"):
            assert set(word[1:]) <= {"s", "S"}, f"curl {word}: an option this check does not know (-L: see docs/runbooks/README.md)"
        else:
            url = word
    variable = next((name for name in ADDRESS_VARIABLES if url.startswith(name + "/")), "")
    assert variable, f"curl {url}: not $GENESIS_URL/… or $GENESIS_INSTANCE_URL/…"
    return CurlRequest(variable=variable, method="POST" if body else "GET", path=url[len(variable):], headers=headers,
                       body=body)


def _check_curl(arguments: list[str]) -> None:
    request = curl_request(arguments)
    from django.urls import Resolver404, resolve

    try:
        resolve(request.path)
    except Resolver404:
        pytest.fail(f"curl {request.path}: no such endpoint")


CHECKERS = {"manage.py": _check_manage_py, "celery": _check_celery, "redis-cli": _check_redis, "curl": _check_curl}


@pytest.mark.parametrize(("runbook", "line"), quoted_commands())
def test_every_quoted_command_exists_and_its_flags_parse(runbook: str, line: str) -> None:
    words = shlex.split(line)
    if words[:2] == ["python", "manage.py"]:
        program, arguments = "manage.py", words[2:]
    else:
        program, arguments = words[0], words[1:]
    assert program in CHECKERS, f"{runbook}: '{line}' is not a command this test knows how to check"
    CHECKERS[program](arguments)


def test_a_task_that_does_not_exist_is_caught() -> None:
    with pytest.raises(AssertionError, match="no task named"):
        _check_celery(["-A", "genesis", "call", "models_app.benchmark_runs_resume_everything"])


def test_a_wrong_flag_is_caught() -> None:
    from django.core.management import CommandError

    with pytest.raises(CommandError):
        _check_manage_py(["rollout_models", "--agent", "qa_agent", "--rollback", "--as", "alice", "--yes-really"])


def address_conventions() -> dict[str, str]:
    """docs/runbooks/README.md's table of addresses: variable → its staging and production example."""
    rows = re.findall(r"^\| `(\$[A-Z_]+)` \| [^|]+ \| `([^`]+)`", (RUNBOOKS / "README.md").read_text(), re.MULTILINE)
    return dict(rows)


# Each request through genesis.wsgi (both middleware stacks), under GENESIS_ENV=production; a request to
# an https:// address arrives as the TLS proxy forwards it: plain HTTP with X-Forwarded-Proto.
PRODUCTION_REQUESTS = """
import json, os, sys
from genesis.wsgi import application
from django.test import RequestFactory

answers = []
for request in json.load(sys.stdin):
    headers = {"HTTP_" + name.upper().replace("-", "_"): value for name, value in request["headers"].items()}
    if request["scheme"] == "https":
        headers["HTTP_X_FORWARDED_PROTO"] = "https"
    environ = RequestFactory().generic(
        request["method"], request["path"], request["body"].encode(), HTTP_HOST=request["host"],
        content_type=request["headers"].get("Content-Type", "application/octet-stream"), **headers,
    ).environ
    started = []
    b"".join(application(environ, lambda status, headers, exc_info=None: started.append((status, dict(headers)))))
    answers.append([int(started[0][0].split()[0]), started[0][1].get("Location", "")])
print(json.dumps(answers))
"""


def answers_under_production_settings(requests: list[dict[str, object]], *, hosts: set[str]) -> list[tuple[int, str]]:
    # Production requires a REDIS_URL; none of these requests needs Redis to answer (or not) with a redirect.
    env = child_environment(GENESIS_ENV="production", GENESIS_DEBUG="false", GENESIS_SECRET_KEY="runbook-check-" * 4,
                            GENESIS_ALLOWED_HOSTS=",".join(sorted(hosts)), GENESIS_LOG_LEVEL="ERROR",
                            PYTHONPATH=str(ROOT), REDIS_URL=settings.REDIS_URL or "redis://127.0.0.1:6379/0")
    env.pop("GENESIS_SSL_REDIRECT", None)  # production's default: on
    result = subprocess.run([sys.executable, "-c", PRODUCTION_REQUESTS], input=json.dumps(requests), cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return [tuple(answer) for answer in json.loads(result.stdout.strip().splitlines()[-1])]


@pytest.mark.django_db
def test_every_curl_is_answered_not_redirected_at_the_production_addresses() -> None:
    # Was: one address, "e.g. http://127.0.0.1:8000" — under production settings every API call there
    # got a 301 to https:// (and `curl -s` printed nothing).
    addresses = address_conventions()
    assert set(addresses) == set(ADDRESS_VARIABLES)
    quoted = [(runbook, curl_request(shlex.split(line)[1:])) for runbook, line in quoted_commands() if line.startswith("curl ")]
    assert {request.variable for _, request in quoted} == set(ADDRESS_VARIABLES)
    requests = []
    for _, request in quoted:
        address = urlparse(addresses[request.variable])
        headers = {name: value.replace("$GENESIS_API_KEY", "not-a-key") for name, value in request.headers.items()}
        requests.append({**asdict(request), "headers": headers, "scheme": address.scheme, "host": address.netloc})
    # The check sees a redirect: an API call to one machine in plain HTTP is sent to https://.
    control = {"method": "GET", "path": "/api/v1/costs/summary", "headers": {}, "body": "", "scheme": "http",
               "host": urlparse(addresses["$GENESIS_INSTANCE_URL"]).netloc}
    *answers, control_answer = answers_under_production_settings(
        [*requests, control], hosts={urlparse(url).hostname or "" for url in addresses.values()})
    assert control_answer[0] == 301 and control_answer[1].startswith("https://")
    redirected = [(runbook, request.path, answer) for (runbook, request), answer in zip(quoted, answers, strict=True)
                  if 300 <= answer[0] < 400]
    assert redirected == []
    # The plain-HTTP address of one machine is only for what production serves over plain HTTP.
    assert urlparse(addresses["$GENESIS_INSTANCE_URL"]).scheme == "http"
    assert {request.path for _, request in quoted if request.variable == "$GENESIS_INSTANCE_URL"} <= PLAIN_HTTP_PATHS


def test_curl_follow_redirects_is_refused() -> None:
    with pytest.raises(AssertionError, match="-L"):
        curl_request(["-sSL", "$GENESIS_URL/api/v1/costs/summary"])


@pytest.mark.django_db  # the test database exists, for the step's passing run
def test_the_database_confirm_step_fails_when_the_database_is_down_and_passes_when_it_is_up() -> None:
    # DatabaseMetricsUnavailable's Confirm step was `manage.py check --database default`, which does not
    # connect: it exited 0 with nothing listening on the database's port.
    from tests.conftest import test_database_url
    from tests.ops.conftest import free_port

    section = (RUNBOOKS / "metrics.md").read_text().split("## DatabaseMetricsUnavailable", 1)[1].split("\n## ", 1)[0]
    [line] = [line for block in SH_BLOCK.findall(section) for line in block.splitlines() if "manage.py" in line]
    words = shlex.split(line)
    assert words[:2] == ["python", "manage.py"]
    command = [sys.executable, "manage.py", *words[2:]]
    closed = f"postgres://postgres@127.0.0.1:{free_port()}/genesis"  # nothing listens there

    down = subprocess.run(command, cwd=ROOT, env=child_environment(DATABASE_URL=closed), capture_output=True, text=True,
                          timeout=120)
    up = subprocess.run(command, cwd=ROOT, env=child_environment(DATABASE_URL=test_database_url()), capture_output=True,
                        text=True, timeout=120)
    assert down.returncode != 0 and "OperationalError" in down.stderr, down.stdout + down.stderr
    assert up.returncode == 0, up.stdout + up.stderr


def test_no_runbook_curl_names_an_experiment_key_only_the_demo_has() -> None:
    # high-latency.md asked for /experiments/qa_agent-rollout/results: a key of the demo's, not of an
    # operator's experiment. The key comes from the agent's health (a variable in the runbook).
    paths = [curl_request(shlex.split(line)[1:]).path for _, line in quoted_commands() if line.startswith("curl ")]
    keys = [path.split("/")[4] for path in paths if path.startswith("/api/v1/experiments/")]
    assert keys and all(key.startswith("$") for key in keys), keys
