"""`manage.py erase_user_data --user-id U [--agent A] --as USERNAME`: delete one end user's outcomes
and exposures (experiments/retention.py user_data_erase). Exit 0 done, 1 refused (permission, or data in
a running or paused experiment without --allow-active-experiments), 2 usage."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from experiments import retention, routing
from genesis.commands import command_agent, command_user, usage_error
from genesis.errors import DomainError, InvalidInput


class Command(BaseCommand):
    help = (
        "Erase one end user's outcomes and exposures, at one agent (--agent) or every agent. The trail "
        "(Admin › Data deletions) keeps who, when, how many and a keyed hash of the id, never the id. The erasure "
        "sticks: from then on POST /outcomes rejects the user's events (at that agent or every agent) that occurred "
        "before it, plus the 5 minutes of clock skew it allows — sent again, they would bring the erased data back "
        "and be charged again; the user's later events are taken."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user-id", required=True, metavar="U",
                            help="the end user's id exactly as the agent sends it; '-' reads it from stdin (kept out of shell history)")
        parser.add_argument("--agent", metavar="NAME", help="only this agent's data (default: every agent)")
        parser.add_argument("--as", dest="username", metavar="USERNAME", help="the person acting (needs experiments.erase_user_data)")
        parser.add_argument("--reason", default="", metavar="TEXT", help="why (e.g. the request's ticket); kept on the trail")
        parser.add_argument("--allow-active-experiments", action="store_true",
                            help="erase even data a running or paused experiment reads (its results change; recorded)")
        parser.add_argument("--dry-run", action="store_true", help="count what would go; delete nothing")
        parser.add_argument("--json", action="store_true", help="print one JSON object")

    def handle(self, *args: Any, **options: Any) -> None:
        user_id = sys.stdin.readline().rstrip("\r\n") if options["user_id"] == "-" else options["user_id"]
        if not user_id:
            raise usage_error("--user-id: empty")
        if not options["username"]:
            raise usage_error("erase_user_data needs --as USERNAME: the person answering for the erasure")
        actor = command_user(options["username"])
        agent = command_agent(options["agent"]) if options["agent"] else None
        try:
            result = retention.user_data_erase(
                user_id=user_id, agent=agent, actor=actor, reason=options["reason"],
                allow_active_experiments=options["allow_active_experiments"], dry_run=options["dry_run"],
            )
        except InvalidInput as exc:
            raise usage_error(exc.message.replace("user_id:", "--user-id:", 1)) from None
        except DomainError as exc:
            raise CommandError(f"refused: {exc.message.removeprefix('user_id: ')}", returncode=1) from None
        if options["json"]:
            self.stdout.write(json.dumps(asdict(result), default=str))
            return
        scope = f"at {result.agent}" if result.agent else "at every agent"
        verb = "would erase" if result.dry_run else "erased"
        self.stdout.write(f"{verb} {result.outcomes} outcomes and {result.assignments} exposures of user "
                          f"#{result.subject_hash[:12]} {scope}")
        if result.experiments:
            self.stdout.write(f"  experiments whose data changes: {', '.join(result.experiments)}")
        if result.active_experiments:
            self.stdout.write(f"  still running or paused: {', '.join(result.active_experiments)} (their results change)")
        for at in result.earlier_erasures:
            self.stdout.write(f"  erased before at {at:%Y-%m-%d %H:%M %Z}")
        if result.dead_letter_batches:
            self.stdout.write(
                f"  not erased: {result.dead_letter_batches} exposure batch(es) in the Redis list {routing.EXPOSURE_DEAD_LETTER_KEY} "
                "hold this id — remove them by hand (docs/runbooks/exposure-dead-letters.md)"
            )
