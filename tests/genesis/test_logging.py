"""The log lines an on-call engineer reads (genesis/logging.py): identifiers as fields in both formats,
nothing secret or personal in them, Celery's and gunicorn's own lines in the configured format, and no
flood from the every-minute sweeps or from load balancers probing /readyz during an outage."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from django.test import RequestFactory

from genesis import logging as genesis_logging
from genesis.logging import JsonFormatter, QuietHousekeeping, TextFormatter, record_fields
from genesis.schedules import housekeeping_tasks
from tests.conftest import ROOT, child_environment

# Celery's own formats (celery/app/trace.py, celery/worker/strategy.py), as its loggers send them.
RECEIVED = "Task %(name)s[%(id)s] received"
SUCCEEDED = "Task %(name)s[%(id)s] succeeded in %(runtime)ss: %(return_value)s"
RETRY = "Task %(name)s[%(id)s] retry: %(exc)s"


def celery_record(logger: str, fmt: str, data: dict, level: int = logging.INFO) -> logging.LogRecord:
    record = logging.LogRecord(logger, level, __file__, 1, fmt, (data,), None)
    record.data = data
    return record


class Captured(logging.Handler):
    """Every record any logger handles, all loggers at DEBUG meanwhile; formatted as it is emitted, since
    the fields depend on the task running then."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.fields: list[dict] = []
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.fields.append(record_fields(record))
        self.lines += [JsonFormatter().format(record), TextFormatter().format(record)]


@pytest.fixture
def every_record() -> Iterator[Captured]:
    handler = Captured()
    root = logging.getLogger()
    loggers = [root] + [logger for logger in logging.Logger.manager.loggerDict.values() if isinstance(logger, logging.Logger)]
    levels = {logger: logger.level for logger in loggers}
    logging.disable(logging.NOTSET)
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        for logger, level in levels.items():
            logger.setLevel(level)


def test_a_json_line_carries_the_identifiers_as_fields_and_stays_one_valid_object():
    record = logging.LogRecord("experiments.services", logging.WARNING, __file__, 1, "experiment %s paused:\n%s", ("qa-rollout", "srm"), None)
    record.experiment = "qa-rollout"
    record.stage_percent = 25
    line = JsonFormatter().format(record)
    entry = json.loads(line)
    assert "\n" not in line
    assert (entry["level"], entry["logger"], entry["message"]) == ("WARNING", "experiments.services", "experiment qa-rollout paused:\nsrm")
    assert (entry["experiment"], entry["stage_percent"]) == ("qa-rollout", 25)


def test_a_json_line_survives_fields_json_cannot_write_and_never_writes_nan():
    """An `extra` dict with tuple keys made json.dumps raise, and logging printed "--- Logging error ---" in
    place of the line; NaN and infinity came out as bare NaN and Infinity, which no JSON parser takes."""
    record = logging.LogRecord("genesis", logging.WARNING, __file__, 1, "odd fields", (), None)
    record.by_arm = {("control", 1): 3}
    record.ratio, record.limit, record.chunk_id = float("nan"), float("inf"), 6
    line = JsonFormatter().format(record)
    entry = json.loads(line, parse_constant=lambda constant: pytest.fail(f"{constant} in {line}"))
    assert (entry["message"], entry["chunk_id"]) == ("odd fields", 6)
    assert (entry["by_arm"], entry["ratio"], entry["limit"]) == ("{('control', 1): 3}", "nan", "inf")

def test_celery_lines_name_the_task_its_id_and_the_ids_it_was_given():
    from audits.tasks import run_audit  # registers the task, whose parameter is run_id

    received = celery_record("celery.worker.strategy", RECEIVED, {"id": "t-1", "name": run_audit.name, "args": "(42,)", "kwargs": "{}"})
    notify = celery_record("celery.app.trace", RETRY, {"id": "t-2", "name": "experiments.notify_rollback", "exc": "x", "args": "()", "kwargs": "{'event_id': 7}"})
    assert {k: v for k, v in json.loads(JsonFormatter().format(received)).items() if k in ("task", "task_id", "run_id")} == {
        "task": "audits.run_audit", "task_id": "t-1", "run_id": 42}
    assert json.loads(JsonFormatter().format(notify))["event_id"] == 7
    text = TextFormatter().format(received)
    assert text.endswith("Task audits.run_audit[t-1] received [task=audits.run_audit task_id=t-1 run_id=42]")


