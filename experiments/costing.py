"""THE hook between outcome ingestion and the costs app: tokens → inference cost on the ledger.

* :func:`price_rows` sets ``cost_usd`` on each outcome that carries tokens, at the price in force on
  the day it occurred (costs.selectors.price_in_force; a fine-tuned ``ft:<base>:…`` model without
  prices of its own is priced as its base) — only for a model registered for the event's agent. An
  outcome whose model has no price, or is not the agent's, keeps ``cost_usd``
  empty and is still accepted — a missing price must not lose the outcome — and a warning names the
  model once per batch, and :func:`uncharged_events` tells the sender in the 202 (``uncharged``).
* :func:`record_rows` puts the cost of the *newly accepted* outcomes on the ledger with
  costs.services.cost_record_many: one entry per (agent, model, day) per request, whose amount is the
  sum of the outcomes' own costs — each exact to the outcome column's eight places, the sum rounded
  once to the ledger's micro-dollar — so the ledger and the results page agree to the micro-dollar (a
  thousand one-token events at $0.25/M are $0.00025 on both, not $0 from rounding each first). The
  idempotency key is derived from the event ids, and only events the database just inserted are
  charged, so a resent batch is charged nothing.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.utils import timezone

from costs import pricing
from costs.models import Operation
from costs.selectors import price_in_force
from costs.services import Charge, cost_record_many
from experiments.models import OutcomeEvent
from genesis.errors import NotFound
from genesis.logging import Throttled
from models_app.registry.models import ModelVersion

logger = logging.getLogger(__name__)
_unpriced_warnings = Throttled(60.0)

# An outcome's cost as its column keeps it (OutcomeEvent.cost_usd, eight places), not the ledger's
# micro-dollar: the ledger entry sums many of them, and is rounded once (cost_record_many).
OUTCOME_COST_QUANTUM = Decimal(1).scaleb(-OutcomeEvent._meta.get_field("cost_usd").decimal_places)


def _local_day(moment: datetime, cache: dict[datetime, date]) -> date:
    # Most events of a batch share a timestamp (the receipt time); localdate is not free at 1 000 a batch.
    day = cache.get(moment)
    if day is None:
        day = cache[moment] = timezone.localdate(moment)
    return day


def price_rows(*, rows: list[dict[str, Any]]) -> None:
    """Set ``cost_usd`` on each row with tokens whose model is one of its agent's registered model
    versions and has a price that day. Tokens reported for any other model stay off the ledger
    (``uncharged`` names why): an agent's key must not be able to put spend on the shared budget — and so
    stop every agent's paid work — by naming an expensive model it does not run."""
    served = _registered_models(rows)
    prices: dict[tuple[str, date], Any] = {}
    unpriced: set[str] = set()
    days: dict[datetime, date] = {}
    for row in rows:
        input_tokens, output_tokens = row["input_tokens"], row["output_tokens"]
        if input_tokens is None and output_tokens is None:
            continue
        if (row["agent_id"], row["model"]) not in served:
            row["uncharged"] = UNREGISTERED
            continue
        day = _local_day(row["occurred_at"], days)
        key = (row["model"], day)
        if key not in prices:
            try:
                prices[key] = price_in_force(model=row["model"], on=day)
            except NotFound:
                prices[key] = None
                unpriced.add(row["model"])
        price = prices[key]
        if price is None:
            row["uncharged"] = UNPRICED
        else:
            row["cost_usd"] = pricing.inference_cost(
                price=price, input_tokens=input_tokens or 0, output_tokens=output_tokens or 0, quantum=OUTCOME_COST_QUANTUM
            )
    # Every batch of such a model meets it: once a minute per process and model, with the count held back.
    # Per model, not per set of models, so that a and b, then a, then b is two lines, not three.
    for model in sorted(unpriced):
        _unpriced_warnings.log(
            logger, logging.WARNING, model, "outcomes: no price for %s; its tokens are not on the ledger — add prices in "
            "the admin (Costs and budgets › Prices)", model,
        )


