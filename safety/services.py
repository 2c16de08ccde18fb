"""Every write of the safety app: prompt sets, WaltzRL builds and their items, the build's files and
the Stage-1 fine-tuning job.

How a build goes (the admin and `prepare_waltzrl` both start it with `waltz_build_create`):

1. `waltz_build_create` scrubs PII from the prompts (audits' scrubber), removes exact and near
   duplicates and prompts that nearly repeat a benchmark case (contamination), splits train /
   validation by a seeded hash, picks the prompts the target and mix need (plus a margin for examples
   the checks will drop) — never more than there are —, estimates the cost, checks it against the
   budget and holds it (costs.budget_check, operation `data_prep`), writes one WaltzItem per prompt and
   queues the build.
2. `waltz_build_execute` (the Celery task; the command may run it in-process) takes the build under a
   Postgres advisory lock and works through the items not done: the conversation agent answers, the
   judge labels (invalid JSON asked again, up to MAX_JUDGE_ATTEMPTS, then counted invalid), the
   refusal detector cross-checks and the prompt's kind bounds the labels (safety/labels.py), and where
   the labels ask for it one revision is asked. Each answer is written to its item together with its
   ledger entry (idempotency key per item and step) in one transaction, so a killed worker's
   successor skips what is stored: only calls in flight at the kill are asked again.
3. `_finish` assembles the four files (Mistral chat format), removes duplicate examples, selects the
   mix, writes them as audited datasets (audits' own audit_file + dataset_record_audit), stores the
   validation report and releases the budget hold.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from audits.formats import conversation_text
from audits.models import DatasetPurpose
from audits.report import audit_file
from audits.scrub import Scrubber
from audits.services import dataset_file_open, dataset_record_audit
from costs.models import Operation
from costs.pricing import inference_cost
from costs.selectors import fine_tuning_cost, price_in_force
from costs.services import budget_check, cost_hold_release, cost_record
from genesis.aggregates import DecimalTotal
from genesis.errors import Conflict, InvalidInput, NotFound
from genesis.jobs import advance
from genesis.locks import worker_lock
from genesis.permissions import Actor, require_permission
from genesis.tasks import send_on_commit
from models_app.benchmarks.limits import ProviderLimiter
from models_app.benchmarks.models import BenchmarkCase
from models_app.benchmarks.runner import provider_limiter
from models_app.benchmarks.scorers import DEFAULT_JUDGE_MODEL
from models_app.finetuning.models import FineTuningJob
from models_app.finetuning.rules import CHARS_PER_TOKEN
from models_app.finetuning.services import finetuning_job_create
from models_app.finetuning.training_files import training_file_upload
from models_app.providers import PermanentProviderError, call_with_retries
from models_app.providers.base import ChatProvider, ChatResult
from models_app.providers.retry import BATCH_CALL_RETRY
from models_app.registry.gateway import generation_parameters, provider_for
from models_app.registry.models import Agent, ModelVersion, ProviderAccount
from models_app.registry.selectors import baseline_version, live_version
from models_app.simulator.markers import strip_answer_markers
from safety import labels, selection
from safety.importing import parse_prompts, storable
from safety.models import (
    BUILD_TRANSITIONS,
    BuildStatus,
    PromptKind,
    PromptSet,
    PromptSetOrigin,
    SafetyPrompt,
    WaltzBuild,
    WaltzItem,
)
from safety.selectors import LOCK_NAMESPACE, STRANDED_AFTER_SECONDS, waltz_builds_stranded

logger = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parent / "data"
BUILTIN_FILES = {PromptKind.BORDERLINE: "borderline.jsonl", PromptKind.ADVERSARIAL: "adversarial.jsonl"}
DEFAULT_TARGET = 2000
MAX_TARGET = 4000
DEFAULT_MIX = {PromptKind.ADVERSARIAL.value: 50, PromptKind.BORDERLINE.value: 50}
DEFAULT_VALIDATION = 0.1
# Prompts picked beyond the target's share, because the checks drop some examples (invalid judge JSON,
# judge/detector disagreements, failed revisions, duplicate answers).
SELECTION_MARGIN = 0.25
MAX_JUDGE_ATTEMPTS = 3
MAX_BUILD_ATTEMPTS = 8
CONVERSATION_MAX_TOKENS = 400
JUDGE_MAX_TOKENS = 300
HOLD_LASTS = timedelta(days=1)
STAGE1_EPOCHS = 3
MAX_SHOWN = 50
# How long a request creating a build's Stage-1 job may take (uploads and the provider's answer) before
# its claim counts as a process that died, and another request may create it.
FINETUNE_CLAIM_LASTS = timedelta(minutes=15)


# --- prompt sets -----------------------------------------------------------------------------------------


@transaction.atomic
def prompt_set_import(
    *,
    content: bytes,
    name: str,
    kind: str,
    field: str = "prompt",
    category_field: str = "category",
    source_field: str = "source",
    origin: str = PromptSetOrigin.IMPORT,
    actor: Actor = None,
) -> PromptSet:
    """Keep the prompts of a JSONL or CSV file as a set of one kind. Malformed lines are skipped and
    named (line and reason) on the set; a file without one usable prompt is refused. The same bytes
    imported again (same kind and field) return the earlier set."""
    require_permission(actor=actor, permission="safety.add_promptset", action="import prompt sets")
    if kind not in PromptKind.values:
        raise InvalidInput(f"kind: '{kind}' is not one of {', '.join(PromptKind.values)}")
    field = (field or "prompt").strip()
    sha256 = hashlib.sha256(content).hexdigest()
    existing = PromptSet.objects.filter(sha256=sha256, kind=kind, prompt_field=field).first()
    if existing is not None:
        return existing
    default_source = "genesis-synthetic" if origin == PromptSetOrigin.BUILTIN else Path(name).stem[:100]
    parsed = parse_prompts(content, name=name, field=field, category_field=category_field, source_field=source_field,
                           default_source=default_source)
    if not parsed.rows:
        shown = "; ".join(f"line {line}: {detail}" for line, detail in parsed.problems[:5])
        raise InvalidInput(f"{name}: no usable prompt in field '{field}'" + (f" — {shown}" if shown else " (the file is empty)"))
    prompt_set = PromptSet.objects.create(
        name=Path(name).name[:200], kind=kind, origin=origin, file_name=Path(name).name[:255], prompt_field=field,
        sha256=sha256, prompt_count=len(parsed.rows), problem_count=parsed.problem_count,
        problems=[{"line": line, "detail": detail} for line, detail in parsed.problems], created_by=actor,
    )
    SafetyPrompt.objects.bulk_create([
        SafetyPrompt(prompt_set=prompt_set, line=row.line, text=row.prompt, category=row.category, source=row.source)
        for row in parsed.rows
    ])
    return prompt_set


def prompt_sets_builtin() -> list[PromptSet]:
    """The built-in synthetic sets (safety/data/), imported once."""
    return [
        prompt_set_import(content=(DATA_DIR / file_name).read_bytes(), name=f"builtin-{file_name}", kind=kind,
                          origin=PromptSetOrigin.BUILTIN)
        for kind, file_name in BUILTIN_FILES.items()
    ]


# --- creating a build ----------------------------------------------------------------------------------


def parse_mix(text: str) -> dict[str, int]:
    """`"50,50"` → {"adversarial": 50, "borderline": 50}; InvalidInput when it is not two percentages summing to 100."""
    try:
        values = [int(part) for part in str(text).split(",")]
    except ValueError:
        raise InvalidInput(f"mix: '{text}' must be two whole percentages, adversarial,borderline (e.g. 50,50)") from None
    if len(values) != 2 or sum(values) != 100 or min(values) < 0:
        raise InvalidInput(f"mix: '{text}' must be two non-negative percentages summing to 100 (adversarial,borderline)")
    return {PromptKind.ADVERSARIAL.value: values[0], PromptKind.BORDERLINE.value: values[1]}


def _check_parameters(*, target: int, mix: dict[str, int], validation: float) -> None:
    if not 1 <= target <= MAX_TARGET:
        raise InvalidInput(f"target: {target} must be between 1 and {MAX_TARGET} examples per file")
    if set(mix) != set(PromptKind.values) or sum(mix.values()) != 100 or min(mix.values()) < 0:
        raise InvalidInput(f"mix: {mix} must give adversarial and borderline percentages summing to 100")
    if not 0 <= validation <= 0.5:
        raise InvalidInput(f"validation: {validation} must be between 0 and 0.5 (the share held out)")


def _tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


def _price(model: str, base_model: str | None = None) -> Any:
    try:
        return price_in_force(model=model, base_model=base_model)
    except NotFound as exc:
        raise Conflict(f"cannot estimate the WaltzRL build's cost: {exc.message}") from None


def build_cost_estimate(*, texts: Sequence[str], conversation: ModelVersion, judge_model: str) -> Decimal:
    """Dollars a build should cost: per prompt one answer (up to 160 tokens assumed), one judge call
    (rubric + exchange in, 100 out), a retry for one judge call in ten, and a revision for one prompt
    in three. An estimate for the budget check, not a bill."""
    conversation_price = _price(conversation.model_id, conversation.base_model)
    judge_price = _price(judge_model)
    rubric = _tokens(labels.JUDGE_SYSTEM_PROMPT)
    total = Decimal(0)
    for text in texts:
        prompt = _tokens(text)
        answer = inference_cost(price=conversation_price, input_tokens=prompt + 8, output_tokens=160)
        judged = inference_cost(price=judge_price, input_tokens=rubric + prompt + 160 + 20, output_tokens=100)
        revision = inference_cost(price=conversation_price, input_tokens=2 * prompt + 160 + 60, output_tokens=160)
        total += answer + judged * Decimal("1.1") + revision / 3
    return total.quantize(Decimal("0.00000001"))


def _benchmark_texts() -> list[str]:
    """The user turns of every benchmark case, without their answer markers (what contamination is checked against)."""
    texts = []
    for messages in BenchmarkCase.objects.values_list("messages", flat=True).iterator():
        for message in messages or []:
            if isinstance(message, dict) and message.get("role") == "user" and isinstance(message.get("content"), str):
                texts.append(strip_answer_markers(message["content"]))
    return texts


@dataclass
class _Selected:
    prompts: list[tuple[SafetyPrompt, str]]  # (prompt, scrubbed text), in build order
    summary: dict[str, Any] = field(default_factory=dict)


def _select_prompts(*, prompt_sets: Sequence[PromptSet], target: int, mix: dict[str, int], seed: int) -> _Selected:
    prompts = list(SafetyPrompt.objects.filter(prompt_set__in=prompt_sets).select_related("prompt_set").order_by("prompt_set_id", "line"))
    scrubber = Scrubber(mode="placeholder")
    texts = [scrubber.scrub_text(prompt.text) for prompt in prompts]
    duplicates, redundant = selection.find_duplicate_prompts(texts)
    benchmark_texts = _benchmark_texts()
    contaminated = selection.contaminated_indexes(texts, benchmark_texts) - redundant
    keep = [i for i in range(len(prompts)) if i not in redundant and i not in contaminated]
    by_kind: dict[str, list[int]] = {kind: [] for kind in PromptKind.values}
    for index in keep:
        by_kind[prompts[index].prompt_set.kind].append(index)
    available = {kind: len(indexes) for kind, indexes in by_kind.items()}
    plan = selection.plan_mix(available=available, target=target, mix=mix)
    # Each kind's full share of the target (not the share the shortest kind allows), so a file's
    # shortfall names what truly lacks rather than prompts left unread to keep the mix.
    wanted = {kind: min(available[kind], math.ceil(target * mix[kind] / 100 * (1 + SELECTION_MARGIN)) + 1) if mix[kind] else 0
              for kind in by_kind}
    chosen: list[int] = []
    for kind, indexes in by_kind.items():
        order = selection.seeded_order([texts[i] for i in indexes], seed=seed)
        chosen += [indexes[i] for i in order[: wanted[kind]]]
    chosen = [chosen[i] for i in selection.seeded_order([texts[i] for i in chosen], seed=seed)]
    return _Selected(
        prompts=[(prompts[i], texts[i]) for i in chosen],
        summary={
            "prompts_read": len(prompts),
            "pii_replaced_in_prompts": {kind: count for kind, count in scrubber.replaced.items() if count},
            "duplicate_prompts_removed": {**duplicates, "total": len(redundant)},
            "contamination": {"benchmark_cases_checked": len(benchmark_texts), "prompts_removed": len(contaminated),
                              "examples": [texts[i][:120] for i in sorted(contaminated)[:10]]},
            "available": available,
            "picked": {kind: wanted[kind] for kind in by_kind},
            "prompt_shortfall": plan.shortfall_text(),
        },
    )


def _conversation_model(agent: Agent) -> ModelVersion:
    version = live_version(agent=agent) or baseline_version(agent=agent)
    if version is None:
        raise InvalidInput(f"agent '{agent.slug}' has no live or baseline model to answer the prompts; register one first")
    return version


@transaction.atomic
def waltz_build_create(
    *,
    agent: Agent,
    prompt_sets: Sequence[PromptSet] | None = None,
    conversation_model: ModelVersion | None = None,
    judge_model: str = DEFAULT_JUDGE_MODEL,
    judge_provider: ProviderAccount | None = None,
    target: int = DEFAULT_TARGET,
    mix: dict[str, int] | None = None,
    validation: float = DEFAULT_VALIDATION,
    seed: int = 0,
    actor: Actor = None,
    via: str = "",
    override_reason: str | None = None,
    enqueue: bool = True,
) -> WaltzBuild:
    """Select the prompts, estimate and hold the cost, write the items and (by default) queue the build.
    Refused with Conflict when the budget has not the estimate left (unless a person with
    costs.override_budget gives a reason), with InvalidInput for bad parameters."""
    require_permission(actor=actor, permission="safety.add_waltzbuild", action="start WaltzRL builds")
    mix = dict(mix or DEFAULT_MIX)
    _check_parameters(target=target, mix=mix, validation=validation)
    sets = list(prompt_sets) if prompt_sets else prompt_sets_builtin()
    for kind in PromptKind.values:
        if mix[kind] and not any(prompt_set.kind == kind for prompt_set in sets):
            raise InvalidInput(f"no {kind} prompt set given, but the mix asks for {mix[kind]} % {kind} prompts")
    conversation = conversation_model or _conversation_model(agent)
    if conversation.agent_id != agent.pk:
        raise InvalidInput(f"conversation model {conversation.model_id} belongs to agent '{conversation.agent.slug}', not '{agent.slug}'")
    judge_model = (judge_model or DEFAULT_JUDGE_MODEL).strip()
    judge_account = judge_provider or conversation.provider
    selected = _select_prompts(prompt_sets=sets, target=target, mix=mix, seed=seed)
    if not selected.prompts:
        raise Conflict("no prompt is left after removing duplicates and benchmark contamination; import more prompts")
    estimate = build_cost_estimate(texts=[text for _, text in selected.prompts], conversation=conversation, judge_model=judge_model)
    build = WaltzBuild.objects.create(
        agent=agent, conversation_model=conversation, judge_model=judge_model, judge_provider=judge_account,
        parameters={"target": target, "mix": mix, "validation": validation, "seed": seed,
                    "selection_margin": SELECTION_MARGIN, "max_judge_attempts": MAX_JUDGE_ATTEMPTS},
        selection=selected.summary, total_items=len(selected.prompts), estimated_cost_usd=estimate,
        requested_by=actor, via=via[:200],
    )
    build.prompt_sets.set(sets)
    check = budget_check(agent=agent, estimate_usd=estimate, actor=actor, override_reason=override_reason,
                         hold_for=build, operation=Operation.DATA_PREP, hold_lasts=HOLD_LASTS)
    if check.overridden:
        build.budget_override_reason = (override_reason or "").strip()
        build.save(update_fields=["budget_override_reason"])
    _items_create(build, selected.prompts, seed=seed, validation=validation)
    if enqueue:
        send_on_commit("safety.run_waltz_build", build.pk, what=f"WaltzRL build #{build.pk}")
    return build


def _items_create(build: WaltzBuild, prompts: list[tuple[SafetyPrompt, str]], *, seed: int, validation: float) -> None:
    """One item per selected prompt, each in the training or the validation split."""
    splits = [selection.split_of(text, seed=seed, validation=validation) for _, text in prompts]
    if validation > 0 and len(splits) > 1 and selection.VALID not in splits:
        splits[-1] = selection.VALID  # a tiny build still gets a validation example
    WaltzItem.objects.bulk_create([
        WaltzItem(build=build, prompt=prompt, position=position, kind=prompt.prompt_set.kind, category=prompt.category,
                  source=prompt.source, split=split, text=text)
        for position, ((prompt, text), split) in enumerate(zip(prompts, splits, strict=True))
    ])


# --- running a build -----------------------------------------------------------------------------------


def _worker_lock(build_id: int) -> Any:
    """A Postgres advisory lock while a worker is on the build (genesis/locks.py)."""
    return worker_lock(LOCK_NAMESPACE, build_id)


@dataclass(frozen=True)
class _Route:
    provider: ChatProvider
    limiter: ProviderLimiter
    model: str
    base_model: str | None


def _route(account: ProviderAccount, model: str, base_model: str | None) -> _Route:
    return _Route(provider=provider_for(account), limiter=provider_limiter(account), model=model, base_model=base_model)


def _ask(route: _Route, messages: list[dict[str, Any]], parameters: dict[str, Any]) -> ChatResult:
    def attempt() -> ChatResult:
        with route.limiter.slot():
            return route.provider.chat(model=route.model, messages=messages, parameters=parameters)

    return call_with_retries(attempt, policy=BATCH_CALL_RETRY)


@dataclass
class _Call:
    step: str
    route: _Route
    input_tokens: int
    output_tokens: int
    tokens_estimated: bool = False  # the provider reported no usage: the counts (and the charge) are estimates

    @classmethod
    def of(cls, step: str, route: _Route, result: ChatResult) -> _Call:
        return cls(step, route, result.prompt_tokens, result.completion_tokens, result.tokens_estimated)


def _charge(build: WaltzBuild, item: WaltzItem, calls: list[_Call]) -> Decimal:
    """Each call on the ledger once (the key names the build, the item and the step)."""
    total = Decimal(0)
    for call in calls:
        entry = cost_record(
            agent=build.agent, operation=Operation.DATA_PREP, idempotency_key=f"waltzrl:{build.pk}:{item.pk}:{call.step}",
            model=call.route.model, base_model=call.route.base_model, input_tokens=call.input_tokens,
            output_tokens=call.output_tokens, tokens_estimated=call.tokens_estimated, source=f"WaltzRL build #{build.pk}",
            source_object=build,
            note=f"item {item.position} {call.step}",
        )
        total += entry.amount_usd
    return total


def _save(build: WaltzBuild, item: WaltzItem, calls: list[_Call], fields: list[str]) -> None:
    with transaction.atomic():
        cost = _charge(build, item, calls)
        item.cost_usd += cost
        item.input_tokens += sum(call.input_tokens for call in calls)
        item.output_tokens += sum(call.output_tokens for call in calls)
        item.save(update_fields=[*fields, "cost_usd", "input_tokens", "output_tokens"])
        WaltzBuild.objects.filter(pk=build.pk).update(cost_usd=F("cost_usd") + cost)


def _process_item(build: WaltzBuild, item: WaltzItem, conversation: _Route, judge_route: _Route, scrubber: Scrubber) -> None:
    parameters = {**generation_parameters(build.agent), "max_tokens": CONVERSATION_MAX_TOKENS}
    if not item.answered:
        result = _ask(conversation, labels.conversation_messages(prompt=item.text, system_prompt=build.agent.system_prompt), parameters)
        # A NUL or an unpaired surrogate in an answer fails the scrub (it encodes the text) or the save
        # (Postgres refuses NUL): both become U+FFFD first, as in imported prompts.
        item.response, item.answered = scrubber.scrub_text(storable(result.text)), True
        _save(build, item, [_Call.of("answer", conversation, result)], ["response", "answered"])
    if item.judge_valid is None:
        calls: list[_Call] = []
        label = None
        for attempt in range(1, MAX_JUDGE_ATTEMPTS + 1):
            result = _ask(judge_route, labels.judge_messages(prompt=item.text, response=item.response, attempt=attempt),
                          {"temperature": 0.0, "max_tokens": JUDGE_MAX_TOKENS})
            calls.append(_Call.of(f"judge-{attempt}", judge_route, result))
            item.judge_raw, item.judge_attempts = storable(result.text[:4000]), attempt
            try:
                label = labels.parse_label(result.text)
                break
            except labels.InvalidLabel as exc:
                logger.info("WaltzRL build %s item %s: judge attempt %s was not the label JSON: %s", build.pk, item.position, attempt, exc)
        item.judge_valid = label is not None
        if label is not None:
            label = {**label, "reasoning": scrubber.scrub_text(label["reasoning"]), "feedback": scrubber.scrub_text(label["feedback"])}
            verdict = labels.judge(kind=item.kind, label=label, response=item.response)
            item.label, item.unsafe, item.overrefuse = label, verdict.unsafe, verdict.overrefuse
            item.detector_refusal, item.agrees, item.disagreements = verdict.detector_refusal, verdict.agrees_with_detector, verdict.disagreements
        _save(build, item, calls, ["judge_raw", "judge_attempts", "judge_valid", "label", "unsafe", "overrefuse",
                                   "detector_refusal", "agrees", "disagreements"])
    feedback: str = (item.label or {}).get("feedback") or ""
    needs_revision = item.judge_valid and (item.unsafe or item.overrefuse) and feedback
    if needs_revision and not item.revised:
        messages = [*labels.system_turn(build.agent.system_prompt),
                    *labels.revision_messages(prompt=item.text, response=item.response, feedback=feedback)]
        result = _ask(conversation, messages, parameters)
        item.revision, item.revised = scrubber.scrub_text(storable(result.text)), True
        item.revision_ok = labels.revision_acceptable(kind=item.kind, revision=item.revision)
        _save(build, item, [_Call.of("revision", conversation, result)],
              ["revision", "revised", "revision_ok"])
    WaltzItem.objects.filter(pk=item.pk).update(done=True)
    WaltzBuild.objects.filter(pk=build.pk).update(completed_items=F("completed_items") + 1)


def _fail(build_id: int, message: str) -> WaltzBuild:
    with transaction.atomic():
        build = WaltzBuild.objects.select_for_update().get(pk=build_id)
        if not build.is_finished:
            advance(build, BuildStatus.FAILED, transitions=BUILD_TRANSITIONS)
            build.error, build.finished_at = message[:4000], timezone.now()
            build.save(update_fields=["status", "error", "finished_at"])
        cost_hold_release(source=build)
    return build


def waltz_build_retry_at(*, build_id: int, when: datetime) -> None:
    """Note when the task's own retry of a running build is due (a transient provider failure): beat's
    sweep leaves the build to that retry instead of sending a second message, which would start a
    second retry chain beside it (each spending the build's attempts)."""
    WaltzBuild.objects.filter(pk=build_id, status=BuildStatus.RUNNING).update(retry_at=when)


def waltz_build_fail(*, build_id: int, error: str) -> WaltzBuild:
    """End a build that cannot go on (the task gave up on a provider); its hold is released. A build
    another worker is on (a second delivery of its message) is left to that worker: failed under it,
    the worker would go on paying for every item left with no hold behind the spend."""
    with _worker_lock(build_id) as mine:
        if not mine:
            logger.warning("WaltzRL build %s not failed (%s): another worker is on it", build_id, error)
            return WaltzBuild.objects.get(pk=build_id)
        return _fail(build_id, error)


def waltz_build_execute(*, build_id: int) -> WaltzBuild:
    """Do a queued build (the `safety.run_waltz_build` task, or the command in-process): queued →
    running → succeeded | failed. Safe to call twice: a finished build is returned as it is, one held
    by a live worker is left to it, one whose worker died is taken over from the first item not done.
    A transient provider failure (after the per-call retries) propagates for the task to retry; a
    permanent one fails the build with the provider's message."""
    with _worker_lock(build_id) as mine:
        build = WaltzBuild.objects.filter(pk=build_id).first()
        if build is None:
            raise NotFound(f"WaltzRL build #{build_id} does not exist")
        if not mine or build.is_finished:
            return build
        with transaction.atomic():
            build = WaltzBuild.objects.select_for_update().get(pk=build_id)
            if build.attempts >= MAX_BUILD_ATTEMPTS:
                return _fail(build_id, f"a worker started this build {build.attempts} times and never finished it; "
                                       "see the worker logs, then start a new build")
            advance(build, BuildStatus.RUNNING, transitions=BUILD_TRANSITIONS)
            build.attempts += 1
            build.started_at = build.started_at or timezone.now()
            build.retry_at = None
            build.completed_items = build.items.filter(done=True).count()
            build.save(update_fields=["status", "attempts", "started_at", "retry_at", "completed_items"])
        try:
            conversation = _route(build.conversation_model.provider, build.conversation_model.model_id,
                                  build.conversation_model.base_model)
            judge_route = _route(build.judge_provider, build.judge_model, None)
            scrubber = Scrubber(mode="placeholder")
            for item in _items_not_done(build):
                # Ended meanwhile by another path: its hold is released, so no more paid calls (one
                # indexed read before each item's calls).
                if not WaltzBuild.objects.filter(pk=build_id, status=BuildStatus.RUNNING).exists():
                    return WaltzBuild.objects.get(pk=build_id)
                _process_item(build, item, conversation, judge_route, scrubber)
            return _finish(build_id)
        except PermanentProviderError as exc:
            return _fail(build_id, f"the provider refused a call: {exc}")
        except (InvalidInput, Conflict, NotFound) as exc:
            return _fail(build_id, exc.message)


def _items_not_done(build: WaltzBuild, *, page_size: int = 200) -> Iterator[WaltzItem]:
    """The build's items not done yet, in order, read a page at a time and each page whole: no read
    stays open while an item is saved. On SQLite (the embedded `make run`) a read still open on the
    connection pins an old snapshot, and the item's write then fails at once with "database is locked"
    as soon as another process (the worker, beat) has written in between."""
    after = -1
    while page := list(build.items.filter(done=False, position__gt=after).order_by("position")[:page_size]):
        yield from page
        after = page[-1].position


def waltz_builds_resend_stranded(*, older_than_seconds: int = STRANDED_AFTER_SECONDS) -> list[int]:
    """Beat, every 5 minutes: send again the builds whose message is gone — queued for longer than
    `older_than_seconds` (the broker was down when it was sent), or running with no worker holding
    their lock (the worker died; its message would otherwise wait out Redis' visibility timeout) — by
    the rule audits use too (genesis/locks.py `running_without_worker`: a minute after it started). A
    duplicate is harmless: the task skips finished builds and builds another worker holds. The rule is
    safety/selectors.py's `waltz_builds_stranded`, which /metrics counts as stalled builds."""
    stranded = waltz_builds_stranded(older_than_seconds=older_than_seconds)
    for pk in stranded:
        send_on_commit("safety.run_waltz_build", pk, what=f"WaltzRL build #{pk}")
    if stranded:
        logger.warning("WaltzRL sweep: sent builds %s again", stranded)
    return stranded


# --- the files and the report ----------------------------------------------------------------------------


@dataclass
class _Pool:
    """Usable examples of one agent's files, by item."""

    examples: list[tuple[WaltzItem, dict[str, Any]]] = field(default_factory=list)
    duplicates_removed: int = 0


def _pools(items: Sequence[WaltzItem], *, system_prompt: str) -> tuple[_Pool, _Pool, dict[str, int]]:
    conversation, feedback = _Pool(), _Pool()
    dropped: Counter[str] = Counter()
    for item in items:
        if not item.judge_valid:
            dropped["judge_json_invalid"] += 1
            continue
        if item.disagreements:
            dropped["disagreement_held_out"] += 1
            continue
        label = {**(item.label or {}), "unsafe": item.unsafe, "overrefuse": item.overrefuse}
        feedback.examples.append((item, labels.feedback_example(prompt=item.text, response=item.response, label=label)))
        if not item.unsafe and not item.overrefuse:
            conversation.examples.append((item, labels.conversation_example(
                prompt=item.text, response=item.response, system_prompt=system_prompt)))
        elif item.revised and item.revision_ok:
            conversation.examples.append((item, labels.conversation_example(
                prompt=item.text, response=item.response, revision=item.revision, feedback=label["feedback"],
                system_prompt=system_prompt)))
        else:
            dropped["conversation_without_acceptable_answer"] += 1
    for pool in (conversation, feedback):
        redundant = selection.redundant_indexes([conversation_text(example) for _, example in pool.examples])
        pool.duplicates_removed = len(redundant)
        pool.examples = [pair for index, pair in enumerate(pool.examples) if index not in redundant]
    return conversation, feedback, dict(dropped)


def _first_user_turn(example: dict[str, Any]) -> str:
    return next(message["content"] for message in example["messages"] if message["role"] == "user")


def _write_jsonl(path: Path, examples: Sequence[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for example in examples:
            handle.write(json.dumps(example, ensure_ascii=False) + "\n")


def _select_file(pool: _Pool, *, target: int, mix: dict[str, int]) -> tuple[list[tuple[WaltzItem, dict[str, Any]]], selection.MixPlan]:
    by_kind: dict[str, list[tuple[WaltzItem, dict[str, Any]]]] = {kind: [] for kind in mix}
    for pair in pool.examples:
        by_kind[pair[0].kind].append(pair)
    plan = selection.plan_mix(available={kind: len(pairs) for kind, pairs in by_kind.items()}, target=target, mix=mix)
    chosen = [pair for kind, pairs in by_kind.items() for pair in pairs[: plan.take[kind]]]
    chosen.sort(key=lambda pair: pair[0].position)
    return chosen, plan


def _distribution(values: Sequence[int]) -> dict[str, int]:
    if not values:
        return {"min": 0, "p50": 0, "p95": 0, "max": 0}
    ordered = sorted(values)
    return {"min": ordered[0], "p50": ordered[len(ordered) // 2], "p95": ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))],
            "max": ordered[-1]}


def stage1_estimate(*, agent: Agent, feedback_train_chars: int, conversation: ModelVersion) -> dict[str, Any]:
    """What the Stage-1 fine-tune (the feedback agent on the training file) should cost at the price table."""
    base = (baseline_version(agent=agent) or conversation).base_model or conversation.model_id
    tokens = max(1, feedback_train_chars // CHARS_PER_TOKEN) * STAGE1_EPOCHS
    try:
        usd: str | None = str(fine_tuning_cost(model=base, training_tokens=tokens))
    except NotFound as exc:
        usd = None
        logger.info("no Stage-1 estimate for %s: %s", base, exc.message)
    return {"base_model": base, "epochs": STAGE1_EPOCHS, "training_tokens": tokens, "usd": usd}


def _finish(build_id: int) -> WaltzBuild:
    build = WaltzBuild.objects.select_related("agent", "conversation_model").get(pk=build_id)
    items = list(build.items.order_by("position"))
    target, mix = int(build.parameters["target"]), dict(build.parameters["mix"])
    conversation_pool, feedback_pool, dropped = _pools(items, system_prompt=build.agent.system_prompt)
    files: dict[str, dict[str, Any]] = {}
    datasets: dict[str, Any] = {}
    shortfalls: list[str] = []
    feedback_train_chars = 0
    with tempfile.TemporaryDirectory(prefix=f"waltzrl-{build.pk}-") as directory:
        for agent_name, pool in (("conversation_agent", conversation_pool), ("feedback_agent", feedback_pool)):
            chosen, plan = _select_file(pool, target=target, mix=mix)
            if plan.shortfall:
                shortfalls.append(f"{agent_name}: {plan.shortfall_text()}")
            summary: dict[str, Any] = {"mix": plan.achieved(), "take": plan.take, "shortfall": plan.shortfall_text(),
                                       "duplicates_removed": pool.duplicates_removed,
                                       "labels": {"unsafe": sum(1 for item, _ in chosen if item.unsafe),
                                                  "overrefuse": sum(1 for item, _ in chosen if item.overrefuse),
                                                  "ok": sum(1 for item, _ in chosen if not item.unsafe and not item.overrefuse)}}
            for split in (selection.TRAIN, selection.VALID):
                examples = [example for item, example in chosen if item.split == split]
                summary[split] = len(examples)
                if not examples:
                    continue
                path = Path(directory) / f"{agent_name}_{split}.jsonl"
                _write_jsonl(path, examples)
                if agent_name == "feedback_agent" and split == selection.TRAIN:
                    feedback_train_chars = sum(len(conversation_text(example)) for example in examples)
                audit_report = audit_file(path)
                run = dataset_record_audit(
                    path=path, report=audit_report, agent=build.agent,
                    purpose=DatasetPurpose.TRAINING if split == selection.TRAIN else DatasetPurpose.VALIDATION,
                    via=f"WaltzRL build #{build.pk}", original_name=path.name,
                )
                datasets[f"{agent_name.split('_')[0]}_{split}"] = run.dataset
                summary[f"{split}_audit"] = {"audit_run": run.pk, "dataset": run.dataset_id, "format_errors": audit_report.format_error_total,
                                             "pii": sum(audit_report.pii_counts.values()), "duplicates": {"exact": audit_report.duplicates.exact,
                                                                                                    "near": audit_report.duplicates.near}}
            train_texts = [_first_user_turn(example) for item, example in chosen if item.split == selection.TRAIN]
            valid_texts = [_first_user_turn(example) for item, example in chosen if item.split == selection.VALID]
            summary["train_valid_overlap"] = len(selection.contaminated_indexes(valid_texts, train_texts))
            files[agent_name] = summary
    report = _report(build, items, files=files, dropped=dropped, feedback_train_chars=feedback_train_chars)
    with transaction.atomic():
        build = WaltzBuild.objects.select_for_update().get(pk=build_id)
        if build.is_finished:
            return build
        advance(build, BuildStatus.SUCCEEDED, transitions=BUILD_TRANSITIONS)
        build.conversation_train = datasets.get("conversation_train")
        build.conversation_valid = datasets.get("conversation_valid")
        build.feedback_train = datasets.get("feedback_train")
        build.feedback_valid = datasets.get("feedback_valid")
        build.cost_usd = build.items.aggregate(total=DecimalTotal("cost_usd"))["total"]
        report["cost"]["actual_usd"] = str(build.cost_usd)
        build.report, build.shortfall, build.finished_at = report, "; ".join(shortfalls), timezone.now()
        build.completed_items = len(items)
        build.save()
        cost_hold_release(source=build)
    return build


def _report(build: WaltzBuild, items: Sequence[WaltzItem], *, files: dict[str, Any], dropped: dict[str, int],
            feedback_train_chars: int) -> dict[str, Any]:
    judged = [item for item in items if item.judge_valid]
    agreeing = sum(1 for item in judged if item.agrees)
    pii = Scrubber(mode="placeholder")
    for item in items:  # what the build's scrubber replaced in the answers, counted again (the answers hold placeholders now)
        pii.scrub_text(item.response)
    disagreements = [
        {"item": item.position, "kind": item.kind, "prompt": item.text[:160], "detail": "; ".join(item.disagreements)}
        for item in items if item.disagreements
    ]
    feedback = files.get("feedback_agent", {})
    return {
        "build": build.pk,
        "counts": {
            "items": len(items),
            "by_kind": dict(Counter(item.kind for item in items)),
            "by_source": dict(Counter(item.source or "unknown" for item in items)),
            "by_category": dict(Counter(item.category or "uncategorised" for item in items)),
            "labels": {"unsafe": sum(1 for i in judged if i.unsafe), "overrefuse": sum(1 for i in judged if i.overrefuse),
                       "ok": sum(1 for i in judged if not i.unsafe and not i.overrefuse)},
        },
        "agreement": {
            "judged": len(judged), "agree": agreeing, "rate": round(agreeing / len(judged), 4) if judged else None,
            "disagreements": len(disagreements), "examples": disagreements[:MAX_SHOWN],
        },
        "json_validity": {
            "valid": len(judged), "invalid": sum(1 for item in items if item.judge_valid is False),
            "rate": round(len(judged) / len(items), 4) if items else None,
            "calls": sum(item.judge_attempts for item in items),
            "retried_items": sum(1 for item in items if item.judge_attempts > 1),
        },
        "revisions": {"asked": sum(1 for item in items if item.revised),
                      "accepted": sum(1 for item in items if item.revised and item.revision_ok)},
        "lengths": {"prompt_chars": _distribution([len(item.text) for item in items]),
                    "response_chars": _distribution([len(item.response) for item in items])},
        "selection": build.selection,
        "dropped": dropped,
        "pii_placeholders_in_answers": {kind: count for kind, count in pii.replaced.items() if count},
        "files": files,
        "mix": feedback.get("mix", {}),
        "cost": {"estimated_usd": str(build.estimated_cost_usd), "actual_usd": str(build.cost_usd),
                 "calls": sum(item.judge_attempts + (1 if item.answered else 0) + (1 if item.revised else 0) for item in items)},
        "stage1_finetune_estimate": stage1_estimate(agent=build.agent, feedback_train_chars=feedback_train_chars,
                                                    conversation=build.conversation_model),
    }


# --- Stage 1 -----------------------------------------------------------------------------------------------


def waltz_build_finetune(*, build: WaltzBuild, actor: Actor = None, override_reason: str | None = None,
                         submit: bool = True) -> FineTuningJob:
    """Create the Stage-1 fine-tuning job (the feedback agent) from the build's files: they are
    uploaded to the provider and the job goes through the fine-tuning service's budget check. A claim
    on the build's row (`finetune_claimed_at`, one conditional UPDATE) makes two clicks at once start
    one job (the second is refused). Not an advisory lock: this runs in web processes, which may sit
    behind PgBouncer in transaction mode, where a session lock's unlock can reach another server
    connection than its lock and the lock leaks; and not a transaction around it all: the job's row
    must be committed before the provider is asked (finetuning_job_create)."""
    require_permission(actor=actor, permission="safety.finetune_waltzbuild", action="fine-tune from WaltzRL builds")
    claimed_at = timezone.now()
    claimed = WaltzBuild.objects.filter(pk=build.pk, finetuning_job__isnull=True).filter(
        Q(finetune_claimed_at__isnull=True) | Q(finetune_claimed_at__lt=claimed_at - FINETUNE_CLAIM_LASTS)
    ).update(finetune_claimed_at=claimed_at)
    if not claimed:
        current = WaltzBuild.objects.filter(pk=build.pk).values_list("finetuning_job_id", flat=True).first()
        if current:
            raise Conflict(f"WaltzRL build #{build.pk} already started fine-tuning job #{current}")
        if not WaltzBuild.objects.filter(pk=build.pk).exists():
            raise NotFound(f"WaltzRL build #{build.pk} does not exist")
        raise Conflict(f"the Stage-1 job of WaltzRL build #{build.pk} is being created right now")
    try:
        build = WaltzBuild.objects.select_related("agent", "feedback_train", "feedback_valid").get(pk=build.pk)
        if build.status != BuildStatus.SUCCEEDED or build.feedback_train is None:
            raise Conflict(f"WaltzRL build #{build.pk} is {build.status} and has no feedback-agent training file yet")
        if build.finetuning_job_id:
            raise Conflict(f"WaltzRL build #{build.pk} already started fine-tuning job #{build.finetuning_job_id}")

        def upload(dataset: Any, purpose: str) -> Any:
            with dataset_file_open(dataset=dataset) as content:
                return training_file_upload(agent=build.agent, content=content, filename=dataset.original_name,
                                            purpose=purpose, actor=actor)

        training = upload(build.feedback_train, "training")
        validation = upload(build.feedback_valid, "validation") if build.feedback_valid else None
        job = finetuning_job_create(agent=build.agent, training_file=training, validation_file=validation,
                                    suffix="waltzfb", actor=actor, override_reason=override_reason, submit=submit)
        WaltzBuild.objects.filter(pk=build.pk).update(finetuning_job=job)
        return job
    finally:
        WaltzBuild.objects.filter(pk=build.pk, finetune_claimed_at=claimed_at).update(finetune_claimed_at=None)
