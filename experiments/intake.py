"""What the writers of end users' data (outcome ingestion, the exposure flush) respect of the
deletions (experiments/retention.py): the intake fence between the two, and the erasures.

Here, below the deletions (retention imports routing, to drain the exposures before an erasure) and the
writers (experiments/outcomes.py, experiments/routing.py), so that each can use it without a cycle.
"""

from __future__ import annotations

import itertools
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar

from django.db import OperationalError, connection, transaction
from django.db.models import QuerySet
from django.utils.crypto import salted_hmac

from experiments.models import DataDeletion
from genesis.errors import Conflict

# The PostgreSQL advisory lock between the writers and the deletions that change their limits (see
# intake_fence_hold). A transaction's lock: released when it commits or rolls back, so it holds behind
# PgBouncer in transaction mode too.
_INTAKE_FENCE = (zlib.crc32(b"experiments.intake_fence") & 0x7FFFFFFF, 0)
# How long a deletion waits for the fence in one try (PostgreSQL lock_timeout, which bounds advisory lock
# waits too). While it waits, every later batch of every agent waits behind it (PostgreSQL grants a lock
# only when it conflicts with no earlier waiter), so this is the longest a batch is stalled by one try.
FENCE_TRY_TIMEOUT_MS = 1000
# Between tries the batches that queued behind the try go through; the pause doubles up to the last.
FENCE_RETRY_PAUSES = (0.25, 0.5, 1.0, 2.0)
# A deletion gives up after this long without the fence (a batch holding it that long waits on a lock
# itself) and says so; the scheduled prune tries again at its next run.
FENCE_GIVE_UP_SECONDS = 120.0
_LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL's SQLSTATE for a lock_timeout
_HASH_SALT = "genesis.experiments.erasure.user_id"


# --- the intake fence -------------------------------------------------------------------------------------


def intake_fence_hold() -> None:
    """A writer's side of the fence: called first in the transaction in which it reads its limits
    (retention.outcome_age_limits, the erasures) and stores what they let through, it holds the fence
    until that transaction ends — shared, so writers never wait on one another.

    Without it a deletion could slip between the two: a request read the limits, a prune's batch (or an
    erasure) deleted an event's stored copy and recorded its limit, and the request's insert, finding no
    copy, stored the event again and charged it twice. A deletion records its limit behind the fence
    (limit_recorded) before it deletes: it waits for the writers holding the fence to commit — what
    they stored is then there for its deletes to find — and the writers after it read its limit."""
    if connection.vendor == "postgresql":  # the embedded SQLite run (one host, a demo) has no such lock
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock_shared(%s, %s)", _INTAKE_FENCE)


@contextmanager
def limit_recorded() -> Iterator[None]:
    """The transaction in which a deletion records the limit it sets on ingestion, before it deletes
    anything that limit covers: it holds the fence exclusively (intake_fence_hold). Short — a check and a
    row or two written.

    A writer holds the fence for its whole transaction, waits on row locks included (a batch of an agent
    whose row a suite import holds), and every batch asking after this one queues behind it: so this
    waits for the fence at most FENCE_TRY_TIMEOUT_MS at a time — the same bound holds for the rest of
    the transaction's lock waits, since every batch waits while it holds the fence — then lets the
    queued batches through and tries again, until FENCE_GIVE_UP_SECONDS have passed: Conflict, nothing
    recorded. Each try queues (it is not a try-lock), so batches in flight without end cannot starve it:
    it gets the fence once those holding it now have committed."""
    with transaction.atomic():
        _fence_exclusive()
        yield


def _fence_exclusive() -> None:
    if connection.vendor != "postgresql":
        return
    give_up = time.monotonic() + FENCE_GIVE_UP_SECONDS
    for tries in itertools.count(1):
        try:
            # A savepoint: a try that timed out is rolled back to it, and the transaction goes on.
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("SELECT set_config('lock_timeout', %s, true)", [f"{FENCE_TRY_TIMEOUT_MS}ms"])
                cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", _INTAKE_FENCE)
            return
        except OperationalError as error:
            if getattr(error.__cause__, "sqlstate", None) != _LOCK_NOT_AVAILABLE:
                raise
        pause = FENCE_RETRY_PAUSES[min(tries, len(FENCE_RETRY_PAUSES)) - 1]
        if time.monotonic() + pause >= give_up:
            raise Conflict(
                f"the intake fence: POST /outcomes batches held it through {tries} tries over {FENCE_GIVE_UP_SECONDS:g} s "
                "(a batch waiting on a lock — a suite import or a guardrail check holding its agent's or experiment's "
                "row; see pg_locks), and waiting longer would stall every agent's ingestion behind this deletion; "
                "nothing more was deleted and what was is on the trail — run it again when that lock is gone"
            )
        time.sleep(pause)


# --- erasures ---------------------------------------------------------------------------------------------


def user_id_hash(user_id: str) -> str:
    """The keyed hash a DataDeletion names an erased user by. Keyed (by SECRET_KEY) so that a list of
    likely ids (e-mail addresses, numbers) cannot be hashed and matched against the trail."""
    return salted_hmac(_HASH_SALT, user_id, algorithm="sha256").hexdigest()


def erasures_since(moment: datetime) -> QuerySet[DataDeletion]:
    """The erasures recorded at or after `moment`, through the index on DataDeletion.at: none, usually."""
    return DataDeletion.objects.filter(kind=DataDeletion.Kind.ERASURE, at__gte=moment).order_by()


Limit = TypeVar("Limit")


@dataclass
class ErasedUsers(Generic[Limit]):
    """Some erasures, each by its user's hash, scope (agent slug, "" for every agent) and what it
    limits (its time, or a limit made of it), for finding those of a user at an agent."""

    by_hash: dict[str, list[tuple[str, Limit]]]
    _hashes: dict[str, str] = field(default_factory=dict)  # user id → user_id_hash, as needed

    def of(self, *, user_id: str, agent: str) -> Iterator[Limit]:
        """The limits of the erasures of `user_id` at `agent` (slug)."""
        if not self.by_hash:  # the usual batch: no erasure since its oldest row, no id to hash
            return
        subject_hash = self._hashes.get(user_id)
        if subject_hash is None:
            subject_hash = self._hashes[user_id] = user_id_hash(user_id)
        for scope, limit in self.by_hash.get(subject_hash, ()):
            if scope in ("", agent):
                yield limit


def erased_since(moment: datetime) -> ErasedUsers[datetime]:
    """The erasures recorded at or after `moment`, with their times: one indexed query."""
    by_hash: dict[str, list[tuple[str, datetime]]] = {}
    for subject_hash, scope, at in erasures_since(moment).values_list("subject_hash", "agent", "at"):
        by_hash.setdefault(subject_hash, []).append((scope, at))
    return ErasedUsers(by_hash)
