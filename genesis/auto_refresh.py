"""Whether the admin pages that follow running work reload themselves: a display preference kept in the
person's session, so it holds on every page and every link until they change it.

A page that reloads every few seconds puts a screen reader and the keyboard focus back at the top each
time; WCAG 2.2.1 asks that such a time limit can be turned off. A `?refresh=off` in the URL did that for
one address only: the page's own links, and the next running page, reloaded again.
admin/includes/auto_refresh_meta.html and …/auto_refresh_notice.html read the session key below, and load
this module as the template library `auto_refresh` (settings.TEMPLATES) for the `auto_refresh` tag.

The stop button is only of use if it can be reached before the first reload: a page reached by a link
waits FIRST_RELOAD_SECONDS before it, the time WCAG 2.2.1 gives to act on a time limit ("at least 20
seconds"), then reloads at its own interval (every 2 s for an audit). The reload goes to the same address
marked `reloaded=1`, which is how the next response knows it is a reload and not a visit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django import template
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponseBadRequest, HttpResponseRedirect
from django.urls import reverse
from django.utils.encoding import escape_uri_path
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

# Templates read it by name (request.session.genesis_auto_refresh_off): true once the person stopped it.
SESSION_KEY = "genesis_auto_refresh_off"
FIRST_RELOAD_SECONDS = 20
RELOADED_PARAMETER = "reloaded"

register = template.Library()


@dataclass(frozen=True)
class Reload:
    after: int  # seconds until this response reloads
    every: int  # the page's own interval, from the first reload on
    url: str  # this page, marked as reloaded: where the reload goes
    page: str  # this page, unmarked: where the stop / resume button comes back to (a visit again)


@register.simple_tag(takes_context=True)
def auto_refresh(context: dict[str, Any], seconds: int) -> Reload:
    """How a page that follows running work every `seconds` s reloads this time."""
    request: HttpRequest = context["request"]
    query = request.GET.copy()
    reloaded = query.pop(RELOADED_PARAMETER, None) is not None
    path = escape_uri_path(request.path)
    page = f"{path}?{query.urlencode()}" if query else path
    query[RELOADED_PARAMETER] = "1"
    after = seconds if reloaded else max(seconds, FIRST_RELOAD_SECONDS)
    return Reload(after=after, every=seconds, url=f"{path}?{query.urlencode()}", page=page)


@require_POST
@staff_member_required
def auto_refresh_set(request: HttpRequest) -> HttpResponseRedirect | HttpResponseBadRequest:
    """Stop (`refresh=off`) or resume (`refresh=on`) the self-reloading, then go back to `next`, the page
    the button was on (only one of this site; else the admin's home)."""
    choice = request.POST.get("refresh")
    if choice not in ("off", "on"):
        return HttpResponseBadRequest("refresh must be 'off' or 'on'")
    request.session[SESSION_KEY] = choice == "off"
    back = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        back = reverse("admin:index")
    return HttpResponseRedirect(back)
