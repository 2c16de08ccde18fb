"""The 403 page: what was refused and which permission it needs, instead of Django's bare "403
Forbidden". A view that knows the permission says it in its PermissionDenied — with the groups that
have it when it raises genesis.permissions.PagePermissionRequired; for the admin's own model pages (add,
change, delete, list, history) it is read from the URL's name."""

from __future__ import annotations

import re

from django.contrib import admin
from django.contrib.auth.models import Group
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import Resolver404, resolve

# "models_app_finetuningjob_add": the admin's URL names are <app label>_<model>_<view>.
_ADMIN_URL_NAME = re.compile(r"(?P<app>\w+)_(?P<model>[a-z0-9]+)_(?P<view>add|change|delete|changelist|history)")
_CODENAME_OF_VIEW = {"add": "add", "change": "view", "delete": "delete", "changelist": "view", "history": "view"}


def needed_permission(request: HttpRequest) -> str:
    """'app.codename' an admin model page needs, from its URL name; "" for any other page."""
    try:
        match = resolve(request.path_info)
    except Resolver404:
        return ""
    named = _ADMIN_URL_NAME.fullmatch(match.url_name or "")
    if named is None:
        return ""
    return f"{named['app']}.{_CODENAME_OF_VIEW[named['view']]}_{named['model']}"


def groups_with(permission: str) -> list[str]:
    app_label, codename = permission.split(".")
    return list(Group.objects.filter(permissions__codename=codename, permissions__content_type__app_label=app_label)
                .values_list("name", flat=True).order_by("name"))


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """handler403 (genesis/urls.py)."""
    reason = str(exception or "")
    permission = getattr(exception, "permission", "") or needed_permission(request)  # PagePermissionRequired's, else the URL's
    if not reason and permission:
        reason = f"this page needs the permission '{permission}'"
    groups = groups_with(permission) if permission else []
    context = {
        **(admin.site.each_context(request) if getattr(request.user, "is_staff", False) else {}),
        "title": "Not allowed", "reason": reason or "you may not open this page",
        "username": request.user.get_username() if request.user.is_authenticated else "",
        "groups": groups,
    }
    return TemplateResponse(request, "403.html", context, status=403)
