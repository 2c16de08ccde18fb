"""The fifty processes of test_concurrency.py. One launcher sets up Django once, then forks a
process per charge (fifty imports of Django on two cores would take a minute); each child opens its
own database connection, waits for the common start signal, records its cost through the service
and prints the entry id. The launcher exits non-zero if any child failed.

Run as `python -m tests.costs.concurrent_recorder SYNC_DIR AGENT:AMOUNT [AGENT:AMOUNT …]`."""

from __future__ import annotations

import os
import sys
import time
from decimal import Decimal
from pathlib import Path


def record_one(index: int, agent_slug: str, amount: Decimal, sync_dir: Path) -> None:
    from django.db import connection

    from costs.services import cost_record
    from models_app.registry.models import Agent

    agent = Agent.objects.get(slug=agent_slug)
    (sync_dir / f"ready-{index}").touch()
    deadline = time.monotonic() + 120
    while not (sync_dir / "go").exists():  # everyone starts at once, as fifty workers finishing together would
        if time.monotonic() > deadline:
            raise SystemExit("no start signal")
        time.sleep(0.002)
    entry = cost_record(
        agent=agent, operation="benchmark", amount_usd=amount, idempotency_key=f"concurrent:{index}",
        source=f"concurrency test process {index}",
    )
    os.write(1, f"{entry.pk}\n".encode())  # one write, so fifty children sharing the pipe never interleave
    connection.close()


def main() -> None:
    sync_dir = Path(sys.argv[1])
    charges = [(slug, Decimal(amount)) for slug, amount in (arg.split(":") for arg in sys.argv[2:])]
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "genesis.settings")
    import django

    django.setup()
    from django.db import connections

    import costs.services  # noqa: F401 - imported once here, shared by the forked children

    connections.close_all()  # no connection may be shared across fork
    children = []
    for index, (slug, amount) in enumerate(charges):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                record_one(index, slug, amount, sync_dir)
            except BaseException as exc:  # noqa: BLE001 - report any failure through the exit code
                print(f"process {index}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
                code = 1
            os._exit(code)
        children.append(pid)
    failed = 0
    for pid in children:
        _, status = os.waitpid(pid, 0)
        failed += int(os.waitstatus_to_exitcode(status) != 0)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
