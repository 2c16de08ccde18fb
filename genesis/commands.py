"""What every management command shares: the usage error (exit 2) and the person behind `--as`."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError

from genesis.errors import InvalidInput
from genesis.permissions import acting_user

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
