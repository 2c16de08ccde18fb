"""The HTTP client every provider talks through: httpx's types outside, urllib3's connection pools
inside.

Why this shape: the mistralai SDK takes any client with httpx.Client's `build_request` / `send` /
`close` and reads httpx's requests, responses and exceptions, and the providers' error mapping speaks
httpx's exceptions too. httpx.Client itself spent about half a millisecond of CPU per chat completion
in its layers (URL merging, auth, redirect and cookie handling, httpcore's pool, h11) — a third of the
call's CPU against the simulator, and CPU per call is what limits a benchmark worker on 2 cores. So
this adapter keeps httpx's types and hands each exchange to urllib3 (pinned in requirements.txt),
which does the connection work that is easy to get subtly wrong by hand:

- pooling: one keep-alive pool per origin keeping up to `max_idle_connections` idle (the account's
  concurrency, so a full round of calls finds them all); a connection the server closed while idle
  is noticed and replaced before it is used;
- TLS with the process's one context (`tls_context()`): certificates and host names verified;
- proxies from the environment, read as httpx and requests read them: HTTP_PROXY, HTTPS_PROXY,
  ALL_PROXY and NO_PROXY, in lower or upper case (lower case wins), NO_PROXY with requests' networks
  (`10.0.0.0/8`) too; a loopback destination never goes through a proxy. Plain HTTP goes to the proxy as
  an absolute-form request; HTTPS goes through it in a CONNECT tunnel, so the TLS session is still
  with the provider. The proxy itself may be `http://` or `https://` (then TLS to the proxy too,
  verified with the same context); credentials in its URL are sent as Proxy-Authorization;
- one more try for an idempotent request (GET, HEAD, PUT, DELETE, OPTIONS, TRACE) whose connection
  broke before an answer came: a kept-alive connection the server closed between the idle check and
  the send. urllib3 cannot tell that from a fresh connection breaking, so any such request is sent at
  most twice — harmless for an idempotent one. A POST is never sent again here (the server may have
  acted on it), and nothing is after a timeout, a refused connection or an answer, whatever its
  status: the providers' retry layer (retry.py) decides those;
- timeouts, each per socket operation (as in httpx and requests), not a deadline for the whole call:
  connecting (TCP, the proxy's tunnel, the TLS handshake) waits at most `connect_timeout_seconds`
  (10 s, or the account's timeout if shorter); each wait for the answer at most the request's timeout
  (the account's `timeout_seconds`, which the SDK passes on every call). urllib3 has no write timeout
  of its own: it sends the request under the connect timeout, so that is the write timeout here too
  (reported as such in the request's "timeout" extension);
- a cap on the answer's size (`max_response_bytes`, 32 MiB by default: a chat completion or a page
  of fine-tuning jobs is far below it): a larger answer raises ResponseTooLargeError, which the
  providers turn into a permanent error naming the limit, and the connection is dropped unread.
  The request asks for no compression (http.client sends `Accept-Encoding: identity`), but a server
  may compress anyway: such an answer (gzip, deflate) is decoded here a chunk at a time and the cap
  holds for the decoded bytes — a 300 KB gzip that expands to 300 MiB is refused at 32 MiB, not
  expanded whole — and the response handed on carries no Content-Encoding, so httpx does not decode
  it again. An encoding it cannot decode, or a body that does not decode as its encoding says,
  raises httpx.DecodingError (a permanent provider error). A caller that knows how large an answer can
  rightly be (a file's content whose size it knows) sets the cap for its calls instead
  (`answers_limited_to`), above 32 MiB too;

Left out on purpose: HTTP/2, cookies, redirects (a 3xx is returned as it is, and the provider's error
names the status), asking for compressed answers (one sent anyway is decoded, see above), and streaming (`stream=True` still reads the answer
whole). A request body of unknown length is read whole and sent with its length.
"""

from __future__ import annotations

import functools
import ipaddress
import ssl
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import timedelta
from typing import Any
from urllib.parse import unquote

import httpx
import urllib3
from urllib3.connectionpool import HTTPConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    DecodeError,
    LocationParseError,
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    ProxyError,
    ReadTimeoutError,
    SSLError,
)
from urllib3.response import HTTPResponse
from urllib3.util import Retry, parse_url

