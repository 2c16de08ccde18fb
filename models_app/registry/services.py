"""Every write to the model registry: agents, providers, model versions and API keys."""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import DatabaseError, transaction
from django.http import HttpRequest
from django.utils import timezone

from genesis.config.schema import API_KEY_VARIABLE
from genesis.errors import Conflict, InvalidInput, NotFound, PermissionDenied, Unauthenticated
from genesis.history import record_history
from genesis.permissions import Actor, require_permission
from models_app.registry import lifecycle
from models_app.registry.gateway import provider_destinations
from models_app.registry.metrics import API_KEY_REFUSALS
from models_app.registry.models import (
    Agent,
    ApiKey,
    ModelKind,
    ModelStatus,
    ModelVersion,
    ProviderAccount,
    ProviderKind,
)
from models_app.registry.selectors import agent_has_live_version

# --- agents and providers ------------------------------------------------------------------------


@transaction.atomic
def agent_ensure(*, slug: str, name: str, actor: Actor = None, **defaults: Any) -> Agent:
    """The agent with this slug, created with these values when missing; an existing agent is left
    as people edited it."""
    require_permission(actor=actor, permission="models_app.add_agent", action="add agents")
    agent, created = Agent.objects.get_or_create(slug=slug, defaults={"name": name, **defaults})
    if created:
        agent.history.filter(history_type="+").update(history_user=actor)
    return agent


@transaction.atomic
def agent_upsert(*, slug: str, name: str, purpose: str = "", actor: Actor = None, **defaults: Any) -> Agent:
    require_permission(actor=actor, permission="models_app.change_agent", action="edit agents")
    agent, created = Agent.objects.get_or_create(slug=slug, defaults={"name": name, "purpose": purpose, **defaults})
    if not created:
        changed = {"name": name, "purpose": purpose, **defaults}
        if any(getattr(agent, field) != value for field, value in changed.items()):
            for field, value in changed.items():
                setattr(agent, field, value)
            record_history(agent, actor=actor, reason="updated")
            agent.save()
    return agent


@transaction.atomic
def provider_account_upsert(*, name: str, kind: str, base_url: str, api_key_env: str, actor: Actor = None, **defaults: Any) -> ProviderAccount:
    """Create or change the provider account `name`. Its URL must be a destination the environment
    allows for its key variable (gateway.provider_destinations: GENESIS_PROVIDER_HOSTS): who may edit
    accounts chooses among those, never where a key goes. The history entry names who changed what."""
    require_permission(actor=actor, permission="models_app.change_provideraccount", action="edit providers")
    validate_api_key_env(api_key_env)
    if kind not in ProviderKind.values:
        raise InvalidInput(f"kind: '{kind}' is not one of {', '.join(ProviderKind.values)}")
    values = {"kind": kind, "base_url": base_url, "api_key_env": api_key_env, **defaults}
    provider = ProviderAccount.objects.select_for_update().filter(name=name).first()
    # The destination is judged when it is set or changed. An account the environment no longer allows
    # can still be changed otherwise — disabled, say — and sends nothing anyway (the gateway refuses it).
    destination = (kind, base_url, api_key_env)
    if provider is None or destination != (provider.kind, provider.base_url, provider.api_key_env):
        refusal = provider_destinations().refusal(kind=kind, base_url=base_url, api_key_env=api_key_env)
        if refusal:
            raise InvalidInput(f"base_url: {refusal}")
    if provider is None:
        provider = ProviderAccount(name=name)
        changes = "created: " + _changes_text({}, values)
    else:
        changes = _changes_text({field: getattr(provider, field) for field in values}, values)
        if not changes:
            return provider
    for field, value in values.items():
        setattr(provider, field, value)
    record_history(provider, actor=actor, reason=changes)
    provider.save()
    return provider


def _changes_text(before: dict[str, Any], after: dict[str, Any]) -> str:
    """The fields whose value changes, as "base_url: http://a → https://b; enabled: True → False"."""
    return "; ".join(
        f"{field}: {before[field]} → {value}" if field in before else f"{field}: {value}"
        for field, value in after.items()
        if field not in before or before[field] != value
    )


