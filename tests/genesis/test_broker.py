"""genesis/broker.py, the embedded broker: a worker polling the queue folder never reads a message
that is still being written.

With kombu's own file-system transport, the reader below got JSONDecodeError on an empty file in 5 of
6 runs of this size (up to 99 of 2 000 messages); `make run` in embedded mode died of it after about
ten minutes."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from queue import Empty

import pytest
from kombu import Connection
from kombu.exceptions import ChannelError

from tests.conftest import ROOT

MESSAGES = 3000


def test_a_polling_reader_only_ever_gets_whole_messages(tmp_path) -> None:
    options = {"data_folder_in": str(tmp_path), "data_folder_out": str(tmp_path), "store_processed": False}

    def connection() -> Connection:
        return Connection("filesystem://localhost//", transport="genesis.broker:Transport", transport_options=options)

    received: list[int] = []
    unreadable: list[str] = []
    writing = True

    def poll() -> None:
        with connection() as reader:
            channel = reader.default_channel
            while True:
                written = not writing  # read before looking: then every message is in the folder
                try:
                    received.append(channel._get("jobs")["index"])
                except Empty:
                    if written:
                        return
                except Exception as exc:  # noqa: BLE001 - what a worker would die of
                    unreadable.append(repr(exc))

    reader = threading.Thread(target=poll)
    reader.start()
    with connection() as writer:
        for index in range(MESSAGES):
            writer.default_channel._put("jobs", {"index": index, "body": "x" * 20_000})
    writing = False
    reader.join(timeout=60)

    assert unreadable == []
    assert sorted(received) == list(range(MESSAGES))
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".partial")]


def test_a_message_that_cannot_be_written_is_a_channel_error(tmp_path) -> None:
    options = {"data_folder_in": str(tmp_path / "missing"), "data_folder_out": str(tmp_path / "missing")}
    with Connection("filesystem://localhost//", transport="genesis.broker:Transport", transport_options=options) as c:
        with pytest.raises(ChannelError, match="Cannot add file"):
            c.default_channel._put("jobs", {"index": 0})


def test_without_redis_celery_uses_it() -> None:
    env = {key: value for key, value in os.environ.items() if key not in ("REDIS_URL", "DJANGO_SETTINGS_MODULE")}
    printed = subprocess.run(
        [sys.executable, "-c", "from genesis.celery import app; print(type(app.connection_for_write().transport))"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    assert "genesis.broker.Transport" in printed


def test_asking_workers_again_and_again_through_one_connection_keeps_nothing_per_question() -> None:
    # The benchmark resume sweep pings the workers every minute through Celery's pooled connection, which
    # lives as long as the pool process. Each ask declares a reply queue of its own and deletes it when
    # done; kombu forgot it in Redis but kept its binding (the reply exchange's routing table) and its
    # expiry in the process: ~300 bytes a question, for good (bench/memory --part tasks).
    from genesis.celery import app

    with app.connection_for_write() as connection:
        channel = connection.default_channel

        def kept() -> tuple[int, int, int, int]:
            exchange = app.control.mailbox.reply_exchange.name
            return (len(channel.state.exchanges.get(exchange, {}).get("table", [])), len(channel.state.bindings),
                    len(channel.state.queue_index), len(channel._expires))

        app.control.ping(timeout=0.01, connection=connection)
        after_first = kept()
        for _ in range(20):
            app.control.ping(timeout=0.01, connection=connection)

        assert kept() == after_first
