"""Fixtures of the models_app tests: the Mistral simulator in a thread on an ephemeral port, with the
seeded `simulator` provider account pointed at it (so Celery workers started by the tests reach it
over real HTTP, as the demo does); and a server that answers as a simulator does but without token
`usage`, as some vLLM / llama.cpp builds do."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from http.server import ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from genesis.config.schema import ProvidersSection
from models_app.simulator import SimulatorConfig, start_in_thread, stop
from models_app.simulator.server import SimulatorHTTPServer
from tests.http_servers import QuietHandler, serving

SIMULATOR_KEY = "sim-key"  # GENESIS_SIMULATOR_API_KEY in tests (genesis/pytest_services.py)


@pytest.fixture
def simulator_factory() -> Iterator[Callable[..., SimulatorHTTPServer]]:
    """`simulator_factory(quality={...}, latency_ms=..., error_rate=...)` starts a simulator in a
    thread on a free port; every one started is stopped after the test."""
    servers: list[SimulatorHTTPServer] = []

    def start(**options: Any) -> SimulatorHTTPServer:
        config = SimulatorConfig(port=0, seed=0, api_keys=frozenset({SIMULATOR_KEY}), **options)
        server, _ = start_in_thread(config)
        servers.append(server)
        return server

    yield start
    for server in servers:
        stop(server)


class UsageOmittingServer(ThreadingHTTPServer):
    """An OpenAI-compatible server that reports no token usage: it passes each request on to a simulator
    (its answers, markers honoured) and drops `usage` from the reply."""

    daemon_threads = True

    def __init__(self, upstream: SimulatorHTTPServer) -> None:
        self.upstream = upstream.base_url
        self.client = httpx.Client(timeout=10)

        class Handler(QuietHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                server: UsageOmittingServer = self.server  # type: ignore[assignment]
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                answer = server.client.post(server.upstream + self.path, content=body, headers={
                    "Authorization": self.headers.get("Authorization", ""), "Content-Type": "application/json"})
                reply = answer.json()
                if isinstance(reply, dict):
                    reply.pop("usage", None)
                payload = json.dumps(reply).encode()
                self.send_response(answer.status_code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def usage_omitting_factory() -> Iterator[Callable[[SimulatorHTTPServer], UsageOmittingServer]]:
    """`usage_omitting_factory(simulator)` starts a UsageOmittingServer in front of `simulator`; every
    one started is stopped after the test. Reach it with an `openai_compatible` account at
    `base_url + "/v1"` (a Mistral-kind client refuses an answer without usage)."""
    with ExitStack() as servers:

        def start(upstream: SimulatorHTTPServer) -> UsageOmittingServer:
            server = UsageOmittingServer(upstream)
            servers.callback(server.client.close)
            return servers.enter_context(serving(server))

        yield start


@pytest.fixture
def provider_hosts(settings) -> Callable[[str], None]:
    """`provider_hosts("VLLM_API_KEY=127.0.0.1:9,…")` sets the allow-list of provider destinations for the
    test, as GENESIS_PROVIDER_HOSTS would (read by the real config schema)."""

    def allow(entries: str) -> None:
        settings.GENESIS_PROVIDER_HOSTS = ProvidersSection.model_validate({"hosts": entries}).hosts

    return allow


def point_demo_provider_at(server: SimulatorHTTPServer, **account: Any) -> None:
    """Make the seeded `simulator` provider account talk to `server` (through the registry service)."""
    from models_app.registry.models import ProviderAccount
    from models_app.registry.services import provider_account_upsert

    current = ProviderAccount.objects.get(name="simulator")
    provider_account_upsert(
        name="simulator", kind=current.kind, base_url=server.base_url, api_key_env=current.api_key_env, **account
    )


@pytest.fixture
def demo_simulator(seeded_demo, simulator_factory) -> SimulatorHTTPServer:
    """The demo world, with its provider served by a simulator of the default quality
    (fine-tuned `ft:*` models 0.85, base models 0.55)."""
    server = simulator_factory()
    # The seeded account allows 600 calls a minute, paced; tests need not wait for that.
    point_demo_provider_at(server, rate_limit_per_minute=60_000, max_concurrency=8)
    return server


@pytest.fixture
def empty_broker(transactional_db):
    """No message left over from an earlier test (on this test run's own Redis database)."""
    from genesis.celery import app

    app.control.purge()


def wait_until(predicate: Callable[[], Any], *, timeout: float, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")