def validate_api_key_env(name: str) -> None:
    """A provider's key is sent as a bearer token to the provider's URL, so the variable it names must
    be an API key's: naming DATABASE_URL or GENESIS_SECRET_KEY would hand that secret to whoever can
    edit the account."""
    if name and not API_KEY_VARIABLE.fullmatch(name):
        raise InvalidInput(
            f"api_key_env: '{name}' is not allowed; name an environment variable ending in _API_KEY, "
            "e.g. MISTRAL_API_KEY"
        )


# --- model versions ------------------------------------------------------------------------------


@transaction.atomic
def model_version_register(
    *,
    agent: Agent,
    provider: ProviderAccount,
    model_id: str,
    base_model: str,
    kind: str,
    actor: Actor = None,
    reason: str = "",
) -> ModelVersion:
    """Register a model an agent could use. Registering the same (agent, provider, model) twice
    returns the existing version, so a retried task or a re-run seed never makes duplicates."""
    require_permission(actor=actor, permission="models_app.add_modelversion", action="register model versions")
    if kind not in ModelKind.values:
        raise InvalidInput(f"kind: '{kind}' is not one of {', '.join(ModelKind.values)}")
    if not model_id.strip():
        raise InvalidInput("model_id: must not be empty")
    if kind == ModelKind.BASELINE and model_id.strip().startswith(lifecycle.FINE_TUNED_PREFIX):
        # Whoever registers declares the kind, and a baseline is what an agent's first live model may be
        # without a benchmark (lifecycle.py): a fine-tune must not pass for one.
        raise InvalidInput(
            f"kind: '{model_id}' is a fine-tuned model (its id starts with '{lifecycle.FINE_TUNED_PREFIX}'); register it "
            f"as {ModelKind.FINE_TUNED}, to be benchmarked and rolled out"
        )
    version, created = ModelVersion.objects.get_or_create(
        agent=agent,
        provider=provider,
        model_id=model_id,
        defaults={"base_model": base_model, "kind": kind, "registered_by": actor, "reason": reason},
    )
    if created:
        # get_or_create saved before we could say who; record it on the creation entry.
        version.history.filter(history_type="+").update(history_user=actor, history_change_reason=reason)
    return version


@transaction.atomic
def model_version_transition(
    *, version: ModelVersion, to_status: str, actor: Actor = None, reason: str = "", verdict_overridden: bool = False,
    on_behalf_of: Actor = None, by_hand: bool = False,
) -> ModelVersion:
    """Move a version along its lifecycle (models_app/registry/lifecycle.py), refusing illegal moves with a
    message. Making a version live retires the agent's previous live version in the same transaction.

    Called by the services that own each move (benchmarks, rollouts, the by-hand change above);
    `verdict_overridden=True` may only be passed by a service that has itself checked the override
    permission and recorded the reason.

    `on_behalf_of`: the person whose action in another service moved the version (a rollout's
    starter or approver), when that service checked its own permission and calls as Genesis
    (`actor=None`): the history entries name that person, without asking them for
    models_app.change_modelversion.

    `by_hand`: a person's own change (the admin's "Change status…"), held to lifecycle.manual_targets —
    checked here, on the row as it is under the lock, not as the caller last read it."""
    require_permission(actor=actor, permission="models_app.change_modelversion", action="change model status")
    actor_in_history = on_behalf_of if actor is None and getattr(on_behalf_of, "pk", None) else actor
    if to_status == ModelStatus.LIVE:
        # Serialises everything that makes one of this agent's versions live (a first baseline put live by
        # hand, a rollout completing), so "the agent has no live version" cannot change under the check.
        # NO KEY: rows that refer to the agent (outcomes, cost entries) are still written meanwhile.
        Agent.objects.select_for_update(no_key=True).filter(pk=version.agent_id).first()
    version = ModelVersion.objects.select_for_update().select_related("agent").get(pk=version.pk)
    agent_has_live = agent_has_live_version(agent_id=version.agent_id, other_than=version.pk)
    if by_hand:
        refusal = _by_hand_refusal(version=version, to_status=to_status, agent_has_live=agent_has_live)
    else:
        refusal = lifecycle.transition_refusal(
            current=version.status, target=to_status, kind=version.kind, verdict_overridden=verdict_overridden,
            agent_has_live=agent_has_live,
        )
    if refusal:
        raise Conflict(f"{version.agent.slug} / {version.model_id}: {refusal}")
    now = timezone.now()
    if to_status == ModelStatus.LIVE:
        for previous in ModelVersion.objects.select_for_update().filter(agent=version.agent, status=ModelStatus.LIVE):
            previous.status = ModelStatus.RETIRED
            previous.status_changed_at = now
            record_history(previous, actor=actor_in_history, reason=f"replaced by {version.model_id}")
            previous.save(update_fields=["status", "status_changed_at"])
        # Every approval was a PASS (or an override) against the model that served until now: against the
        # new live model it proves nothing, so those candidates are benchmarked again before a rollout.
        stale = ModelVersion.objects.select_for_update().filter(agent=version.agent, status=ModelStatus.APPROVED_FOR_ROLLOUT)
        for candidate in stale.exclude(pk=version.pk):
            candidate.status = ModelStatus.REGISTERED
            candidate.status_changed_at = now
            record_history(candidate, actor=actor_in_history, reason=(
                f"approved against the live model of then; {version.model_id} is live now: benchmark it again "
                "against the live model (or override) before a rollout"))
            candidate.save(update_fields=["status", "status_changed_at"])
    version.status = to_status
    version.status_changed_at = now
    record_history(version, actor=actor_in_history, reason=reason)
    version.save(update_fields=["status", "status_changed_at"])
    return version


