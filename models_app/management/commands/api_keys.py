"""`manage.py api_keys`: list, revoke and rotate API keys from a terminal, with the services the admin
uses (models_app.registry.services). The key's own value is shown once, when it is made (here by
--rotate, alone on stdout as `create_api_key` prints it, or in the `--json` object); a stored hash is
never printed.
Exit 0 done, 1 refused (permission, a revoked key to rotate), 2 usage (unknown key, agent or user)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from genesis.commands import command_agent, command_user, usage_error
from genesis.errors import DomainError, InvalidInput, NotFound
from models_app.registry.models import ApiKey
from models_app.registry.selectors import (
    API_KEY_EXPIRY_WARNING_DAYS,
    API_KEY_UNUSED_DAYS,
    api_key_attention,
    api_key_find,
    api_keys_for,
)
from models_app.registry.services import (
    API_KEY_CACHE_SECONDS,
    API_KEY_MAX_EXPIRY_DAYS,
    api_key_expiry_refusal,
    api_key_revoke,
    api_key_rotate,
)


def key_summary(key: ApiKey, *, now: datetime | None = None) -> dict[str, Any]:
    """What may be shown of a key: never its hash. `attention`: why it needs a person (expiring or
    expired, unused), as api_key_attention says."""
    now = now or timezone.now()
    return {
        "id": key.pk,
        "prefix": key.prefix,
        "label": key.label,
        "all_agents": key.all_agents,
        "agents": sorted(agent.slug for agent in key.agents.all()),
        "created_by": key.created_by.get_username() if key.created_by else None,
        "created_at": key.created_at.isoformat(),
        "last_used_at": key.last_used_at.isoformat() if key.last_used_at else None,
        "revoked": key.revoked,
        "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
        "expires_at": key.expires_at.isoformat() if key.expires_at else None,
        "expired": key.expires_at is not None and key.expires_at <= now,
        "attention": api_key_attention(key, now=now),
    }


def _scope(summary: dict[str, Any]) -> str:
    return "all agents" if summary["all_agents"] else ", ".join(summary["agents"]) or "no agent"


def _minute(moment: str | None) -> str:
    # The ISO time of key_summary, in UTC as the database gives it, to the minute.
    return moment[:16].replace("T", " ") if moment else "never"


def _status(summary: dict[str, Any]) -> str:
    if summary["revoked"]:
        return f"revoked {_minute(summary['revoked_at'])}"
    return "; ".join(summary["attention"]) or "active"


class Command(BaseCommand):
    help = (
        "API keys: --list [--agent NAME] (the keys that may act for that agent), --revoke KEY or --rotate KEY "
        "(a new key of the same scope, printed once as the last line; the old one revoked) --as USERNAME --reason "
        f"TEXT [--expires-in-days N]. --list --stale: only the keys expiring within {API_KEY_EXPIRY_WARNING_DAYS} days "
        f"(or expired) or unused for {API_KEY_UNUSED_DAYS}. KEY is the prefix --list shows (gk_ and 8 characters) or the "
        "key's id — never the whole key."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        action = parser.add_mutually_exclusive_group(required=True)
        action.add_argument("--list", action="store_true", help="list the keys, newest first (none of their secrets)")
        action.add_argument("--revoke", metavar="KEY", help="revoke this key (its prefix or id)")
        action.add_argument("--rotate", metavar="KEY", help="replace this key by a new one of the same scope and revoke it")
        parser.add_argument("--agent", metavar="NAME", help="--list: only the keys that may act for this agent")
        parser.add_argument(
            "--stale", action="store_true",
            help=f"--list: only unrevoked keys that expire within {API_KEY_EXPIRY_WARNING_DAYS} days (or have expired) "
                 f"or were not used for {API_KEY_UNUSED_DAYS} days",
        )
        parser.add_argument(
            "--expires-in-days", type=int, metavar="N",
            help=f"--rotate: the new key expires N days from now (1 to {API_KEY_MAX_EXPIRY_DAYS}); without it, it gets the "
                 "old key's lifetime counted from now (none for a key that never expired)",
        )
        parser.add_argument("--as", dest="username", default="", metavar="USERNAME",
                            help="the person revoking or rotating (needs models_app.change_apikey; rotating also add_apikey)")
        parser.add_argument("--reason", default="", metavar="TEXT", help="why; kept in the key's history")
        parser.add_argument("--json", action="store_true", help="print JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["list"]:
            given = [option for option, name in (("--as", "username"), ("--reason", "reason")) if options[name]]
            if given:
                raise usage_error(f"{', '.join(given)}: only with --revoke or --rotate")
            if options["expires_in_days"] is not None:
                raise usage_error("--expires-in-days: only with --rotate (or create_api_key)")
            self._list(agent_slug=options["agent"], stale=options["stale"], as_json=options["json"])
            return
        if options["agent"]:
            raise usage_error("--agent goes with --list (a key keeps the scope it was made with)")
        if options["stale"]:
            raise usage_error("--stale goes with --list")
        action = "revoke" if options["revoke"] else "rotate"
        if options["expires_in_days"] is not None:
            if action == "revoke":
                raise usage_error("--expires-in-days: only with --rotate (a revoked key does not need one)")
            refusal = api_key_expiry_refusal(options["expires_in_days"])
            if refusal:
                raise usage_error(f"--expires-in-days: {refusal}")
        if not options["username"]:
            raise usage_error(f"--{action} needs --as USERNAME: the person acting, named in the key's history")
        if not options["reason"].strip():
            raise usage_error(f"--{action} needs --reason TEXT: it is kept in the key's history")
        actor = command_user(options["username"])
        try:
            key = api_key_find(ref=options[action])
        except (NotFound, InvalidInput) as exc:
            raise usage_error(f"--{action}: {exc.message}") from None
        try:
            if action == "revoke":
                self._revoke(key, actor=actor, reason=options["reason"], as_json=options["json"])
            else:
                self._rotate(key, actor=actor, reason=options["reason"], expires_in_days=options["expires_in_days"],
                             as_json=options["json"])
        except DomainError as exc:
            raise CommandError(f"refused: {exc.message}", returncode=1) from None

    def _list(self, *, agent_slug: str | None, stale: bool, as_json: bool) -> None:
        if agent_slug is not None:
            command_agent(agent_slug)  # a usage error for a typo, not an empty list
        now = timezone.now()
        keys = [key_summary(key, now=now) for key in api_keys_for(agent_slug=agent_slug, stale=stale, now=now)]
        if as_json:
            self.stdout.write(json.dumps(keys))
            return
        if not keys:
            if stale:
                self.stdout.write("no API key" + (f" that may act for {agent_slug}" if agent_slug else "") + " needs attention")
            else:
                self.stdout.write("no API keys" + (f" may act for {agent_slug}" if agent_slug else "") + " (create one with create_api_key)")
            return
        rows = [("id", "prefix", "label", "agents", "created (UTC)", "by", "last used", "expires (UTC)", "status")] + [
            (str(key["id"]), key["prefix"], key["label"], _scope(key), _minute(key["created_at"]), key["created_by"] or "—",
             _minute(key["last_used_at"]), _minute(key["expires_at"]), _status(key))
            for key in keys
        ]
        widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
        for row in rows:
            self.stdout.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())

    def _revoke(self, key: ApiKey, *, actor: Any, reason: str, as_json: bool) -> None:
        already = key.revoked
        key = api_key_revoke(key=key, actor=actor, reason=reason)
        summary = key_summary(key)
        if as_json:
            self.stdout.write(json.dumps({**summary, "already_revoked": already}))
        elif already:
            self.stdout.write(f"API key '{key.label}' ({key.prefix}…, #{key.pk}) was already revoked at {_minute(summary['revoked_at'])}")
        else:
            self.stdout.write(
                f"revoked API key '{key.label}' ({key.prefix}…, #{key.pk}) for {_scope(summary)}; a process that "
                f"accepted it moments ago goes on accepting it for up to {API_KEY_CACHE_SECONDS:g} s"
            )

    def _rotate(self, key: ApiKey, *, actor: Any, reason: str, expires_in_days: int | None, as_json: bool) -> None:
        new_key, raw_key = api_key_rotate(key=key, actor=actor, reason=reason, expires_in_days=expires_in_days)
        old, new = key_summary(ApiKey.objects.get(pk=key.pk)), key_summary(new_key)
        expiry = f", expiring {_minute(new['expires_at'])} UTC" if new["expires_at"] else ""
        self.stderr.write(
            f"revoked API key '{key.label}' ({key.prefix}…, #{key.pk}) and created {new_key.prefix}… (#{new_key.pk}) for "
            f"{_scope(new)}{expiry}; store the new key now, it is not shown again — the old one stops working within "
            f"{API_KEY_CACHE_SECONDS:g} s"
        )
        # The new key alone on stdout, as create_api_key prints it; with --json, in the one object printed.
        self.stdout.write(json.dumps({"revoked": old, "created": new, "key": raw_key}) if as_json else raw_key)
