"""The HTTP client every provider talks through: keep-alive HTTP/1.1 connections per origin, the
process's one TLS context, timeouts and the HTTP(S)_PROXY / NO_PROXY settings.

Why not httpx.Client itself: a chat completion through the mistralai SDK spent about half a
millisecond of CPU per request in httpx.Client's layers (URL merging, auth, redirect and cookie
handling, httpcore's pool, h11) — a third of the whole call's CPU, measured against the simulator.
On a benchmark worker CPU per call is what limits how many calls 2 cores keep in flight (1 ms more
per call cost the runner bench 0.08 of its ratio to the ideal), and the standard library's
http.client does the same exchange for a third of the CPU. Providers send small JSON requests to one
origin and read every answer whole, so this client keeps only what they use, and speaks httpx's
types — Request, Response and the exceptions — so the mistralai SDK (whose HttpClient protocol it
implements: build_request, send, close) and the providers' error mapping work unchanged.

Left out on purpose: HTTP/2, cookies, redirects (a 3xx is returned as it is, and the provider's
error names the status), compressed answers (none is asked for) and streaming (`stream=True` still
reads the answer whole, and a request body of unknown length is read whole and sent with its length;
no provider here streams). A proxy is reached over plain HTTP; HTTPS goes through it in a CONNECT
tunnel, so the TLS session is still with the provider (an IPv6 literal cannot be tunnelled: Python
3.11's CONNECT line leaves out its brackets).
"""

from __future__ import annotations

import base64
import functools
import http.client
import select
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Mapping
from datetime import timedelta
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx

from .base import ProviderSettings

