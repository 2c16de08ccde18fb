"""The providers' HTTP client (models_app/providers/http.py) against real servers on loopback:
keep-alive, connections the server dropped, timeouts, base URLs, proxies and TLS verification."""

from __future__ import annotations

import contextlib
import gzip
import json
import select
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from models_app.providers import (
    OpenAICompatibleProvider,
    PermanentProviderError,
    RetryPolicy,
    TransientProviderError,
    call_with_retries,
)
from models_app.providers.base import ProviderKind, ProviderSettings
from models_app.providers.http import ProviderHttpClient, ResponseTooLargeError, answers_limited_to, tls_context
from tests.http_servers import QuietHandler, serving, url_of


@dataclass
class Seen:
    """What a stub server received: one entry per request."""

    request_lines: list[str] = field(default_factory=list)
    client_ports: list[int] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    raw_headers: list[list[tuple[str, str]]] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)


class StubServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, answer: Callable[[BaseHTTPRequestHandler], None]) -> None:
        self.answer = answer
        self.seen = Seen()
        super().__init__(("127.0.0.1", 0), StubHandler)

    @property
    def url(self) -> str:
        return url_of(self)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # e.g. the slow answer written after the client gave up: expected, not worth a traceback


class StubHandler(QuietHandler):
    server: StubServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802
        self._record()
        self.server.answer(self)

    do_POST = do_GET  # noqa: N815

    def _record(self) -> None:
        seen = self.server.seen
        seen.request_lines.append(self.requestline)
        seen.client_ports.append(self.client_address[1])
        seen.headers.append({name.lower(): value for name, value in self.headers.items()})
        seen.raw_headers.append(list(self.headers.items()))
        seen.bodies.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)))


def reply(handler: BaseHTTPRequestHandler, payload: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> None:
    body = json.dumps(payload).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(body)


@pytest.fixture()
def serve() -> Iterator[Callable[[Callable[[BaseHTTPRequestHandler], None]], StubServer]]:
    with ExitStack() as servers:
        yield lambda answer: servers.enter_context(serving(StubServer(answer)))


def client(**options: Any) -> ProviderHttpClient:
    return ProviderHttpClient(**{"timeout_seconds": 5.0, "max_idle_connections": 4, "trust_env": False, **options})


def open_idle_connections(http: ProviderHttpClient, server: StubServer) -> int:
    """How many open connections to `server` wait in the client's (urllib3) pool."""
    pool = http._pools_for("http", "127.0.0.1").connection_from_host("127.0.0.1", server.server_address[1], "http")
    return sum(1 for connection in list(pool.pool.queue) if connection is not None and not connection.is_closed)


def test_requests_to_one_origin_reuse_one_kept_alive_connection(serve) -> None:
    server = serve(lambda handler: reply(handler, {"ok": True}))
    http = client()
    for _ in range(5):
        response = http.request("POST", f"{server.url}/v1/chat/completions", json={"model": "m"})
        assert response.status_code == 200 and response.json() == {"ok": True}
    assert len(set(server.seen.client_ports)) == 1
    assert server.seen.bodies == [b'{"model":"m"}'] * 5
    assert open_idle_connections(http, server) == 1
    http.close()


def test_a_requests_own_timeout_holds_on_a_connection_opened_with_another(serve) -> None:
    server = serve(lambda handler: (time.sleep(3.0) if handler.path == "/slow" else None, reply(handler, {"ok": True})))
    http = client(timeout_seconds=5.0)
    answered = http.request("GET", server.url + "/fast")
    assert answered.elapsed.total_seconds() > 0
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout, match="within 0.2s"):
        http.request("GET", server.url + "/slow", timeout=0.2)  # on the connection the first request opened
    assert time.monotonic() - started < 2.0  # not the connection's 5 s (margins for a loaded machine)
    http.close()


