"""API keys may expire (`create_api_key --expires-in-days N`, the admin's add form, `api_keys --rotate`):
past its expiry a key is refused with a 401 saying so and what to do, cached in the process or not; the
keys that need a person — expiring within 14 days or unused for 90 — are listed by `api_keys --list
--stale` and the admin's filter. A key made without the option never expires, as every key did before."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from datetime import UTC, timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connections
from django.utils import timezone

from genesis.errors import InvalidInput, PermissionDenied, Unauthenticated
from genesis.metrics import exposition
from models_app.registry.metrics import API_KEY_REFUSALS
from models_app.registry.models import ApiKey
from models_app.registry.selectors import api_key_attention, api_keys_for, api_keys_in_use_by_expiry
from models_app.registry.services import (
    _principal_cache,
    api_key_authenticate,
    api_key_cache_clear,
    api_key_create,
    api_key_revoke,
    api_key_rotate,
    hash_api_key,
)
from tests.experiments.factories import person
from tests.factories import AgentFactory

pytestmark = pytest.mark.django_db

DAY = timedelta(days=1)


@pytest.fixture
def qa():
    return AgentFactory(slug="qa_agent")


@pytest.fixture
def keeper():
    return person("keeper", "models_app.change_apikey", "models_app.add_apikey")


def command(name: str, *args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(name, *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def refused(name: str, *args: str) -> CommandError:
    with pytest.raises(CommandError) as raised:
        command(name, *args)
    return raised.value


def key_of(raw: str) -> ApiKey:
    return ApiKey.objects.get(prefix=raw[: len("gk_") + 8])


def near(moment, expected, *, within: timedelta = timedelta(seconds=30)) -> bool:
    return moment is not None and abs(moment - expected) < within


def test_create_api_key_sets_an_expiry_only_when_asked(qa):
    out, err = command("create_api_key", "--agent", "qa_agent", "--expires-in-days", "30")
    raw = out.strip().splitlines()[-1]
    key = key_of(raw)
    assert near(key.expires_at, timezone.now() + 30 * DAY)
    assert f"expiring {key.expires_at:%Y-%m-%d %H:%M} UTC" in err
    created = key.history.get()
    assert created.expires_at == key.expires_at  # the history keeps the expiry it was set to
    assert created.history_change_reason == f"expires {key.expires_at:%Y-%m-%d %H:%M} UTC (a lifetime of 30 days)"

    # Without the option: exactly as before — no expiry, no words added to the history.
    plain = key_of(command("create_api_key", "--all-agents")[0].strip().splitlines()[-1])
    assert plain.expires_at is None and plain.history.get().history_change_reason == ""
    assert api_key_authenticate(raw_key=raw).expires_at == key.expires_at


@pytest.mark.parametrize("days", ["0", "-1", "3651"])
def test_an_expiry_out_of_range_is_a_usage_error_and_makes_no_key(qa, days):
    error = refused("create_api_key", "--agent", "qa_agent", "--expires-in-days", days)
    assert error.returncode == 2
    assert str(error) == f"--expires-in-days: must be a whole number of days from 1 to 3650 (ten years), not {int(days)}"
    assert not ApiKey.objects.exists()


def test_a_non_number_of_days_exits_2_from_the_command_line(qa):
    from tests.conftest import child_environment

    result = subprocess.run(
        [sys.executable, "manage.py", "create_api_key", "--agent", "qa_agent", "--expires-in-days", "soon"],
        cwd=Path(__file__).resolve().parents[2], env=child_environment(), capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2 and "--expires-in-days: invalid int value: 'soon'" in result.stderr
    assert result.stdout == ""


def test_the_service_checks_permission_then_the_expiry(qa, keeper):
    reader = person("reader", "models_app.view_apikey")
    with pytest.raises(PermissionDenied):
        api_key_create(label="x", agents=[qa], actor=reader, expires_in_days=30)
    with pytest.raises(InvalidInput, match="^expires_in_days: must be a whole number"):
        api_key_create(label="x", agents=[qa], actor=keeper, expires_in_days=0)
    with pytest.raises(InvalidInput, match="^expires_in_days:"):
        api_key_rotate(key=api_key_create(label="y", agents=[qa])[0], actor=keeper, expires_in_days=4000)
    assert ApiKey.objects.filter(revoked=True).count() == 0 and ApiKey.objects.count() == 1


def test_an_expired_key_gets_a_401_that_says_so_and_what_to_do(client, qa):
    key, raw = api_key_create(label="qa service", agents=[qa], expires_in_days=1)
    assert client.get("/api/v1/agents", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 200
    used = ApiKey.objects.get(pk=key.pk).last_used_at
    ApiKey.objects.filter(pk=key.pk).update(expires_at=timezone.now() - timedelta(minutes=1), last_used_at=used)
    api_key_cache_clear()  # another process, or this one 10 s later

    response = client.get("/api/v1/agents", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert response.status_code == 401
    body = response.json()
    assert body["code"] == "unauthenticated"
    # The caller is not authenticated: the key is named by the prefix it holds, never by its label.
    assert body["detail"].startswith(f"API key {key.prefix}… expired at ")
    assert "qa service" not in body["detail"]
    assert f"api_keys --rotate {key.prefix}" in body["detail"] and "create_api_key" in body["detail"]
    assert raw not in body["detail"]
    # A refused attempt is not a use: "unused for 90 days" must still be able to find the key.
    assert ApiKey.objects.get(pk=key.pk).last_used_at == used
    # People (logs, the admin, the CLI) may be told the label: the refusal's own message keeps it.
    with pytest.raises(Unauthenticated) as refusal:
        api_key_authenticate(raw_key=raw)
    assert refusal.value.message.startswith(f"API key 'qa service' ({key.prefix}…) expired at ")
    # Unknown keys keep their plain answer.
    unknown = client.get("/api/v1/agents", HTTP_AUTHORIZATION="Bearer gk_nothing")
    assert unknown.status_code == 401 and "missing or invalid API key" in unknown.json()["detail"]


def test_refused_keys_are_counted_by_reason(client, qa):
    key, raw = api_key_create(label="qa service", agents=[qa], expires_in_days=1)
    ApiKey.objects.filter(pk=key.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    expired, unknown = API_KEY_REFUSALS.labels("expired"), API_KEY_REFUSALS.labels("unknown")
    before = (expired._value.get(), unknown._value.get())
    for token in (raw, "gk_nothing", "not-a-key"):
        assert client.get("/api/v1/agents", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 401
    assert client.get("/api/v1/agents").status_code == 401  # no key at all: not a key refused, not counted
    assert (expired._value.get(), unknown._value.get()) == (before[0] + 1, before[1] + 2)
    served = exposition().decode()
    assert f'genesis_api_key_refusals_total{{reason="expired"}} {before[0] + 1}' in served


def test_the_server_log_names_the_expired_key_being_refused_once_per_cache_refresh(client, qa, caplog):
    # The 401 goes to the caller and the refusals counter has no key label: the person paged by
    # ApiKeysExpiredInUse finds which key in the web machines' log — once per key and process every
    # 10 s (the cache), not once per retry.
    key, raw = api_key_create(label="qa service", agents=[qa], expires_in_days=1)
    ApiKey.objects.filter(pk=key.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    api_key_cache_clear()
    with caplog.at_level("WARNING", logger="models_app.registry.services"):
        for _ in range(5):
            assert client.get("/api/v1/agents", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 401
    said = [record.getMessage() for record in caplog.records if "is being refused" in record.getMessage()]
    assert len(said) == 1 and f"'qa service' ({key.prefix}…) expired at" in said[0]


def test_a_key_remembered_by_the_process_stops_at_its_expiry_not_10_s_later(qa, django_assert_num_queries):
    key, raw = api_key_create(label="short", agents=[qa])
    expires_at = timezone.now() + timedelta(seconds=1.5)
    ApiKey.objects.filter(pk=key.pk).update(expires_at=expires_at)
    assert api_key_authenticate(raw_key=raw) is not None  # now in the process cache, for 10 s
    time.sleep(max(0.0, (expires_at - timezone.now()).total_seconds()) + 0.1)
    with django_assert_num_queries(0), pytest.raises(Unauthenticated, match="expired at"):
        api_key_authenticate(raw_key=raw)  # answered from the cache, and refused


@pytest.mark.django_db(transaction=True)
def test_an_expired_key_is_refused_from_memory_while_the_database_is_down(qa):
    # The second reviewer's regression test, with a real unreachable database (a port nothing listens on)
    # instead of a patched manager: the process answers a key it has seen from memory while the database
    # is down (tests/genesis/test_database_down.py), and that answer still honours the key's expiry.
    key, raw = api_key_create(label="qa", agents=[qa])
    ApiKey.objects.filter(pk=key.pk).update(expires_at=timezone.now() + timedelta(seconds=1))
    assert api_key_authenticate(raw_key=raw) is not None
    digest = hash_api_key(raw)
    seen, principal = _principal_cache[digest]
    _principal_cache[digest] = (seen - 60, principal)  # older than API_KEY_CACHE_SECONDS: looked up again
    connection = connections["default"]
    port = connection.settings_dict["PORT"]
    connection.close()
    connection.settings_dict["PORT"] = 1
    try:
        assert api_key_authenticate(raw_key=raw) is not None  # the lookup fails: the remembered answer stands
        time.sleep(1.1)
        with pytest.raises(Unauthenticated, match="expired at"):
            api_key_authenticate(raw_key=raw)  # still from memory, and past its expiry
    finally:
        connection.close()
        connection.settings_dict["PORT"] = port


def test_rotation_gives_the_new_key_the_old_ones_lifetime_from_now_unless_told(qa, keeper):
    old, _ = api_key_create(label="qa service", agents=[qa], expires_in_days=30)
    # Made 25 days ago: 5 days left. The new key gets 30 days, not the 5 left.
    ApiKey.objects.filter(pk=old.pk).update(created_at=old.created_at - 25 * DAY, expires_at=old.expires_at - 25 * DAY)
    out, err = command("api_keys", "--rotate", old.prefix, "--as", "keeper", "--reason", "expiring")
    new = key_of(out.strip())
    assert near(new.expires_at, timezone.now() + 30 * DAY)
    assert f"expiring {new.expires_at:%Y-%m-%d %H:%M} UTC" in err
    entry = new.history.get()
    assert entry.history_user == keeper and entry.expires_at == new.expires_at
    assert entry.history_change_reason == (
        f"rotation of {old.prefix}…: expiring; expires {new.expires_at:%Y-%m-%d %H:%M} UTC (a lifetime of 30 days)"
    )

    # --expires-in-days chooses another lifetime; an expired key is rotated too (what its holder is told to do).
    ApiKey.objects.filter(pk=new.pk).update(expires_at=timezone.now() - DAY)
    rotated = json.loads(command("api_keys", "--rotate", new.prefix, "--as", "keeper", "--reason", "r",
                                 "--expires-in-days", "7", "--json")[0])
    assert rotated["revoked"]["expired"] is True
    assert near(ApiKey.objects.get(pk=rotated["created"]["id"]).expires_at, timezone.now() + 7 * DAY)

    # A key that never expired is replaced by one that never expires, as before.
    forever, _ = api_key_create(label="forever", all_agents=True)
    again, _ = api_key_rotate(key=forever, actor=keeper)
    assert again.expires_at is None


def test_rotate_usage_errors_for_the_expiry_exit_2(qa, keeper):
    key, _ = api_key_create(label="qa service", agents=[qa])
    cases = {
        ("--rotate", key.prefix, "--as", "keeper", "--reason", "r", "--expires-in-days", "0"): "--expires-in-days: must be",
        ("--revoke", key.prefix, "--as", "keeper", "--reason", "r", "--expires-in-days", "5"): "--expires-in-days: only with --rotate",
        ("--list", "--expires-in-days", "5"): "--expires-in-days: only with --rotate",
        ("--revoke", key.prefix, "--as", "keeper", "--reason", "r", "--stale"): "--stale goes with --list",
    }
    for args, message in cases.items():
        error = refused("api_keys", *args)
        assert error.returncode == 2 and message in str(error), (args, str(error))
    assert ApiKey.objects.count() == 1 and not ApiKey.objects.filter(revoked=True).exists()


@pytest.fixture
def aged_keys(qa):
    """Keys in each state a person may need to see, their times set as if made long ago."""
    now = timezone.now()
    made = {name: api_key_create(label=name, agents=[qa])[0] for name in
            ("fresh", "expiring", "expired", "later", "idle", "never_used", "revoked")}
    updates = {
        "fresh": {"last_used_at": now - DAY},
        # An hour over 3 days: time left is floored, and the listing is read a moment after this.
        "expiring": {"created_at": now - 60 * DAY, "expires_at": now + 3 * DAY + timedelta(hours=1), "last_used_at": now},
        "expired": {"created_at": now - 60 * DAY, "expires_at": now - 2 * DAY, "last_used_at": now - 3 * DAY},
        "later": {"created_at": now - 60 * DAY, "expires_at": now + 30 * DAY, "last_used_at": now},
        "idle": {"created_at": now - 400 * DAY, "last_used_at": now - 120 * DAY},
        "never_used": {"created_at": now - 95 * DAY},
        "revoked": {"created_at": now - 400 * DAY, "expires_at": now - DAY, "revoked": True, "revoked_at": now},
    }
    for name, values in updates.items():
        ApiKey.objects.filter(pk=made[name].pk).update(**values)
    return made


def test_list_shows_expiry_and_stale_lists_the_keys_that_need_a_person(aged_keys):
    out, _ = command("api_keys", "--list")
    header, *rows = out.splitlines()
    assert header.split()[-5:] == ["last", "used", "expires", "(UTC)", "status"]  # as "created (UTC)"
    by_label = {row.split()[2]: row for row in rows}
    assert by_label["fresh"].split()[-2:] == ["never", "active"]
    expiring_at = ApiKey.objects.get(pk=aged_keys["expiring"].pk).expires_at
    assert f"{expiring_at:%Y-%m-%d %H:%M}  expires in 3 days" in by_label["expiring"]

    stale = json.loads(command("api_keys", "--list", "--stale", "--json")[0])
    attention = {key["label"]: key["attention"] for key in stale}
    assert attention == {
        "expiring": ["expires in 3 days"],
        "expired": ["expired 2 days ago"],
        "idle": ["unused for 120 days"],
        "never_used": ["never used in 95 days"],
    }
    expired = next(key for key in stale if key["label"] == "expired")
    assert expired["expired"] is True
    assert expired["expires_at"] == ApiKey.objects.get(pk=aged_keys["expired"].pk).expires_at.isoformat()

    text, _ = command("api_keys", "--list", "--stale", "--agent", "qa_agent")
    assert sorted(row.split()[2] for row in text.splitlines()[1:]) == ["expired", "expiring", "idle", "never_used"]
    ApiKey.objects.filter(label__in=["expiring", "expired", "idle", "never_used"]).update(revoked=True)
    assert command("api_keys", "--list", "--stale")[0].strip() == "no API key needs attention"


def test_the_admin_sets_an_expiry_shows_it_and_filters_stale_keys(admin_client, aged_keys, qa, settings):
    settings.TIME_ZONE = "Europe/Paris"  # a site whose zone is not UTC: the expiry is still shown in UTC
    page = admin_client.post("/admin/models_app/apikey/add/", {"label": "from the admin", "agents": [qa.pk],
                                                                "expires_in_days": "10"})
    assert page.status_code == 302
    key = ApiKey.objects.get(label="from the admin")
    assert near(key.expires_at, timezone.now() + 10 * DAY)
    assert key.history.get().history_user.username == "admin"  # who set the expiry
    change = admin_client.get(f"/admin/models_app/apikey/{key.pk}/change/").content.decode()
    # A 10-day key is said to expire soon from half-time on (5 days left), not from its first day.
    assert "Expires at (UTC)" in change and "expires in" not in change
    ApiKey.objects.filter(pk=key.pk).update(created_at=timezone.now() - 20 * DAY)  # as if a 30-day key
    change = admin_client.get(f"/admin/models_app/apikey/{key.pk}/change/").content.decode()
    # 10 days less the moments since: floored, never rounded up.
    assert "expires in 9 days" in change
    assert f"{key.expires_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC" in change  # as the CLI and the 401 say it

    too_long = admin_client.post("/admin/models_app/apikey/add/", {"label": "x", "agents": [qa.pk], "expires_in_days": "4000"})
    assert too_long.status_code == 200 and not ApiKey.objects.filter(label="x").exists()

    listed = admin_client.get("/admin/models_app/apikey/").content.decode()
    assert "expires at (utc)" in listed.lower()
    assert "expired 2 days ago" in listed and "unused for 120 days" in listed
    expiring = admin_client.get("/admin/models_app/apikey/?attention=expiring").content.decode()
    assert all(f">{name}<" in expiring for name in ("expiring", "expired", "from the admin"))
    assert not any(f">{name}<" in expiring for name in ("fresh", "later", "idle", "revoked"))
    stale = admin_client.get("/admin/models_app/apikey/?attention=stale").content.decode()
    assert all(f">{name}<" in stale for name in ("expiring", "expired", "idle", "never_used"))
    assert not any(f">{name}<" in stale for name in ("fresh", "later", "revoked"))


def gauge() -> dict[str, float]:
    """genesis_api_keys_expiring_soon by state, as /metrics serves it."""
    prefix = "genesis_api_keys_expiring_soon{state=\""
    return {line[len(prefix):].split('"', 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in exposition().decode().splitlines() if line.startswith(prefix)}


def test_the_gauge_counts_the_keys_in_use_that_expire_within_14_days_or_have_expired(aged_keys, qa):
    unused, _ = api_key_create(label="expiring but unused", agents=[qa], expires_in_days=5)
    ApiKey.objects.filter(pk=unused.pk).update(created_at=timezone.now() - 100 * DAY)
    forgotten, _ = api_key_create(label="expired, unused for 90 days before", agents=[qa])
    ApiKey.objects.filter(pk=forgotten.pk).update(expires_at=timezone.now() - 10 * DAY, last_used_at=timezone.now() - 200 * DAY)
    # "expiring" is about to be refused, "expired" is refused now (used the day before it expired); "later" is
    # weeks away, the unused ones break nothing when they expire, the revoked one is gone.
    assert gauge() == {"expiring": 1.0, "expired": 1.0}
    # Rotated (a 30-day key): the old key is revoked, the new one expires 30 days from now.
    ApiKey.objects.filter(pk=aged_keys["expiring"].pk).update(created_at=timezone.now() - 27 * DAY)
    new, _ = api_key_rotate(key=aged_keys["expiring"])
    ApiKey.objects.filter(pk=new.pk).update(last_used_at=timezone.now())
    assert gauge() == {"expiring": 0.0, "expired": 1.0}
    api_key_rotate(key=aged_keys["expired"])
    assert gauge() == {"expiring": 0.0, "expired": 0.0}


def test_a_key_in_use_that_expires_unrotated_stays_counted_14_days_after_its_last_use_then_drops(qa):
    # The count must not drop when the key expires: that is when its service starts getting 401s. But it
    # is bounded: its uses stop at the expiry, so 14 days after the last one it is no longer counted —
    # a retired key nobody revoked does not nag (nor page) forever.
    key, raw = api_key_create(label="qa service", agents=[qa], expires_in_days=3)
    ApiKey.objects.filter(pk=key.pk).update(created_at=timezone.now() - 27 * DAY)  # a 30-day key, 3 days left
    assert api_key_authenticate(raw_key=raw) is not None  # in use
    assert gauge() == {"expiring": 1.0, "expired": 0.0}
    ApiKey.objects.filter(pk=key.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    api_key_cache_clear()
    with pytest.raises(Unauthenticated):
        api_key_authenticate(raw_key=raw)  # its service is refused now, and its uses stop
    assert gauge() == {"expiring": 0.0, "expired": 1.0}
    last_use = ApiKey.objects.get(pk=key.pk).last_used_at
    assert api_keys_in_use_by_expiry(now=last_use + 14 * DAY - timedelta(minutes=1)) == {"expiring": 0, "expired": 1}
    assert api_keys_in_use_by_expiry(now=last_use + 14 * DAY + timedelta(minutes=1)) == {"expiring": 0, "expired": 0}
    assert api_keys_in_use_by_expiry(now=timezone.now() + 120 * DAY) == {"expiring": 0, "expired": 0}
    # Revoked (or rotated) within the 14 days, it leaves the count at once.
    api_key_revoke(key=key)
    assert gauge() == {"expiring": 0.0, "expired": 0.0}


def test_a_retired_key_that_expires_unrevoked_is_not_counted_as_expired(qa):
    # Its service moved to a new key 20 days ago; the old key was never revoked and expired yesterday.
    # It was counted as expiring while it was used within 90 days (a nag to revoke it); once expired,
    # with no use for over 14 days, it is not counted at all: nothing is failing.
    now = timezone.now()
    retired, _ = api_key_create(label="qa service (old)", agents=[qa])
    ApiKey.objects.filter(pk=retired.pk).update(created_at=now - 60 * DAY, expires_at=now + 5 * DAY, last_used_at=now - 20 * DAY)
    assert api_keys_in_use_by_expiry(now=now) == {"expiring": 1, "expired": 0}
    ApiKey.objects.filter(pk=retired.pk).update(expires_at=now - DAY)
    assert gauge() == {"expiring": 0.0, "expired": 0.0}
    # One used 13 days ago that expired since is counted: in use until recently, now refused.
    recent, _ = api_key_create(label="qa batch", agents=[qa])
    ApiKey.objects.filter(pk=recent.pk).update(expires_at=now - DAY, last_used_at=now - 13 * DAY)
    assert gauge() == {"expiring": 0.0, "expired": 1.0}


def test_a_short_lived_key_is_said_to_expire_soon_from_half_its_lifetime_not_from_its_first_day(qa):
    # A 7-day key (a CI token rotated each week) was "expiring" from its first use with a fixed 14-day
    # window, so ApiKeysExpiringSoon never resolved for a team using short keys.
    key, raw = api_key_create(label="ci token", agents=[qa], expires_in_days=7)
    assert api_key_authenticate(raw_key=raw) is not None  # in use
    made = ApiKey.objects.get(pk=key.pk).created_at
    halfway = made + (key.expires_at - made) / 2
    for now, counted, said in ((halfway - timedelta(minutes=1), 0, []), (halfway + timedelta(minutes=1), 1, ["expires in 3 days"])):
        assert api_keys_in_use_by_expiry(now=now) == {"expiring": counted, "expired": 0}
        assert api_key_attention(ApiKey.objects.get(pk=key.pk), now=now) == said
        assert (key.pk in {k.pk for k in api_keys_for(stale=True, now=now)}) is bool(counted)
    # A long-lived key keeps the 14 days.
    year, _ = api_key_create(label="service", agents=[qa], expires_in_days=365)
    ApiKey.objects.filter(pk=year.pk).update(last_used_at=year.expires_at - 20 * DAY)  # in use then
    assert api_keys_in_use_by_expiry(now=year.expires_at - 14 * DAY - timedelta(minutes=1))["expiring"] == 0
    assert api_keys_in_use_by_expiry(now=year.expires_at - 14 * DAY + timedelta(minutes=1))["expiring"] == 1


@pytest.mark.parametrize(("offset", "said"), [
    # Time left: floored, never rounded up.
    (timedelta(minutes=2, seconds=59), "expires in 2 minutes"),
    (timedelta(seconds=30), "expires in less than a minute"),
    (timedelta(minutes=59, seconds=59), "expires in 59 minutes"),
    (timedelta(hours=1, minutes=59), "expires in 1 hour"),
    (timedelta(days=2, hours=23), "expires in 2 days"),
    # Time since: floored too (5 s after is not "1 hour ago").
    (-timedelta(seconds=5), "expired just now"),
    (-timedelta(seconds=90), "expired 1 minute ago"),
    (-timedelta(hours=1, minutes=59), "expired 1 hour ago"),
    (-timedelta(days=2, hours=23), "expired 2 days ago"),
])
def test_the_time_to_or_since_the_expiry_is_floored_and_in_minutes_under_an_hour(offset, said):
    now = timezone.now()
    key = ApiKey(label="k", created_at=now - 60 * DAY, last_used_at=now, expires_at=now + offset)
    assert api_key_attention(key, now=now) == [said]