from .base import ProviderSettings
from .destinations import is_loopback

_DEFAULT_PORTS = {"http": 80, "https": 443}
_USER_AGENT = "genesis-provider-client"
CONNECT_TIMEOUT_SECONDS = 10.0
MAX_RESPONSE_BYTES = 32 * 1024 * 1024
# A compressed answer is decoded this much at a time, so what it expands to is counted as it grows.
_DECODED_CHUNK_BYTES = 256 * 1024
# The cap `answers_limited_to` sets for the calls made inside it, in place of the client's.
_ANSWER_LIMIT: ContextVar[int | None] = ContextVar("provider_answer_limit", default=None)


@contextmanager
def answers_limited_to(max_bytes: int) -> Iterator[None]:
    """Within it, every answer a provider HTTP client reads in this thread (this context) may hold at
    most `max_bytes`, in place of the client's `max_response_bytes`: for a download whose right size
    the caller knows (a file's content), which may be larger than 32 MiB, and whose larger answer is
    not worth reading. A context variable, not an argument, because the mistralai SDK sits between
    the caller and the client and passes on no option of its own."""
    if max_bytes < 0:
        raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
    token = _ANSWER_LIMIT.set(max_bytes)
    try:
        yield
    finally:
        _ANSWER_LIMIT.reset(token)


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The process's one TLS context, as httpx would make it (certifi's CA bundle, or SSL_CERT_FILE /
    SSL_CERT_DIR; certificates and host names verified). Loading the bundle takes about 50 ms of
    CPU, which every new client would otherwise spend again — each provider account in each worker
    process, and again whenever an account's settings change. A context is safe to share between
    connections and threads. Being made once, it sees a changed CA bundle or SSL_CERT_FILE only
    after a restart."""
    return httpx.create_ssl_context()


class ResponseTooLargeError(httpx.RequestError):
    """The answer is larger than the client's `max_response_bytes`. Not a transport error: sending
    the request again would bring the same answer."""

    def __init__(self, message: str, *, request: httpx.Request, limit_bytes: int) -> None:
        super().__init__(message, request=request)
        self.limit_bytes = limit_bytes


class CertificateVerificationError(httpx.ConnectError):
    """The TLS certificate of the server (or of an https:// proxy) failed verification: its name, its
    issuer or its dates. A matter of configuration — the same certificate fails the next time too."""


class UnsupportedProxyError(httpx.ProxyError):
    """The environment names a proxy this client cannot use (socks5://…): nothing was sent."""


def _without_credentials(address: str) -> str:
    """A proxy address with whatever stands before its host's '@' (user and password) left out; for an
    address urllib3 cannot parse too, so everything up to the last '@' goes."""
    scheme, separator, rest = address.partition("://") if "://" in address else ("", "", address)
    return f"{scheme}{separator}{rest.rpartition('@')[2]}"


class _RetryBrokenIdempotentRequest(Retry):
    """urllib3's retry policy for the one case retried here (see the module's docstring): a read
    error — the connection broke before the answer — on an idempotent method, once. urllib3 counts a
    timeout waiting for the answer as a read error too; a slow provider is not a stale connection,
    and waiting again would double the account's timeout, so a timeout is raised at once. So is a
    proxy's refusal of the tunnel (also a "read error" to urllib3): asking again gets the same."""

    def increment(self, method: str | None = None, url: str | None = None, *args: Any, **kwargs: Any) -> Any:
        error = kwargs.get("error")
        if isinstance(error, ReadTimeoutError) or (isinstance(error, ProtocolError) and (_timed_out(error) or _tunnel_refused(error))):
            raise error
        return super().increment(method, url, *args, **kwargs)


_RETRY = _RetryBrokenIdempotentRequest(
    total=None, connect=False, read=1, redirect=False, status=False, other=False,
    # A 429 or 503 with Retry-After is an answer: the providers' retry layer honours it, not urllib3.
    respect_retry_after_header=False, raise_on_redirect=False, raise_on_status=False,
)


class ProviderHttpClient:
    """httpx.Client's shape as far as the providers and the mistralai SDK use it, on urllib3's pools.
    Thread-safe."""

    def __init__(
        self,
        *,
        timeout_seconds: float,
        max_idle_connections: int,
        base_url: str | None = None,
        headers: Mapping[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        trust_env: bool = True,
        connect_timeout_seconds: float = CONNECT_TIMEOUT_SECONDS,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        self._connect_timeout = connect_timeout_seconds
        self._read_timeout = timeout_seconds
        self._timeout = self._timeouts(timeout_seconds)
        # Relative URLs are joined below the base, as httpx does: "v1/" + "models" → "v1/models".
        self._base_url = httpx.URL(base_url.rstrip("/") + "/") if base_url else None
        self._headers = _by_lowercase_name({"User-Agent": _USER_AGENT, **(headers or {})})
        self.ssl_context = ssl_context or tls_context()
        self.max_response_bytes = max_response_bytes
        self._pool_options: dict[str, Any] = {
            # block=False: a call beyond the pool's size opens one more connection rather than wait;
            # the providers' call gate keeps calls to the account's concurrency, the pool's size.
            "maxsize": max(1, max_idle_connections), "block": False, "retries": _RETRY, "ssl_context": self.ssl_context,
        }
        self._proxies = urllib.request.getproxies_environment() if trust_env else {}
        self._direct = urllib3.PoolManager(**self._pool_options)
        self._proxy_managers: dict[str, urllib3.ProxyManager] = {}
        self._route: dict[tuple[str, str], urllib3.PoolManager] = {}  # (scheme, host) → direct or a proxy
        self._pools: dict[tuple[str, str, int], HTTPConnectionPool] = {}  # (scheme, host, port) → its pool
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
        chosen = (self._timeout if timeout is httpx.USE_CLIENT_DEFAULT or timeout is None
                  else self._timeouts(httpx.Timeout(timeout).read or self._read_timeout))
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
        if self._closed:
            raise RuntimeError("the provider HTTP client is closed")
        url = request.url
        scheme = url.scheme
        if scheme not in _DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r} in {url}", request=request)
        host = url.raw_host.decode("ascii")  # as it goes on the wire: IDNA-encoded, IPv6 without brackets
        port = url.port or _DEFAULT_PORTS[scheme]
        timeouts = request.extensions.get("timeout") or self._timeout.as_dict()
        started = time.perf_counter()
        body = request.read()
        pool = self._pool(scheme, host, port)
        # Through a forward proxy the request line names the whole URL (RFC 9112, absolute form);
        # through a tunnel, or directly, only the path.
        forwarded = pool.proxy is not None and scheme == "http"
        target = str(url.copy_with(fragment=None)) if forwarded else url.raw_path.decode("ascii")
        try:
            answer = pool.urlopen(
                request.method, target, body=body or None, headers=_wire_headers(request, body), retries=_RETRY,
                redirect=False, assert_same_host=False, preload_content=False, decode_content=False,
                timeout=urllib3.Timeout(connect=timeouts["connect"], read=timeouts["read"]),
            )
            content, decoded = self._read_capped(answer, request)
        except (ResponseTooLargeError, httpx.DecodingError):
            raise
        except ValueError as error:  # http.client refuses a header with a line break in it
            raise httpx.LocalProtocolError(f"invalid request to {url.host}: {error}", request=request) from error
        except urllib3.exceptions.HTTPError as error:
            raise _httpx_error(error, request, host=host, port=port, proxy=pool.proxy, timeouts=timeouts) from error
        headers: list[tuple[str, str]] = list(answer.headers.items())
        if decoded:
            # The content is decoded already: httpx must not decode it again (without a limit), and
            # the length it carries is its own.
            headers = [(name, value) for name, value in headers if name.lower() not in ("content-encoding", "content-length")]
        response = httpx.Response(
            answer.status,
            # http.client decoded the header bytes as latin-1; httpx takes them back as bytes, so a
            # non-ASCII value (which httpx would refuse as text) is kept as it came.
            headers=[(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers],
            content=content, request=request,
            extensions={"http_version": b"HTTP/1.0" if answer.version == 10 else b"HTTP/1.1",
                        "reason_phrase": (answer.reason or "").encode("latin-1", "replace")},
        )
        response.elapsed = timedelta(seconds=time.perf_counter() - started)
        return response

    def close(self) -> None:
        with self._lock:
            self._closed = True
            managers = [self._direct, *self._proxy_managers.values()]
        for manager in managers:
            manager.clear()  # closes every pool, and so every idle connection

    # ---- connections -------------------------------------------------------------------------
    def _timeouts(self, read_seconds: float) -> httpx.Timeout:
        """What a request waits for: the answer `read_seconds`; connecting, and sending (urllib3
        sends under the connect timeout), the connect timeout, never longer than the read one."""
        connect = min(self._connect_timeout, read_seconds)
        return httpx.Timeout(connect=connect, read=read_seconds, write=connect, pool=None)

    def _pool(self, scheme: str, host: str, port: int) -> HTTPConnectionPool:
        """The origin's connection pool, looked up once and then kept at hand: asking the pool
        manager on every call (its key normalising, its LRU bookkeeping) costs about 12 µs a call.
        A pool the manager has since closed (it keeps at most `num_pools` of them) is asked anew."""
        pool = self._pools.get((scheme, host, port))
        if pool is None or pool.pool is None:
            pool = self._pools_for(scheme, host).connection_from_host(host, port, scheme)
            with self._lock:
                self._pools[(scheme, host, port)] = pool
        return pool

    def _pools_for(self, scheme: str, host: str) -> urllib3.PoolManager:
        """The pool manager that reaches `host`: the direct one, or the proxy's for `scheme` unless
        the host is loopback or NO_PROXY names it. Decided once per (scheme, host)."""
        route = self._route.get((scheme, host))
        if route is not None:
            return route
        variable = scheme if self._proxies.get(scheme) else "all"
        address = self._proxies.get(variable)
        if not address or bypasses_proxy(host, self._proxies):
            route = self._direct
        else:
            route = self._proxy_manager(address, variable=f"{variable.upper()}_PROXY")
        with self._lock:
            return self._route.setdefault((scheme, host), route)

    def _proxy_manager(self, address: str, *, variable: str) -> urllib3.ProxyManager:
        try:
            proxy = parse_url(address if "://" in address else f"http://{address}")
        except LocationParseError:
            proxy = None  # urllib3's message quotes the whole address, password and all
        if proxy is None or proxy.scheme not in ("http", "https") or not proxy.host:
            # Its password is not for messages.
            shown = _without_credentials(address) if proxy is None or proxy.auth else address
            raise UnsupportedProxyError(
                f"the proxy {shown!r} in {variable} (or its lower-case twin) is not one this client can use: it "
                "takes http://host:port or https://host:port proxies only; set one of those, or name the host "
                "in NO_PROXY"
            )
        proxy_url = proxy._replace(auth=None, path=None, query=None, fragment=None).url
        with self._lock:
            manager = self._proxy_managers.get(proxy_url)
            if manager is None:
                user, _, password = (proxy.auth or "").partition(":")
                credentials = urllib3.make_headers(proxy_basic_auth=f"{unquote(user)}:{unquote(password)}") if proxy.auth else {}
                manager = urllib3.ProxyManager(proxy_url, proxy_headers=credentials, proxy_ssl_context=self.ssl_context,
                                               **self._pool_options)
                self._proxy_managers[proxy_url] = manager
            return manager

    def _read_capped(self, answer: urllib3.BaseHTTPResponse, request: httpx.Request) -> tuple[bytes, bool]:
        """The whole answer, decoded when the server compressed it (though the request asked for
        `identity`, as http.client does), and whether it was; unless it is larger than
        `max_response_bytes` once decoded: then the connection is dropped (what is left of the answer
        is not read) and ResponseTooLargeError raised. The limit holds for what is decoded, a chunk
        at a time, so a small compressed answer cannot expand past it in memory. An encoding this
        client cannot decode, or content that does not decode, raises httpx.DecodingError. Inside
        `answers_limited_to`, its limit stands for `max_response_bytes`."""
        chosen = _ANSWER_LIMIT.get()
        limit = self.max_response_bytes if chosen is None else chosen
        declared = answer.length_remaining  # the Content-Length, when the server sent one
        if declared is not None and declared > limit:
            self._drop(answer)
            raise self._too_large(request, limit=limit, declared=declared)
        encoding = (answer.headers.get("content-encoding") or "").strip().lower()
        # `identity` means "not encoded", but urllib3 decodes a listed identity as deflate
        # ("identity, gzip" would come out as garbage): it is left out of what urllib3 is told.
        applied = ", ".join(part for part in (p.strip() for p in encoding.split(",")) if part and part != "identity")
        if not applied:
            content = answer.read(None if declared is not None else limit + 1, decode_content=False)
            if len(content) > limit:
                self._drop(answer)
                raise self._too_large(request, limit=limit, declared=declared)
            answer.release_conn()  # read to its end, so already back in the pool: this is a no-op then
            return content, False
        unknown = [part for part in applied.split(", ") if part not in HTTPResponse.CONTENT_DECODERS]
        if unknown:
            self._drop(answer)
            raise httpx.DecodingError(
                f"{request.url.host} answered {request.method} {request.url.path} with Content-Encoding: {encoding}, "
                "which this client cannot decode (it asked for identity)", request=request,
            )
        if applied != encoding:
            answer.headers["content-encoding"] = applied  # read by urllib3 when the stream starts
        parts: list[bytes] = []
        size = 0
        try:
            for part in answer.stream(_DECODED_CHUNK_BYTES, decode_content=True):
                size += len(part)
                if size > limit:
                    self._drop(answer)
                    raise self._too_large(request, limit=limit, declared=None, encoding=encoding)
                parts.append(part)
        except DecodeError as error:
            self._drop(answer)
            raise httpx.DecodingError(
                f"{request.url.host} answered {request.method} {request.url.path} with a body marked Content-Encoding: "
                f"{encoding} that does not decode as such ({error})", request=request,
            ) from error
        answer.release_conn()
        return b"".join(parts), True

    @staticmethod
    def _drop(answer: urllib3.BaseHTTPResponse) -> None:
        answer.close()
        answer.release_conn()  # the closed connection goes back to the pool, to be opened anew

    @staticmethod
    def _too_large(request: httpx.Request, *, limit: int, declared: int | None, encoding: str = "") -> ResponseTooLargeError:
        size = (f"decoded from Content-Encoding: {encoding}" if encoding
                else str(declared) if declared is not None else "no length given")
        return ResponseTooLargeError(
            f"{request.url.host} answered {request.method} {request.url.path} with more than {limit} bytes "
            f"({size}); the provider HTTP client's max_response_bytes (or the caller's answers_limited_to) refuses it",
            request=request, limit_bytes=limit,
        )


def bypasses_proxy(host: str, proxies: Mapping[str, str]) -> bool:
    """Whether a request to `host` goes directly rather than through the environment's proxy.

    Loopback always does: a proxy's 127.0.0.1 is not ours, and plain http:// is allowed only to
    loopback (destinations.py) because it never leaves the machine — through a proxy the API key and
    the prompts would cross the network in clear text. Otherwise NO_PROXY decides, as requests reads
    it: an IP address is bypassed when an entry is that address or a network containing it
    (`10.0.0.0/8`, `::1/128`), a name when an entry is it or a domain it ends in, `*` bypasses every
    host (the last two are urllib's rule, which requests and httpx follow too)."""
    if is_loopback(host):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None:
        for entry in (proxies.get("no") or "").split(","):
            entry = entry.strip()
            if "/" not in entry:
                continue
            try:
                if address in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                continue  # not a network: urllib's rule below reads it
    return bool(urllib.request.proxy_bypass_environment(host, proxies))  # type: ignore[attr-defined]  # in urllib.request at runtime; typeshed omits it


def _wire_headers(request: httpx.Request, body: bytes) -> dict[str, str]:
    """The request's headers for urllib3 (latin-1, as http.client will encode them back). A body of
    unknown length (an iterator, a pipe) was read whole: it is sent with its length rather than
    chunked."""
    headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in request.headers.raw}
    if "transfer-encoding" in request.headers:
        headers = {name: value for name, value in headers.items() if name.lower() != "transfer-encoding"}
        headers["Content-Length"] = str(len(body))
    return headers


def _timed_out(error: ProtocolError) -> bool:
    """urllib3 reports a socket timeout while sending as a ProtocolError around a TimeoutError."""
    return any(isinstance(cause, TimeoutError) for cause in error.args)


def _tunnel_refused(error: ProtocolError) -> bool:
    """A proxy's answer other than 200 to CONNECT (a 407 for wrong credentials, a 403 for a host it
    does not allow), which urllib3 reports as a broken connection around the OSError http.client
    raised, told apart only by its text."""
    return any(isinstance(cause, OSError) and "Tunnel connection failed" in str(cause) for cause in error.args)


def _causes(error: BaseException) -> list[BaseException]:
    """The error and what it wraps, as urllib3 wraps it (arguments, a proxy's original error, causes)."""
    seen: list[BaseException] = []
    todo = [error]
    while todo:
        current = todo.pop()
        if current in seen or len(seen) > 20:
            continue
        seen.append(current)
        todo.extend(arg for arg in current.args if isinstance(arg, BaseException))
        for linked in (getattr(current, "original_error", None), getattr(current, "reason", None),
                       current.__cause__, current.__context__):
            if isinstance(linked, BaseException):
                todo.append(linked)
    return seen


def _certificate_refused(error: BaseException) -> bool:
    return any(isinstance(cause, ssl.SSLCertVerificationError) for cause in _causes(error))


def _certificate_problem(error: BaseException) -> str:
    return str(next(cause for cause in _causes(error) if isinstance(cause, ssl.SSLCertVerificationError)))


def _httpx_error(
    error: urllib3.exceptions.HTTPError, request: httpx.Request, *, host: str, port: int, proxy: Any, timeouts: Mapping[str, Any]
) -> httpx.TransportError:
    """urllib3's exception as the httpx one the SDK and the providers' error mapping expect."""
    if isinstance(error, MaxRetryError) and error.reason is not None:
        error = error.reason  # type: ignore[assignment]
    via = f" through the proxy {proxy.host}:{proxy.port}" if proxy is not None else ""
    if _certificate_refused(error):
        whose = f"the proxy {proxy.host}:{proxy.port}" if isinstance(error, ProxyError) else f"{host}:{port}{via}"
        return CertificateVerificationError(f"the TLS certificate of {whose} failed verification: {_certificate_problem(error)}",
                                            request=request)
    if isinstance(error, ProxyError):
        return httpx.ProxyError(f"could not connect to {host}:{port}{via}: {error.original_error}", request=request)
    if isinstance(error, ProtocolError) and _tunnel_refused(error):
        return httpx.ProxyError(f"could not connect to {host}:{port}{via}: {error.args[-1]}", request=request)
    if isinstance(error, NewConnectionError | SSLError):  # refused, unknown host, a TLS handshake that broke…
        return httpx.ConnectError(f"could not connect to {host}:{port}{via}: {error}", request=request)
    if isinstance(error, ConnectTimeoutError):
        return httpx.ConnectTimeout(f"timed out connecting to {host}:{port}{via} ({timeouts['connect']:g}s)", request=request)
    if isinstance(error, ReadTimeoutError):
        return httpx.ReadTimeout(f"no answer from {host} within {timeouts['read']}s", request=request)
    if isinstance(error, ProtocolError) and _timed_out(error):
        return httpx.WriteTimeout(f"timed out sending the request to {host} ({timeouts['write']}s)", request=request)
    if isinstance(error, ProtocolError):
        return httpx.RemoteProtocolError(f"{host} closed the connection without a complete answer ({error.args[-1]!r})",
                                         request=request)
    return httpx.TransportError(f"HTTP exchange with {host} failed: {error!r}", request=request)


def _by_lowercase_name(headers: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """The headers keyed by their lower-cased name, each kept with the name as written (some
    servers are less forgiving of case than HTTP says they must be)."""
    return {name.lower(): (name, value) for name, value in headers.items()}


def new_http_client(settings: ProviderSettings, **options: Any) -> ProviderHttpClient:
    """A client whose idle pool is as large as the account's concurrency."""
    return ProviderHttpClient(timeout_seconds=settings.timeout_seconds, max_idle_connections=settings.max_concurrency, **options)
