"""Reads of the model registry that are more than a `.get()`."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db.models import Count, DateTimeField, ExpressionWrapper, F, Prefetch, Q, QuerySet, Value
from django.utils import timezone

from genesis.errors import InvalidInput, NotFound
from models_app.registry.models import Agent, ApiKey, ModelStatus, ModelVersion

CANDIDATE_STATUSES = (
    ModelStatus.REGISTERED,
    ModelStatus.BENCHMARKING,
    ModelStatus.APPROVED_FOR_ROLLOUT,
    ModelStatus.ROLLING_OUT,
)


def agents_with_versions(*, slugs: frozenset[str] | None = None) -> QuerySet[Agent]:
    """Agents with their live version and candidates prefetched (two queries in all)."""
    agents = Agent.objects.all()
    if slugs is not None:
        agents = agents.filter(slug__in=slugs)
    return agents.prefetch_related(
        Prefetch(
            "versions",
            queryset=ModelVersion.objects.exclude(status__in=[ModelStatus.RETIRED, ModelStatus.REJECTED])
            .select_related("provider")
            .order_by("-created_at"),
            to_attr="active_versions",
        )
    )


def known_agents_text() -> str:
    """The agents' slugs for a message about an unknown one (a typo is the usual cause)."""
    return ", ".join(Agent.objects.order_by("slug").values_list("slug", flat=True)) or "none (run seed_demo)"


def live_version(*, agent: Agent) -> ModelVersion | None:
    return agent.versions.select_related("provider").filter(status=ModelStatus.LIVE).first()


def agent_has_live_version(*, agent_id: int, other_than: int | None = None) -> bool:
    """Whether the agent has a live version (other than `other_than`): what decides whether a baseline
    may go live by hand (lifecycle.py)."""
    versions = ModelVersion.objects.filter(agent_id=agent_id, status=ModelStatus.LIVE)
    if other_than is not None:
        versions = versions.exclude(pk=other_than)
    return versions.exists()


def baseline_version(*, agent: Agent) -> ModelVersion | None:
    """The version a fine-tune is compared against: the live one, else the newest baseline."""
    return live_version(agent=agent) or (
        agent.versions.select_related("provider").filter(kind="baseline").order_by("-created_at").first()
    )


def candidate_versions(*, agent: Agent) -> QuerySet[ModelVersion]:
    return (
        agent.versions.select_related("provider")
        .filter(kind="fine_tuned", status__in=CANDIDATE_STATUSES)
        .order_by("-created_at")
    )


# When a key needs a person's attention, as `api_keys --list --stale` and the admin's filter show it:
# it expires within this many days (a service whose key expires stops working; time to rotate), or it
# has not been used for this many (a key nobody uses is only a liability: revoke it).
API_KEY_EXPIRY_WARNING_DAYS = 14
API_KEY_UNUSED_DAYS = 90
# An expired key is counted (state "expired") while its last accepted use is this recent: a key in use
# recently that has expired — revoke it if its service moved to another key, rotate it if not. Bounded,
# so a retired key nobody revoked stops being counted 14 days after its last use, instead of forever.
# Whether a service is still calling with it is the refusals counter's to say (ApiKeysExpiredInUse).
API_KEY_EXPIRED_RECENT_USE_DAYS = 14
# The states api_keys_in_use_by_expiry counts keys in (the gauge's `state` label).
API_KEY_EXPIRY_STATES = ("expiring", "expired")


def api_keys_expiring_q(*, now: datetime) -> Q:
    """Unrevoked keys in their warning window (api_key_warning_window), or expired."""
    return Q(revoked=False) & _in_warning_window_q(now=now)


def api_key_warning_window(key: ApiKey) -> timedelta:
    """How long before its expiry a key is said to expire soon: API_KEY_EXPIRY_WARNING_DAYS, or the
    second half of its lifetime when that is shorter. With a fixed 14 days a key made to last 7 (a CI
    token, say) and rotated each week was "expiring" from its first day, so the warning about it
    never ended; it now starts at half-time, with as long left to rotate as the key has lived."""
    assert key.expires_at is not None
    return min(timedelta(days=API_KEY_EXPIRY_WARNING_DAYS), (key.expires_at - key.created_at) / 2)


def _in_warning_window_q(*, now: datetime) -> Q:
    # api_key_warning_window in SQL: time left ≤ 14 days, and time left ≤ half the lifetime, which is
    # expires_at − now ≤ now − created_at (the two halves compared, no division).
    left_at_most_lived = ExpressionWrapper(Value(now) + (Value(now) - F("created_at")), output_field=DateTimeField())
    return Q(expires_at__lte=now + timedelta(days=API_KEY_EXPIRY_WARNING_DAYS)) & Q(expires_at__lte=left_at_most_lived)


def api_keys_unused_q(*, now: datetime) -> Q:
    """Unrevoked keys not used for API_KEY_UNUSED_DAYS: last used before then, or never used and made before then."""
    since = now - timedelta(days=API_KEY_UNUSED_DAYS)
    return Q(revoked=False) & (Q(last_used_at__lt=since) | Q(last_used_at__isnull=True, created_at__lt=since))


