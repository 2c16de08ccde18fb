"""Permission checks that services call, so the admin, the CLI and the API enforce the same rules."""

from __future__ import annotations

from typing import Any

from genesis.errors import PermissionDenied


def require_permission(*, actor: Any, permission: str, action: str) -> None:
    """Refuse unless `actor` holds `permission`. `actor=None` means the system itself (beat, seed)."""
    if actor is None:
        return
    if not getattr(actor, "is_active", False) or not actor.has_perm(permission):
        name = getattr(actor, "get_username", lambda: str(actor))()
        raise PermissionDenied(f"user '{name}' may not {action}: it needs the permission '{permission}'")
