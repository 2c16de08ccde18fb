"""Benchmarks and the cost ledger: the estimate a run is held to against the budgets, posting each
result's cost (the result row is the outbox, posted by a `default`-queue task), charging answers paid
twice, and letting a finished run's budget hold go once everything is posted."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.db.models import Case, F, When
from django.utils import timezone

from costs.models import Operation
from costs.pricing import Price, inference_cost
from costs.selectors import ledger_keys_recorded, price_in_force
from costs.services import Charge, cost_hold_release, cost_record_many
from genesis.errors import Conflict, NotFound
from genesis.tasks import send_on_commit
from models_app.benchmarks.answers import Answer, result_cost_key
from models_app.benchmarks.models import FINISHED_RUN_STATUSES, BenchmarkCase, BenchmarkResult, BenchmarkRun
from models_app.benchmarks.scorers import DEFAULT_JUDGE_MODEL, uses_judge
from models_app.benchmarks.suites import case_messages
from models_app.registry.models import ModelVersion

logger = logging.getLogger(__name__)


CHARS_PER_TOKEN_ESTIMATE = 4


def estimate_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN_ESTIMATE))


def price_for_estimate(model: str, base_model: str | None) -> Price:
    """The price in force for `model` (costs app), or a Conflict saying where to add it."""

    try:
        return price_in_force(model=model, base_model=base_model)
    except NotFound as exc:
        raise Conflict(f"cannot estimate the benchmark's cost: {exc.message}") from None


def benchmark_cost_estimate(
    *, cases: list[BenchmarkCase], versions: list[ModelVersion], parameters: Mapping[str, Any]
) -> Decimal:
    """Dollars the run should cost: prompt tokens (about four characters each) plus a reply of
    twice the reference's length (at least 64 tokens, at most max_tokens) per case and model, plus
    the judge's calls for llm_judge cases. An estimate for the budget check, not a bill."""

    max_tokens = int(parameters.get("max_tokens") or 512)
    system_prompt = str(parameters.get("system_prompt") or "")
    judge_price = None
    total = Decimal(0)
    for version in versions:
        price = price_for_estimate(version.model_id, version.base_model)
        for case in cases:
            prompt = sum(estimate_tokens(m.get("content", "")) for m in case_messages(case_messages=case.messages, system_prompt=system_prompt))
            reference = "" if case.reference is None else str(case.reference)
            reply = min(max_tokens, max(64, 2 * estimate_tokens(reference)))
            total += inference_cost(price=price, input_tokens=prompt, output_tokens=reply)
            if uses_judge(case.scorer):
                if judge_price is None:
                    judge_price = price_for_estimate(str(parameters.get("judge_model") or DEFAULT_JUDGE_MODEL), None)
                judge_prompt = prompt + reply + estimate_tokens(str(case.scorer)) + 120
                total += inference_cost(price=judge_price, input_tokens=judge_prompt, output_tokens=64)
    return total


@transaction.atomic
def benchmark_run_post_costs(*, run_id: int, batch_size: int = 200) -> int:
    """Put the run's results on the ledger: one entry per paid result, under its cost key, and the
    results marked posted in the same transaction. The batch goes in with costs.cost_record_many (one
    lock of the budgets, one insert, thresholds checked once) rather than one cost_record each, which
    cost more CPU than the benchmark's own provider calls. Idempotent, and several calls may run at
    once (each takes rows the others have not locked). Returns how many results it posted."""

    run = BenchmarkRun.objects.select_related("agent").get(pk=run_id)
    rows = list(
        BenchmarkResult.objects.select_for_update(skip_locked=True, of=("self",))
        .filter(run_id=run_id, cost_posted_at__isnull=True)
        .select_related("model_version", "case")
        .order_by("pk")[:batch_size]
    )
    cost_record_many(charges=[
        Charge(
            agent=run.agent, operation=Operation.BENCHMARK, idempotency_key=row.cost_key, amount_usd=row.cost_usd,
            model=row.model_version.model_id, base_model=row.model_version.base_model,
            input_tokens=row.prompt_tokens + row.judge_prompt_tokens,
            output_tokens=row.completion_tokens + row.judge_completion_tokens, tokens_estimated=row.tokens_estimated,
            source=f"benchmark run #{run.pk}: case {row.case.key} on {row.model_version.model_id}", source_object=row,
        )
        for row in rows
        if row.cost_usd  # nothing was paid (e.g. the provider refused the case)
    ])
    BenchmarkResult.objects.filter(pk__in=[row.pk for row in rows]).update(cost_posted_at=timezone.now())
    return len(rows)