def test_a_connection_the_server_dropped_while_idle_is_not_used_again(serve) -> None:
    def answer_then_hang_up(handler: BaseHTTPRequestHandler) -> None:
        reply(handler, {"ok": True})  # says nothing of closing (an HTTP/1.1 keep-alive answer)…
        handler.close_connection = True  # …and closes, as a server does when its idle timeout ends

    server = serve(answer_then_hang_up)
    http = client()
    assert http.request("GET", f"{server.url}/a").status_code == 200
    time.sleep(0.2)  # the server's close reaches the idle connection
    assert http.request("GET", f"{server.url}/b").status_code == 200
    assert len(set(server.seen.client_ports)) == 2
    http.close()


def test_an_answer_that_closes_the_connection_is_not_kept(serve) -> None:
    server = serve(lambda handler: reply(handler, {"ok": True}, headers={"Connection": "close"}))
    http = client()
    for _ in range(3):
        assert http.request("GET", server.url + "/").json() == {"ok": True}
    assert len(set(server.seen.client_ports)) == 3
    assert open_idle_connections(http, server) == 0
    http.close()


def test_a_slow_answer_is_a_read_timeout_and_a_closed_port_a_connect_error(serve) -> None:
    server = serve(lambda handler: (time.sleep(3.0), reply(handler, {"late": True})))
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout, match="no answer from 127.0.0.1 within 0.2s"):
        client(timeout_seconds=0.2).request("GET", server.url + "/slow")
    assert time.monotonic() - started < 2.0

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    with pytest.raises(httpx.ConnectError, match=f"could not connect to 127.0.0.1:{closed_port}"):
        client().request("GET", f"http://127.0.0.1:{closed_port}/")


def test_relative_urls_join_the_base_url_and_headers_merge_over_the_clients(serve) -> None:
    server = serve(lambda handler: reply(handler, {"path": handler.path}))
    http = client(base_url=server.url + "/v1", headers={"Authorization": "Bearer k", "Accept": "application/json"})
    response = http.request("GET", "models", headers={"Accept": "text/plain"}, params={"page": "2"})
    assert response.json() == {"path": "/v1/models?page=2"}
    sent = server.seen.headers[0]
    assert sent["authorization"] == "Bearer k" and sent["accept"] == "text/plain"
    assert sent["host"] == f"127.0.0.1:{server.server_address[1]}" and sent["user-agent"] == "genesis-provider-client"
    with pytest.raises(ValueError, match="no base_url"):
        client().request("GET", "models")
    with pytest.raises(RuntimeError, match="closed"):
        http.close()
        http.request("GET", "models")


def test_header_names_merge_whatever_their_case_and_odd_answer_headers_come_back_as_sent(serve) -> None:
    def answer(handler: BaseHTTPRequestHandler) -> None:
        body = b"{}"
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.send_header("X-Region", "Z\u00fcrich")  # written as latin-1 by http.server
        handler.end_headers()
        handler.wfile.write(body)

    server = serve(answer)
    # The mistralai SDK names its headers in lower case: they must replace the client's, not join them.
    http = client(headers={"Accept": "*/*"})
    response = http.request("GET", server.url + "/", headers={"user-agent": "mistral-client-python", "accept": "application/json"})
    names = [name.lower() for name, _ in server.seen.raw_headers[0]]
    assert names.count("user-agent") == 1 and names.count("accept") == 1
    assert server.seen.headers[0]["user-agent"] == "mistral-client-python"
    assert server.seen.headers[0]["accept"] == "application/json"
    assert response.headers.raw[-1] == (b"X-Region", "Z\u00fcrich".encode("latin-1"))


def test_a_body_of_unknown_length_is_sent_with_its_length_and_a_bad_header_is_refused(serve) -> None:
    server = serve(lambda handler: reply(handler, {"ok": True}))
    http = client()
    streamed = http.request("POST", server.url + "/upload", content=iter([b"ab", b"cd"]))  # httpx would send it chunked
    assert streamed.status_code == 200
    assert server.seen.bodies == [b"abcd"] and server.seen.headers[0]["content-length"] == "4"
    assert "transfer-encoding" not in server.seen.headers[0]
    with pytest.raises(httpx.LocalProtocolError, match="invalid request"):
        http.request("GET", server.url + "/", headers={"X-Note": "one\r\nInjected: yes"})
    assert http.request("GET", server.url + "/again").status_code == 200  # the connection that was kept still works
    assert len(server.seen.bodies) == 2
    http.close()


