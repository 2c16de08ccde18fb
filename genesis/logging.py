"""How every Genesis process logs — web (gunicorn or runserver), Celery worker and beat, commands: text or
JSON (`GENESIS_LOG_FORMAT`), one line per record, with the objects a line is about as fields.

One place for all of it, so the lines of every process read alike and an on-call engineer can filter on
the same names everywhere:

- `logging_config` is the `LOGGING` of settings.py and gunicorn's `logconfig_dict` (gunicorn.conf.py), so
  gunicorn's own lines follow the chosen format too.
- `record_fields` finds the identifiers: the Celery task a line was logged in or is about (`task`,
  `task_id`, and the task's id arguments — `run_id`, `job_id`, `experiment_id`…: every task takes ids, and
  only arguments named `id`/`…_id`/`…_ids` holding ids are copied, so no free text reaches a field), the
  request of Django's request lines (`method`, `path` without its query string, `status_code`), and
  anything a caller passes with `extra=`. Both formatters show them: JSON as keys, text as `key=value`.
- `QuietHousekeeping` keeps the periodic sweeps that beat sends every minute or more often (exposure flushes
  every 10 s, the guardrail, sync and resend sweeps; the list comes from genesis/schedules.py through
  genesis/celery.py as a worker or beat starts) out of INFO: Celery's "received", "succeeded" and beat's
  "Sending due task" lines of those tasks are DEBUG. Before, an idle worker and beat printed 33 such lines
  a minute (measured), and a real failure scrolled away among them. Their retries, failures and anything
  they log themselves stay at their level.
"""

from __future__ import annotations

import ast
import functools
import inspect
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

# The attributes every LogRecord has; anything else on a record came from `extra=` (or Celery's `data`).
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}
# Set by Django's request loggers and by Celery's own lines; turned into plain fields below, never dumped.
_EXPANDED = frozenset({"request", "data"})
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# What starts every line of a traceback in the text format (`TextFormatter.format`): a record's own line
# starts with its time, so no line of a traceback — an exception's message with a line break in it
# included — can pass for another record, to a reader or to a shipper's multi-line rule.
CONTINUATION = "| "

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _id_arguments(task_name: str | None, args: Any, kwargs: Any) -> dict[str, Any]:
    """The task's arguments that are ids, by parameter name. Positional arguments are named from the
    task's signature; anything that is not an int (or a list of ints) is left out."""
    named: dict[str, Any] = dict(kwargs) if isinstance(kwargs, Mapping) else {}
    if args and task_name:
        named.update(zip(_parameter_names(task_name), args, strict=False))
    return {
        name: value for name, value in named.items()
        if (name == "id" or name.endswith(("_id", "_ids"))) and _is_id_value(value)
    }


def _is_id_value(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, list | tuple) and all(isinstance(item, int) and not isinstance(item, bool) for item in value)


# task name -> its positional parameter names: read once per task and process, not with every line a task
# logs (inspect.signature is slow next to formatting a line). A name not (yet) registered is not kept.
_parameters: dict[str, tuple[str, ...]] = {}


