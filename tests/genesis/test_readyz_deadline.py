"""/readyz answers within about a second however Redis fails (issue 18, finding 9): refused (a port
nothing listens on), or accepting connections but answering nothing (a redis-server of our own,
stopped with SIGSTOP — never the shared one). The probe runs in a process of its own, so the Celery
app and the cache really point at the broken Redis."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest

from tests.conftest import ROOT, child_environment

pytestmark = pytest.mark.django_db(transaction=True)

# The probe's deadline is one second. What this rules out takes far longer: without the deadline a
# frozen Redis hangs the probe for good, and kombu's default retries of a refused one take ~6 s. The
# bound stays far from both and from the second: a bound of 1.4 s failed 4 probes in 6 on a loaded
# 2-core machine (first answers of 1.5-2.6 s, the later ones 1.0-1.05 s).
BOUND_SECONDS = 3.0

PROBE = textwrap.dedent("""
    import json, os, time
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "genesis.settings")
    import django
    django.setup()
    from django.test import Client

    client = Client()
    # Not measured: a process's first request imports the URLconf, the views and the Redis and kombu
    # clients, which takes as long as the machine's load makes it (seconds on a busy one).
    client.get("/readyz")
    answers = []
    for _ in range(3):
        started = time.monotonic()
        response = client.get("/readyz")
        answers.append({"seconds": time.monotonic() - started, "status": response.status_code, "body": response.json()})
    print(json.dumps(answers))
""")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def frozen_redis(tmp_path) -> Iterator[str]:
    """A redis-server of this test's own on a free port, frozen with SIGSTOP once it answers."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (CI installs it; see .ci/run)")
    port = free_port()
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.05)
        os.kill(process.pid, signal.SIGSTOP)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        os.kill(process.pid, signal.SIGCONT)
        process.terminate()
        process.wait(timeout=10)


def probe_with_redis(redis_url: str) -> list[dict]:
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=child_environment(REDIS_URL=redis_url),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def assert_bounded_and_failing(answers: list[dict]) -> None:
    for answer in answers:
        assert answer["status"] == 503, answer
        assert "redis" in answer["body"]["status"]
        assert answer["body"]["checks"]["database"] == "ok"
        assert answer["seconds"] < BOUND_SECONDS, answers


def test_readyz_is_bounded_when_redis_refuses_connections():
    assert_bounded_and_failing(probe_with_redis(f"redis://127.0.0.1:{free_port()}/0"))


def test_readyz_is_bounded_when_redis_accepts_but_never_answers(frozen_redis):
    assert_bounded_and_failing(probe_with_redis(frozen_redis))