def set_proxy_environment(monkeypatch: pytest.MonkeyPatch, **variables: str) -> None:
    """Only these proxy variables, in both spellings (the lower-case one wins where both are set)."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        value = variables.get(name, "")
        monkeypatch.setenv(name, value)
        monkeypatch.setenv(name.upper(), value)


def test_plain_http_goes_through_the_proxy_with_its_credentials_unless_no_proxy_says_otherwise(serve, monkeypatch) -> None:
    proxy = serve(lambda handler: reply(handler, {"via": "proxy"}))
    origin = serve(lambda handler: reply(handler, {"via": "origin"}))
    set_proxy_environment(monkeypatch, http_proxy=f"http://user:p%40ss@127.0.0.1:{proxy.server_address[1]}")
    proxied = ProviderHttpClient(timeout_seconds=5, max_idle_connections=2)
    target = "http://provider.invalid:8080/v1/models"
    assert proxied.request("GET", target).json() == {"via": "proxy"}
    assert proxy.seen.request_lines == [f"GET {target} HTTP/1.1"]
    assert proxy.seen.headers[0]["proxy-authorization"] == "Basic dXNlcjpwQHNz"  # user:p@ss
    assert proxy.seen.headers[0]["host"] == "provider.invalid:8080"

    set_proxy_environment(monkeypatch, http_proxy=f"http://127.0.0.1:{proxy.server_address[1]}", no_proxy="127.0.0.1")
    direct = ProviderHttpClient(timeout_seconds=5, max_idle_connections=2)
    assert direct.request("GET", origin.url + "/v1/models").json() == {"via": "origin"}
    assert origin.seen.request_lines == ["GET /v1/models HTTP/1.1"]
    assert "proxy-authorization" not in origin.seen.headers[0]
    proxied.close()
    direct.close()


def test_a_loopback_destination_never_goes_through_a_proxy(serve, monkeypatch) -> None:
    # Plain http:// is allowed only to loopback because it never leaves the machine: through a proxy
    # the key and the prompts would cross the network in clear text (and the proxy's 127.0.0.1 is not ours).
    proxy = serve(lambda handler: reply(handler, {"via": "proxy"}))
    origin = serve(lambda handler: reply(handler, {"via": "origin"}))
    set_proxy_environment(monkeypatch, http_proxy=f"http://127.0.0.1:{proxy.server_address[1]}",
                          all_proxy=f"http://127.0.0.1:{proxy.server_address[1]}")
    http = ProviderHttpClient(timeout_seconds=5, max_idle_connections=2, headers={"Authorization": "Bearer secret"})
    port = origin.server_address[1]
    for url in (f"http://127.0.0.1:{port}/v1/models", f"http://localhost:{port}/v1/models"):
        assert http.request("GET", url).json() == {"via": "origin"}
    assert proxy.seen.request_lines == []
    assert origin.seen.headers[0]["authorization"] == "Bearer secret"
    assert http.request("GET", "http://provider.invalid/v1/models").json() == {"via": "proxy"}  # others still do
    http.close()


@pytest.mark.parametrize(("no_proxy", "proxied"), [
    ("192.0.2.0/24", False), ("example.org, 192.0.2.0/28 ,", False), ("192.0.2.1", False),
    ("198.51.100.0/24", True), ("192.0.2.0/not-a-mask", True),
])
def test_no_proxy_networks_are_honoured_as_requests_reads_them(serve, monkeypatch, no_proxy: str, proxied: bool) -> None:
    proxy = serve(lambda handler: reply(handler, {"via": "proxy"}))
    set_proxy_environment(monkeypatch, http_proxy=f"http://127.0.0.1:{proxy.server_address[1]}", no_proxy=no_proxy)
    http = ProviderHttpClient(timeout_seconds=5, max_idle_connections=2, connect_timeout_seconds=0.2)
    url = "http://192.0.2.1:9/v1/models"  # TEST-NET-1: nothing answers there directly
    if proxied:
        assert http.request("GET", url).json() == {"via": "proxy"}
        assert proxy.seen.request_lines == [f"GET {url} HTTP/1.1"]
    else:
        with pytest.raises((httpx.ConnectError, httpx.ConnectTimeout), match="192.0.2.1:9"):
            http.request("GET", url)
        assert proxy.seen.request_lines == []
    http.close()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and PROXIED_HOST (openssl, as on every machine Genesis
    runs on)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", f"subjectAltName=IP:127.0.0.1,DNS:{PROXIED_HOST}", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key


@pytest.fixture()
def tls_server(serve, certificate) -> StubServer:
    server = serve(lambda handler: reply(handler, {"secure": True}))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    return server


def trusting(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certificate[0]))


def test_https_verifies_the_servers_certificate(tls_server, certificate) -> None:
    url = f"https://127.0.0.1:{tls_server.server_address[1]}/v1/models"
    assert client(ssl_context=trusting(certificate)).request("GET", url).json() == {"secure": True}
    # The process's context (the CA bundle) does not know this self-signed certificate.
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        client(ssl_context=tls_context()).request("GET", url)


# A name only the test proxies know (they send it to 127.0.0.1): a loopback destination is never
# proxied, so a request that must go through a proxy names a host that is not loopback.
PROXIED_HOST = "provider.test"


class TunnelHandler(QuietHandler):
    """A CONNECT proxy: the bytes of the tunnel pass through untouched (TLS stays end to end). It
    reaches PROXIED_HOST at 127.0.0.1."""

    protocol_version = "HTTP/1.1"
    tunnels: list[tuple[str, str]] = []
    refuse: int | None = None  # a status to answer every CONNECT with, e.g. 407

    def do_CONNECT(self) -> None:  # noqa: N802
        TunnelHandler.tunnels.append((self.path, self.headers.get("Proxy-Authorization", "")))
        if TunnelHandler.refuse is not None:
            self.send_response(TunnelHandler.refuse)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        host, _, port = self.path.rpartition(":")
        upstream = socket.create_connection(("127.0.0.1" if host == PROXIED_HOST else host, int(port)))
        self.send_response(200, "Connection established")
        self.end_headers()
        sockets = [self.connection, upstream]
        while True:
            readable, _, _ = select.select(sockets, [], [], 5)
            if not readable:
                break
            for sock in readable:
                data = sock.recv(65536)
                if not data:
                    upstream.close()
                    return
                while isinstance(sock, ssl.SSLSocket) and sock.pending():  # TLS to the proxy: what select cannot see
                    data += sock.recv(sock.pending())
                (upstream if sock is self.connection else self.connection).sendall(data)


def test_https_through_a_proxy_is_a_connect_tunnel(tls_server, certificate, tunnel_proxy, monkeypatch) -> None:
    proxy = tunnel_proxy()
    set_proxy_environment(monkeypatch, https_proxy=f"http://ops:secret@127.0.0.1:{proxy.server_address[1]}")
    http = ProviderHttpClient(timeout_seconds=5, max_idle_connections=2, ssl_context=trusting(certificate))
    url = f"https://{PROXIED_HOST}:{tls_server.server_address[1]}/v1/models"
    assert http.request("GET", url).json() == {"secure": True}
    assert TunnelHandler.tunnels == [(f"{PROXIED_HOST}:{tls_server.server_address[1]}", "Basic b3BzOnNlY3JldA==")]
    http.close()


# ---- what urllib3 brought: a retry on a broken kept-alive connection, timeouts, a size cap, proxies


def test_a_kept_alive_connection_dropped_as_the_request_arrives_is_retried_for_get_but_not_for_post(serve) -> None:
    def answer_first_request_of_each_connection(handler: BaseHTTPRequestHandler) -> None:
        handler.served = getattr(handler, "served", 0) + 1  # one handler per connection
        if handler.served == 1:
            reply(handler, {"path": handler.path})  # keep-alive, and the client keeps it idle…
        else:
            # …until the next request arrives just as the server's idle timer fires: it reads the
            # request and closes without answering. The client's idle check had found it open.
            handler.close_connection = True

    server = serve(answer_first_request_of_each_connection)
    http = client()
    assert http.request("GET", server.url + "/first").status_code == 200
    assert http.request("GET", server.url + "/again").json() == {"path": "/again"}  # sent once more, on a new connection
    assert server.seen.request_lines == ["GET /first HTTP/1.1", "GET /again HTTP/1.1", "GET /again HTTP/1.1"]
    assert len(set(server.seen.client_ports)) == 2

    # A POST is not sent again: the server may have acted on it before closing.
    with pytest.raises(httpx.RemoteProtocolError, match="closed the connection without a complete answer"):
        http.request("POST", server.url + "/v1/chat/completions", json={"model": "m"})
    assert server.seen.request_lines[3:] == ["POST /v1/chat/completions HTTP/1.1"]
    http.close()


def test_a_slow_answer_is_not_waited_for_twice_even_for_a_get(serve) -> None:
    server = serve(lambda handler: (time.sleep(3.0), reply(handler, {"late": True})))
    with pytest.raises(httpx.ReadTimeout):
        client(timeout_seconds=0.3).request("GET", server.url + "/v1/models")
    # A second try would have been received (and recorded) before it too timed out and raised; the
    # count says so where a wall-clock bound (0.3 s against 0.6 s) would also measure the machine's load.
    assert server.seen.request_lines == ["GET /v1/models HTTP/1.1"]


@contextlib.contextmanager
def unaccepting_port() -> Iterator[int]:
    """A port whose listening socket never accepts, its backlog full: the kernel leaves new
    connections unanswered, so connecting waits until the connect timeout."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []
    try:
        for _ in range(8):  # enough to fill the backlog whatever the kernel rounds it to
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(listener.getsockname())
            fillers.append(filler)
        yield listener.getsockname()[1]
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def test_connecting_has_its_own_shorter_timeout_and_sending_shares_it(serve) -> None:
    with unaccepting_port() as port:
        http = client(timeout_seconds=5.0, connect_timeout_seconds=0.3)
        request = http.build_request("GET", f"http://127.0.0.1:{port}/")
        assert request.extensions["timeout"] == {"connect": 0.3, "read": 5.0, "write": 0.3, "pool": None}
        started = time.monotonic()
        with pytest.raises(httpx.ConnectTimeout, match="timed out connecting to 127.0.0.1:[0-9]+ \\(0.3s\\)"):
            http.send(request)
        assert 0.25 < time.monotonic() - started < 2.0  # the connect timeout, not the 5 s read timeout
    # The connect timeout is never longer than the request's own timeout.
    assert client(timeout_seconds=2.0).build_request("GET", "http://h/").extensions["timeout"]["connect"] == 2.0
    assert client(timeout_seconds=60.0).build_request("GET", "http://h/", timeout=0.5).extensions["timeout"] == {
        "connect": 0.5, "read": 0.5, "write": 0.5, "pool": None}