def api_keys_for(*, agent_slug: str | None = None, stale: bool = False, now: datetime | None = None) -> QuerySet[ApiKey]:
    """API keys, newest first, revoked ones included; with `agent_slug`, the keys that may act for
    that agent (its own and those for all agents); with `stale`, only the unrevoked keys that expire
    within API_KEY_EXPIRY_WARNING_DAYS (or have expired) or were not used for API_KEY_UNUSED_DAYS."""
    keys = ApiKey.objects.select_related("created_by").prefetch_related("agents")
    if agent_slug is not None:
        keys = keys.filter(Q(all_agents=True) | Q(agents__slug=agent_slug)).distinct()
    if stale:
        now = now or timezone.now()
        keys = keys.filter(api_keys_expiring_q(now=now) | api_keys_unused_q(now=now))
    return keys.order_by("-created_at", "-pk")


def api_keys_in_use_by_expiry(*, now: datetime) -> dict[str, int]:
    """Unrevoked keys in use whose expiry needs a person, by state (genesis_api_keys_expiring_soon;
    ApiKeysExpiringSoon):

    - ``expiring``: expires within API_KEY_EXPIRY_WARNING_DAYS and used within API_KEY_UNUSED_DAYS — a
      service that will start answering 401 unless someone rotates its key;
    - ``expired``: past its expiry and last used within API_KEY_EXPIRED_RECENT_USE_DAYS of now — a key
      in use until recently: revoke it if its service moved to another key, rotate it if not.

    Bounded in time: a key's accepted uses stop at its expiry (a refused attempt is not one), so an
    expired key leaves the count at most API_KEY_EXPIRED_RECENT_USE_DAYS after it expired, rotated or
    not. Counting it until rotated or revoked paged forever for a key whose service had moved on and
    that nobody revoked. Whether a service is still calling with an expired key — the outage — is
    counted where it is refused, genesis_api_key_refusals_total{reason="expired"} (ApiKeysExpiredInUse).
    A key nobody used is left out: its expiry breaks nothing, and --stale already lists it for revoking."""
    return ApiKey.objects.filter(api_keys_expiring_q(now=now)).aggregate(
        expiring=Count("pk", filter=Q(expires_at__gt=now, last_used_at__gte=now - timedelta(days=API_KEY_UNUSED_DAYS))),
        expired=Count("pk", filter=Q(
            expires_at__lte=now, last_used_at__gte=now - timedelta(days=API_KEY_EXPIRED_RECENT_USE_DAYS),
        )),
    )


def api_key_attention(key: ApiKey, *, now: datetime) -> list[str]:
    """Why an unrevoked key needs attention, in words ("expires in 3 days", "expires in 2 minutes",
    "expired just now", "expired 2 days ago", "unused for 120 days", "never used in 95 days"); empty
    when it needs none."""
    if key.revoked:
        return []
    reasons = []
    if key.expires_at is not None:
        left = key.expires_at - now
        if left <= timedelta(0):
            ago = _span_text(-left)
            reasons.append(f"expired {ago} ago" if ago else "expired just now")
        elif left <= api_key_warning_window(key):
            remaining = _span_text(left)
            reasons.append(f"expires in {remaining}" if remaining else "expires in less than a minute")
    idle = now - (key.last_used_at or key.created_at)
    if idle > timedelta(days=API_KEY_UNUSED_DAYS):
        reasons.append(f"{'unused for' if key.last_used_at else 'never used in'} {_span_text(idle)}")
    return reasons


def _span_text(span: timedelta) -> str | None:
    # Floored, never rounded: time left is never overstated (2 minutes left is not "1 hour", 2 days 23
    # hours is "2 days"), and time since is counted in whole units passed (5 s after is not "1 hour
    # ago"). In the largest unit that is at least 1 — days, hours, minutes — so "0 days" never hides how
    # urgent it is; None under a minute, which the caller words ("just now").
    for unit, name in ((timedelta(days=1), "day"), (timedelta(hours=1), "hour"), (timedelta(minutes=1), "minute")):
        count = span // unit
        if count >= 1:
            return f"{count} {name}{'s' if count != 1 else ''}"
    return None


def api_key_find(*, ref: str) -> ApiKey:
    """The key `ref` names: its id ("12" or "#12") or the prefix listings show ("gk_AbCdEfGh", with or
    without a trailing "…"). NotFound when none; InvalidInput for a whole key (it would stay in the
    shell's history) or a prefix that names several keys (8 random characters rarely collide)."""
    ref = ref.strip().removesuffix("…")
    if ref.removeprefix("#").isdigit():
        key = ApiKey.objects.filter(pk=int(ref.removeprefix("#"))).first()
        if key is None:
            raise NotFound(f"no API key has the id {ref.removeprefix('#')}")
        return key
    prefix_length = ApiKey._meta.get_field("prefix").max_length or 0
    if len(ref) > prefix_length:
        raise InvalidInput(
            "that is longer than a key's prefix: give the prefix (its first characters, as api_keys --list shows "
            "them) or the id, not the whole key — a key typed on a command line stays in the shell's history"
        )
    found = list(ApiKey.objects.filter(prefix=ref).order_by("pk")[:10])
    if not found:
        raise NotFound(f"no API key has the prefix '{ref}' (api_keys --list shows them)")
    if len(found) > 1:
        raise InvalidInput(f"the prefix '{ref}' names keys {', '.join(f'#{key.pk}' for key in found)}: give the id")
    return found[0]
