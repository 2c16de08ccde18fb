"""Reads of the safety app: a build's contract summary, its report as markdown, the builds beat's
sweep sends again (which /metrics counts as stalled), and a sample of items for a person to label and
the score of the detector and the judge against those labels."""

from __future__ import annotations

import random
import zlib
from datetime import datetime, timedelta
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from genesis.locks import WORKER_GONE_AFTER_SECONDS, stranded
from safety.models import BuildStatus, WaltzBuild, WaltzItem
from safety.report import AGREEMENT_CAVEAT as AGREEMENT_CAVEAT  # the admin page shows it beside the agreement
from safety.report import render_markdown
from safety.review import HUMAN_LABELS, confusion, human_label

# The Postgres advisory lock that says "a worker is on this build right now" (taken by the services,
# tested here by the sweep's rule).
LOCK_NAMESPACE = zlib.crc32(b"safety.WaltzBuild") & 0x7FFFFFFF
# Beat's sweep (waltz_builds_resend_stranded): a build queued this long without a worker starting it
# lost its message (the broker was away when it was sent) and is sent again.
STRANDED_AFTER_SECONDS = 5 * 60


def waltz_build_summary(*, build: WaltzBuild) -> dict[str, Any]:
    """The `prepare_waltzrl --json` object: {"build", "conversation_agent": {"train", "valid"},
    "feedback_agent": {…}, "mix": {"adversarial", "borderline"}, "labels": {"unsafe", "overrefuse",
    "ok"}, "shortfall", "cost_usd"} — counts of examples; labels are those of the feedback agent's
    examples (train + valid); mix in percent of them."""
    report = build.report or {}
    files = report.get("files", {})

    def counts(name: str) -> dict[str, int]:
        return {"train": int(files.get(name, {}).get("train", 0)), "valid": int(files.get(name, {}).get("valid", 0))}

    empty = waltz_build_summary_empty()
    return {
        "build": build.pk,
        "status": build.status,
        "conversation_agent": counts("conversation_agent"),
        "feedback_agent": counts("feedback_agent"),
        "mix": files.get("feedback_agent", {}).get("mix", empty["mix"]),
        "labels": files.get("feedback_agent", {}).get("labels", empty["labels"]),
        "shortfall": build.shortfall or None,
        "cost_usd": str(build.cost_usd),
        "estimated_cost_usd": str(build.estimated_cost_usd),
        "agreement_rate": report.get("agreement", {}).get("rate"),
        "error": build.error or None,
    }


def waltz_build_summary_empty() -> dict[str, Any]:
    """The same object's shape when no build was made (refused before it started): every key, with
    zero counts and null where there is nothing to say."""
    return {
        "build": None,
        "status": None,
        "conversation_agent": {"train": 0, "valid": 0},
        "feedback_agent": {"train": 0, "valid": 0},
        "mix": {"adversarial": 0, "borderline": 0},
        "labels": {"unsafe": 0, "overrefuse": 0, "ok": 0},
        "shortfall": None,
        "cost_usd": "0",
        "estimated_cost_usd": None,
        "agreement_rate": None,
        "error": None,
    }


def waltz_build_markdown(*, build: WaltzBuild) -> str:
    return render_markdown(build_id=build.pk, status=build.status, shortfall=build.shortfall, report=build.report or {})


def waltz_builds_queued() -> QuerySet[WaltzBuild]:
    """Builds no worker has started yet."""
    return WaltzBuild.objects.filter(status=BuildStatus.QUEUED)


def waltz_builds_stranded(*, older_than_seconds: float = STRANDED_AFTER_SECONDS, now: datetime | None = None) -> list[int]:
    """The builds beat's sweep sends again (genesis/locks.py `stranded`, the audits' rule): queued too
    long, or running with their worker gone — except a build waiting out its task's own retry (its
    `retry_at`, plus the minute the rule gives any worker to show itself): no lock is held during the
    countdown, yet its message is in the broker."""
    now = now or timezone.now()
    running = WaltzBuild.objects.filter(status=BuildStatus.RUNNING).exclude(
        retry_at__gt=now - timedelta(seconds=WORKER_GONE_AFTER_SECONDS)
    )
    return stranded(queued=waltz_builds_queued(), running=running, namespace=LOCK_NAMESPACE,
                    older_than_seconds=older_than_seconds, now=now)


def waltz_review_sample(*, build: WaltzBuild, size: int, seed: int) -> list[dict[str, Any]]:
    """A seeded sample of a build's answered items for a person to label (safety/review.py): the prompt,
    its kind and the response, with `refusal`, `unsafe` and `overrefuse` left blank — the judge's and
    the detector's labels are left out so they cannot sway the person."""
    items = list(WaltzItem.objects.filter(build=build, answered=True).order_by("position")
                 .values("position", "kind", "text", "response"))
    random.Random(seed).shuffle(items)
    return [{"item": row["position"], "kind": row["kind"], "prompt": row["text"], "response": row["response"],
             **dict.fromkeys(HUMAN_LABELS)} for row in sorted(items[:size], key=lambda row: row["position"])]


def waltz_review_score(*, build: WaltzBuild, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The refusal detector's and the judge's precision and recall against a person's labels of `rows`
    (a filled-in `waltz_review_sample`). Blank labels are skipped and counted."""
    if not all(isinstance(row, dict) and isinstance(row.get("item"), int) for row in rows):
        raise ValueError("every review row must be a JSON object with its integer 'item'")
    positions: list[int] = [row["item"] for row in rows]
    items = {item.position: item for item in WaltzItem.objects.filter(build=build, position__in=positions)}
    unknown = sorted(set(positions) - set(items))
    if unknown:
        raise ValueError(f"items not in build #{build.pk}: {unknown[:10]}")
    pairs: dict[str, list[tuple[bool, bool]]] = {"detector_refusal": [], "judge_unsafe": [], "judge_overrefuse": []}
    blank = dict.fromkeys(HUMAN_LABELS, 0)
    for row in rows:
        item = items[row["item"]]
        label = item.label or {}
        for name, predicted in (("refusal", item.detector_refusal), ("unsafe", label.get("unsafe")),
                                ("overrefuse", label.get("overrefuse"))):
            human = human_label(row, name)
            if human is None:
                blank[name] += 1
            elif isinstance(predicted, bool):
                pairs["detector_refusal" if name == "refusal" else f"judge_{name}"].append((predicted, human))
    return {"build": build.pk, "rows": len(rows), "blank": blank,
            **{name: confusion(found) for name, found in pairs.items()}}
