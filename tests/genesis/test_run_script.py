"""`make run`'s script refuses to start when a port it needs is taken, naming the port and the
variable that moves it (it would otherwise start the rest and leave one server dead in its log), before
it touches anything: a second `make run` beside a running one leaves that one's database and metrics be."""

from __future__ import annotations

import os
import socket
import subprocess

from tests.conftest import ROOT


def test_a_taken_web_port_stops_the_script_with_the_reason(tmp_path):
    metrics = tmp_path / "prometheus"  # the running Genesis' metric files
    metrics.mkdir()
    (metrics / "counter_1234.db").write_bytes(b"counted")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = subprocess.run(["bash", str(ROOT / "scripts" / "run.sh")], cwd=ROOT, capture_output=True, text=True,
                                timeout=60, env={**os.environ, "GENESIS_PORT": str(port), "PROMETHEUS_MULTIPROC_DIR": str(metrics)})
    assert result.returncode == 1
    assert f"port {port} (the web server) is already in use" in result.stderr and "GENESIS_PORT" in result.stderr
    assert "Genesis is starting" not in result.stdout  # nothing was started…
    assert "migrat" not in result.stdout.lower() and "demo world" not in result.stdout  # …nor migrated or seeded
    assert (metrics / "counter_1234.db").read_bytes() == b"counted"  # …nor were the metrics emptied


def test_a_taken_simulator_port_stops_the_script_too():
    with socket.socket() as free, socket.socket() as holder:
        free.bind(("127.0.0.1", 0))
        free_port = free.getsockname()[1]
        free.close()
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = subprocess.run(["bash", str(ROOT / "scripts" / "run.sh")], cwd=ROOT, capture_output=True, text=True,
                                timeout=60, env={**os.environ, "GENESIS_PORT": str(free_port), "GENESIS_SIMULATOR_PORT": str(port)})
    assert result.returncode == 1 and f"port {port} (the Mistral simulator)" in result.stderr
    assert "GENESIS_SIMULATOR_PORT" in result.stderr
