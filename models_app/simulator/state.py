"""The simulator's memory: uploaded files, fine-tuning jobs, and the fault sequence.

A job's status is not advanced by a background thread: it is computed from the wall clock each time
the job is read (created -> validated -> started -> finished), so the simulator needs no scheduler
and a job read at the same moment always says the same thing.

File and job ids are unique per start unless the seed was given explicitly (`fixed_ids`), as a real
provider's are never handed out twice: the memory is lost when the simulator stops, and a client that
kept an id from an earlier start must get "not found" for it, never another file or job under the same
id. Everything else follows the seed.
"""

from __future__ import annotations

import math
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from .catalog import BASE_MODELS_BY_ID, base_model_card, fine_tuned_model_card, training_cost_usd
from .config import SimulatorConfig
from .responder import stable_hash
from .training_data import summarize_training_file

T = TypeVar("T")

TOKENS_PER_STEP = 131_072  # what Mistral reports as train_tokens_per_step for small models
CHECKPOINTS_PER_JOB = 4
FAILURE_SUFFIX = "simulate-failure"  # a job created with this suffix fails halfway (to exercise FAILED)
TERMINAL_STATUSES = frozenset({"SUCCESS", "FAILED", "FAILED_VALIDATION", "CANCELLED"})


class SimulatorError(Exception):
    """An error answer, shaped like Mistral's: {"object": "error", "message", "type", "param", "code"}.

    `detail` (FastAPI-style [{"loc", "msg", "type"}]) is added for 422s, which the SDK parses as
    HTTPValidationError on the routes that declare one.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        error_type: str = "invalid_request_error",
        param: str | None = None,
        detail: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.param = param
        self.detail = detail

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "object": "error",
            "message": self.message,
            "type": self.error_type,
            "param": self.param,
            "code": str(self.status),
        }
        if self.detail is not None:
            body["detail"] = self.detail
        return body


@dataclass(frozen=True)
class StoredFile:
    id: str
    filename: str
    purpose: str
    size_bytes: int
    created_at: int
    num_lines: int
    tokens: int
    line_digests: frozenset[int]
    # Kept to be served back (GET /v1/files/{id}/content), as Mistral does.
    content: bytes = field(default=b"", repr=False)

    def card(self, *, retrieved: bool) -> dict[str, Any]:
        card: dict[str, Any] = {
            "id": self.id,
            "object": "file",
            "bytes": self.size_bytes,
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "sample_type": "instruct",
            "source": "upload",
            "num_lines": self.num_lines,
            "mimetype": "application/jsonl",
            "signature": None,
        }
        if retrieved:
            card["deleted"] = False
        return card


@dataclass
class SimulatedJob:
    id: str
    base_model: str
    training_file_ids: list[str]
    validation_file_ids: list[str]
    hyperparameters: dict[str, Any]
    suffix: str | None
    auto_start: bool
    created_at: float
    validated_at: float
    validation_error: str | None
    duration_seconds: float
    cancel_seconds: float
    data_tokens: int
    train_tokens: int
    training_steps: int
    cost_usd: float
    fine_tuned_model: str
    started_at: float | None = None
    cancel_requested_at: float | None = None
    modified_at: float = 0.0
    integrations: list[dict[str, Any]] = field(default_factory=list)

    @property
    def start_time(self) -> float | None:
        if self.started_at is not None:
            return self.started_at
        return self.validated_at if self.auto_start and not self.validation_error else None

    def milestones(self, now: float) -> list[tuple[float, str]]:
        """(time, status) transitions that have happened by `now`, oldest first."""
        planned: list[tuple[float, str]] = [(self.created_at, "QUEUED")]
        planned.append((self.validated_at, "FAILED_VALIDATION" if self.validation_error else "VALIDATED"))
        start = self.start_time
        if start is not None:
            planned.append((start, "RUNNING"))
            if self.suffix == FAILURE_SUFFIX:
                planned.append((start + self.duration_seconds / 2, "FAILED"))
            else:
                planned.append((start + self.duration_seconds, "SUCCESS"))
        if self.cancel_requested_at is not None:
            cancel = self.cancel_requested_at
            planned = [milestone for milestone in planned if milestone[0] <= cancel]
            planned += [(cancel, "CANCELLATION_REQUESTED"), (cancel + self.cancel_seconds, "CANCELLED")]
        return [milestone for milestone in planned if milestone[0] <= now]

    def status(self, now: float) -> str:
        return self.milestones(now)[-1][1]

    def trained_fraction(self, now: float) -> float | None:
        """How much of the training has run by `now`; None if it never started."""
        start = self.start_time
        if start is None or now < start:
            return None
        stop = now
        if self.cancel_requested_at is not None:
            stop = min(stop, self.cancel_requested_at)
        if self.suffix == FAILURE_SUFFIX:
            stop = min(stop, start + self.duration_seconds / 2)
        if self.duration_seconds == 0:
            return 1.0 if stop >= start else 0.0
        return max(0.0, min(1.0, (stop - start) / self.duration_seconds))


class SimulatorState:
    def __init__(self, config: SimulatorConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self._lock = threading.RLock()
        self._files: dict[str, StoredFile] = {}
        self._jobs: dict[str, SimulatedJob] = {}
        self._id_counters: dict[str, int] = {}
        # Mixed into file and job ids: a restarted simulator (same seed, counters from 1) must not
        # re-issue an id an earlier start gave out.
        self.instance = "" if config.fixed_ids else uuid.uuid4().hex
        self._fault_draws = random.Random(stable_hash(config.seed, "faults"))
        self._forced_faults: deque[int | None] = deque()
        self._chat_counter = 0
        self.request_log: deque[tuple[str, str, int]] = deque(maxlen=10_000)  # (method, path, status)

    # ---- identifiers -------------------------------------------------------------------------
    def _next_id(self, kind: str) -> str:
        """A UUID of this start: from the seed, the start's own random part and how many of `kind`
        came before, so no two starts hand out the same id."""
        with self._lock:
            number = self._id_counters.get(kind, 0) + 1
            self._id_counters[kind] = number
        parts = (self.config.seed, self.instance, kind, number)
        high, low = stable_hash(*parts), stable_hash(*parts, "low")
        return str(uuid.UUID(int=(high << 64) | low, version=4))

    def next_completion_id(self) -> str:
        with self._lock:
            self._chat_counter += 1
            number = self._chat_counter
        return f"cmpl-{stable_hash(self.config.seed, 'chat', number):016x}"

    # ---- fault injection ---------------------------------------------------------------------
    def queue_faults(self, *statuses: int | None) -> None:
        """Force the next requests to fail with these statuses (429, 4xx or 5xx), in order; None lets its
        request through (to fail a later one). For tests."""
        with self._lock:
            self._forced_faults.extend(statuses)

    def next_fault(self) -> int | None:
        """The status this request must fail with, or None. Same seed, same sequence."""
        with self._lock:
            if self._forced_faults:
                return self._forced_faults.popleft()
            if self.config.error_rate <= 0:
                return None
            failed = self._fault_draws.random() < self.config.error_rate
            kind = self._fault_draws.random()
            if not failed:
                return None
            return 429 if kind < 0.5 else 500

    def record_request(self, *, method: str, path: str, status: int) -> None:
        with self._lock:
            self.request_log.append((method, path, status))

    # ---- files -------------------------------------------------------------------------------
    def upload_file(self, *, filename: str, purpose: str, content: bytes) -> StoredFile:
        summary = summarize_training_file(content, stable_hash=stable_hash)
        if purpose == "fine-tune" and not summary.valid:
            first = summary.problems[0]
            more = f" (and {len(summary.problems) - 1} more problems)" if len(summary.problems) > 1 else ""
            raise SimulatorError(
                422,
                f"Invalid file format: {filename}: line {first.line}: {first.detail}{more}",
                error_type="invalid_request_file",
                param="file",
                detail=[
                    {"loc": ["body", "file", "line", problem.line], "msg": problem.detail, "type": "value_error"}
                    for problem in summary.problems
                ],
            )
        stored = StoredFile(
            id=self._next_id("file"),
            filename=filename,
            purpose=purpose,
            size_bytes=len(content),
            created_at=int(self.clock()),
            num_lines=summary.num_lines,
            tokens=summary.tokens,
            line_digests=summary.line_digests,
            content=content,
        )
        with self._lock:
            self._files[stored.id] = stored
        return stored

    def get_file(self, file_id: str) -> StoredFile:
        return self._stored(self._files, file_id, kind="File", param="file_id")

    # ---- fine-tuning jobs --------------------------------------------------------------------
    def create_job(self, request: Mapping[str, Any]) -> SimulatedJob:
        base_model = request.get("model")
        if not isinstance(base_model, str) or not base_model:
            raise _missing_field("model")
        base = BASE_MODELS_BY_ID.get(base_model)
        if base is None or not base.fine_tunable:
            raise SimulatorError(
                400,
                f"Model '{base_model}' is not available for fine-tuning; fine-tunable models: "
                + ", ".join(model.id for model in BASE_MODELS_BY_ID.values() if model.fine_tunable),
                error_type="invalid_model",
                param="model",
            )
        if (request.get("job_type") or "completion") != "completion":
            raise SimulatorError(422, "The simulator only runs 'completion' fine-tuning jobs", param="job_type")
        training_file_ids = [_training_file_id(item) for item in request.get("training_files") or []]
        if not training_file_ids:
            raise _missing_field("training_files")
        validation_file_ids = [str(file_id) for file_id in request.get("validation_files") or []]
        training_files = [self.get_file(file_id) for file_id in training_file_ids]
        validation_files = [self.get_file(file_id) for file_id in validation_file_ids]
        hyperparameters = _checked_hyperparameters(request.get("hyperparameters") or {})

        data_tokens = sum(stored.tokens for stored in training_files)
        if hyperparameters.get("training_steps") is not None:
            train_tokens = int(hyperparameters["training_steps"]) * TOKENS_PER_STEP
        else:
            train_tokens = math.ceil(data_tokens * float(hyperparameters.get("epochs") or 1.0))
        now = self.clock()
        job_id = self._next_id("job")
        suffix = request.get("suffix")
        job = SimulatedJob(
            id=job_id,
            base_model=base_model,
            training_file_ids=training_file_ids,
            validation_file_ids=validation_file_ids,
            hyperparameters=hyperparameters,
            suffix=suffix if isinstance(suffix, str) and suffix else None,
            auto_start=bool(request.get("auto_start", True)),
            created_at=now,
            validated_at=now + self.config.validation_seconds,
            validation_error=_validation_error(training_files, validation_files),
            duration_seconds=self.config.job_seconds,
            cancel_seconds=self.config.cancel_seconds,
            data_tokens=data_tokens,
            train_tokens=train_tokens,
            training_steps=int(
                hyperparameters.get("training_steps")
                or max(CHECKPOINTS_PER_JOB, math.ceil(train_tokens / TOKENS_PER_STEP))
            ),
            cost_usd=training_cost_usd(base_model_id=base_model, train_tokens=train_tokens),
            fine_tuned_model=self._fine_tuned_model_name(base_model=base_model, job_id=job_id, created_at=now),
            modified_at=now,
            integrations=list(request.get("integrations") or []),
        )
        with self._lock:
            self._jobs[job.id] = job
        return job

    def _fine_tuned_model_name(self, *, base_model: str, job_id: str, created_at: float) -> str:
        """ft:<base>:<8hex workspace>:<yyyymmdd>:<8hex job>, as Mistral names them."""
        workspace = f"{stable_hash(self.config.seed, 'workspace'):016x}"[:8]
        day = datetime.fromtimestamp(created_at, tz=UTC).strftime("%Y%m%d")
        model_hex = f"{stable_hash(self.config.seed, 'model', job_id):016x}"[:8]
        return f"ft:{base_model}:{workspace}:{day}:{model_hex}"

    def get_job(self, job_id: str) -> SimulatedJob:
        return self._stored(self._jobs, job_id, kind="Job", param="job_id")

    def _stored(self, table: Mapping[str, T], key: str, *, kind: str, param: str) -> T:
        """What `table` holds under `key`, or the 404 Mistral answers for an unknown id."""
        with self._lock:
            found = table.get(key)
        if found is None:
            raise SimulatorError(404, f"{kind} not found: {key}", error_type="not_found", param=param)
        return found

    def list_jobs(self, *, model: str | None, status: str | None, suffix: str | None) -> list[SimulatedJob]:
        now = self.clock()
        with self._lock:
            jobs = list(self._jobs.values())
        return [
            job
            for job in sorted(jobs, key=lambda job: job.created_at, reverse=True)
            if (model is None or job.base_model == model)
            and (status is None or job.status(now) == status)
            and (suffix is None or job.suffix == suffix)
        ]

    def start_job(self, job_id: str) -> SimulatedJob:
        with self._lock:
            job = self.get_job(job_id)
            now = self.clock()
            if job.status(now) == "QUEUED":
                # Starting a job that is still validating finishes its validation first.
                job.validated_at = now
            status = job.status(now)
            if status != "VALIDATED":
                raise SimulatorError(
                    409,
                    f"Job {job_id} is {status}; only a VALIDATED job can be started"
                    + (f" ({job.validation_error})" if job.validation_error else ""),
                    error_type="invalid_request_job",
                )
            job.started_at = now
            job.modified_at = now
            return job

    def cancel_job(self, job_id: str) -> SimulatedJob:
        with self._lock:
            job = self.get_job(job_id)
            now = self.clock()
            status = job.status(now)
            if status in TERMINAL_STATUSES or status == "CANCELLATION_REQUESTED":
                raise SimulatorError(409, f"Job {job_id} is {status} and cannot be cancelled", error_type="invalid_request_job")
            job.cancel_requested_at = now
            job.modified_at = now
            return job

    def job_body(self, job: SimulatedJob, *, detailed: bool) -> dict[str, Any]:
        """The job as the SDK's CompletionJobOut (or CompletionDetailedJobOut) expects it."""
        now = self.clock()
        milestones = job.milestones(now)
        status = milestones[-1][1]
        fraction = job.trained_fraction(now)
        body: dict[str, Any] = {
            "id": job.id,
            "object": "job",
            "job_type": "completion",
            "auto_start": job.auto_start,
            "model": job.base_model,
            "status": status,
            "created_at": int(job.created_at),
            "modified_at": int(max(job.modified_at, milestones[-1][0])),
            "training_files": job.training_file_ids,
            "validation_files": job.validation_file_ids,
            "hyperparameters": job.hyperparameters,
            "fine_tuned_model": job.fine_tuned_model if status == "SUCCESS" else None,
            "suffix": job.suffix,
            "integrations": job.integrations,
            "trained_tokens": None if fraction is None else int(job.train_tokens * fraction),
            "repositories": [],
            "metadata": {
                "expected_duration_seconds": math.ceil(job.duration_seconds),
                "cost": job.cost_usd,
                "cost_currency": "USD",
                "train_tokens_per_step": TOKENS_PER_STEP,
                "train_tokens": job.train_tokens,
                "data_tokens": job.data_tokens,
                "estimated_start_time": None if job.start_time is None else int(job.start_time),
            },
        }
        if detailed:
            body["events"] = [
                {
                    "name": "status-updated",
                    "created_at": int(moment),
                    "data": {"status": milestone_status}
                    | ({"error": job.validation_error} if milestone_status == "FAILED_VALIDATION" else {}),
                }
                for moment, milestone_status in milestones
            ]
            body["checkpoints"] = self._checkpoints(job, now)
        return body

    def _checkpoints(self, job: SimulatedJob, now: float) -> list[dict[str, Any]]:
        start = job.start_time
        fraction = job.trained_fraction(now)
        if start is None or fraction is None:
            return []
        checkpoints = []
        for number in range(1, CHECKPOINTS_PER_JOB + 1):
            if number / CHECKPOINTS_PER_JOB > fraction + 1e-9:
                break
            # A loss curve that falls and flattens, with a little seed-dependent wobble.
            wobble = (stable_hash(self.config.seed, job.id, number) % 1000) / 20_000
            train_loss = round(2.2 * 0.7**number + 0.3 + wobble, 4)
            metrics: dict[str, Any] = {"train_loss": train_loss, "valid_loss": None, "valid_mean_token_accuracy": None}
            if job.validation_file_ids:
                metrics["valid_loss"] = round(train_loss * 1.08, 4)
                metrics["valid_mean_token_accuracy"] = round(min(0.99, 0.55 + 0.09 * number - wobble), 4)
            checkpoints.append(
                {
                    "metrics": metrics,
                    "step_number": job.training_steps * number // CHECKPOINTS_PER_JOB,
                    "created_at": int(start + job.duration_seconds * number / CHECKPOINTS_PER_JOB),
                }
            )
        return list(reversed(checkpoints))  # newest first, as Mistral lists them

    # ---- models ------------------------------------------------------------------------------
    def model_cards(self) -> list[dict[str, Any]]:
        """Base models, then every model a job has produced (oldest first)."""
        now = self.clock()
        with self._lock:
            jobs = sorted(self._jobs.values(), key=lambda job: job.created_at)
        cards = [base_model_card(model) for model in BASE_MODELS_BY_ID.values()]
        for job in jobs:
            if job.status(now) == "SUCCESS":
                finished = int(job.milestones(now)[-1][0])
                cards.append(fine_tuned_model_card(model_id=job.fine_tuned_model, job_id=job.id, created=finished))
        return cards

    def model_card(self, model_id: str) -> dict[str, Any]:
        for card in self.model_cards():
            if card["id"] == model_id:
                return card
        raise SimulatorError(404, f"Model not found: {model_id}", error_type="invalid_model", param="model_id")