def local_llm(base_url: str, **options: Any) -> OpenAICompatibleProvider:
    settings = ProviderSettings(name="local-llm", kind=ProviderKind.OPENAI_COMPATIBLE, base_url=base_url, timeout_seconds=5.0)
    return OpenAICompatibleProvider(settings, http_client=client(base_url=base_url + "/v1", **options))


def test_a_provider_reports_a_connect_timeout_with_the_connect_limit_not_the_accounts(serve) -> None:
    with unaccepting_port() as port:
        with pytest.raises(TransientProviderError) as raised:
            local_llm(f"http://127.0.0.1:{port}", connect_timeout_seconds=0.3).list_models()
    assert str(raised.value) == f"provider 'local-llm' at http://127.0.0.1:{port}: connect timed out (0.3s) on list models"


def test_a_certificate_that_fails_verification_is_a_permanent_error(tls_server) -> None:
    url = f"https://127.0.0.1:{tls_server.server_address[1]}"
    attempts: list[int] = []

    def attempt() -> Any:
        attempts.append(1)
        return local_llm(url, ssl_context=tls_context()).list_models()  # the CA bundle does not know it

    with pytest.raises(PermanentProviderError) as refused:
        call_with_retries(attempt, policy=RetryPolicy(max_attempts=4, base_delay_seconds=0.01))
    assert attempts == [1]  # not retried: the same certificate fails the next time too
    message = str(refused.value)
    assert message.startswith(f"provider 'local-llm' at {url} is not called for list models: the TLS certificate of "
                              f"127.0.0.1:{tls_server.server_address[1]} failed verification: [SSL: CERTIFICATE_VERIFY_FAILED]")
    assert "point SSL_CERT_FILE at the CA that signed it" in message


