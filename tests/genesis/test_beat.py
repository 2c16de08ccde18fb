"""One beat sends periodic tasks at a time (genesis/beat.py): the lock itself, then two real beats."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from django.conf import settings
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from genesis.beat import BEAT_LOCK_KEY, BeatLock, BeatLockLost
from tests.conftest import BeatProcess
from tests.models_app.finetuning_fixtures import wait_until

pytestmark = pytest.mark.skipif(not settings.REDIS_URL, reason="the beat lock lives in Redis (REDIS_URL)")


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(settings.REDIS_URL)
    yield connection
    connection.close()


@pytest.fixture
def key(client: redis.Redis) -> Iterator[str]:
    name = f"genesis:test:beat-lock:{uuid.uuid4().hex}"
    yield name
    client.delete(name)


def test_a_second_beat_cannot_take_a_held_lock_and_learns_who_holds_it(client, key) -> None:
    first, second = BeatLock(client, key=key), BeatLock(client, key=key)
    assert first.acquire()
    assert not second.acquire()
    assert second.current_holder() == first.holder
    assert first.holder.split(" pid ")[1].isdigit()


def test_a_released_lock_goes_to_the_standby(client, key) -> None:
    first, second = BeatLock(client, key=key), BeatLock(client, key=key)
    assert first.acquire()
    first.release()
    assert second.acquire()
    assert first.current_holder() == second.holder


def test_a_killed_beats_lock_expires_and_the_old_holder_then_stops(client, key) -> None:
    first, second = BeatLock(client, key=key, seconds=0.5), BeatLock(client, key=key)
    assert first.acquire()
    first.renew()  # renewing one's own lock is quiet
    time.sleep(0.7)  # the holder stalled past the expiry, as a killed beat would
    assert second.acquire()
    with pytest.raises(BeatLockLost, match="now held by"):
        first.renew()
    assert not first.held


def test_a_lock_lost_with_redis_is_taken_again_when_nobody_else_took_it(client, key) -> None:
    first, second = BeatLock(client, key=key), BeatLock(client, key=key)
    assert first.acquire()
    client.delete(key)  # Redis restarted without persistence
    first.renew()
    assert first.held and not second.acquire()


PROBE_TASK = "genesis.tests.beat_probe"


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_two_real_beats_never_send_together_and_the_standby_takes_over(client, tmp_path) -> None:
    # One probe task every second: each message names the sending process in its `origin` header, so
    # the queue shows who sent what, in order. No worker runs, and the probes are removed at the end.
    every_second, _ = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(name="beat probe", task=PROBE_TASK, interval=every_second)

    def probes() -> list[bytes]:  # oldest first: kombu pushes a message at the head and pops at the tail
        return [raw for raw in reversed(client.lrange("default", 0, -1)) if json.loads(raw)["headers"]["task"] == PROBE_TASK]

    def senders() -> list[int]:
        return [int(json.loads(raw)["headers"]["origin"].split("@")[0].removeprefix("gen")) for raw in probes()]

    first = BeatProcess(tmp_path / "beat-1.log")
    second = None
    try:
        wait_until(lambda: "holds the beat lock" in first.output(), timeout=30, what="the first beat to hold the lock")
        second = BeatProcess(tmp_path / "beat-2.log")
        wait_until(lambda: "waiting as a standby for" in second.output(), timeout=30, what="the second beat to wait")
        assert f"pid {first.process.pid}" in second.output()
        wait_until(lambda: len(senders()) >= 3, timeout=60, what="three probes")
        time.sleep(2)
        assert set(senders()) == {first.process.pid}, second.output()[-2000:]

        first.stop()  # a clean stop releases the lock: the standby takes over within a few seconds
        # Within its 5 s poll and a tick (a loaded machine adds seconds), far from the 60 s after which
        # a lock left behind would have expired.
        wait_until(lambda: second.process.pid in senders(), timeout=30, what="the standby to send")
        sent = senders()
        switch = sent.index(second.process.pid)
        assert set(sent[:switch]) == {first.process.pid} and set(sent[switch:]) == {second.process.pid}
    finally:
        first.stop()
        if second is not None:
            second.stop()
        for raw in probes():
            client.lrem("default", 1, raw)
        client.delete(BEAT_LOCK_KEY)


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_waiting_standby_stops_at_once_on_sigterm_and_leaves_the_lock_alone(client, tmp_path) -> None:
    holder = BeatLock(client)
    assert holder.acquire()  # another beat, as far as the standby can tell
    standby = BeatProcess(tmp_path / "standby.log")
    try:
        wait_until(lambda: "waiting as a standby for" in standby.output(), timeout=30, what="the standby to wait")
        os.killpg(standby.process.pid, signal.SIGTERM)
        standby.process.wait(timeout=10)
        assert client.get(BEAT_LOCK_KEY).decode().startswith(holder.holder)
        assert "Sending due task" not in standby.output()
    finally:
        standby.stop()
        holder.release()


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_beat_whose_lock_another_took_exits_with_an_error(client, tmp_path) -> None:
    # An error, not a clean stop: a process manager restarting on failure brings it back as a standby.
    beat = BeatProcess(tmp_path / "beat.log")
    try:
        wait_until(lambda: "holds the beat lock" in beat.output(), timeout=30, what="the beat to hold the lock")
        client.set(BEAT_LOCK_KEY, "otherhost pid 1 0123abcd")  # another beat took it (ours had expired)
        assert beat.process.wait(timeout=20) != 0
        assert "now held by otherhost pid 1" in beat.output()
        assert client.get(BEAT_LOCK_KEY) == b"otherhost pid 1 0123abcd"  # and it left that one's lock alone
    finally:
        beat.stop()
        client.delete(BEAT_LOCK_KEY)


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_killed_beat_has_saved_every_run_it_sent(client, tmp_path) -> None:
    """A standby that takes over reads last_run_at from the database: what the killed beat sent but had
    not saved, it sends again. Beat saves after every send (CELERY_BEAT_SYNC_EVERY = 1), not every 3
    minutes — so after a kill -9 the saved run count is the number of probes sent (one fewer at most,
    for a kill between a send and its save)."""
    every_second, _ = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(name="beat probe", task=PROBE_TASK, interval=every_second)

    def probes() -> list[bytes]:
        return [raw for raw in client.lrange("default", 0, -1) if json.loads(raw)["headers"]["task"] == PROBE_TASK]

    beat = BeatProcess(tmp_path / "beat.log")
    try:
        wait_until(lambda: len(probes()) >= 4, timeout=30, what="four probes")
        os.killpg(beat.process.pid, signal.SIGKILL)
        beat.process.wait(timeout=10)
        sent = len(probes())
        saved = PeriodicTask.objects.get(name="beat probe").total_run_count
        assert sent - 1 <= saved <= sent, (sent, saved)
    finally:
        beat.stop()
        for raw in probes():
            client.lrem("default", 1, raw)
        client.delete(BEAT_LOCK_KEY)