UNPRICED, UNREGISTERED = "unpriced", "unregistered"


def _registered_models(rows: list[dict[str, Any]]) -> set[tuple[int, str]]:
    """(agent id, model id) of the rows' agents' registered model versions, in one query."""
    with_tokens = [row for row in rows if row["input_tokens"] is not None or row["output_tokens"] is not None]
    if not with_tokens:
        return set()
    return set(ModelVersion.objects.filter(
        agent_id__in={row["agent_id"] for row in with_tokens}, model_id__in={row["model"] for row in with_tokens},
    ).values_list("agent_id", "model_id"))


def uncharged_events(*, rows: list[dict[str, Any]], agent_slugs: dict[int, str]) -> list[dict[str, Any]]:
    """What the answer to POST /outcomes says about the tokens that are not on the ledger: one entry
    per model and reason, `{"model", "indexes", "detail"}`, of the newly accepted `rows` (priced by
    price_rows, each with its ``index`` in the request) that carry tokens but were not charged. Sorted
    by model; empty when every token was charged. Grouped, not listed per event, so a batch of a
    thousand events of an unpriced model answers with one entry, not a thousand."""
    missing: dict[tuple[str, str], tuple[list[int], set[date], set[str]]] = {}
    days: dict[datetime, date] = {}
    for row in rows:
        reason = row.get("uncharged")
        if reason is not None and (row["input_tokens"] or row["output_tokens"]):
            indexes, on, agents = missing.setdefault((row["model"], reason), ([], set(), set()))
            indexes.append(row["index"])
            on.add(_local_day(row["occurred_at"], days))
            agents.add(agent_slugs[row["agent_id"]])
    return [
        {"model": model, "indexes": sorted(indexes), "detail": _uncharged_detail(model, reason, on, agents)}
        for (model, reason), (indexes, on, agents) in sorted(missing.items())
    ]


def _uncharged_detail(model: str, reason: str, on: set[date], agents: set[str]) -> str:
    if reason == UNREGISTERED:
        return (
            f"model '{model}' is not a registered model of {', '.join(repr(slug) for slug in sorted(agents))}: "
            "tokens are charged only for an agent's own model versions (its live model and candidates), so "
            "these events' tokens are not on the ledger; register the model for the agent in the admin if it "
            "really serves it"
        )
    return (
        f"no price for model '{model}' in force on {', '.join(day.isoformat() for day in sorted(on))}: these events' "
        "tokens are not on the ledger, and sending them again will not charge them (they are duplicates "
        "then); add the price in the admin (Costs and budgets › Prices) for the events to come"
    )


def record_rows(*, rows: list[dict[str, Any]], agents: dict[int, Any]) -> None:
    """`agents`: the Agent of each row's ``agent_id`` (the caller has loaded them already)."""
    groups: dict[tuple[int, str, date], list[dict[str, Any]]] = defaultdict(list)
    days: dict[datetime, date] = {}
    for row in rows:
        if row["cost_usd"] is not None:
            groups[(row["agent_id"], row["model"], _local_day(row["occurred_at"], days))].append(row)
    if not groups:
        return
    charges = []
    for (agent_id, model, day), members in groups.items():
        digest = hashlib.sha256("\n".join(sorted(row["event_id"] for row in members)).encode()).hexdigest()[:32]
        occurred_at: datetime = max(row["occurred_at"] for row in members)
        charges.append(Charge(
            agent=agents[agent_id],
            operation=Operation.INFERENCE,
            idempotency_key=f"outcomes:{agent_id}:{day.isoformat()}:{digest}",
            amount_usd=sum((row["cost_usd"] for row in members), Decimal(0)),
            model=model,
            input_tokens=sum(row["input_tokens"] or 0 for row in members),
            output_tokens=sum(row["output_tokens"] or 0 for row in members),
            source=f"outcomes: {len(members)} event(s), first {members[0]['event_id']}"[:300],
            occurred_at=occurred_at,
        ))
    cost_record_many(charges=charges)