def test_a_proxy_of_a_scheme_the_client_cannot_use_is_a_permanent_error_without_its_password(monkeypatch) -> None:
    set_proxy_environment(monkeypatch, https_proxy="socks5://ops:hunter2@127.0.0.1:1080")
    settings = ProviderSettings(name="remote", kind=ProviderKind.OPENAI_COMPATIBLE, base_url=f"https://{PROXIED_HOST}")
    provider = OpenAICompatibleProvider(settings)  # its own client, which reads the environment
    with pytest.raises(PermanentProviderError) as refused:
        provider.list_models()
    assert not isinstance(refused.value, TransientProviderError)
    assert str(refused.value) == (
        "provider 'remote' is not called for list models: the proxy 'socks5://127.0.0.1:1080' in HTTPS_PROXY (or its "
        "lower-case twin) is not one this client can use: it takes http://host:port or https://host:port proxies only; "
        "set one of those, or name the host in NO_PROXY")
    provider.close()


def big_answer(size: int, *, with_length: bool) -> Callable[[BaseHTTPRequestHandler], None]:
    def answer(handler: BaseHTTPRequestHandler) -> None:
        body = json.dumps({"text": "x" * size}).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        if with_length:
            handler.send_header("Content-Length", str(len(body)))
        else:
            handler.send_header("Connection", "close")  # the answer ends when the connection does
            handler.close_connection = True
        handler.end_headers()
        handler.wfile.write(body)

    return answer


