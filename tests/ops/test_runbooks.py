"""docs/runbooks: every alert's runbook_url names an existing runbook and a section of it; every command a
runbook quotes exists and its flags parse (manage.py commands by their own parsers, celery subcommands
by celery, Redis commands by the Redis server); every runbook has the four parts."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml
from django.conf import settings
from django.core.management import get_commands, load_command_class

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


def _check_curl(arguments: list[str]) -> None:
    urls = [arg for arg in arguments if arg.startswith('$GENESIS_URL') or arg.startswith('"$GENESIS_URL')]
    assert urls, arguments
    path = urls[0].split("$GENESIS_URL", 1)[1].strip('"')
    from django.urls import Resolver404, resolve

    try:
        resolve(path)
    except Resolver404:
        pytest.fail(f"curl {path}: no such endpoint")


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
