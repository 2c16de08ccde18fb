"""The HTTP face of the simulator: routes, bearer auth, fault injection and added latency.

Standard library only (ThreadingHTTPServer), so it starts anywhere Genesis does, in a thread for
tests or as `manage.py mistral_simulator` / `python -m models_app.simulator`.
"""

from __future__ import annotations

import errno
import json
import logging
import re
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import HTTP
from email.utils import collapse_rfc2231_value
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from .catalog import is_servable
from .config import SimulatorConfig
from .responder import compose_reply
from .state import SimulatorError, SimulatorState

logger = logging.getLogger("genesis.simulator")

JsonBody = dict[str, Any]


@dataclass(frozen=True)
class RawBody:
    """An answer that is not JSON: a file's content, as Mistral serves it (application/octet-stream)."""

    content: bytes
    content_type: str = "application/octet-stream"

Handler = Callable[["SimulatorRequestHandler", re.Match[str]], tuple[int, Any]]
_HEALTH_PATHS = frozenset({"/healthz", "/health"})
_ROLES = frozenset({"system", "user", "assistant", "tool"})


class SimulatorHTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # a hung client must not keep the process (or a test run) alive
    allow_reuse_address = True
    # socketserver's default backlog is 5: a client pool opening 16 connections at once on a busy
    # machine had some of them wait a full second for a SYN retransmission.
    request_queue_size = 128

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.state = SimulatorState(config)
        super().__init__((config.host, config.port), SimulatorRequestHandler)

    @property
    def base_url(self) -> str:
        """The server URL for the SDK (routes start with /v1)."""
        host, port = self.server_address[:2]
        if isinstance(host, bytes | bytearray):  # the stub allows bytes; an AF_INET address holds text
            host = host.decode()
        return f"http://{host}:{port}"