@pytest.mark.parametrize("with_length", [True, False])
def test_an_answer_above_the_size_cap_is_refused_and_its_connection_dropped(serve, with_length: bool) -> None:
    server = serve(lambda handler: big_answer(4000 if handler.path == "/big" else 10, with_length=with_length)(handler))
    http = client(max_response_bytes=1000)
    assert http.request("GET", server.url + "/small").json() == {"text": "x" * 10}
    with pytest.raises(ResponseTooLargeError, match="answered GET /big with more than 1000 bytes") as refused:
        http.request("GET", server.url + "/big")
    assert refused.value.limit_bytes == 1000
    declared = len(json.dumps({"text": "x" * 4000}))
    assert (f"({declared})" in str(refused.value)) is with_length  # the length the server declared, when it did
    assert open_idle_connections(http, server) == 0
    assert http.request("GET", server.url + "/small").status_code == 200  # the client goes on working
    http.close()


def test_a_callers_limit_stands_for_the_clients_inside_it_and_only_there(serve) -> None:
    """A download whose size the caller knows (fine_tune upload --provider-file-id) is read up to that size
    and a little more: above the client's cap when the file is larger, below it to read no more than needed."""
    server = serve(big_answer(4000, with_length=True))
    http = client(max_response_bytes=1000)
    with answers_limited_to(5000):
        assert http.request("GET", server.url + "/big").json() == {"text": "x" * 4000}
    with answers_limited_to(100), pytest.raises(ResponseTooLargeError, match="more than 100 bytes") as refused:
        http.request("GET", server.url + "/big")
    assert refused.value.limit_bytes == 100
    with pytest.raises(ResponseTooLargeError, match="more than 1000 bytes"):  # the client's own cap again
        http.request("GET", server.url + "/big")
    http.close()


