from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from genesis.commands import usage_error
from genesis.errors import DomainError
from models_app.registry.models import Agent
from models_app.registry.selectors import known_agents_text
from models_app.registry.services import API_KEY_MAX_EXPIRY_DAYS, api_key_create, api_key_expiry_refusal


class Command(BaseCommand):
    help = (
        "Create an API key for one or more agents, optionally expiring. The key is printed once, as the last line; only "
        "its hash is stored."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        target = parser.add_mutually_exclusive_group(required=True)
        target.add_argument("--agent", action="append", dest="agents", metavar="NAME", help="an agent slug (repeatable)")
        target.add_argument("--all-agents", action="store_true", help="the key may act for every agent")
        parser.add_argument("--label", default="", help="what the key is for (default: the agent names)")
        parser.add_argument(
            "--expires-in-days", type=int, metavar="N",
            help=f"the key stops working N days from now (1 to {API_KEY_MAX_EXPIRY_DAYS}); without it, it never expires",
        )

    def handle(
        self, *args: Any, agents: list[str] | None, all_agents: bool, label: str, expires_in_days: int | None, **options: Any
    ) -> None:
        refusal = api_key_expiry_refusal(expires_in_days)
        if refusal:
            raise usage_error(f"--expires-in-days: {refusal}")
        selected: list[Agent] = []
        if agents:
            found = {agent.slug: agent for agent in Agent.objects.filter(slug__in=agents)}
            missing = [slug for slug in agents if slug not in found]
            if missing:
                raise usage_error(f"--agent: unknown agent(s): {', '.join(missing)}; known agents: {known_agents_text()}")
            selected = [found[slug] for slug in dict.fromkeys(agents)]
        label = label or ("all agents" if all_agents else ", ".join(agent.slug for agent in selected))
        try:
            key, raw_key = api_key_create(label=label, agents=selected, all_agents=all_agents, expires_in_days=expires_in_days)
        except DomainError as exc:
            raise CommandError(exc.message) from None
        scope = "all agents" if all_agents else ", ".join(agent.slug for agent in selected)
        expiry = f", expiring {key.expires_at:%Y-%m-%d %H:%M} UTC" if key.expires_at else ""
        self.stderr.write(f"created API key '{key.label}' ({key.prefix}…) for {scope}{expiry}; store it now, it is not shown again")
        self.stdout.write(raw_key)
