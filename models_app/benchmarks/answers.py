"""An answer to one (model, case) pair as the runner holds it before it is written, and the result row
it becomes (with the idempotency key its cost goes on the ledger under)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal

from genesis.integrity import UniqueKey
from models_app.benchmarks.models import BenchmarkResult

# How a result's error starts when the judge refused to grade its answer (the verdict counts them).
JUDGE_REFUSED = "judge refused: "


@dataclass
class Answer:
    """What a worker thread brings back for one (model, case) pair."""

    model_version_id: int
    case_id: int
    # scored | refused | transient | fatal | skipped, or unscored: the model answered (and was paid) but
    # its judge failed transiently, so the answer is kept for the retry.
    kind: str
    output: str = ""
    score: float = 0.0
    reason: str = ""
    error: str = ""
    finish_reason: str = ""
    latency_ms: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    judge_prompt_tokens: int = 0
    judge_completion_tokens: int = 0
    # Some of the counts above (the model's or a judge's) were estimated: the provider reported no usage.
    tokens_estimated: bool = False
    # Whether the judge calls of this round were among them: all a kept answer pays this round.
    judge_estimated_this_round: bool = False
    cost_usd: Decimal = Decimal(0)
    retry_after: float | None = None
    attempts: int = 0  # calls made for a transient failure (the per-call retries included)
    # False when the judge cannot be called at all: kept for its cost, counted in no mean.
    scored: bool = True
    # Set when this answer shows that no pair of the run can be graded (the judge's key is refused, say):
    # the answer is written, then the run fails with this.
    run_error: str = ""
    kept_id: int | None = None  # the BenchmarkUnscoredAnswer this answer was taken from
    # What that kept answer had cost before this round (its model, earlier judges), and its judge
    # tokens then: counted wherever the kept answer is counted.
    kept_cost_usd: Decimal = Decimal(0)
    kept_judge_tokens: tuple[int, int] = (0, 0)

    def spent_this_round(self) -> Answer:
        """This answer cut down to what this round paid: all of it, or for a kept answer only the
        judge calls made since it was kept."""
        if self.kept_id is None:
            return self
        return replace(
            self, cost_usd=self.cost_usd - self.kept_cost_usd, prompt_tokens=0, completion_tokens=0,
            judge_prompt_tokens=self.judge_prompt_tokens - self.kept_judge_tokens[0],
            judge_completion_tokens=self.judge_completion_tokens - self.kept_judge_tokens[1],
            tokens_estimated=self.judge_estimated_this_round,
        )


# A pair written already is refused by either constraint: its cost key is made of the pair (below), and
# which of the two PostgreSQL checks first is its business. Any other refusal is a defect.
RESULT_WRITTEN_ALREADY = (
    UniqueKey.constraint(BenchmarkResult, "unique_benchmark_result"),
    UniqueKey.field(BenchmarkResult, "cost_key"),
)


def result_cost_key(*, run_id: int, model_version_id: int, case_id: int) -> str:
    return f"benchmark:{run_id}:{model_version_id}:{case_id}"


def result_row(run_id: int, answer: Answer) -> BenchmarkResult:
    return BenchmarkResult(
        run_id=run_id, model_version_id=answer.model_version_id, case_id=answer.case_id, output=answer.output,
        score=answer.score, scored=answer.scored, reason=answer.reason[:300], error=answer.error, finish_reason=answer.finish_reason[:32],
        latency_ms=answer.latency_ms, prompt_tokens=answer.prompt_tokens, completion_tokens=answer.completion_tokens,
        judge_prompt_tokens=answer.judge_prompt_tokens, judge_completion_tokens=answer.judge_completion_tokens,
        tokens_estimated=answer.tokens_estimated, cost_usd=answer.cost_usd,
        cost_key=result_cost_key(run_id=run_id, model_version_id=answer.model_version_id, case_id=answer.case_id),
    )