class SimulatorRequestHandler(BaseHTTPRequestHandler):
    server: SimulatorHTTPServer
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's httpx client expects
    # Headers and body are written separately; with Nagle's algorithm and the client's delayed ACK
    # every response would stall ~40 ms. Buffer the response (flushed per request) and send at once.
    disable_nagle_algorithm = True
    wbufsize = 64 * 1024
    server_version = "GenesisMistralSimulator/1.0"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_PATCH(self) -> None:  # noqa: N802
        self._dispatch("PATCH")

    # ---- plumbing ----------------------------------------------------------------------------
    def _dispatch(self, method: str) -> None:
        started = time.monotonic()
        # The body is read before anything can fail: on a kept-alive connection, unread bytes
        # would be taken for the next request.
        self.body = self._read_body()
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        self.query = parse_qs(url.query)
        extra_headers: dict[str, str] = {}
        try:
            if path in _HEALTH_PATHS:
                status, payload = 200, {"status": "ok"}
            else:
                self._authenticate()
                fault = self.server.state.next_fault()
                if fault is not None:
                    status, payload, extra_headers = self._fault_answer(fault)
                else:
                    status, payload = self._route(method, path)
        except SimulatorError as error:
            status, payload = error.status, error.body()
            if error.status == 401:
                extra_headers["WWW-Authenticate"] = "Bearer"
        except Exception:  # a bug in the simulator must answer 500, not drop the connection
            logger.error("simulator error on %s %s\n%s", method, path, traceback.format_exc())
            status = 500
            payload = SimulatorError(500, "Internal simulator error", error_type="internal_error").body()
        remaining = self.server.config.latency_ms / 1000 - (time.monotonic() - started)
        if remaining > 0:
            time.sleep(remaining)
        if isinstance(payload, RawBody):
            self._send(status, payload.content, payload.content_type, extra_headers)
        else:
            self._send(status, json.dumps(payload).encode(), "application/json", extra_headers)
        self.server.state.record_request(method=method, path=path, status=status)
        if self.server.config.log_requests:
            elapsed_ms = (time.monotonic() - started) * 1000
            sys.stderr.write(f"simulator {method} {path} -> {status} ({elapsed_ms:.0f} ms)\n")

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _authenticate(self) -> None:
        scheme, _, key = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or key.strip() not in self.server.config.api_keys:
            raise SimulatorError(401, "Unauthorized: missing or invalid API key", error_type="authentication_error")

    def _fault_answer(self, status: int) -> tuple[int, JsonBody, dict[str, str]]:
        if status == 429:
            retry_after = self.server.config.retry_after_seconds
            body = SimulatorError(429, "Requests rate limit exceeded", error_type="rate_limited").body()
            return 429, body, {"Retry-After": str(retry_after)}
        error = SimulatorError(status, "Internal server error (injected by the simulator)", error_type="internal_error")
        return status, error.body(), {}

    def _send(self, status: int, encoded: bytes, content_type: str, extra_headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(encoded)))
        for name, value in extra_headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(encoded)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        # http.server would print every request line; _dispatch logs (without headers) when asked.
        pass

    def _route(self, method: str, path: str) -> tuple[int, Any]:
        allowed: list[str] = []
        for route_method, pattern, handler in _ROUTES:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            if route_method == method:
                return handler(self, match)
            allowed.append(route_method)
        if allowed:
            raise SimulatorError(405, f"Method {method} not allowed on {path}; allowed: {', '.join(allowed)}")
        raise SimulatorError(404, f"No route {method} {path}", error_type="not_found")

    def json_body(self) -> JsonBody:
        try:
            body = json.loads(self.body or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise SimulatorError(
                422,
                f"Request body is not valid JSON: {error}",
                detail=[{"loc": ["body"], "msg": "invalid JSON", "type": "json_invalid"}],
            ) from None
        if not isinstance(body, dict):
            raise SimulatorError(
                422,
                "Request body must be a JSON object",
                detail=[{"loc": ["body"], "msg": "expected an object", "type": "dict_type"}],
            )
        return body

    def query_value(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None

    # ---- routes ------------------------------------------------------------------------------
    def chat_completions(self, _match: re.Match[str]) -> tuple[int, JsonBody]:
        request = self.json_body()
        model = request.get("model")
        messages = request.get("messages")
        if not isinstance(model, str) or not model:
            raise _invalid_field("model", "Field required")
        if not isinstance(messages, list) or not messages:
            raise _invalid_field("messages", "messages must be a non-empty list")
        for index, message in enumerate(messages):
            if not isinstance(message, dict) or message.get("role") not in _ROLES:
                raise _invalid_field(f"messages.{index}", f"message {index} needs a role among {sorted(_ROLES)}")
        if request.get("stream"):
            raise SimulatorError(400, "Streaming is not supported by the simulator", param="stream")
        if not is_servable(model):
            raise SimulatorError(400, f"Invalid model: {model}", error_type="invalid_model", param="model")
        max_tokens = request.get("max_tokens")
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
            raise _invalid_field("max_tokens", "max_tokens must be a positive integer")
        config = self.server.config
        reply = compose_reply(
            seed=config.seed, model=model, messages=messages, quality=config.quality, max_tokens=max_tokens,
            safety=config.safety,
        )
        # One shape for the Mistral SDK and OpenAI-style clients alike.
        return 200, {
            "id": self.server.state.next_completion_id(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply.text, "tool_calls": None},
                    "finish_reason": reply.finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": reply.prompt_tokens,
                "completion_tokens": reply.completion_tokens,
                "total_tokens": reply.prompt_tokens + reply.completion_tokens,
            },
        }

    def list_models(self, _match: re.Match[str]) -> tuple[int, JsonBody]:
        return 200, {"object": "list", "data": self.server.state.model_cards()}

    def retrieve_model(self, match: re.Match[str]) -> tuple[int, JsonBody]:
        return 200, self.server.state.model_card(unquote(match["model_id"]))

    def upload_file(self, _match: re.Match[str]) -> tuple[int, JsonBody]:
        fields, files = _parse_multipart(self.headers.get("Content-Type", ""), self.body)
        if "file" not in files:
            raise _invalid_field("file", "a multipart 'file' part is required")
        filename, content = files["file"]
        purpose = fields.get("purpose") or "fine-tune"
        if purpose not in ("fine-tune", "batch", "ocr"):
            raise _invalid_field("purpose", f"unknown purpose {purpose!r}")
        stored = self.server.state.upload_file(filename=filename or "upload.jsonl", purpose=purpose, content=content)
        return 200, stored.card(retrieved=False)

    def retrieve_file(self, match: re.Match[str]) -> tuple[int, JsonBody]:
        return 200, self.server.state.get_file(unquote(match["file_id"])).card(retrieved=True)

    def download_file(self, match: re.Match[str]) -> tuple[int, RawBody]:
        return 200, RawBody(self.server.state.get_file(unquote(match["file_id"])).content)

    def create_job(self, _match: re.Match[str]) -> tuple[int, JsonBody]:
        if self.query_value("dry_run") in ("true", "True", "1"):
            raise SimulatorError(400, "dry_run is not supported by the simulator", param="dry_run")
        state = self.server.state
        job = state.create_job(self.json_body())
        return 200, state.job_body(job, detailed=False)

    def list_jobs(self, _match: re.Match[str]) -> tuple[int, JsonBody]:
        try:
            page = int(self.query_value("page") or 0)
            page_size = int(self.query_value("page_size") or 100)
        except ValueError:
            raise _invalid_field("page", "page and page_size must be integers") from None
        state = self.server.state
        jobs = state.list_jobs(
            model=self.query_value("model"), status=self.query_value("status"), suffix=self.query_value("suffix")
        )
        window = jobs[page * page_size : (page + 1) * page_size]
        return 200, {"object": "list", "total": len(jobs), "data": [state.job_body(job, detailed=False) for job in window]}

    def get_job(self, match: re.Match[str]) -> tuple[int, JsonBody]:
        state = self.server.state
        return 200, state.job_body(state.get_job(match["job_id"]), detailed=True)

    def start_job(self, match: re.Match[str]) -> tuple[int, JsonBody]:
        state = self.server.state
        return 200, state.job_body(state.start_job(match["job_id"]), detailed=True)

    def cancel_job(self, match: re.Match[str]) -> tuple[int, JsonBody]:
        state = self.server.state
        return 200, state.job_body(state.cancel_job(match["job_id"]), detailed=True)


_ROUTES: tuple[tuple[str, re.Pattern[str], Handler], ...] = (
    ("POST", re.compile(r"/v1/chat/completions"), SimulatorRequestHandler.chat_completions),
    ("GET", re.compile(r"/v1/models"), SimulatorRequestHandler.list_models),
    ("GET", re.compile(r"/v1/models/(?P<model_id>[^/]+)"), SimulatorRequestHandler.retrieve_model),
    ("POST", re.compile(r"/v1/files"), SimulatorRequestHandler.upload_file),
    ("GET", re.compile(r"/v1/files/(?P<file_id>[^/]+)"), SimulatorRequestHandler.retrieve_file),
    ("GET", re.compile(r"/v1/files/(?P<file_id>[^/]+)/content"), SimulatorRequestHandler.download_file),
    ("POST", re.compile(r"/v1/fine_tuning/jobs"), SimulatorRequestHandler.create_job),
    ("GET", re.compile(r"/v1/fine_tuning/jobs"), SimulatorRequestHandler.list_jobs),
    ("GET", re.compile(r"/v1/fine_tuning/jobs/(?P<job_id>[^/]+)"), SimulatorRequestHandler.get_job),
    ("POST", re.compile(r"/v1/fine_tuning/jobs/(?P<job_id>[^/]+)/start"), SimulatorRequestHandler.start_job),
    ("POST", re.compile(r"/v1/fine_tuning/jobs/(?P<job_id>[^/]+)/cancel"), SimulatorRequestHandler.cancel_job),
)


def _invalid_field(name: str, message: str) -> SimulatorError:
    return SimulatorError(
        422, message, param=name, detail=[{"loc": ["body", *name.split(".")], "msg": message, "type": "value_error"}]
    )


def _parse_multipart(content_type: str, body: bytes) -> tuple[dict[str, str], dict[str, tuple[str, bytes]]]:
    """Form fields and files of a multipart/form-data body, via the stdlib email parser."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise SimulatorError(422, "Expected a multipart/form-data upload", param="file")
    message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    fields: dict[str, str] = {}
    files: dict[str, tuple[str, bytes]] = {}
    for part in message.iter_parts():
        name = collapse_rfc2231_value(part.get_param("name", header="content-disposition") or "")
        if not name:
            continue
        payload = part.get_payload(decode=True)  # bytes, or None for a nested multipart
        if not isinstance(payload, bytes):
            payload = b""
        filename = part.get_filename()
        if filename is not None:
            files[name] = (filename, payload)
        else:
            fields[name] = payload.decode("utf-8", errors="replace")
    return fields, files


def start_in_thread(config: SimulatorConfig) -> tuple[SimulatorHTTPServer, str]:
    """Start a simulator in a daemon thread; returns it and its base URL. Stop it with stop(server)."""
    server = SimulatorHTTPServer(config)
    # A short poll interval makes stop() (shutdown) return quickly between tests.
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="mistral-simulator", daemon=True
    )
    thread.start()
    return server, server.base_url


def stop(server: SimulatorHTTPServer) -> None:
    server.shutdown()
    server.server_close()


class CannotListen(Exception):
    """The simulator cannot listen where its options say. `usage`: the --host is no address of this
    machine (a bad value: exit 2, like every usage error); otherwise the address is fine but taken or
    forbidden now (a port another program holds: exit 1)."""

    def __init__(self, config: SimulatorConfig, error: OSError) -> None:
        self.usage = isinstance(error, socket.gaierror) or error.errno == errno.EADDRNOTAVAIL
        reason = error.strerror or str(error)
        if error.errno == errno.EADDRINUSE:
            reason = f"{reason} (another program, or another simulator, holds it: choose another --port)"
        super().__init__(f"cannot listen on --host {config.host} --port {config.port}: {reason}")


def serve(config: SimulatorConfig, *, announce: Callable[[str], None] | None = None) -> None:
    """Serve until interrupted by Ctrl-C or SIGTERM (as `make run` stops its processes). Raises
    CannotListen when the host and port cannot be bound."""
    try:
        server = SimulatorHTTPServer(config)
    except OSError as error:  # socket.gaierror included
        raise CannotListen(config, error) from None
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    (announce or (lambda line: print(line, flush=True)))(
        f"Mistral simulator on {server.base_url} (seed {config.seed}, job {config.job_seconds:g}s, "
        f"latency {config.latency_ms:g}ms, error rate {config.error_rate:g}, {len(config.api_keys)} API key(s))"
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def _raise_keyboard_interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt
