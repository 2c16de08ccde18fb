"""Where a provider account's requests, and its key, may go: only to hosts the environment binds to the
key variable (GENESIS_PROVIDER_HOSTS; models_app/providers/destinations.py). Over real HTTP to a
listener on loopback that records every request it gets."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from genesis.errors import Conflict, InvalidInput, field_errors
from models_app.benchmarks.models import BenchmarkChunk, BenchmarkRun
from models_app.benchmarks.runner import benchmark_chunk_execute
from models_app.benchmarks.services import benchmark_run_create
from models_app.providers import ProviderDestinationRefused
from models_app.providers.destinations import provider_destinations
from models_app.registry.gateway import provider_for
from models_app.registry.models import Agent, ProviderAccount
from models_app.registry.services import provider_account_upsert
from tests.factories import UserFactory
from tests.http_servers import QuietHandler, on_loopback, serving

SECRET = "the-production-key-3f9a"  # what the listener must never see unless allowed
MESSAGES = [{"role": "user", "content": "hello"}]
COMPLETION = {
    "id": "c1", "object": "chat.completion", "created": 0, "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}


@dataclass
class Listener:
    """A stand-in for someone's server: records each request's method, path and Authorization, and answers
    `status` with `body`."""

    port: int = 0
    status: int = 200
    body: str = json.dumps(COMPLETION)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def listener() -> Iterator[Listener]:
    state = Listener()

    class Handler(QuietHandler):
        def do_GET(self) -> None:
            self.answer()

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.answer()

        def answer(self) -> None:
            state.requests.append((self.command, self.path, self.headers.get("Authorization")))
            payload = state.body.encode()
            self.send_response(state.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    with serving(on_loopback(Handler)) as server:
        state.port = server.server_address[1]
        yield state


@pytest.fixture
def production_key(monkeypatch) -> str:
    monkeypatch.setenv("MISTRAL_API_KEY", SECRET)
    return SECRET


# --- the rules -----------------------------------------------------------------------------------


def rules(hosts=(), *, outside_dev=False):
    return provider_destinations(hosts=hosts, simulator_url="http://127.0.0.1:8765", plain_http_loopback_only=outside_dev)


@pytest.mark.parametrize(
    ("kind", "base_url", "allowed"),
    [
        ("mistral", None, True),  # the SDK's default address
        ("mistral", "https://api.mistral.ai", True),
        ("mistral", "https://API.mistral.ai:443/v1/", True),
        ("simulator", "http://127.0.0.1:8943", False),  # the finding: a listener on the same machine
        ("mistral", "https://api.mistral.ai:8443", False),
        ("mistral", "http://api.mistral.ai", False),  # port 80: not what the rule binds
        ("mistral", "https://api.mistral.ai.evil.example", False),
        ("mistral", "https://api.mistral.ai@evil.example", False),
        ("mistral", "https://evil.example\\@api.mistral.ai", False),  # parsers disagree on such addresses
        ("mistral", "ftp://api.mistral.ai", False),
    ],
)
def test_the_mistral_key_goes_to_the_mistral_api_only(kind, base_url, allowed):
    refusal = rules().refusal(kind=kind, base_url=base_url, api_key_env="MISTRAL_API_KEY")
    assert (refusal is None) is allowed, refusal


def test_the_simulator_key_goes_to_the_simulator_url_and_listed_hosts():
    assert rules().refusal(kind="simulator", base_url="http://127.0.0.1:8765", api_key_env="GENESIS_SIMULATOR_API_KEY") is None
    refusal = rules().refusal(kind="simulator", base_url="http://127.0.0.1:9999", api_key_env="GENESIS_SIMULATOR_API_KEY")
    # Almost always the simulator on another port than this process was told (UX review: the advice to
    # widen GENESIS_PROVIDER_HOSTS was the wrong fix for a command run beside `make run` on another port).
    assert refusal == (
        "$GENESIS_SIMULATOR_API_KEY may not be sent to 127.0.0.1:9999: it goes to the simulator's URL, 127.0.0.1:8765 "
        "here. If the simulator runs at 127.0.0.1:9999, give this process GENESIS_SIMULATOR_URL=http://127.0.0.1:9999 "
        "(as `make run` gives its own); for another server, add GENESIS_SIMULATOR_API_KEY=127.0.0.1:9999 to "
        "GENESIS_PROVIDER_HOSTS"
    )
    any_port = rules([("GENESIS_SIMULATOR_API_KEY", "127.0.0.1", None)])
    assert any_port.refusal(kind="simulator", base_url="http://127.0.0.1:9999", api_key_env="GENESIS_SIMULATOR_API_KEY") is None
    # A rule for one key lets no other key through, and a keyless entry lets no key through.
    keyless = rules([("", "127.0.0.1", None)])
    assert keyless.refusal(kind="openai_compatible", base_url="http://127.0.0.1:11434", api_key_env="") is None
    assert keyless.refusal(kind="openai_compatible", base_url="http://127.0.0.1:11434", api_key_env="MISTRAL_API_KEY")
    assert any_port.refusal(kind="openai_compatible", base_url="http://127.0.0.1:11434", api_key_env="")



def test_a_refused_url_with_a_password_is_shown_with_the_password_masked():
    # The refusal is shown on the admin form, returned by the API and may be logged.
    refusal = rules().refusal(kind="mistral", base_url="https://ops:Hunter2-pw@api.mistral.ai", api_key_env="MISTRAL_API_KEY")
    assert refusal == ("'https://********@api.mistral.ai' carries a user name or password; give the URL without "
                       "them (the key comes from its variable)")
    for char in "/?# ":  # second reviewer: characters that ended the masked part early
        refusal = rules().refusal(kind="openai_compatible", base_url=f"https://ops:Hun{char}ter2@llm.example",
                                  api_key_env="X_API_KEY")
        assert refusal and "ter2" not in refusal, refusal

def test_plain_http_beyond_loopback_is_refused_outside_dev():
    hosts = [("VLLM_API_KEY", "vllm.internal", 8000), ("VLLM_API_KEY", "127.0.0.1", 8000)]
    assert rules(hosts).refusal(kind="openai_compatible", base_url="http://vllm.internal:8000/v1", api_key_env="VLLM_API_KEY") is None
    refusal = rules(hosts, outside_dev=True).refusal(kind="openai_compatible", base_url="http://vllm.internal:8000/v1",
                                                     api_key_env="VLLM_API_KEY")
    assert refusal and refusal.startswith("plain http:// to vllm.internal:8000 is refused outside dev")
    for allowed in ("https://vllm.internal:8000/v1", "http://127.0.0.1:8000/v1"):
        assert rules(hosts, outside_dev=True).refusal(kind="openai_compatible", base_url=allowed, api_key_env="VLLM_API_KEY") is None


# --- at call time: the key never leaves for a host not allowed ------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("kind", ["simulator", "mistral", "openai_compatible"])
def test_an_account_changed_behind_the_service_is_refused_and_the_listener_gets_nothing(kind, listener, production_key):
    account = ProviderAccount.objects.create(name="edited", kind=kind, base_url="https://api.mistral.ai",
                                             api_key_env="MISTRAL_API_KEY")
    ProviderAccount.objects.filter(pk=account.pk).update(base_url=listener.url)  # as a direct database edit would
    account.refresh_from_db()

    with pytest.raises(ProviderDestinationRefused) as refused:
        provider_for(account).chat(model="m", messages=MESSAGES)

    assert str(refused.value) == (
        f"provider 'edited' is not called: $MISTRAL_API_KEY may not be sent to 127.0.0.1:{listener.port}: "
        "GENESIS_PROVIDER_HOSTS binds it to api.mistral.ai:443. If that host should have this key, add "
        f"MISTRAL_API_KEY=127.0.0.1:{listener.port} to GENESIS_PROVIDER_HOSTS in the environment of the web and "
        "worker processes"
    )
    assert listener.requests == []


@pytest.mark.django_db
@pytest.mark.parametrize("kind", ["simulator", "mistral", "openai_compatible"])
def test_an_allowed_listener_gets_the_key(kind, listener, production_key, provider_hosts):
    provider_hosts(f"MISTRAL_API_KEY=127.0.0.1:{listener.port}")
    account = provider_account_upsert(name="allowed", kind=kind, base_url=listener.url, api_key_env="MISTRAL_API_KEY")

    result = provider_for(account).chat(model="m", messages=MESSAGES)

    assert result.text == "hi"
    assert listener.requests == [("POST", "/v1/chat/completions", f"Bearer {SECRET}")]


@pytest.mark.django_db
def test_the_service_refuses_a_destination_not_allowed_naming_the_field(listener, seeded_demo):
    before = ProviderAccount.objects.values().get(name="simulator")

    with pytest.raises(InvalidInput) as refused:
        provider_account_upsert(name="simulator", kind="simulator", base_url=listener.url, api_key_env="MISTRAL_API_KEY")

    [named] = field_errors(refused.value.message)
    assert named["field"] == "base_url"
    assert f"$MISTRAL_API_KEY may not be sent to 127.0.0.1:{listener.port}" in named["message"]
    assert f"add MISTRAL_API_KEY=127.0.0.1:{listener.port} to GENESIS_PROVIDER_HOSTS" in named["message"]
    assert ProviderAccount.objects.values().get(name="simulator") == before


@pytest.mark.django_db
def test_an_account_the_environment_no_longer_allows_can_still_be_disabled(listener, production_key, provider_hosts):
    # Second reviewer: the destination was judged on every save, so such an account could not even be
    # switched off. It is judged when set or changed; the gateway refuses the account meanwhile anyway.
    provider_hosts(f"MISTRAL_API_KEY=127.0.0.1:{listener.port}")
    provider_account_upsert(name="vllm", kind="openai_compatible", base_url=listener.url, api_key_env="MISTRAL_API_KEY")
    provider_hosts("")  # the allow-list changed since

    disabled = provider_account_upsert(name="vllm", kind="openai_compatible", base_url=listener.url,
                                       api_key_env="MISTRAL_API_KEY", enabled=False)
    assert not disabled.enabled
    with pytest.raises(InvalidInput, match="base_url: "):  # pointing it anywhere new is judged again
        provider_account_upsert(name="vllm", kind="openai_compatible", base_url=f"http://127.0.0.1:{listener.port + 1}",
                                api_key_env="MISTRAL_API_KEY", enabled=False)


@pytest.mark.django_db
def test_plain_http_to_another_machine_is_refused_when_saved_outside_dev(settings, provider_hosts):
    provider_hosts("VLLM_API_KEY=vllm.internal:8000")
    settings.GENESIS_ENV = "production"
    with pytest.raises(InvalidInput, match=r"^base_url: plain http:// to vllm.internal:8000 is refused outside dev"):
        provider_account_upsert(name="vllm", kind="openai_compatible", base_url="http://vllm.internal:8000/v1",
                                api_key_env="VLLM_API_KEY")
    saved = provider_account_upsert(name="vllm", kind="openai_compatible", base_url="https://vllm.internal:8000/v1",
                                    api_key_env="VLLM_API_KEY")
    assert saved.base_url == "https://vllm.internal:8000/v1"


# --- the finding's benchmark run, and what a provider's answer may leave behind --------------------


def execute_inline(run: BenchmarkRun) -> BenchmarkRun:
    for chunk in BenchmarkChunk.objects.filter(run=run):
        benchmark_chunk_execute(chunk_id=chunk.pk, worker="inline@test")
    run.refresh_from_db()
    return run


def run_inline(agent_slug: str) -> BenchmarkRun:
    return execute_inline(benchmark_run_create(agent=Agent.objects.get(slug=agent_slug)))


def edit_behind_the_service(listener: Listener) -> None:
    ProviderAccount.objects.filter(name="simulator").update(base_url=listener.url, api_key_env="MISTRAL_API_KEY")


@pytest.mark.django_db
def test_a_benchmark_run_on_an_edited_account_is_refused_when_asked_for(listener, production_key, seeded_demo):
    edit_behind_the_service(listener)

    with pytest.raises(Conflict) as refused:
        benchmark_run_create(agent=Agent.objects.get(slug="qa_agent"))

    assert f"may not be called: $MISTRAL_API_KEY may not be sent to 127.0.0.1:{listener.port}" in str(refused.value)
    assert not BenchmarkRun.objects.exists() and listener.requests == []


@pytest.mark.django_db
def test_a_queued_run_whose_account_is_edited_fails_at_once_and_sends_nothing(listener, production_key, seeded_demo):
    run = benchmark_run_create(agent=Agent.objects.get(slug="qa_agent"))
    edit_behind_the_service(listener)

    run = execute_inline(run)

    assert run.status == "failed"
    assert f"$MISTRAL_API_KEY may not be sent to 127.0.0.1:{listener.port}" in run.error
    assert listener.requests == []


@pytest.mark.django_db
def test_a_hostile_answer_is_kept_short_on_one_line_and_shown_escaped(listener, production_key, provider_hosts,
                                                                       seeded_demo, admin_client):
    provider_hosts(f"MISTRAL_API_KEY=127.0.0.1:{listener.port}")
    provider_account_upsert(name="simulator", kind="simulator", base_url=listener.url, api_key_env="MISTRAL_API_KEY")
    listener.status = 400
    listener.body = "invalid model <script>alert(1)</script>\r\n2026-01-01 INFO forged line\x1b[2J" + " INTERNAL-SECRET-BODY" * 400

    run = run_inline("qa_agent")

    assert run.status == "failed" and listener.requests
    assert "invalid model <script>alert(1)</script> 2026-01-01 INFO forged line [2J" in run.error
    assert "\n" not in run.error and "\x1b" not in run.error
    assert len(run.error) < 1000 and "more characters)" in run.error
    page = admin_client.get(reverse("admin:models_app_benchmarkrun_change", args=[run.pk])).content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert(1)" not in page


# --- the admin ------------------------------------------------------------------------------------


@pytest.fixture
def provider_editor(client, seeded_demo):
    """Staff with nothing but the permission to change provider accounts (and see them)."""
    editor = UserFactory(username="editor", is_staff=True)
    editor.user_permissions.add(*Permission.objects.filter(
        content_type__app_label="models_app", codename__in=["change_provideraccount", "view_provideraccount"]))
    client.force_login(editor)
    return client


def change_form(account: ProviderAccount, **changes: object) -> dict[str, object]:
    fields = ("kind", "base_url", "api_key_env", "rate_limit_per_minute", "max_concurrency", "timeout_seconds")
    data: dict[str, object] = {name: getattr(account, name) for name in fields}
    data["enabled"] = "on" if account.enabled else ""
    return {**data, **changes}


@pytest.mark.django_db
def test_the_admin_refuses_a_destination_not_allowed_on_the_base_url_field(provider_editor, listener, provider_hosts):
    provider_hosts("")  # what a deployment has without GENESIS_PROVIDER_HOSTS (the test run allows any loopback port)
    account = ProviderAccount.objects.get(name="simulator")
    url = reverse("admin:models_app_provideraccount_change", args=[account.pk])

    page = provider_editor.post(url, change_form(account, base_url=listener.url)).content.decode()

    assert "errors field-base_url" in page
    assert f"$GENESIS_SIMULATOR_API_KEY may not be sent to 127.0.0.1:{listener.port}" in page
    assert "GENESIS_PROVIDER_HOSTS" in page
    assert ProviderAccount.objects.get(pk=account.pk).base_url == account.base_url
    assert listener.requests == []


@pytest.mark.django_db
def test_an_allowed_change_in_the_admin_records_who_changed_what(provider_editor, listener, provider_hosts):
    provider_hosts(f"GENESIS_SIMULATOR_API_KEY=127.0.0.1:{listener.port}")
    account = ProviderAccount.objects.get(name="simulator")
    url = reverse("admin:models_app_provideraccount_change", args=[account.pk])

    response = provider_editor.post(url, change_form(account, base_url=listener.url, max_concurrency=2))

    assert response.status_code == 302
    entry = ProviderAccount.history.filter(name="simulator").latest("history_date")
    assert entry.history_user.username == "editor"
    assert entry.history_change_reason == f"base_url: {account.base_url} → {listener.url}; max_concurrency: 8 → 2"
    changelist = reverse("admin:models_app_provideraccount_changelist")
    allowed = '<td class="field-destination_allowed"><img src="/static/admin/img/icon-yes.svg" alt="True"></td>'
    assert allowed in provider_editor.get(changelist).content.decode()
    provider_hosts("")  # the environment no longer allows it: the list says so (and calls are refused)
    assert allowed.replace("yes", "no").replace("True", "False") in provider_editor.get(changelist).content.decode()
