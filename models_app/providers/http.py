"""The HTTP client every provider talks through: one place for its TLS, pool limits and redirects."""

from __future__ import annotations

import functools
import ssl
from typing import Any

import httpx

from .base import ProviderSettings


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The process's one TLS context, as httpx would make it (certifi's CA bundle, or SSL_CERT_FILE /
    SSL_CERT_DIR). Loading the bundle takes about 50 ms of CPU, which every new client would
    otherwise spend again — each provider account in each worker process, and again whenever an
    account's settings change. A context is safe to share between clients and threads as long as
    they all speak HTTP/1.1 (httpcore sets the context's ALPN offer on each connection, so an
    `http2=True` client would change it for everyone: new_http_client makes none). Being made once,
    it sees a changed CA bundle or SSL_CERT_FILE only after a restart."""
    return httpx.create_ssl_context()


def new_http_client(settings: ProviderSettings, **options: Any) -> httpx.Client:
    """A client with a connection pool as large as the account's concurrency."""
    return httpx.Client(
        verify=tls_context(),
        timeout=settings.timeout_seconds,
        limits=httpx.Limits(max_connections=settings.max_concurrency, max_keepalive_connections=settings.max_concurrency),
        follow_redirects=True,
        **options,
    )