def test_a_line_logged_inside_a_task_names_the_task_and_its_object(db, every_record):
    from costs.tasks import run_cost_report

    run_cost_report.apply(args=(987654,), task_id="report-task")
    [(line, fields)] = [(r, f) for r, f in zip(every_record.records, every_record.fields, strict=True) if r.name == "costs.tasks"]
    assert "987654" in line.getMessage()
    assert (fields["task"], fields["task_id"], fields["report_id"]) == ("costs.run_cost_report", "report-task", 987654)


def test_a_tasks_parameter_names_are_read_once_not_with_every_line(monkeypatch):
    """inspect.signature ran for every line of a task given positional arguments."""
    import inspect
    from types import SimpleNamespace

    import costs.tasks  # noqa: F401 - registers costs.run_cost_report

    calls = []

    def signature(function):
        calls.append(function)
        return inspect.signature(function)

    monkeypatch.setattr(genesis_logging, "inspect", SimpleNamespace(signature=signature))
    monkeypatch.setattr(genesis_logging, "_parameters", {}, raising=False)  # the names read before
    records = [celery_record("celery.worker.strategy", RECEIVED, {"id": f"t-{n}", "name": "costs.run_cost_report", "args": f"({n},)"})
               for n in range(3)]
    assert [record_fields(record)["report_id"] for record in records] == [0, 1, 2]
    assert len(calls) == 1

def test_only_id_arguments_become_fields_never_free_text():
    # A task given a text (an e-mail, a prompt) by mistake must not copy it into every line.
    record = celery_record("celery.worker.strategy", RECEIVED, {
        "id": "t-3", "name": "experiments.notify_rollback", "args": "()",
        "kwargs": "{'event_id': 'jane.doe@example.com', 'user_id': 'jane.doe@example.com', 'note': 'call +1 415 555 0199'}",
    })
    line = JsonFormatter().format(record)
    assert "jane.doe" not in line.replace(record.getMessage(), "") and "555 0199" not in line


def test_request_lines_give_method_path_and_status_but_never_the_query_string():
    request = RequestFactory().get("/api/v1/experiments/qa-rollout/results?token=s3cr3t-query-token&email=jane@example.com")
    record = logging.LogRecord("django.request", logging.WARNING, __file__, 1, "Not Found: %s", (request.path,), None)
    record.request, record.status_code = request, 404
    for line in (JsonFormatter().format(record), TextFormatter().format(record)):
        assert "s3cr3t-query-token" not in line and "jane@example.com" not in line
    entry = json.loads(JsonFormatter().format(record))
    assert (entry["method"], entry["path"], entry["status_code"]) == ("GET", "/api/v1/experiments/qa-rollout/results", 404)


def test_a_text_line_is_one_line_whatever_its_message_and_fields_hold():
    """A decoded path with a line break (`/a%20b%0AINFO%20fake`) printed a second, forged line, and a `]` or
    `=` in a value forged fields. Values that are not one plain word are quoted with repr(), and a line
    break in the message is written as its escape; a traceback keeps its own lines after the one line."""
    request = RequestFactory().get("/a%20b%0AINFO%20fake%20line]%20x=1")
    record = logging.LogRecord("django.request", logging.WARNING, __file__, 1, "Not Found: %s", (request.path,), None)
    record.request, record.status_code = request, 404
    line = TextFormatter().format(record)
    assert line.splitlines() == [line]
    assert line.endswith("Not Found: /a b\\nINFO fake line] x=1 [method=GET path='/a b\\nINFO fake line] x=1' status_code=404]")
    try:
        raise ValueError("boom")
    except ValueError:
        failed = logging.LogRecord("genesis", logging.ERROR, __file__, 1, "first\r\nsecond\u2028third", (), sys.exc_info())
    first, *traceback = TextFormatter().format(failed).split("\n")
    assert first.endswith(" ERROR genesis first\\r\\nsecond\\u2028third")
    assert traceback[0] == "| Traceback (most recent call last):" and traceback[-1] == "| ValueError: boom"


