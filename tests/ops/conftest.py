"""The running app for the monitoring tests: gunicorn with two worker processes (gthread) on a free
loopback port, on the test database, its metrics in prometheus_client's multiprocess directory and
behind a GENESIS_METRICS_TOKEN — as production runs it."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT, child_environment


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, *, process: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the process exited early; see {log}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s; see {log}")


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


@dataclass
class GenesisServer:
    url: str
    port: int
    metrics_dir: Path
    log: Path
    metrics_token: str  # what a scrape must send (README › Monitoring)

    def request(self, method: str, path: str, *, key: str | None = None, body: object = None) -> tuple[int, object]:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw = response.read()
                status = response.status
        except urllib.error.HTTPError as error:
            raw, status = error.read(), error.code
        return status, json.loads(raw) if raw.startswith((b"{", b"[")) else raw.decode()

    def metrics_text(self) -> str:
        request = urllib.request.Request(self.url + "/metrics", headers={"Authorization": f"Bearer {self.metrics_token}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.read().decode()


@contextmanager
def running_genesis_server(tmp_path: Path, **env: str) -> Iterator[GenesisServer]:
    """gunicorn as production runs it (two gthread workers, multiprocess metrics), with `env` on top
    of the tests' environment (e.g. REDIS_URL pointing at a Redis that is not there)."""
    metrics_dir = tmp_path / "prometheus-multiproc"
    metrics_dir.mkdir()
    port = free_port()
    log = tmp_path / "gunicorn.log"
    metrics_token = secrets.token_urlsafe(24)
    env = child_environment(PROMETHEUS_MULTIPROC_DIR=str(metrics_dir), GENESIS_LOG_LEVEL="WARNING",
                            GENESIS_METRICS_TOKEN=metrics_token, **env)
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "genesis.wsgi:application", "--workers", "2", "--worker-class", "gthread",
             "--threads", "4", "--bind", f"127.0.0.1:{port}", "--log-level", "warning"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        wait_for(f"http://127.0.0.1:{port}/healthz", process=process, timeout=60, log=log)
        yield GenesisServer(url=f"http://127.0.0.1:{port}", port=port, metrics_dir=metrics_dir, log=log,
                            metrics_token=metrics_token)
    finally:
        stop_process(process)


@pytest.fixture
def genesis_server(transactional_db, tmp_path) -> Iterator[GenesisServer]:
    with running_genesis_server(tmp_path) as server:
        yield server
