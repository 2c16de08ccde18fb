"""What every management command shares: the usage error (exit 2), the person behind `--as` and the
agent behind `--agent`. Commands are entry points (like the wiring), so this may import the apps."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError

from genesis.errors import InvalidInput
from genesis.permissions import acting_user
from models_app.registry.models import Agent
from models_app.registry.selectors import known_agents_text

USAGE = 2  # exit status of a usage error, in every command (README: "exit 2 is always a usage error")


def usage_error(message: str) -> CommandError:
    return CommandError(message, returncode=USAGE)


def command_user(username: str | None) -> Any:
    """The user named by `--as`, None (the system) when none is named; a usage error when nobody has
    that name."""
    try:
        return acting_user(username)
    except InvalidInput as exc:
        raise usage_error(exc.message) from None


def command_agent(slug: str) -> Agent:
    """The agent `--agent` names; a usage error naming the agents there are when none has that slug."""
    agent = Agent.objects.filter(slug=slug).first()
    if agent is None:
        raise usage_error(f"--agent: unknown agent '{slug}'; known agents: {known_agents_text()}")
    return agent
