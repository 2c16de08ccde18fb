"""Fixtures of the fine-tuning tests: a fast simulator in a thread (real HTTP, the real SDK), and a
small world built through the services — a provider account pointed at it, support_agent with a
live baseline, the open-mistral-7b price, and a $30 budget.

Import the fixtures into a test module (`from tests.models_app.finetuning_fixtures import *`);
tests/models_app/conftest.py belongs to the benchmark tests.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import date
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from models_app.finetuning.models import FineTuningJob
from models_app.registry.models import Agent, ModelVersion, ProviderAccount
from models_app.simulator import SimulatorConfig, start_in_thread, stop
from models_app.simulator.server import SimulatorHTTPServer
from models_app.simulator.state import SimulatorState
from tests.http_servers import QuietHandler, serving, url_of

ROOT = Path(__file__).resolve().parents[2]
DEMO_TRAINING_FILE = ROOT / "models_app" / "finetuning" / "demo_data" / "support_agent_train.jsonl"
DEMO_VALIDATION_FILE = ROOT / "models_app" / "finetuning" / "demo_data" / "support_agent_valid.jsonl"
SIMULATOR_KEY = "sim-key"  # GENESIS_SIMULATOR_API_KEY in tests (genesis/pytest_services.py)
FAST_JOBS = SimulatorConfig(
    port=0, seed=11, job_seconds=1.0, validation_seconds=0.05, cancel_seconds=0.1, api_keys=frozenset({SIMULATOR_KEY})
)

__all__ = [
    "DEMO_TRAINING_FILE",
    "DEMO_VALIDATION_FILE",
    "FineTuningWorld",
    "ScriptedProvider",
    "chat_lines",
    "ft_simulator",
    "ft_world",
    "restart_simulator",
    "scripted_provider",
    "set_simulator",
    "wait_until",
]


def chat_lines(count: int, *, prefix: str = "question") -> bytes:
    return "".join(
        json.dumps({"messages": [{"role": "user", "content": f"{prefix} {n}?"}, {"role": "assistant", "content": f"answer {n}."}]})
        + "\n"
        for n in range(count)
    ).encode()


def set_simulator(server: SimulatorHTTPServer, **changes: Any) -> None:
    """Change a running simulator's behaviour (latency, job duration…); each request reads it anew."""
    server.config = replace(server.config, **changes)
    server.state.config = server.config


def restart_simulator(server: SimulatorHTTPServer, *, reuse_ids: bool = False) -> None:
    """Forget every file and job, as a restarted simulator does. `reuse_ids`: hand out the earlier
    start's ids again (as the simulator did before its ids were unique per start) — a provider that
    re-uses ids, which Genesis must not be fooled by."""
    earlier = server.state.instance
    server.state = SimulatorState(server.config)
    if reuse_ids:
        server.state.instance = earlier


def wait_until(condition: Callable[[], Any], *, timeout: float, interval: float = 0.1, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


@pytest.fixture
def ft_simulator() -> Iterator[SimulatorHTTPServer]:
    server, _ = start_in_thread(FAST_JOBS)
    yield server
    stop(server)


@dataclass
class FineTuningWorld:
    agent: Agent
    provider: ProviderAccount
    baseline: ModelVersion
    simulator: SimulatorHTTPServer

    def job(self, job: FineTuningJob) -> FineTuningJob:
        return FineTuningJob.objects.select_related("agent", "provider", "model_version").get(pk=job.pk)

    def requests(self, path_prefix: str) -> list[tuple[str, str, int]]:
        return [entry for entry in self.simulator.state.request_log if entry[1].startswith(path_prefix)]


@pytest.fixture
def ft_world(db, ft_simulator) -> FineTuningWorld:
    from costs.services import budget_upsert, price_upsert
    from models_app.registry.services import (
        agent_upsert,
        model_version_register,
        model_version_transition,
        provider_account_upsert,
    )

    provider = provider_account_upsert(
        name="sim-ft", kind="simulator", base_url=ft_simulator.base_url, api_key_env="GENESIS_SIMULATOR_API_KEY",
        timeout_seconds=10.0,
    )
    agent = agent_upsert(slug="support_agent", name="Support agent")
    baseline = model_version_register(
        agent=agent, provider=provider, model_id="open-mistral-7b", base_model="open-mistral-7b", kind="baseline"
    )
    model_version_transition(version=baseline, to_status="live", reason="test baseline")
    price_upsert(
        model="open-mistral-7b", effective_from=date(2024, 6, 1), input_usd_per_million="0.25",
        output_usd_per_million="0.25", training_usd_per_million="2", source="test prices", source_date=date(2024, 6, 1),
    )
    budget_upsert(name="default", amount_usd="30")
    return FineTuningWorld(agent=agent, provider=provider, baseline=baseline, simulator=ft_simulator)


class ScriptedHandler(QuietHandler):
    """Answers every request with the status and JSON body its server's `answer(method, path)` gives."""

    protocol_version = "HTTP/1.1"
    server: ScriptedProvider

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        status, payload = self.server.answer(self.command, self.path)
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer  # noqa: N815


class ScriptedProvider(ThreadingHTTPServer):
    """A stand-in provider whose every answer the test scripts: `answer(method, path)` → (status, JSON body)."""

    daemon_threads = True

    def __init__(self) -> None:
        self.answer: Any = lambda method, path: (404, {"detail": "Not Found"})
        super().__init__(("127.0.0.1", 0), ScriptedHandler)

    @property
    def url(self) -> str:
        return url_of(self)


@pytest.fixture
def scripted_provider() -> Iterator[ScriptedProvider]:
    with serving(ScriptedProvider()) as server:
        yield server