@transaction.atomic
def model_version_change_status_by_hand(
    *, version: ModelVersion, to_status: str, actor: Actor, reason: str
) -> ModelVersion:
    """A person retires or rejects a version that serves nobody, or puts an agent's first baseline live
    (lifecycle.py says why only the first). Benchmarks and rollouts move versions through their own
    services; this refuses to stand in for them."""
    if not reason.strip():
        raise InvalidInput("reason: say why the status changes; it is kept in the version's history")
    return model_version_transition(version=version, to_status=to_status, actor=actor, reason=reason, by_hand=True)


def _by_hand_refusal(*, version: ModelVersion, to_status: str, agent_has_live: bool) -> str | None:
    allowed = lifecycle.manual_targets(current=version.status, kind=version.kind, agent_has_live=agent_has_live)
    if to_status in allowed:
        return None
    why = lifecycle.transition_refusal(current=version.status, target=to_status, kind=version.kind, agent_has_live=agent_has_live)
    if version.status == ModelStatus.ROLLING_OUT:
        why = "it serves its experiment's treatment arm: roll the experiment back (that rejects it) or complete it"
    return (
        f"a person may move a {version.status} version only to {', '.join(allowed) or 'nothing'} by hand"
        + (f" — {why}" if why else "")
        + "; benchmarking and approval come from a benchmark run (or a verdict override), rolling out and "
        "going live from an approved rollout"
    )


# --- API keys -------------------------------------------------------------------------------------

logger = logging.getLogger(__name__)

API_KEY_PREFIX = "gk_"


def hash_api_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


# An expiry is asked for in whole days from now, as GitHub and GitLab ask for it. Ten years at most:
# beyond that "expires" means nothing, and a slip (36500) should be refused, not taken for a choice.
API_KEY_MAX_EXPIRY_DAYS = 3650


def api_key_expiry_refusal(expires_in_days: int | None) -> str | None:
    """Why `expires_in_days` is not a lifetime a key may be given, or None when it is (None: no expiry)."""
    if expires_in_days is None:
        return None
    if isinstance(expires_in_days, bool) or not isinstance(expires_in_days, int) or not 1 <= expires_in_days <= API_KEY_MAX_EXPIRY_DAYS:
        return f"must be a whole number of days from 1 to {API_KEY_MAX_EXPIRY_DAYS} (ten years), not {expires_in_days!r}"
    return None


def _expiry_text(expires_at: datetime | None, lifetime: timedelta | None) -> str:
    # For the key's history: the moment, and the lifetime a person chose (or a rotation carried over).
    if expires_at is None or lifetime is None:
        return "never expires"
    return f"expires {expires_at:%Y-%m-%d %H:%M} UTC (a lifetime of {_days_text(lifetime)})"


def _days_text(span: timedelta) -> str:
    days = span / timedelta(days=1)
    return f"{days:g} day{'' if days == 1 else 's'}" if days == int(days) else f"{days:.1f} days"