def test_a_provider_reports_an_oversized_answer_as_a_permanent_error_naming_the_limit(serve) -> None:
    server = serve(big_answer(4000, with_length=True))
    settings = ProviderSettings(name="local-llm", kind=ProviderKind.OPENAI_COMPATIBLE, base_url=server.url)
    provider = OpenAICompatibleProvider(
        settings, http_client=client(base_url=server.url + "/v1", max_response_bytes=1000))
    with pytest.raises(PermanentProviderError) as refused:
        provider.chat(model="m", messages=[{"role": "user", "content": "hi"}])
    assert str(refused.value) == (
        "provider 'local-llm' answered chat completion with more than 1000 bytes, the HTTP client's limit "
        "(max_response_bytes): a provider answer this large is not one Genesis asked for")
    assert not isinstance(refused.value, TransientProviderError)


@pytest.fixture()
def tunnel_proxy() -> Iterator[Callable[..., ThreadingHTTPServer]]:
    proxies = ExitStack()

    def start(*, tls: tuple[Path, Path] | None = None, refuse: int | None = None) -> ThreadingHTTPServer:
        TunnelHandler.tunnels = []
        TunnelHandler.refuse = refuse
        proxy = ThreadingHTTPServer(("127.0.0.1", 0), TunnelHandler)
        proxy.daemon_threads = True
        if tls is not None:  # an https:// proxy: TLS to the proxy, and the provider's TLS inside it
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*tls)
            proxy.socket = context.wrap_socket(proxy.socket, server_side=True)
        return proxies.enter_context(serving(proxy))

    with proxies:
        yield start


def test_https_through_an_https_proxy_read_from_the_upper_case_variable(tls_server, certificate, tunnel_proxy, monkeypatch) -> None:
    proxy = tunnel_proxy(tls=certificate)
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", f"https://ops:secret@127.0.0.1:{proxy.server_address[1]}")
    http = ProviderHttpClient(timeout_seconds=5, max_idle_connections=2, ssl_context=trusting(certificate))
    url = f"https://{PROXIED_HOST}:{tls_server.server_address[1]}/v1/models"
    assert http.request("GET", url).json() == {"secure": True}
    assert http.request("GET", url).json() == {"secure": True}  # the tunnel is kept alive and used again
    assert TunnelHandler.tunnels == [(f"{PROXIED_HOST}:{tls_server.server_address[1]}", "Basic b3BzOnNlY3JldA==")]
    http.close()


def test_a_proxy_refusing_the_tunnel_is_a_proxy_error_asked_once(tls_server, certificate, tunnel_proxy, monkeypatch) -> None:
    proxy = tunnel_proxy(refuse=407)
    set_proxy_environment(monkeypatch, https_proxy=f"http://ops:wrong@127.0.0.1:{proxy.server_address[1]}")
    http = ProviderHttpClient(timeout_seconds=5, max_idle_connections=2, ssl_context=trusting(certificate))
    with pytest.raises(httpx.ProxyError, match=f"could not connect to {PROXIED_HOST}:{tls_server.server_address[1]} through "
                       f"the proxy 127.0.0.1:{proxy.server_address[1]}: Tunnel connection failed: 407"):
        http.request("GET", f"https://{PROXIED_HOST}:{tls_server.server_address[1]}/v1/models")
    assert len(TunnelHandler.tunnels) == 1
    http.close()


def encoded_answer(body: bytes, *, encoding: str) -> Callable[[BaseHTTPRequestHandler], None]:
    """An answer with a Content-Encoding the client did not ask for (it sends Accept-Encoding: identity)."""

    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Encoding", encoding)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return answer


