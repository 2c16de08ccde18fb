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

How a response tells its own reload from a visit: it remembers, for this session and this address, that
it was rendered and how long it told the browser to wait. The next render of that address counts as the
reload only if it comes when that reload was due: `after` s later, within RELOAD_LATE_SECONDS. Anything
else — a link, a bookmark, a restored tab, coming back a minute later — is a visit and waits 20 s.
The browser says so too (Fetch Metadata): a typed address, a link followed (clicked, middle-clicked into a
new tab), F5 all send `Sec-Fetch-User: ?1`, a meta refresh does not (measured in headless Chromium). A
request that carries it is a visit whenever it comes — else a second tab, or a link copied into one, landing
when the first tab's reload was due would take its place and reload after 2 s. Browsers without Fetch
Metadata are told by the timing alone, where a tab landing just when another's reload was due may still
take its short pace. Two tabs of one address overwrite each other's record: both wait 20 s (the safe
side). A HEAD or a prefetch
(`Sec-Purpose`/`Purpose: prefetch`) is no render a browser counts from: it is not remembered.
Why not a marker in the address (`?reloaded=1`, as before): anyone can send it, and after one reload it
sat in the address bar, so a copied, bookmarked or restored link reloaded after 2 s — the very case above.
A timestamped marker would go stale, but a marker that changes sends each reload to another address,
which Chromium takes for a navigation and shows from the top, where a reload of the same address
(`content="N"`, no url) keeps the scroll (measured in headless Chromium, tests/e2e/test_self_reload.py:
a benchmark run page scrolled to 885 px came back at 0 after `url=…?reloaded=1`, at 885 after a reload
of its own address).
Why Redis (shared by the web processes) and not the session: the session (database engine, the default)
is written whole, so a write per reload would race the "stop reloading" button's own write from another
tab and could undo it; in Redis each address has its own key, which expires by itself, so nothing grows
and nothing needs pruning. One clock: the web machines' clocks may differ by seconds, and a time written
by one and read by another made the pace alternate 2 s / 20 s. So no time is written: the record expires
`after` + RELOAD_LATE_SECONDS after the render, and its remaining time to live (PTTL, read in the same
round trip as the record) tells how long ago that was, by Redis's clock alone.
While the reloading is stopped (for the session) a render deletes the page's record, so that turned on
again, any page starts with its 20 s, not only the one the button was on.
Without Redis (unreachable, or no REDIS_URL) every render counts as a visit: the page waits 20 s, the
side WCAG asks to err on, and the warning is logged once a minute.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

import redis
from django import template
from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponseBadRequest, HttpResponseRedirect
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from genesis.logging import Throttled
from genesis.redis_clients import fail_fast_redis

logger = logging.getLogger(__name__)
# Redis away, every render would say so: once a minute tells on-call it goes on.
_warnings = Throttled(60.0)

# Templates read it by name (request.session.genesis_auto_refresh_off): true once the person stopped it.
SESSION_KEY = "genesis_auto_refresh_off"
FIRST_RELOAD_SECONDS = 20
# How late after its due time a reload may arrive and still count as one: the rest of the response, the
# page's parsing and the next request. Later than that it is taken for a visit (20 s), the safe side.
RELOAD_LATE_SECONDS = 5.0
# And how early: one clock (Redis's), and the browser counts from the page's arrival, after the record was
# written; only the rounding of the time to live (milliseconds) is left to allow for.
RELOAD_EARLY_SECONDS = 0.05
# A render must not wait on Redis (genesis.redis_clients.fail_fast_redis: no retries either).
REDIS_TIMEOUT_SECONDS = 0.5
_KEY_PREFIX = "genesis:auto_refresh:"

register = template.Library()
_client: tuple[str, redis.Redis] | None = None


@dataclass(frozen=True)
class Reload:
    after: int  # seconds until this response reloads
    every: int  # the page's own interval, from the first reload on
    page: str  # this page's address: where the stop / resume button comes back to


def _redis() -> redis.Redis | None:
    # One client per process (its pool), made again if REDIS_URL changes (a test's override).
    global _client
    url = settings.REDIS_URL
    if not url:
        return None
    if _client is None or _client[0] != url:
        _client = (url, fail_fast_redis(url, timeout=REDIS_TIMEOUT_SECONDS))
    return _client[1]


def _warn_unreachable(exc: Exception) -> None:
    _warnings.log(logger, logging.WARNING, "unreachable", "auto refresh: Redis unreachable (%s); self-reloading "
                  "pages wait 20 s as after a visit", type(exc).__name__)


def _render_key(request: HttpRequest, page: str) -> str | None:
    # One key per session and address (hashed: an address may be long); None without a session.
    session = request.session.session_key
    if not session:
        return None
    return _KEY_PREFIX + hashlib.sha256(f"{session} {page}".encode()).hexdigest()


def _is_render(request: HttpRequest) -> bool:
    """Whether the browser shows this response and counts its reload from it: not a HEAD, not a prefetch
    (Chromium's `Sec-Purpose: prefetch`, older `Purpose: prefetch`), which may never be shown or only later."""
    purpose = request.headers.get("Sec-Purpose") or request.headers.get("Purpose") or ""
    return request.method != "HEAD" and not purpose.startswith("prefetch")


def _reload_due_then_remember(client: redis.Redis, key: str, after_reload: int, after_visit: int,
                              by_person: bool) -> int:
    """How long this render waits: `after_reload` if it is the reload the last render asked for, else
    `after_visit`; and remembers it. Read and written in one round trip each, by Redis's clock alone."""
    try:
        pipe = client.pipeline(transaction=False)
        pipe.get(key)
        pipe.pttl(key)
        last, ttl_ms = pipe.execute()
    except redis.RedisError as exc:
        _warn_unreachable(exc)
        return after_visit  # and nothing written: Redis just failed, and a record would only mislead
    due = False
    if last is not None and ttl_ms > 0 and not by_person:
        asked = int(last)
        since = asked + RELOAD_LATE_SECONDS - ttl_ms / 1000  # the record expires asked + late after it was set
        due = asked - RELOAD_EARLY_SECONDS <= since <= asked + RELOAD_LATE_SECONDS
    after = after_reload if due else after_visit
    try:
        client.set(key, after, px=int((after + RELOAD_LATE_SECONDS) * 1000))
    except redis.RedisError as exc:
        _warn_unreachable(exc)
    return after


def _forget(key: str) -> None:
    client = _redis()
    if client is None:
        return
    try:
        client.delete(key)
    except redis.RedisError as exc:
        _warn_unreachable(exc)


def forget_render(request: HttpRequest, page: str) -> None:
    """The next render of `page` is a visit (20 s), whenever it comes: after the reloading is turned on
    or off."""
    key = _render_key(request, page)
    if key is not None:
        _forget(key)


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
    after = max(seconds, FIRST_RELOAD_SECONDS)
    client = _redis()
    if key is None or client is None or not _is_render(request):
        pass  # a visit, and nothing to remember it by (or for)
    elif request.session.get(SESSION_KEY):
        # Stopped: no reload to count, and none left over for when it is turned on again — from any page.
        _forget(key)
    else:
        # `Sec-Fetch-User: ?1`: a person navigated (typed, clicked, F5), whenever it comes; a meta refresh
        # sends none.
        by_person = request.headers.get("Sec-Fetch-User") == "?1"
        after = _reload_due_then_remember(client, key, seconds, after, by_person)
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