def _missing_field(name: str) -> SimulatorError:
    return SimulatorError(
        422,
        f"Field required: {name}",
        param=name,
        detail=[{"loc": ["body", name], "msg": "Field required", "type": "missing"}],
    )


def _training_file_id(item: Any) -> str:
    if isinstance(item, Mapping) and item.get("file_id"):
        return str(item["file_id"])
    if isinstance(item, str):  # older clients sent bare ids
        return item
    raise SimulatorError(422, "training_files entries need a 'file_id'", param="training_files")


_HYPERPARAMETER_RANGES: dict[str, tuple[float, float]] = {
    "learning_rate": (1e-8, 1.0),
    "epochs": (0.01, 100.0),
    "training_steps": (1, 10_000),
    "weight_decay": (0.0, 1.0),
    "warmup_fraction": (0.0, 1.0),
    "fim_ratio": (0.0, 1.0),
    "seq_len": (100, 131_072),
}


def _checked_hyperparameters(raw: Mapping[str, Any]) -> dict[str, Any]:
    checked: dict[str, Any] = {"learning_rate": 0.0001}
    for name, value in raw.items():
        if value is None:
            continue
        bounds = _HYPERPARAMETER_RANGES.get(name)
        if bounds is None:
            raise SimulatorError(422, f"Unknown hyperparameter: {name}", param=f"hyperparameters.{name}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not bounds[0] <= value <= bounds[1]:
            raise SimulatorError(
                422,
                f"hyperparameters.{name} must be a number between {bounds[0]} and {bounds[1]}, got {value!r}",
                param=f"hyperparameters.{name}",
            )
        checked[name] = value
    return checked


def _validation_error(training_files: list[StoredFile], validation_files: list[StoredFile]) -> str | None:
    """Why validation fails (the job then ends FAILED_VALIDATION), or None."""
    for stored in training_files + validation_files:
        if stored.purpose != "fine-tune":
            return f"file {stored.id} was uploaded with purpose '{stored.purpose}', not 'fine-tune'"
    training_lines = frozenset().union(*(stored.line_digests for stored in training_files))
    for stored in validation_files:
        overlap = len(training_lines & stored.line_digests)
        if overlap:
            return f"validation file {stored.id} repeats {overlap} training samples; the two sets must not overlap"
    return None
