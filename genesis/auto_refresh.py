"""Whether the admin pages that follow running work reload themselves: a display preference kept in the
person's session, so it holds on every page and every link until they change it.

A page that reloads every few seconds puts a screen reader and the keyboard focus back at the top each
time; WCAG 2.2.1 asks that such a time limit can be turned off. A `?refresh=off` in the URL did that for
one address only: the page's own links, and the next running page, reloaded again.
admin/includes/auto_refresh_meta.html and …/auto_refresh_notice.html read the session key below, and load
this module as the template library `auto_refresh` (settings.TEMPLATES) for the `auto_refresh` tag.

The stop button is only of use if it can be reached before the first reload: a page reached by a link
waits FIRST_RELOAD_SECONDS before it, the time WCAG 2.2.1 gives to act on a time limit ("at least 20
seconds"), then reloads at its own interval (every 2 s for an audit).

How a response tells its own reload from a visit: it remembers, for this session and this address, when
it was rendered and how long it told the browser to wait. The next render of that address counts as the
reload only if it comes when that reload was due: `after` s later, within RELOAD_LATE_SECONDS. Anything
else — a link, a bookmark, a restored tab, coming back a minute later — is a visit and waits 20 s (two
tabs of one address make each other wait the 20 s: also the safe side).
Why not a marker in the address (`?reloaded=1`, as before): anyone can send it, and after one reload it
sat in the address bar, so a copied, bookmarked or restored link reloaded after 2 s — the very case above.
A timestamped marker would go stale, but a marker that changes sends each reload to another address,
which Chromium takes for a navigation and shows from the top, where a reload of the same address
(`content="N"`, no url) keeps the scroll (measured in headless Chromium, tests/e2e/test_self_reload.py:
a benchmark run page scrolled to 885 px came back at 0 after `url=…?reloaded=1`, at 885 after a reload
of its own address).
Why the cache (Redis, shared by the web processes) and not the session: the session (database engine,
the default) is written whole, so a write per reload would race the "stop reloading" button's own write
from another tab and could undo it; in the cache each address has its own key, which expires by itself,
so nothing grows and nothing needs pruning. Without it (Redis unreachable; without REDIS_URL, another
web process's memory) a reload counts as a visit: the page waits 20 s, the side WCAG asks to err on.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from django import template
from django.contrib.admin.views.decorators import staff_member_required
from django.core.cache import cache
from django.http import HttpRequest, HttpResponseBadRequest, HttpResponseRedirect
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

# Templates read it by name (request.session.genesis_auto_refresh_off): true once the person stopped it.
SESSION_KEY = "genesis_auto_refresh_off"
FIRST_RELOAD_SECONDS = 20
# How late after its due time a reload may arrive and still count as one: the rest of the response, the
# page's parsing and the next request. Later than that it is taken for a visit (20 s), the safe side.
RELOAD_LATE_SECONDS = 5.0
# And how early: none for one clock (the browser starts counting once the page has arrived); a little for
# web processes on different hosts whose clocks differ.
RELOAD_EARLY_SECONDS = 0.5

register = template.Library()


@dataclass(frozen=True)
class Reload:
    after: int  # seconds until this response reloads
    every: int  # the page's own interval, from the first reload on
    page: str  # this page's address: where the stop / resume button comes back to


def _render_key(request: HttpRequest, page: str) -> str | None:
    # One key per session and address (hashed: an address may be long); None without a session.
    session = request.session.session_key
    if not session:
        return None
    return "genesis:auto_refresh:" + hashlib.sha256(f"{session} {page}".encode()).hexdigest()


def _is_reload_due(key: str, now: float) -> bool:
    try:
        last = cache.get(key)
    except RedisError as exc:
        logger.warning("auto refresh: cache unreachable (%s); the page waits as after a visit", type(exc).__name__)
        return False
    if not last:
        return False
    rendered_at, after = last
    return after - RELOAD_EARLY_SECONDS <= now - rendered_at <= after + RELOAD_LATE_SECONDS


def _remember_render(key: str, now: float, after: int) -> None:
    try:
        cache.set(key, (now, after), timeout=after + RELOAD_LATE_SECONDS + 1)
    except RedisError as exc:
        logger.warning("auto refresh: cache unreachable (%s); the next reload will wait as after a visit", type(exc).__name__)


def forget_render(request: HttpRequest, page: str) -> None:
    """The next render of `page` is a visit (20 s), whenever it comes: after the reloading is turned on
    or off."""
    key = _render_key(request, page)
    if key is not None:
        try:
            cache.delete(key)
        except RedisError as exc:
            logger.warning("auto refresh: cache unreachable (%s)", type(exc).__name__)


@register.simple_tag(takes_context=True)
def auto_refresh(context: dict[str, Any], seconds: int) -> Reload:
    """How a page that follows running work every `seconds` s reloads this time. Decided once per request
    (the meta tag and the notice both ask), and remembered only while the page does reload."""
    request: HttpRequest = context["request"]
    decided: Reload | None = getattr(request, "_genesis_auto_refresh", None)
    if decided is not None:
        return decided
    page = request.get_full_path()
    key = _render_key(request, page)
    now = time.time()  # wall clock, not monotonic: the reload may be answered by another process
    reloaded = key is not None and _is_reload_due(key, now)
    after = seconds if reloaded else max(seconds, FIRST_RELOAD_SECONDS)
    if key is not None and not request.session.get(SESSION_KEY):
        _remember_render(key, now, after)
    decided = Reload(after=after, every=seconds, page=page)
    request._genesis_auto_refresh = decided  # type: ignore[attr-defined]  # the request's own memo, as Django's _cached_user
    return decided


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
    # Resumed (or stopped), the page is reached again as by a link: 20 s before its first reload, however
    # soon it comes after its last render.
    forget_render(request, back)
    return HttpResponseRedirect(back)