@transaction.atomic
def api_key_create(
    *, label: str, agents: list[Agent] | None = None, all_agents: bool = False, actor: Actor = None, reason: str = "",
    expires_in_days: int | None = None,
) -> tuple[ApiKey, str]:
    """Create a key and return it with its raw value, which is shown once and never stored.
    `expires_in_days`: the key stops authenticating that many days from now (None: never); the key's
    history names who set it, as it names who created the key."""
    require_permission(actor=actor, permission="models_app.add_apikey", action="create API keys")
    refusal = api_key_expiry_refusal(expires_in_days)
    if refusal:
        raise InvalidInput(f"expires_in_days: {refusal}")
    lifetime = timedelta(days=expires_in_days) if expires_in_days is not None else None
    return _api_key_insert(label=label, agents=agents, all_agents=all_agents, actor=actor, reason=reason, lifetime=lifetime)


def _api_key_insert(
    *, label: str, agents: list[Agent] | None, all_agents: bool, actor: Actor, reason: str, lifetime: timedelta | None,
) -> tuple[ApiKey, str]:
    if not label.strip():
        raise InvalidInput("label: must not be empty")
    if not all_agents and not agents:
        raise InvalidInput("agents: name at least one agent, or allow all agents")
    raw_key = f"{API_KEY_PREFIX}{secrets.token_urlsafe(32)}"
    expires_at = timezone.now() + lifetime if lifetime is not None else None
    key = ApiKey(
        label=label,
        prefix=raw_key[: len(API_KEY_PREFIX) + 8],
        hashed_key=hash_api_key(raw_key),
        all_agents=all_agents,
        created_by=actor,
        expires_at=expires_at,
    )
    # A key made as before (no expiry) keeps the reason as given; an expiry is said in words beside the
    # column the history also keeps, so "who set it to when" reads in one line.
    if expires_at is not None:
        reason = f"{reason}; {_expiry_text(expires_at, lifetime)}" if reason else _expiry_text(expires_at, lifetime)
    record_history(key, actor=actor, reason=reason)
    key.save()
    if agents:
        key.agents.set(agents)
    return key, raw_key


@transaction.atomic
def api_key_revoke(*, key: ApiKey, actor: Actor = None, reason: str = "") -> ApiKey:
    """Revoke a key (it stops authenticating within API_KEY_CACHE_SECONDS everywhere); revoking a
    revoked key changes nothing. The key's history names who and why."""
    require_permission(actor=actor, permission="models_app.change_apikey", action="revoke API keys")
    key = ApiKey.objects.select_for_update().get(pk=key.pk)
    if not key.revoked:
        key.revoked = True
        key.revoked_at = timezone.now()
        record_history(key, actor=actor, reason=reason)
        key.save(update_fields=["revoked", "revoked_at"])
    return key


@transaction.atomic
def api_key_rotate(
    *, key: ApiKey, actor: Actor = None, reason: str = "", expires_in_days: int | None = None,
) -> tuple[ApiKey, str]:
    """Replace a key: a new key with the same label and scope, returned with its raw value (shown
    once), and the old one revoked, in one transaction. A revoked key is not rotated — create a new
    key instead, so a rotation never brings a scope back to life by accident; an expired one is (that
    is what a person does with a key that expired).

    The new key's expiry: `expires_in_days` from now when given; otherwise the old key's lifetime
    (created → expires), counted from now, as GitHub's "regenerate token" offers — keeping the old
    key's remaining time instead would hand back, for a key rotated because it is about to expire, a
    key about to expire. A key that never expired is replaced by one that never expires."""
    require_permission(actor=actor, permission="models_app.add_apikey", action="rotate API keys")
    require_permission(actor=actor, permission="models_app.change_apikey", action="rotate API keys")
    refusal = api_key_expiry_refusal(expires_in_days)
    if refusal:
        raise InvalidInput(f"expires_in_days: {refusal}")
    old = ApiKey.objects.select_for_update().get(pk=key.pk)
    if old.revoked:
        raise Conflict(
            f"API key '{old.label}' ({old.prefix}…) is revoked: it is not rotated; make a new key with create_api_key"
        )
    if expires_in_days is not None:
        lifetime: timedelta | None = timedelta(days=expires_in_days)
    else:
        # To the second: created_at is stamped on insert, a moment after expires_at was computed.
        lifetime = (timedelta(seconds=round((old.expires_at - old.created_at).total_seconds()))
                    if old.expires_at is not None else None)
    new, raw_key = _api_key_insert(
        label=old.label, agents=list(old.agents.all()), all_agents=old.all_agents, actor=actor, lifetime=lifetime,
        reason=f"rotation of {old.prefix}…: {reason}" if reason else f"rotation of {old.prefix}…",
    )
    api_key_revoke(key=old, actor=actor, reason=f"rotated (replaced by {new.prefix}…): {reason}" if reason else
                   f"rotated (replaced by {new.prefix}…)")
    return new, raw_key


