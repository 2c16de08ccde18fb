"""Real HTTP servers on loopback, for tests that need something at the other end of a URL (a Slack
webhook, a provider, a proxy, the control plane): one way to start, address and stop them."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

Server = TypeVar("Server", bound=http.server.HTTPServer)


class QuietHandler(http.server.BaseHTTPRequestHandler):
    """http.server logs every request to stderr; a test's output should hold only what failed."""

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature
        pass


def on_loopback(handler: type[http.server.BaseHTTPRequestHandler]) -> http.server.ThreadingHTTPServer:
    """A server bound to a free port on 127.0.0.1, not yet serving (see `serving`)."""
    return http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)


def url_of(server: http.server.HTTPServer, path: str = "", *, scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{server.server_address[1]}{path}"


@contextmanager
def serving(server: Server) -> Iterator[Server]:
    """Serves `server` on a daemon thread for the block, then stops it and frees its port. The short
    poll interval keeps `shutdown()` quick: it waits for the serving loop's next poll."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class WebhookRecorder:
    """A real HTTP server (serve it with `serving(recorder.server)`; the `webhook` fixture does) standing
    in for a Slack-compatible webhook: it keeps every JSON body it is
    sent and answers `status` (200 unless a test makes it fail). A failure's body repeats the request
    path, as many proxies' error pages do, so a test can check the secret path is not repeated in
    turn. `on_request`, when set, runs in the server's thread while the sender waits for the answer."""

    def __init__(self, *, path: str = "/hooks/genesis") -> None:
        recorder = self
        self.bodies: list[dict[str, object]] = []
        self.status = 200
        self.on_request: Callable[[], None] | None = None
        self._lock = threading.Lock()

        class Handler(QuietHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with recorder._lock:
                    recorder.bodies.append(body)
                    status = recorder.status
                if recorder.on_request is not None:
                    recorder.on_request()
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"ok" if status < 300 else f"upstream trouble at {self.path}".encode())

        self.server = on_loopback(Handler)
        self.url = url_of(self.server, path)

    def texts(self) -> list[str]:
        with self._lock:
            return [str(body.get("text", "")) for body in self.bodies]