def test_no_line_of_a_traceback_can_pass_for_another_record():
    """An exception's message (or note) with a line break in it printed a line of its own that read as a
    record: a shipper splitting records at a leading time took it for one. Every line after the record's
    own starts with "| ", wherever str.splitlines() breaks — also when another handler's formatter cached
    the traceback on the record first, and for a traceback that came as text only."""
    forged = "2026-12-07 19:19:57,619 INFO genesis.audits all clear [task=audits.run task_id=x]"
    try:
        raise ValueError(f"bad value 'a\n{forged}'")
    except ValueError as exc:
        exc.add_note(f"while reading\r{forged}\u2028{forged}")
        failed = logging.LogRecord("genesis", logging.ERROR, __file__, 1, "audit failed", (), sys.exc_info())
    logging.Formatter().format(failed)  # caches the plain traceback on the record, as any other handler does
    first, *rest = TextFormatter().format(failed).splitlines()
    assert first.endswith(" ERROR genesis audit failed") and rest[0] == "| Traceback (most recent call last):"
    assert all(line.startswith("| ") for line in rest), rest
    assert rest.count(f"| {forged}'") == 1 and rest.count(f"| {forged}") == 2
    unpickled = logging.makeLogRecord({"msg": "from elsewhere", "exc_text": f"Traceback\nValueError: x\n{forged}"})
    assert TextFormatter().format(unpickled).splitlines()[1:] == ["| Traceback", "| ValueError: x", f"| {forged}"]
    assert all(line.startswith("| ") for line in TextFormatter().format(
        logging.LogRecord("genesis", logging.INFO, __file__, 1, "here", (), None, sinfo=f"Stack:\n{forged}")).splitlines()[1:])


def test_a_thread_a_task_starts_logs_with_the_tasks_fields(db):
    """Celery keeps the running task per thread: lines a task's pool thread logged (a benchmark chunk's
    answer threads) carried no task fields. with_task_fields carries them, read in the task's thread; a
    pool thread that runs other work afterwards has none again."""
    from concurrent.futures import ThreadPoolExecutor

    from celery import shared_task

    def fields_here() -> dict:
        return record_fields(logging.LogRecord("genesis", logging.WARNING, __file__, 1, "in a thread", (), None))

    @shared_task(name="tests.genesis.log_in_threads")
    def log_in_threads(run_id: int) -> tuple[dict, dict, dict]:
        with ThreadPoolExecutor(max_workers=1) as pool:
            carried = pool.submit(genesis_logging.with_task_fields(fields_here)).result()
            plain = pool.submit(fields_here).result()
        return fields_here(), carried, plain

    own, carried, plain = log_in_threads.apply(args=(42,), task_id="threads-task").get()
    assert own == carried == {"task": "tests.genesis.log_in_threads", "task_id": "threads-task", "run_id": 42}
    assert plain == {}
    assert genesis_logging.with_task_fields(fields_here) is fields_here  # outside a task: nothing to carry


def test_no_api_key_user_id_or_prompt_reaches_a_formatted_line(seeded_demo, client, api_key_for, every_record):
    """Traffic as the agents send it, with personal data in user ids and attributes, plus refusals:
    every record any logger emitted (DEBUG on), through both formatters, holds none of it."""
    key = api_key_for("qa_agent")
    email, phone = "jane.doe.personal@example.com", "+1 415 555 0199"
    auth = {"HTTP_AUTHORIZATION": f"Bearer {key}"}
    routed = client.post("/api/v1/route", {"agent": "qa_agent", "user_id": email, "attributes": {"phone": phone}},
                         content_type="application/json", **auth)
    assert routed.status_code == 200
    event = {"event_id": "e-1", "agent": "qa_agent", "user_id": email, "model": routed.json()["model"], "success": True, "latency_ms": 12}
    assert client.post("/api/v1/outcomes", {"events": [event, {**event, "event_id": "e-2", "latency_ms": -1}]},
                       content_type="application/json", **auth).status_code == 202
    assert client.post("/api/v1/route", {"agent": "nope", "user_id": email, "attributes": {}}, content_type="application/json",
                       **auth).status_code == 404
    assert client.post("/api/v1/route", {"agent": "qa_agent", "user_id": email, "attributes": {}}, content_type="application/json",
                       HTTP_AUTHORIZATION=f"Bearer {key}x").status_code == 401
    lines = every_record.lines
    assert any("Not Found" in line for line in lines)  # the refusals were logged, and searched
    for secret in (key, email, phone, "jane.doe"):
        assert not [line for line in lines if secret in line], secret