def _parameter_names(task_name: str) -> tuple[str, ...]:
    names = _parameters.get(task_name)
    if names is not None:
        return names
    # import here: Celery is loaded only in the processes that log task lines, after Django's setup.
    from celery import current_app

    run = getattr(current_app.tasks.get(task_name), "run", None)
    if run is None:
        return ()
    try:
        # signature() follows the wrapper Celery puts around a task with autoretry_for to the function.
        parameters = list(inspect.signature(run).parameters.values())
    except (TypeError, ValueError):
        parameters = []
    positional = [p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    # A bound task's first parameter is the task itself.
    names = _parameters[task_name] = tuple(positional[1:] if positional and positional[0] == "self" else positional)
    return names


def _literal(text: Any) -> Any:
    """Celery's own lines carry the arguments as their repr ("(3,)", "{'experiment_id': 5}")."""
    if not isinstance(text, str):
        return text
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None


# The fields of the task that started this thread (`with_task_fields`). Celery keeps the running task per
# thread (a threading.local stack), so a thread a task starts knows no task of its own.
_carried_task_fields: ContextVar[dict[str, Any] | None] = ContextVar("genesis_carried_task_fields", default=None)


def _task_fields(record: logging.LogRecord | None) -> dict[str, Any]:
    """The fields of the task this thread runs (or was started by), or of the Celery line `record` is."""
    # import here: Celery's state is read only when a line is formatted, in whatever process logs it.
    from celery._state import get_current_task

    task = get_current_task()
    request = getattr(task, "request", None)
    running_id = getattr(request, "id", None)
    data = getattr(record, "data", None)
    if isinstance(data, Mapping) and data.get("id"):
        # One of Celery's own task lines. "received" and "failed" carry the arguments as their repr
        # ("(3,)", "{'experiment_id': 5}"); "retry" and "succeeded" do not, but run inside the task.
        name, task_id = data.get("name"), data["id"]
        if "args" in data or "kwargs" in data:
            args, kwargs = _literal(data.get("args")), _literal(data.get("kwargs"))
        elif request is not None and running_id == task_id:
            args, kwargs = request.args, request.kwargs
        else:
            args = kwargs = None
        return {"task": name, "task_id": task_id, **_id_arguments(name, args, kwargs)}
    if task is None or request is None or not running_id:
        return dict(_carried_task_fields.get() or {})
    return {"task": task.name, "task_id": running_id, **_id_arguments(task.name, request.args, request.kwargs)}


def with_task_fields(function: Callable[_P, _R]) -> Callable[_P, _R]:
    """`function`, to be run in a thread the running task starts (`pool.submit(with_task_fields(f), …)`):
    the lines it logs carry the task's fields (`task`, `task_id`, the id arguments) as the task's own
    lines do. Read now, in the task's thread; outside a task, `function` itself."""
    fields = _task_fields(None)
    if not fields:
        return function

    @functools.wraps(function)
    def in_task(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        token = _carried_task_fields.set(fields)
        try:
            return function(*args, **kwargs)
        finally:
            _carried_task_fields.reset(token)  # a pool thread runs other work after this

    return in_task


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The identifiers of the line, as fields (see the module's docstring)."""
    fields = _task_fields(record)
    request = getattr(record, "request", None)
    if request is not None and hasattr(request, "method") and hasattr(request, "path"):
        # The path only: a query string may carry a token, and a body is never logged.
        fields.update(method=request.method, path=request.path)
    for key, value in vars(record).items():
        if key not in _RECORD_ATTRIBUTES and key not in _EXPANDED:
            fields[key] = value
    return fields


class JsonFormatter(logging.Formatter):
    """One valid JSON object per line: time, level, logger, message, the fields, the traceback."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record_fields(record).items():
            entry.setdefault(key, value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.stack_info:
            entry["exception"] = self.formatStack(record.stack_info)
        try:
            return _json_line(entry)
        except (TypeError, ValueError):
            # A field json cannot write — a dict with tuple keys, NaN or infinity (which json.dumps would
            # write as bare NaN, invalid JSON) — is written as its str(), rather than the line being lost.
            return _json_line({key: _json_value(value) for key, value in entry.items()})


def _json_line(entry: Mapping[str, Any]) -> str:
    return json.dumps(entry, ensure_ascii=False, default=str, allow_nan=False)


def _json_value(value: Any) -> Any:
    try:
        _json_line({"": value})
    except (TypeError, ValueError):
        return str(value)
    return value


class TextFormatter(logging.Formatter):
    """`TEXT_FORMAT`, then the fields as `key=value` in brackets, then the traceback on its own lines, each
    starting with `CONTINUATION`."""

    def __init__(self, fmt: str | None = None, datefmt: str | None = None, *args: Any, **kwargs: Any) -> None:
        super().__init__(fmt or TEXT_FORMAT, datefmt, *args, **kwargs)

    def format(self, record: logging.LogRecord) -> str:
        # logging.Formatter.format, but every line of the traceback and of the stack is marked: an exception's
        # message ("bad value 'x\n2026-12-07 … INFO …'"), its notes or a file name may hold a line break, and
        # the line after it forged a record. Not record.exc_text, which logging caches for whichever
        # formatter came first (another handler's), unmarked.
        record.message = record.getMessage()
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        line = self.formatMessage(record)
        if record.exc_info:
            line += _continuation_lines(self.formatException(record.exc_info))
        elif record.exc_text:  # a record made elsewhere (unpickled) with the traceback as text only
            line += _continuation_lines(record.exc_text)
        if record.stack_info:
            line += _continuation_lines(self.formatStack(record.stack_info))
        return line

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        # One record, one line: a line break in the message (a decoded path, an upstream error's text) would
        # start a line a reader or a shipper takes for another record. The traceback, added after this by
        # format(), keeps its lines — it is the one part meant to span several, each marked as such.
        record.message = record.message.translate(_LINE_BREAKS)
        line = super().formatMessage(record)
        fields = record_fields(record)
        if fields:
            line += " [" + " ".join(f"{key}={_text_value(value)}" for key, value in fields.items()) + "]"
        return line


def _continuation_lines(text: str) -> str:
    """Each line of `text` on a line of its own after CONTINUATION, split wherever str.splitlines() splits
    (\\r, \\u2028… too: a terminal or a shipper may break there)."""
    return "".join(f"\n{CONTINUATION}{line}" for line in text.splitlines())


# What str.splitlines() breaks on, written as Python writes it in a string ("\n", "\x85", "\u2028").
_LINE_BREAKS = {ord(c): repr(c)[1:-1] for c in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"}


def _text_value(value: Any) -> str:
    """A field's value as `key=value` shows it: as is when it is one plain word (an id, a task name, a path
    without spaces), else quoted with repr(), so a value cannot end the brackets, forge another field or
    start another line: a path with a line break in it shows as '/a b\\nINFO fake'."""
    text = str(value)
    if text and text.isprintable() and not any(c.isspace() or c in "=]'\"" for c in text):
        return text
    return repr(text)


class Throttled:
    """A line that a condition repeats on every request or poll (Redis away for each route, a model without
    a price in each outcome batch) is let through once per key every `seconds`, saying how many like it it
    held back meanwhile: one line a minute tells on-call the condition goes on; thousands tell nothing more
    and push everything else out of view."""

    def __init__(self, seconds: float = 60.0) -> None:
        self.seconds = seconds
        self._lock = threading.Lock()
        # key -> (when last let through, monotonic; how many held back since; when the first and the last of
        # them came, wall clock)
        self._seen: dict[str, tuple[float, int, float, float]] = {}

    def log(self, logger: logging.Logger, level: int, key: str, message: str, *args: Any) -> bool:
        now, wall = time.monotonic(), time.time()
        with self._lock:
            last, held, first_held, last_held = self._seen.get(key, (None, 0, wall, wall))
            if last is not None and now - last < self.seconds:
                self._seen[key] = (last, held + 1, first_held if held else wall, wall)
                return False
            self._seen[key] = (now, 0, wall, wall)
        if held and last is not None:
            if now - last <= 2 * self.seconds:
                message, args = message + " (%d more like this in the last %.0f s)", (*args, held, now - last)
            else:
                # The condition stopped and came back: the held-back lines belong to the earlier spell, and
                # "in the last 3 hours" would spread them over a quiet time.
                message, args = message + " (%d more like this between %s and %s)", (*args, held, _clock(first_held), _clock(last_held))
        logger.log(level, message, *args)
        return True


def _clock(wall: float) -> str:
    return datetime.fromtimestamp(wall, tz=UTC).strftime("%H:%M:%S UTC")


# The messages Celery logs for each task it receives and finishes, and beat for each one it sends.
_CELERY_ROUTINE = {"celery.worker.strategy": "received", "celery.app.trace": "succeeded", "celery.beat": "Sending due task"}
# The tasks whose routine lines are DEBUG: beat's every-minute sweeps, set by genesis/celery.py as a worker or
# beat starts (the schedule is a layer above this module: genesis/schedules.py).
_housekeeping_tasks: frozenset[str] = frozenset()


def set_housekeeping_tasks(tasks: Iterable[str]) -> None:
    global _housekeeping_tasks
    _housekeeping_tasks = frozenset(tasks)


def _routine_task_name(record: logging.LogRecord) -> str | None:
    marker = _CELERY_ROUTINE.get(record.name)
    if marker is None or record.levelno != logging.INFO or marker not in str(record.msg):
        return None
    data = getattr(record, "data", None)
    if isinstance(data, Mapping):
        return str(data.get("name"))
    if record.name == "celery.beat" and isinstance(record.args, tuple) and len(record.args) == 2:
        return str(record.args[1])  # "Scheduler: Sending due task %s (%s)": the entry's name, its task
    return None


class QuietHousekeeping(logging.Filter):
    """Celery's routine lines of the every-minute sweeps go to DEBUG (dropped unless DEBUG is on)."""

    def filter(self, record: logging.LogRecord) -> bool:
        task = _routine_task_name(record)
        if task is None or task not in _housekeeping_tasks:
            return True
        if not logging.getLogger().isEnabledFor(logging.DEBUG):
            return False
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


def logging_config(*, level: str, format: str) -> dict[str, Any]:
    """The dictConfig of every process: settings.LOGGING, and gunicorn's logconfig_dict."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"text": {"()": "genesis.logging.TextFormatter"}, "json": {"()": "genesis.logging.JsonFormatter"}},
        "filters": {"housekeeping": {"()": "genesis.logging.QuietHousekeeping"}},
        "handlers": {
            # The level on the handler too: the root's level filters only what is logged to the root itself,
            # and a logger with a level of its own (urllib3's WARNING below, django.server's INFO) would
            # print below GENESIS_LOG_LEVEL through it.
            "console": {"class": "logging.StreamHandler", "formatter": format, "filters": ["housekeeping"], "level": level},
        },
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            # Django's own "console" handler (DEBUG=True only) printed every django.* line a second time, in
            # plain text; its "mail_admins" sends nothing, as ADMINS is not set. Through ours only.
            "django": {"handlers": [], "propagate": True},
            # DEBUG would print every SQL statement with its parameters: outcome rows, user ids.
            "django.db.backends": {"level": "INFO"},
            # Their DEBUG and INFO lines name the URL a request went to — urllib3's request line
            # ('"POST /services/T000/B000/<token> HTTP/1.1" 200') and redirects, httpx's "HTTP Request:" —
            # and an alert webhook's or a provider's URL may carry a token in its path or query. Their
            # warnings (a pool full, a retry) stay. requests and the mistralai SDK log no URLs; the SDK's
            # logger is switched off anyway (models_app/providers/mistral.py).
            "urllib3": {"level": "WARNING"},
            "httpx": {"level": "WARNING"},
            "httpcore": {"level": "WARNING"},
            # gunicorn's own lines go through the root handler, in the chosen format; its access log stays
            # off as before (a request line carries the query string, which may hold a token).
            "gunicorn.error": {"level": level, "handlers": [], "propagate": True},
            "gunicorn.access": {"level": "WARNING", "handlers": [], "propagate": True},
        },
    }
