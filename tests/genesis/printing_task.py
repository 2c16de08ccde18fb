"""A task that print()s, for tests/genesis/test_logging.py: a worker started with `-I` loads it."""

from celery import shared_task


@shared_task(name="tests.genesis.print_a_line")
def print_a_line(run_id: int) -> None:
    print(f"printed by run {run_id}")  # noqa: T201 - the print is what the test is about