def test_the_every_minute_sweeps_routine_lines_are_debug_and_everything_else_stays(monkeypatch):
    from genesis.celery import _quiet_housekeeping

    monkeypatch.setattr(genesis_logging, "_housekeeping_tasks", frozenset())  # put back afterwards
    _quiet_housekeeping()  # what a worker or beat does as it starts
    sweep = "experiments.flush_exposures"
    assert {"experiments.flush_exposures", "experiments.evaluate_guardrails"} <= housekeeping_tasks()
    assert "costs.daily_cost_report" not in housekeeping_tasks() and "audits.run_audit" not in housekeeping_tasks()
    quiet = QuietHousekeeping()
    root = logging.getLogger()
    level = root.level
    try:
        root.setLevel(logging.INFO)
        assert not quiet.filter(celery_record("celery.app.trace", SUCCEEDED, {"id": "1", "name": sweep}))
        assert not quiet.filter(celery_record("celery.worker.strategy", RECEIVED, {"id": "1", "name": sweep}))
        beat = logging.LogRecord("celery.beat", logging.INFO, __file__, 1, "Scheduler: Sending due task %s (%s)", ("a sweep", sweep), None)
        assert not quiet.filter(beat)
        # A sweep's retry, its failure, and other tasks' routine lines are kept as they are.
        assert quiet.filter(celery_record("celery.app.trace", RETRY, {"id": "1", "name": sweep}))
        assert quiet.filter(celery_record("celery.app.trace", SUCCEEDED, {"id": "1", "name": sweep}, level=logging.ERROR))
        kept = celery_record("celery.app.trace", SUCCEEDED, {"id": "1", "name": "audits.run_audit"})
        assert quiet.filter(kept) and kept.levelno == logging.INFO
        root.setLevel(logging.DEBUG)
        shown = celery_record("celery.app.trace", SUCCEEDED, {"id": "1", "name": sweep})
        assert quiet.filter(shown) and (shown.levelno, shown.levelname) == (logging.DEBUG, "DEBUG")
    finally:
        root.setLevel(level)


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_readyz_during_an_outage_logs_the_start_and_the_end_not_each_probe(db, client, settings, every_record):
    from genesis import health

    health._readiness_log = health._ReadinessLog()  # this process's memory of earlier probes
    good = settings.REDIS_URL
    settings.REDIS_URL = f"redis://127.0.0.1:{unused_port()}/0"
    for _ in range(3):
        assert client.get("/readyz").status_code == 503
    settings.REDIS_URL = good
    client.get("/readyz")
    lines = [r for r in every_record.records if r.levelno >= logging.INFO and r.name in ("genesis.health", "django.request")]
    redis_lines = [r.getMessage() for r in lines if "check redis" in r.getMessage()]
    assert len(redis_lines) == 2, redis_lines
    assert "failed: ConnectionError" in redis_lines[0] and "503 until it passes" in redis_lines[0]
    assert "passes again after" in redis_lines[1]
    assert not [r for r in lines if r.name == "django.request"]  # no ERROR "Service Unavailable: /readyz" per probe


def _run_until(command: list[str], *, env: dict[str, str], marker: str, timeout: float = 40) -> str:
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    output: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        assert process.stdout is not None
        os.set_blocking(process.stdout.fileno(), False)
        while time.monotonic() < deadline and not any(marker in line for line in output):
            chunk = process.stdout.readline()
            if chunk:
                output.append(chunk)
            elif process.poll() is not None:
                break
            else:
                time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        rest, _ = process.communicate(timeout=30)
    return "".join(output) + (rest or "")