def test_a_compressed_answer_is_decoded_once_and_the_size_cap_holds_for_the_decoded_bytes(serve) -> None:
    small = json.dumps({"text": "x" * 500}).encode()
    bomb = json.dumps({"text": "x" * 40_000}).encode()  # about 200 bytes once gzipped
    server = serve(lambda handler: encoded_answer(gzip.compress(bomb if handler.path == "/bomb" else small),
                                                  encoding="gzip")(handler))
    http = client(max_response_bytes=10_000)
    answered = http.request("GET", server.url + "/small")
    assert server.seen.headers[0]["accept-encoding"] == "identity"
    assert answered.json() == {"text": "x" * 500}  # decoded here, and not a second time by httpx
    assert "content-encoding" not in answered.headers and answered.headers["content-length"] == str(len(small))
    assert len(gzip.compress(bomb)) < 10_000
    with pytest.raises(ResponseTooLargeError, match="more than 10000 bytes \\(decoded from Content-Encoding: gzip\\)"):
        http.request("GET", server.url + "/bomb")
    assert http.request("GET", server.url + "/small").status_code == 200  # the client goes on working
    http.close()


def test_a_body_that_is_not_what_its_content_encoding_says_is_a_permanent_provider_error(serve) -> None:
    server = serve(lambda handler: encoded_answer(
        b'{"choices": []}' if handler.path.endswith("/chat/completions") else gzip.compress(b"{}"),
        encoding="gzip" if handler.path.endswith("/chat/completions") else "compress")(handler))
    settings = ProviderSettings(name="local-llm", kind=ProviderKind.OPENAI_COMPATIBLE, base_url=server.url)
    provider = OpenAICompatibleProvider(settings, http_client=client(base_url=server.url + "/v1"))
    with pytest.raises(PermanentProviderError) as refused:
        provider.chat(model="m", messages=[{"role": "user", "content": "hi"}])
    assert str(refused.value).startswith(
        "provider 'local-llm' answered chat completion with a body that cannot be decoded: 127.0.0.1 answered POST "
        "/v1/chat/completions with a body marked Content-Encoding: gzip that does not decode as such")
    with pytest.raises(PermanentProviderError, match="with Content-Encoding: compress, which this client cannot decode"):
        provider.list_models()
    assert not isinstance(refused.value, TransientProviderError)


@pytest.mark.parametrize("address", ["http://ops:hunter2@proxy.example:99999", "ops:hunter2@proxy.example:99999"])
def test_a_proxy_address_that_does_not_parse_is_a_permanent_error_without_its_password(monkeypatch, address: str) -> None:
    set_proxy_environment(monkeypatch, https_proxy=address)
    settings = ProviderSettings(name="remote", kind=ProviderKind.OPENAI_COMPATIBLE, base_url=f"https://{PROXIED_HOST}")
    provider = OpenAICompatibleProvider(settings)
    with pytest.raises(PermanentProviderError) as refused:
        provider.list_models()
    assert not isinstance(refused.value, TransientProviderError)
    shown = address.replace("ops:hunter2@", "")
    assert str(refused.value).startswith(
        f"provider 'remote' is not called for list models: the proxy {shown!r} in HTTPS_PROXY (or its lower-case twin) "
        "is not one this client can use")
    assert "hunter2" not in str(refused.value) and "ops" not in str(refused.value)
    assert refused.value.__cause__ is None or "hunter2" not in str(refused.value.__cause__)
    provider.close()


@pytest.mark.parametrize("encoding", ["identity, gzip", "gzip, identity", "Identity,gzip", "identity, identity"])
def test_identity_in_a_content_encoding_list_is_not_decoded_as_anything(serve, encoding: str) -> None:
    body = json.dumps({"text": "x" * 500}).encode()
    encoded = body if encoding == "identity, identity" else gzip.compress(body)
    server = serve(encoded_answer(encoded, encoding=encoding))
    http = client(max_response_bytes=10_000)
    answered = http.request("GET", server.url + "/mixed")
    assert answered.json() == {"text": "x" * 500}
    http.close()