def benchmark_run_post_all_costs(*, run_id: int) -> int:
    """`benchmark_run_post_costs` until nothing is left (each batch commits on its own, so the
    budget rows are never locked for long), then let a finished run's budget hold go."""
    total = 0
    while posted := benchmark_run_post_costs(run_id=run_id):
        total += posted
    with transaction.atomic():
        # The run's row lock orders this after a finishing transaction, so that between the two of
        # them one always sees the run finished and every result posted.
        release_budget_when_settled(BenchmarkRun.objects.select_for_update().get(pk=run_id))
    return total


def release_budget_when_settled(run: BenchmarkRun) -> None:
    """A finished run whose results are all on the ledger holds no budget any more (its real cost
    is spent now). Called when a run finishes and after each posting; idempotent."""

    if run.is_finished and not BenchmarkResult.objects.filter(run_id=run.pk, cost_posted_at__isnull=True).exists():
        cost_hold_release(source=run)


def post_costs_on_commit(run_id: int) -> None:
    # Results not posted stay marked so: the resume sweep posts them.
    send_on_commit("models_app.benchmark_costs_post", run_id, what=f"the ledger posting of benchmark run #{run_id}")


def cost_if_run_ended(cost: Decimal) -> Case:
    """The run's cost_usd plus `cost` when the run has ended, else unchanged. A run cancelled or
    failed while answers were in flight summed its cost without them: they add theirs. Evaluated on
    the row as the UPDATE finds it once the ending transaction committed, so each answer is counted
    either there or here, never both."""
    return Case(When(status__in=FINISHED_RUN_STATUSES, then=F("cost_usd") + cost), default=F("cost_usd"))


def charge_paid_twice(run: BenchmarkRun, answers: Sequence[Answer], *, attempt: str) -> None:
    """Put on the ledger, against the run itself, what was paid for pairs whose result another
    answer had already written — a chunk handed on while its first holder still ran, or a kept
    answer judged again after its run ended: no result row carries that money, but it was spent.
    Inside the writing transaction. One entry per pair and `attempt` (the chunk's claim, or the
    run's end), so writing the same answers again charges nothing more. The run's row is locked
    first, as for late results, so a run ending meanwhile counts each such answer once
    (benchmark_run_cost sums these entries with the results)."""

    paid = [answer.spent_this_round() for answer in answers]
    keyed = {
        f"{result_cost_key(run_id=run.pk, model_version_id=a.model_version_id, case_id=a.case_id)}:paid-again:{attempt}": a
        for a in paid
        if a.cost_usd
    }
    for key in ledger_keys_recorded(keys=keyed):
        del keyed[key]  # charged when these answers were written before
    if not keyed:
        return
    cost = sum((answer.cost_usd for answer in keyed.values()), Decimal(0))
    BenchmarkRun.objects.filter(pk=run.pk).update(cost_usd=cost_if_run_ended(cost))
    versions = ModelVersion.objects.in_bulk({answer.model_version_id for answer in keyed.values()})
    case_keys = dict(BenchmarkCase.objects.filter(pk__in={answer.case_id for answer in keyed.values()}).values_list("pk", "key"))
    cost_record_many(charges=[
        Charge(
            agent=run.agent, operation=Operation.BENCHMARK, idempotency_key=key, amount_usd=answer.cost_usd,
            model=versions[answer.model_version_id].model_id, base_model=versions[answer.model_version_id].base_model,
            input_tokens=answer.prompt_tokens + answer.judge_prompt_tokens,
            output_tokens=answer.completion_tokens + answer.judge_completion_tokens,
            tokens_estimated=answer.tokens_estimated,
            source=f"benchmark run #{run.pk}: case {case_keys[answer.case_id]} on "
                   f"{versions[answer.model_version_id].model_id} paid again ({attempt}) after its result was written",
            source_object=run,
        )
        for key, answer in keyed.items()
    ])