def test_gunicorn_and_python_warnings_log_in_the_configured_json_format():
    env = child_environment(GENESIS_LOG_FORMAT="json", GENESIS_LOG_LEVEL="INFO")
    output = _run_until([sys.executable, "-m", "gunicorn", "genesis.wsgi:application", "-w", "1", "-b", f"127.0.0.1:{unused_port()}"],
                        env=env, marker="Booting worker")
    lines = [line for line in output.splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line, gunicorn's own included, is one JSON object
    assert any(e["logger"] == "gunicorn.error" and e["message"].startswith("Booting worker") for e in entries)
    warned = subprocess.run([sys.executable, "manage.py", "shell", "-c", "import warnings; warnings.warn('deprecated thing')"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    [warning] = [json.loads(line) for line in warned.stderr.splitlines() if "deprecated thing" in line]
    assert (warning["logger"], warning["level"]) == ("py.warnings", "WARNING")


def test_in_dev_django_lines_are_printed_once_in_the_configured_format(settings):
    """With DEBUG=True Django's default "console" handler printed each django.* line a second time, as plain
    text between the JSON lines."""
    from django.utils.log import configure_logging

    settings.DEBUG = True
    printed = io.StringIO()
    try:
        with contextlib.redirect_stderr(printed):  # Django's handlers and ours write to the stderr of when they are made
            configure_logging(settings.LOGGING_CONFIG, genesis_logging.logging_config(level="INFO", format="json"))
            logging.getLogger("django.request").warning("Not Found: /nowhere")
    finally:
        configure_logging(settings.LOGGING_CONFIG, settings.LOGGING)
    [entry] = [json.loads(line) for line in printed.getvalue().splitlines()]
    assert (entry["logger"], entry["message"]) == ("django.request", "Not Found: /nowhere")

def test_no_logger_prints_below_the_configured_level_whatever_its_own_level(settings):
    """GENESIS_LOG_LEVEL is the level of every line printed: urllib3 (held at WARNING) and django.server (at
    INFO by Django's defaults) have levels of their own, which the root's level alone did not filter."""
    from django.utils.log import configure_logging

    printed = io.StringIO()
    try:
        with contextlib.redirect_stderr(printed):
            configure_logging(settings.LOGGING_CONFIG, genesis_logging.logging_config(level="ERROR", format="json"))
            logging.getLogger("urllib3.connectionpool").warning("Connection pool is full, discarding connection")
            logging.getLogger("django.server").info('"GET / HTTP/1.1" 200 0')
            logging.getLogger("genesis.example").error("shown")
    finally:
        configure_logging(settings.LOGGING_CONFIG, settings.LOGGING)
    assert [json.loads(line)["message"] for line in printed.getvalue().splitlines()] == ["shown"]


def test_what_a_task_prints_is_a_log_line_with_the_tasks_fields(start_worker):
    """A task's print() came out raw among the JSON lines: Celery's redirect of print into its logger was
    off, since Genesis sets up logging itself (genesis/celery.py)."""
    from genesis.celery import app

    worker = start_worker(include="tests.genesis.printing_task", env={"GENESIS_LOG_FORMAT": "json"})
    app.send_task("tests.genesis.print_a_line", args=(7,), queue="default")
    deadline = time.monotonic() + 30
    while "printed by run 7" not in worker.log_path.read_text(errors="replace") and time.monotonic() < deadline:
        time.sleep(0.2)
    [entry] = [json.loads(line) for line in worker.log_path.read_text().splitlines() if "printed by run 7" in line]
    assert (entry["logger"], entry["message"], entry["task"], entry["run_id"]) == (
        "celery.redirected", "printed by run 7", "tests.genesis.print_a_line", 7)

def test_a_throttled_line_goes_out_once_per_key_and_window_and_then_says_how_many_it_held_back(caplog, log_clock):
    from genesis.logging import Throttled

    throttle, logger = Throttled(60.0), logging.getLogger("genesis.test_throttle")
    with caplog.at_level(logging.WARNING, logger="genesis.test_throttle"):
        sent = []
        for n in range(100):
            sent.append(throttle.log(logger, logging.WARNING, "redis", "redis away (%s)", n))
            log_clock.now += 0.5
        throttle.log(logger, logging.WARNING, "database", "database away")
        log_clock.now = 61.0
        throttle.log(logger, logging.WARNING, "redis", "redis away (%s)", "again")
    assert sent.count(True) == 1
    assert [r.getMessage() for r in caplog.records] == [
        "redis away (0)", "database away", "redis away (again) (99 more like this in the last 61 s)"]


def test_a_throttled_line_after_a_quiet_spell_dates_what_it_held_back_instead_of_spreading_it(caplog, log_clock):
    """The condition ran for two minutes, stopped, and came back three hours later: the held-back count is
    said with when those lines came, not as "in the last 10800 s"."""
    from genesis.logging import Throttled

    throttle, logger = Throttled(60.0), logging.getLogger("genesis.test_throttle")
    with caplog.at_level(logging.WARNING, logger="genesis.test_throttle"):
        for second in (0, 10, 50, 70, 90, 100):  # 10:00:00 through; 10:01:10 through
            log_clock.now = second
            throttle.log(logger, logging.WARNING, "redis", "redis away")
        log_clock.now = 3 * 3600 + 100
        throttle.log(logger, logging.WARNING, "redis", "redis away")
    assert [r.getMessage() for r in caplog.records] == [
        "redis away", "redis away (2 more like this in the last 70 s)",
        "redis away (2 more like this between 10:01:30 UTC and 10:01:40 UTC)"]
