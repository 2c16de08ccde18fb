"""`manage.py prune_outcomes`: delete old outcomes and exposures that no decision still needs, in
batches — the beat task's work (experiments/retention.py) with cut-offs of your choosing. Exit 0 done,
1 refused (permission), 2 usage."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import date, datetime, time, timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from experiments import retention
from genesis.commands import command_user, usage_error
from genesis.errors import DomainError, InvalidInput

OPTION_OF_PARAMETER = {"live_before": "--before/--older-than-days", "ended_before": "--ended-before/--ended-older-than-days",
                       "batch_size": "--batch-size"}


def cutoff(*, days: int | None, day: str | None, option: str, now: datetime) -> datetime | None:
    """The moment `--older-than-days N` (now − N days) or `--before DATE` (that day's midnight, local
    time) names; None when neither is given."""
    if days is not None:
        return now - timedelta(days=days)
    if day is None:
        return None
    try:
        parsed = date.fromisoformat(day)
    except ValueError:
        raise usage_error(f"{option}: '{day}' is not a date (YYYY-MM-DD)") from None
    return timezone.make_aware(datetime.combine(parsed, time.min))


class Command(BaseCommand):
    help = (
        "Delete outcomes outside every experiment that occurred before a cut-off (--before DATE or "
        "--older-than-days N) and, with --ended-before / --ended-older-than-days, every outcome and exposure of the "
        "experiments that ended (rolled back or completed) before it. Never a running or paused experiment's data. "
        "Before it deletes anything it records its cut-off, and from then on POST /outcomes rejects events that "
        "occurred before that cut-off plus the 5 minutes of clock skew it allows — for an ended experiment's, that "
        "agent's events from before the experiment ended, plus the skew — even if the prune then stops half-way (a "
        "deleted event sent again is not stored or charged twice). So give no later a cut-off than you mean."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        live = parser.add_mutually_exclusive_group()
        live.add_argument("--older-than-days", type=int, metavar="N", help="live outcomes that occurred more than N days ago")
        live.add_argument("--before", metavar="DATE", help="live outcomes that occurred before DATE (YYYY-MM-DD, local midnight)")
        ended = parser.add_mutually_exclusive_group()
        ended.add_argument("--ended-older-than-days", type=int, metavar="N",
                           help="also the whole data of experiments that ended more than N days ago")
        ended.add_argument("--ended-before", metavar="DATE", help="also the whole data of experiments that ended before DATE")
        parser.add_argument("--batch-size", type=int, default=retention.DEFAULT_BATCH_SIZE, metavar="N",
                            help=f"rows per DELETE, each its own transaction (default {retention.DEFAULT_BATCH_SIZE})")
        parser.add_argument("--dry-run", action="store_true", help="count what would go; delete nothing")
        parser.add_argument("--json", action="store_true", help="print one JSON object")
        parser.add_argument("--as", dest="username", metavar="USERNAME",
                            help="act as this user (needs experiments.delete_outcomeevent; default: the system)")

    def handle(self, *args: Any, **options: Any) -> None:
        now = timezone.now()
        for name in ("older_than_days", "ended_older_than_days"):
            if options[name] is not None and options[name] < 1:
                raise usage_error(f"--{name.replace('_', '-')}: {options[name]} must be 1 or more")
        live_before = cutoff(days=options["older_than_days"], day=options["before"], option="--before", now=now)
        ended_before = cutoff(days=options["ended_older_than_days"], day=options["ended_before"], option="--ended-before", now=now)
        if live_before is None and ended_before is None:
            raise usage_error("give --before DATE or --older-than-days N (live outcomes), "
                              "--ended-before DATE or --ended-older-than-days N (ended experiments), or both")
        actor = command_user(options["username"])
        try:
            result = retention.outcomes_prune(live_before=live_before, ended_before=ended_before, actor=actor,
                                              batch_size=options["batch_size"], dry_run=options["dry_run"], now=now)
        except InvalidInput as exc:
            parameter, _, rest = exc.message.partition(": ")
            raise usage_error(f"{OPTION_OF_PARAMETER.get(parameter, parameter)}: {rest}") from None
        except DomainError as exc:
            raise CommandError(f"refused: {exc.message}", returncode=1) from None
        if options["json"]:
            self.stdout.write(json.dumps(asdict(result), default=str))
            return
        verb = "would delete" if result.dry_run else "deleted"
        self.stdout.write(f"{verb} {result.outcomes} outcomes and {result.assignments} exposures"
                          + ("" if result.dry_run else f" in {result.batches} batches"))
        if result.live_before:
            self.stdout.write(f"  live outcomes that occurred before {result.live_before:%Y-%m-%d %H:%M %Z}")
        if result.ended_before:
            ended = ", ".join(result.experiments) or "none with data"
            self.stdout.write(f"  experiments ended before {result.ended_before:%Y-%m-%d %H:%M %Z}: {ended}")
        if not result.complete:
            self.stdout.write("  stopped early: rows are left; run again")
