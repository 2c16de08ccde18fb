"""Whether the admin pages that follow running work reload themselves: a display preference kept in the
person's session, so it holds on every page and every link until they change it.

A page that reloads every few seconds puts a screen reader and the keyboard focus back at the top each
time; WCAG 2.2.1 asks that such a time limit can be turned off. A `?refresh=off` in the URL did that for
one address only: the page's own links, and the next running page, reloaded again.
admin/includes/auto_refresh_meta.html and …/auto_refresh_notice.html read the session key below.
"""

from __future__ import annotations

from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponseBadRequest, HttpResponseRedirect
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

# Templates read it by name (request.session.genesis_auto_refresh_off): true once the person stopped it.
SESSION_KEY = "genesis_auto_refresh_off"


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