_DEFAULT_PORTS = {"http": 80, "https": 443}
_USER_AGENT = "genesis-provider-client"


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The process's one TLS context, as httpx would make it (certifi's CA bundle, or SSL_CERT_FILE /
    SSL_CERT_DIR; certificates and host names verified). Loading the bundle takes about 50 ms of
    CPU, which every new client would otherwise spend again — each provider account in each worker
    process, and again whenever an account's settings change. A context is safe to share between
    connections and threads. Being made once, it sees a changed CA bundle or SSL_CERT_FILE only
    after a restart."""
    return httpx.create_ssl_context()


class ProviderHttpClient:
    """httpx.Client's shape as far as the providers and the mistralai SDK use it. Thread-safe: a
    connection serves one request at a time; idle ones wait in a per-origin pool of at most
    `max_idle_connections` (the account's concurrency, so a full round of calls finds them all)."""

    def __init__(
        self,
        *,
        timeout_seconds: float,
        max_idle_connections: int,
        base_url: str | None = None,
        headers: Mapping[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        trust_env: bool = True,
    ) -> None:
        self._timeout = httpx.Timeout(timeout_seconds)
        # Relative URLs are joined below the base, as httpx does: "v1/" + "models" → "v1/models".
        self._base_url = httpx.URL(base_url.rstrip("/") + "/") if base_url else None
        self._headers = _by_lowercase_name({"User-Agent": _USER_AGENT, **(headers or {})})
        self.ssl_context = ssl_context or tls_context()
        self._max_idle = max(1, max_idle_connections)
        self._proxies = urllib.request.getproxies_environment() if trust_env else {}
        self._idle: dict[tuple[str, str, int], list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        self._closed = False

    # ---- httpx.Client's interface ------------------------------------------------------------
    def build_request(
        self,
        method: str,
        url: httpx.URL | str,
        *,
        content: Any = None,
        data: Any = None,
        files: Any = None,
        json: Any = None,
        params: Any = None,
        headers: Mapping[str, str] | None = None,
        cookies: Any = None,
        timeout: Any = httpx.USE_CLIENT_DEFAULT,
        extensions: Mapping[str, Any] | None = None,
    ) -> httpx.Request:
        if cookies:
            raise ValueError("the provider HTTP client sends no cookies")
        target = httpx.URL(url)
        if target.is_relative_url:
            if self._base_url is None:
                raise ValueError(f"relative URL {str(url)!r} but the client has no base_url")
            target = self._base_url.join(str(url).lstrip("/"))
        # No timeout (None) falls back to the client's: a provider call must never wait forever.
        chosen = self._timeout if timeout is httpx.USE_CLIENT_DEFAULT or timeout is None else httpx.Timeout(timeout)
        return httpx.Request(
            method, target, params=params or None, content=content, data=data, files=files, json=json,
            # Header names are case-insensitive: the SDK's "user-agent" replaces our "User-Agent".
            headers=list({**self._headers, **_by_lowercase_name(headers or {})}.values()),
            extensions={**(extensions or {}), "timeout": chosen.as_dict()},
        )

    def request(self, method: str, url: httpx.URL | str, **options: Any) -> httpx.Response:
        return self.send(self.build_request(method, url, **options))

    def send(
        self,
        request: httpx.Request,
        *,
        stream: bool = False,
        auth: Any = httpx.USE_CLIENT_DEFAULT,
        follow_redirects: Any = httpx.USE_CLIENT_DEFAULT,
    ) -> httpx.Response:
        """One exchange on a pooled connection (or a new one). A connection the server closed
        while it was idle is noticed before it is used; one that fails mid-exchange is an httpx
        transport error and is not sent again here — the providers' retry layer decides that."""
        if self._closed:
            raise RuntimeError("the provider HTTP client is closed")
        timeouts = request.extensions.get("timeout") or self._timeout.as_dict()
        url = request.url
        scheme = url.scheme
        if scheme not in _DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r} in {url}", request=request)
        # The host as it goes on the wire (IDNA-encoded, IPv6 without brackets).
        origin = (scheme, url.raw_host.decode("ascii"), url.port or _DEFAULT_PORTS[scheme])
        started = time.perf_counter()
        body = request.read()
        headers = request.headers.raw
        if "transfer-encoding" in request.headers:
            # A body of unknown length (an iterator, a pipe) was read whole just above: send it with
            # its length rather than chunked, which would need the chunk framing written out.
            headers = [(name, value) for name, value in headers if name.lower() != b"transfer-encoding"]
            headers.append((b"Content-Length", str(len(body)).encode("ascii")))
        connection = self._idle_connection(origin) or self._connect(origin, request, timeouts)
        proxied = isinstance(connection, _ForwardProxyConnection)
        try:
            assert connection.sock is not None
            connection.sock.settimeout(timeouts.get("read"))  # this request's, whoever opened the connection
            # Through a forward proxy the request line names the whole URL (RFC 9112, absolute form).
            target = str(url.copy_with(fragment=None)) if proxied else url.raw_path.decode("ascii")
            connection.putrequest(request.method, target, skip_host=True, skip_accept_encoding=True)
            for name, value in headers:
                connection.putheader(name, value)
            for name, value in (connection.proxy_headers.items() if proxied else ()):
                connection.putheader(name, value)
            connection.endheaders(body or None)  # headers and body in one send (no Nagle stall)
        except TimeoutError as error:
            connection.close()
            raise httpx.WriteTimeout(f"timed out sending the request to {url.host}", request=request) from error
        except ValueError as error:  # http.client refuses a header with a line break in it
            connection.close()
            raise httpx.LocalProtocolError(f"invalid request to {url.host}: {error}", request=request) from error
        except (http.client.HTTPException, OSError) as error:
            connection.close()
            raise httpx.WriteError(f"could not send the request to {url.host}: {error!r}", request=request) from error
        try:
            answer = connection.getresponse()
            content = answer.read()
        except TimeoutError as error:
            connection.close()
            raise httpx.ReadTimeout(f"no answer from {url.host} within {timeouts.get('read')}s", request=request) from error
        except (http.client.HTTPException, OSError) as error:
            connection.close()
            raise httpx.RemoteProtocolError(f"{url.host} closed the connection without a complete answer ({error!r})",
                                            request=request) from error
        if answer.will_close:
            connection.close()
        else:
            self._keep(origin, connection)
        response = httpx.Response(
            answer.status,
            # http.client decoded the header bytes as latin-1; httpx takes them back as bytes, so a
            # non-ASCII value (which httpx would refuse as text) is kept as it came.
            headers=[(name.encode("latin-1"), value.encode("latin-1")) for name, value in answer.getheaders()],
            content=content, request=request,
            extensions={"http_version": b"HTTP/1.0" if answer.version == 10 else b"HTTP/1.1",
                        "reason_phrase": answer.reason.encode("latin-1", "replace")},
        )
        response.elapsed = timedelta(seconds=time.perf_counter() - started)
        return response

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                connection.close()

    # ---- connections -------------------------------------------------------------------------
    def _idle_connection(self, origin: tuple[str, str, int]) -> http.client.HTTPConnection | None:
        """The most recently used idle connection that is still open. A socket with something to
        read while idle is one the server closed (or broke): it is dropped, as httpcore does."""
        while True:
            with self._lock:
                pool = self._idle.get(origin)
                if not pool:
                    return None
                connection = pool.pop()
            if connection.sock is not None and not _readable(connection.sock):
                return connection
            connection.close()

    def _keep(self, origin: tuple[str, str, int], connection: http.client.HTTPConnection) -> None:
        with self._lock:
            pool = self._idle.setdefault(origin, [])
            if not self._closed and len(pool) < self._max_idle:
                pool.append(connection)
                return
        connection.close()

    def _connect(self, origin: tuple[str, str, int], request: httpx.Request, timeouts: Mapping[str, Any]) -> http.client.HTTPConnection:
        scheme, host, port = origin
        proxy = self._proxy_for(scheme, host)
        if proxy is not None:
            proxy_host, proxy_port, credentials = proxy
            if ":" in host:
                # http.client (3.11) writes "CONNECT 2001:db8::1:443", which no proxy can read.
                raise httpx.ProxyError(f"IPv6 address {host} cannot be reached through the proxy: use a host name, "
                                       "or list the address in NO_PROXY", request=request)
            if scheme == "https":
                connection: http.client.HTTPConnection = http.client.HTTPSConnection(
                    proxy_host, proxy_port, timeout=timeouts.get("connect"), context=self.ssl_context)
                connection.set_tunnel(host, port, headers=_proxy_authorization(credentials))
            else:
                connection = _ForwardProxyConnection(proxy_host, proxy_port, timeout=timeouts.get("connect"),
                                                     proxy_headers=_proxy_authorization(credentials))
        elif scheme == "https":
            connection = http.client.HTTPSConnection(host, port, timeout=timeouts.get("connect"), context=self.ssl_context)
        else:
            connection = http.client.HTTPConnection(host, port, timeout=timeouts.get("connect"))
        via = f" through the proxy {proxy[0]}:{proxy[1]}" if proxy is not None else ""
        try:
            connection.connect()
        except TimeoutError as error:
            connection.close()
            raise httpx.ConnectTimeout(f"timed out connecting to {host}:{port}{via}", request=request) from error
        except (OSError, http.client.HTTPException) as error:  # refused, unknown host, TLS verification…
            connection.close()
            failure = httpx.ProxyError if proxy is not None else httpx.ConnectError  # e.g. the proxy's 407
            raise failure(f"could not connect to {host}:{port}{via}: {error}", request=request) from error
        return connection

    def _proxy_for(self, scheme: str, host: str) -> tuple[str, int, str] | None:
        """(host, port, "user:password" or "") of the proxy for `scheme`, or None (none set, or the
        host is in NO_PROXY)."""
        address = self._proxies.get(scheme) or self._proxies.get("all")
        if not address or urllib.request.proxy_bypass_environment(host, self._proxies):
            return None
        parts = urlsplit(address if "://" in address else f"http://{address}")
        if parts.scheme != "http" or not parts.hostname:
            raise httpx.ProxyError(f"proxy {parts.scheme}://{parts.hostname}: only a plain-HTTP proxy (http://host:port) is supported")
        credentials = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}" if parts.username else ""
        return parts.hostname, parts.port or 80, credentials



class _ForwardProxyConnection(http.client.HTTPConnection):
    """Plain HTTP through a forward proxy: a connection to the proxy, whose requests carry the
    proxy's credentials."""

    def __init__(self, host: str, port: int, *, timeout: float | None, proxy_headers: dict[str, str]) -> None:
        super().__init__(host, port, timeout=timeout)
        self.proxy_headers = proxy_headers


def _readable(sock: socket.socket) -> bool:
    """Whether `sock` has something to read now (poll: no limit on descriptor numbers)."""
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    return bool(select.select([sock], [], [], 0)[0])


def _by_lowercase_name(headers: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """The headers keyed by their lower-cased name, each kept with the name as written (some
    servers are less forgiving of case than HTTP says they must be)."""
    return {name.lower(): (name, value) for name, value in headers.items()}


def _proxy_authorization(credentials: str) -> dict[str, str]:
    if not credentials:
        return {}
    return {"Proxy-Authorization": "Basic " + base64.b64encode(credentials.encode()).decode("ascii")}


def new_http_client(settings: ProviderSettings, **options: Any) -> ProviderHttpClient:
    """A client whose idle pool is as large as the account's concurrency."""
    return ProviderHttpClient(timeout_seconds=settings.timeout_seconds, max_idle_connections=settings.max_concurrency, **options)
