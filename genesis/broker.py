"""Genesis's Celery transports: kombu's, with their faults fixed. settings.CELERY_BROKER_TRANSPORT
names the one the broker URL needs.

The embedded broker (no REDIS_URL), `Transport`: kombu's file-system transport, with messages that
appear whole.

kombu's `_put` creates the message file under its final name and then writes it, while `_get` takes
any file with that name without a lock: a worker polling at the wrong instant read an empty file and
stopped with "Unrecoverable error: JSONDecodeError" (`make run` then stopped everything; beat's
10-second exposure flush made it a matter of minutes). Here a message is written under a name no
queue matches and renamed into place, which POSIX makes atomic.

Redis (REDIS_URL), `RedisTransport`: kombu's Redis transport, whose worker outlives a broker outage
while it runs a task (kombu and Celery 5.7.0, the newest releases, still crash). On losing the broker,
Celery detaches the connection's transport (`Connection.collect`), then closes the connection; closing
a channel still open puts its unacknowledged messages back, and kombu builds the Redis client for that
from connection info the transport no longer has: AttributeError ("'NoneType' object has no attribute
'hostname'"), not a connection error, so Celery called it unrecoverable and the worker exited. An idle
worker has no message to put back; with acks_late every running task has one. The task, still running
in the pool, is acknowledged through that same closed channel when it ends: the same error, at the
end of the task instead. Here a channel whose connection is closed leaves its messages alone: they
are still in Redis' unacked set, whose visibility timeout gives them back (a task run again finds its
work done: GUIDE, "Tasks are idempotent"), and if Redis lost them, Genesis's sweeps send the stranded
jobs again. A shorter break, with Redis still there, puts the messages back as kombu does; the worker
stops the tasks that were running on them (settings.CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS),
so each runs again once, not beside itself. And a worker's answer to a ping or an inspection expires
as its reply queue does (`RedisChannel._put` says why kombu's does not), and the asker forgets its deleted
reply queues in memory too (`RedisChannel.queue_delete`).
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

logger = logging.getLogger(__name__)

# `_get` takes only files named `<stamp>_<uuid>.<queue>.msg`; a file being written ends in this.
PARTIAL_SUFFIX = ".partial"

# kombu's Mailbox sends remote-control replies through the exchange `reply.<namespace>.pidbox`.
CONTROL_REPLY_EXCHANGE = re.compile(r"reply\.[^.]+\.pidbox")
# Celery's control_queue_expires, which the asker itself gives the same key: answers are read within
# the asker's timeout (at most 3 s in Genesis) or never.
CONTROL_REPLY_EXPIRES_MS = 10_000


class Channel(filesystem.Channel):
    # kombu's own classes name the second parameter differently (message, payload); neither name fits both.
    def _put(self, queue: Any, message: Any, **kwargs: Any) -> None:  # type: ignore[override]
        """Put `message` on `queue`: the file takes the name `_get` looks for once it is complete."""
        # The name kombu gives a message: its time orders the queue.
        filename = os.path.join(self.data_folder_out, f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg")
        try:
            with open(filename + PARTIAL_SUFFIX, "wb") as partial:
                partial.write(str_to_bytes(dumps(message)))
            os.replace(filename + PARTIAL_SUFFIX, filename)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {filename!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel


class RedisQoS(kombu_redis.QoS):
    """Unacknowledged messages of a channel whose connection is closed stay in Redis (see above)."""

    def _detached(self) -> bool:
        transport = self.channel.connection
        return transport is None or transport.client is None

    def restore_unacked(self, client: Any = None) -> None:
        if client is None and self._detached():
            if self._delivered:
                logger.warning("%d unacknowledged message(s) not put back: the broker connection is closed; "
                               "Redis gives them back after the visibility timeout", len(self._delivered))
            self._delivered.clear()
            return
        super().restore_unacked(client)

    def ack(self, delivery_tag: Any) -> None:
        # A task that was running when the connection was lost ends on the new connection, but its
        # message belongs to the old channel. Its task is idempotent, so redelivery after the
        # visibility timeout (if Redis kept the message) only finds its work done.
        if self._detached():
            logger.warning("message %s not acknowledged: its broker connection was closed while its task ran; "
                           "Redis gives it back after the visibility timeout", delivery_tag)
            return
        super().ack(delivery_tag)

    def reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        if self._detached():
            logger.warning("message %s not rejected: its broker connection was closed while its task ran; "
                           "Redis gives it back after the visibility timeout", delivery_tag)
            return
        super().reject(delivery_tag, requeue=requeue)


class RedisChannel(kombu_redis.Channel):
    QoS = RedisQoS

    def _put(self, queue: Any, message: Any, **kwargs: Any) -> None:
        """A worker's answer to a remote-control command (`ping`, `inspect …`) expires like its queue.

        The asker declares its reply queue with Celery's control_queue_expires (10 s), but kombu keeps
        that expiry in the asker's channel only: the worker's LPUSH creates the key without a TTL. The
        asker deletes the key once it stops listening, and a reply that saw the queue's binding just
        before is pushed just after: a key nobody reads, kept for good. /readyz asks with limit=1, so
        with two workers the second answer raced the delete on about one probe in four (measured), and
        an asker killed while it waits leaves every answer behind."""
        exchange = message["properties"]["delivery_info"].get("exchange") or ""
        # A batch (`Producer.batch()`) is kombu's own path: neither Celery nor the Mailbox replies in one.
        if queue in self._expires or kwargs.get("_publish_batch") is not None or not CONTROL_REPLY_EXCHANGE.fullmatch(exchange):
            super()._put(queue, message, **kwargs)
            return
        key = self._q_for_pri(queue, self._get_message_priority(message, reverse=False))
        # One transaction: no moment when the key exists without its expiry.
        with self.conn_or_acquire() as client, client.pipeline(transaction=True) as pipe:
            pipe.lpush(key, dumps(message))
            pipe.pexpire(key, CONTROL_REPLY_EXPIRES_MS)
            pipe.execute()

    def queue_delete(self, queue: Any, if_unused: bool = False, if_empty: bool = False, **kwargs: Any) -> None:
        """A deleted queue is forgotten in this process too, not only in Redis.

        kombu drops the queue's keys and its bindings, but keeps its entry in the exchange's in-process
        routing table (which the Redis transport never reads: it routes by the table in Redis) and its
        expiry. Every ping or inspection declares a reply queue of its own and deletes it when done, so a
        process asking through one long-lived connection — the benchmark resume sweep, every minute,
        through Celery's pool — kept ~300 bytes per question for good (bench/memory --part tasks)."""
        if if_empty and self._size(queue):
            return  # kept, as kombu keeps it (asking `state.queue_bindings` would add an entry for it)
        super().queue_delete(queue, if_unused=if_unused, if_empty=if_empty, **kwargs)
        for exchange in self.state.exchanges.values():
            table = exchange.get("table")
            if table:
                # Entries are (routing_key, pattern, queue) tuples (kombu's `prepare_bind`).
                table[:] = [entry for entry in table if entry[2] != queue]
        self._expires.pop(queue, None)


class RedisTransport(kombu_redis.Transport):
    Channel = RedisChannel