@dataclass(frozen=True)
class ApiPrincipal:
    """Who is calling the API: an immutable snapshot of a key, safe to cache in the process."""

    key_id: int
    label: str
    all_agents: bool
    agent_slugs: frozenset[str]
    prefix: str = ""
    expires_at: datetime | None = None  # None: never; judged at every authentication, cached or not

    def may_act_for(self, agent_slug: str) -> bool:
        return self.all_agents or agent_slug in self.agent_slugs


def request_principal(request: HttpRequest) -> ApiPrincipal:
    """The API key behind an API request. The API's bearer authentication (genesis/api.py) refuses
    a request without a valid key before any endpoint runs, and leaves the key in `request.auth`."""
    return request.auth  # type: ignore[attr-defined]  # set by django-ninja; Django's HttpRequest stub does not know it


# Authentication is on every API request, the routing hot path included, so a key seen recently is
# answered from memory. A revoked key therefore keeps working for at most this many seconds in a
# process that saw it just before.
API_KEY_CACHE_SECONDS = 10.0
# Only keys that exist are remembered (misses would let anyone grow the cache), and at most this many.
API_KEY_CACHE_MAX_ENTRIES = 10_000
_principal_cache: dict[str, tuple[float, ApiPrincipal | None]] = {}
_principal_cache_lock = threading.Lock()


def api_key_authenticate(*, raw_key: str) -> ApiPrincipal | None:
    """The principal for a raw bearer key, or None when the key is unknown or revoked. An expired key
    raises Unauthenticated (401) saying so and what to do: its holder can act on that, unlike on
    "invalid". Expiry is judged on every call against the clock, cached key or not, so a key never
    outlives its expires_at (the cache only bounds how late a revocation is seen)."""
    if not raw_key.startswith(API_KEY_PREFIX):
        API_KEY_REFUSALS.labels("unknown").inc()
        return None
    principal = _principal_of(hash_api_key(raw_key))
    if principal is None:
        API_KEY_REFUSALS.labels("unknown").inc()
    elif principal.expires_at is not None and principal.expires_at <= timezone.now():
        # A service still calling with an expired key: failing now (ApiKeysExpiredInUse fires on it; the
        # gauge only says the key expired, and a retired key's expiry breaks nothing).
        API_KEY_REFUSALS.labels("expired").inc()
        # The caller is not authenticated: the API names the key by its prefix only (which the caller
        # holds already, and which `api_keys --rotate` takes), never by its label — a label may say
        # whose service it is or what it reaches. The message for logs and people keeps the label.
        remedy = (
            f"expired at {principal.expires_at:%Y-%m-%d %H:%M} UTC: ask whoever manages your API keys to rotate it "
            f"(manage.py api_keys --rotate {principal.prefix} --as USERNAME --reason TEXT, which keeps its scope) or "
            "to create a new one (manage.py create_api_key), and send the new key"
        )
        raise Unauthenticated(
            f"API key '{principal.label}' ({principal.prefix}…) {remedy}", api_message=f"API key {principal.prefix}… {remedy}",
        )
    return principal


