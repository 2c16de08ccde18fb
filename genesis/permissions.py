"""Permission checks that services call, so the admin, the CLI and the API enforce the same rules."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import HttpRequest

from genesis.errors import InvalidInput, PermissionDenied

if TYPE_CHECKING:
    # Only for the annotation: django.contrib.auth.models needs the app registry, and genesis sits
    # below every app. The project uses Django's own User (no AUTH_USER_MODEL).
    from django.contrib.auth.models import User

# Who asks a service to act: a signed-in person, checked for permissions and recorded on the rows
# they write (created_by, requested_by, history), or None for the system itself (Celery beat, the
# demo seed, a command run without --as). An API key is not an actor: services that accept one take
# a separate `principal` argument (models_app.services.registry.ApiPrincipal).
Actor: TypeAlias = "User | None"


def require_permission(*, actor: Actor, permission: str, action: str) -> None:
    """Refuse unless `actor` holds `permission`. `actor=None` means the system itself (beat, seed)."""
    if actor is None:
        return
    if not getattr(actor, "is_active", False) or not actor.has_perm(permission):
        name = getattr(actor, "get_username", lambda: str(actor))()
        raise PermissionDenied(f"user '{name}' may not {action}: it needs the permission '{permission}'")


def acting_user(username: str | None) -> User | None:
    """The user a command acts as (`--as USERNAME`), None for the system when no name is given;
    InvalidInput (a usage error) when nobody has that name."""
    if not username:
        return None
    from django.contrib.auth import get_user_model  # the app registry is ready once a command runs

    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise InvalidInput(f"--as: no user '{username}'")
    return user


def request_actor(request: HttpRequest) -> User:
    """The signed-in person behind an admin request, as the `actor` of the services it calls. Never
    None: None means the system, which no permission check stops. The admin lets only signed-in staff
    in, so an anonymous user here is refused rather than trusted."""
    if not request.user.is_authenticated:
        raise PermissionDenied("sign in to do this")
    return request.user


class PagePermissionRequired(DjangoPermissionDenied):
    """A page of our own refused for want of `permission`: the 403 page (genesis/forbidden.py) names it
    and the groups that have it, as it does for the admin's model pages."""

    def __init__(self, permission: str, *, page: str) -> None:
        super().__init__(f"{page} needs the permission '{permission}'")
        self.permission = permission


def require_page_permission(request: HttpRequest, permission: str, *, page: str) -> None:
    """Refuse the signed-in person `page` (a 403 naming `permission`) unless they hold it."""
    if not request.user.has_perm(permission):
        raise PagePermissionRequired(permission, page=page)