def _principal_of(digest: str) -> ApiPrincipal | None:
    # The key's snapshot, from the process cache when seen within API_KEY_CACHE_SECONDS. Expired keys are
    # cached too (they exist, so the cache stays bounded) and refused by the caller.
    now = time.monotonic()
    cached = _principal_cache.get(digest)
    if cached and now - cached[0] < API_KEY_CACHE_SECONDS:
        return cached[1]
    try:
        key = ApiKey.objects.filter(hashed_key=digest, revoked=False).prefetch_related("agents").first()
    except DatabaseError:
        if cached:
            # The database cannot say whether the key was revoked meanwhile, and requests that need no
            # database (POST /route answers from memory) should go on: the last answer stands until
            # the database is back. A key never seen gets the error (503 from the API).
            logger.warning("database unreachable: API key #%s answered from the process cache", cached[1].key_id if cached[1] else "?")
            return cached[1]
        raise
    if key is None:
        return None
    principal = ApiPrincipal(
        key_id=key.pk,
        label=key.label,
        all_agents=key.all_agents,
        agent_slugs=frozenset(agent.slug for agent in key.agents.all()),
        prefix=key.prefix,
        expires_at=key.expires_at,
    )
    if key.expires_at is None or key.expires_at > timezone.now():
        # last_used_at (the last accepted use, not a refused attempt) is refreshed when the cache entry
        # is, i.e. at most every few seconds; a bookkeeping write that fails must not fail the request
        # the key was just verified for.
        try:
            ApiKey.objects.filter(pk=key.pk).update(last_used_at=timezone.now())
        except DatabaseError:
            logger.warning("could not record last_used_at of API key #%s: database error", key.pk)
    else:
        # Which key a failing service holds: the 401 goes to the caller, and the refusals counter has no
        # key in its labels, so this is where the person paged by ApiKeysExpiredInUse reads it. Logged when
        # the cache entry is refreshed — at most every API_KEY_CACHE_SECONDS per key and process, however
        # often the service retries.
        logger.warning("API key '%s' (%s…) expired at %s UTC is being refused: a caller still uses it (rotate it, or revoke "
                       "it if retired)", key.label, key.prefix, f"{key.expires_at:%Y-%m-%d %H:%M}")
    with _principal_cache_lock:
        if len(_principal_cache) >= API_KEY_CACHE_MAX_ENTRIES:
            _principal_cache.clear()  # rare; the next requests simply look their keys up again
        _principal_cache[digest] = (now, principal)
    return principal


def api_key_cache_clear() -> None:
    with _principal_cache_lock:
        _principal_cache.clear()


# Which agents a key may learn about. The CONTRACT's order: 404 for a name no agent has (any key), then
# 403 for a real agent outside the key's scope. A scoped key can therefore tell an existing agent from a
# made-up name; agent names are not secrets (they name services), and an outside client relies on
# "404 unknown agent". Every API endpoint asks through these three.


def ensure_may_act_for(*, principal: ApiPrincipal, agent_slugs: Iterable[str]) -> None:
    """403 naming each agent of `agent_slugs` (existing agents, as the request named them) that this
    key may not act for."""
    refused = sorted({slug for slug in agent_slugs if not principal.may_act_for(slug)})
    if refused:
        names = ", ".join(f"'{slug}'" for slug in refused)
        raise PermissionDenied(f"API key '{principal.label}' may not act for agent{'s' if len(refused) > 1 else ''} {names}")


def ensure_agent_access(*, principal: ApiPrincipal, agent_slug: str, known_agents: frozenset[str] | None = None) -> None:
    """For a request that names an agent: 404 when no agent has that name, then 403 when the key may
    not act for it. `known_agents`: every agent's slug, when the caller holds them in memory (the
    routing table), so no query is made."""
    exists = agent_slug in known_agents if known_agents is not None else Agent.objects.filter(slug=agent_slug).exists()
    if not exists:
        raise NotFound(f"agent '{agent_slug}' does not exist")
    ensure_may_act_for(principal=principal, agent_slugs=(agent_slug,))


def ensure_object_access(*, principal: ApiPrincipal, owner_slug: str | None, what: str) -> None:
    """For an object the request names by its id or key (`what`: "experiment 'x'", "benchmark run #3"):
    403 when it belongs to an agent this key may not act for. The refusal names the object, never its
    agent — ids are sequential, and naming owners would list the agents. `owner_slug` None: an object
    of no agent, which any key may read."""
    if owner_slug is not None and not principal.may_act_for(owner_slug):
        raise PermissionDenied(
            f"API key '{principal.label}' may not read {what}: it belongs to an agent this key may not act for"
        )
