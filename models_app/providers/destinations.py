"""Where a provider account's requests — and with them its API key — may go.

The environment decides, not the account. A person who may edit provider accounts chooses an account's
URL and the *name* of its key variable; were the URL free, they could send any `*_API_KEY` the process
holds to a host of their own, and read what that host answers in the error of every call. So an
account's destination (its URL's host and port) must be one the rules bind to its key variable, and an
account without a key must name a host listed for no key. Plain `http://` beyond loopback is refused
when `plain_http_loopback_only` (staging and production): the key and the prompts would cross the
network unencrypted.

Pure: the caller builds the rules from its settings (models_app/registry/gateway.py). The factory checks
every provider it builds from an account, so a row changed behind the registry's services is refused
when it is used, and the registry's service checks an account when it is saved.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, replace

import httpx

from genesis.config.redaction import address_shown

# Where the Mistral SDK sends requests when an account gives no URL.
MISTRAL_DEFAULT_URL = "https://api.mistral.ai"
SETTING = "GENESIS_PROVIDER_HOSTS"
SIMULATOR_KEY = "GENESIS_SIMULATOR_API_KEY"
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class HostRule:
    """Accounts whose key is in $`api_key_env` ("" for accounts without a key) may call `host` on `port`
    (None: any port)."""

    api_key_env: str
    host: str  # lower case; an IPv6 address without brackets
    port: int | None

    def __str__(self) -> str:
        address = f"{_host_text(self.host)}:{'*' if self.port is None else self.port}"
        return f"{self.api_key_env}={address}" if self.api_key_env else address


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ProviderDestinations:
    rules: tuple[HostRule, ...]
    plain_http_loopback_only: bool

    def refusal(self, *, kind: str, base_url: str | None, api_key_env: str | None) -> str | None:
        """Why an account of `kind` may not call `base_url` with the key in $`api_key_env`, or None when
        it may. The message says what to change in the environment."""
        url_text = base_url or (MISTRAL_DEFAULT_URL if kind == "mistral" else "")
        shown = address_shown(url_text)  # the refusal is shown on the form and may be logged
        try:
            url = httpx.URL(url_text)
            host = url.raw_host.decode("ascii").lower()
        except (httpx.InvalidURL, UnicodeDecodeError):
            return f"'{shown}' is not an http:// or https:// URL"
        if url.scheme not in _DEFAULT_PORTS or not host:
            return f"'{shown}' is not an http:// or https:// URL with a host"
        if url.userinfo:
            # Nothing to gain, and URL parsers disagree about where such an address ends.
            return f"'{shown}' carries a user name or password; give the URL without them (the key comes from its variable)"
        port = url.port or _DEFAULT_PORTS[url.scheme]
        address = f"{_host_text(host)}:{port}"
        if url.scheme == "http" and self.plain_http_loopback_only and not is_loopback(host):
            return (
                f"plain http:// to {address} is refused outside dev: the API key and the prompts would cross the "
                "network unencrypted; use https://"
            )
        key = api_key_env or ""
        if any(rule.api_key_env == key and rule.host == host and rule.port in (None, port) for rule in self.rules):
            return None
        listed = ", ".join(str(replace(rule, api_key_env="")) for rule in self.rules if rule.api_key_env == key) or "no host"
        if key == SIMULATOR_KEY:
            # Almost always a simulator on another port than this process was told (`make run` with
            # GENESIS_SIMULATOR_PORT, a command run from another terminal).
            return (
                f"${key} may not be sent to {address}: it goes to the simulator's URL, {listed} here. If the "
                f"simulator runs at {address}, give this process GENESIS_SIMULATOR_URL={url.scheme}://{address} (as "
                f"`make run` gives its own); for another server, add {key}={address} to {SETTING}"
            )
        if key:
            return (
                f"${key} may not be sent to {address}: {SETTING} binds it to {listed}. If that host should "
                f"have this key, add {key}={address} to {SETTING} in the environment of the web and worker processes"
            )
        return (
            f"{address} is not a host {SETTING} lets accounts without an API key call (it lists {listed} for them). If it "
            f"should be, add {address} to {SETTING} in the environment of the web and worker processes"
        )


def provider_destinations(
    *, hosts: Iterable[tuple[str, str, int | None]], simulator_url: str, plain_http_loopback_only: bool
) -> ProviderDestinations:
    """The rules: `hosts` as (key variable, host, port) — from GENESIS_PROVIDER_HOSTS —, plus the two every
    Genesis has: MISTRAL_API_KEY to the Mistral API, GENESIS_SIMULATOR_API_KEY to the simulator's URL."""
    rules = [HostRule("MISTRAL_API_KEY", "api.mistral.ai", 443)]
    try:
        simulator = httpx.URL(simulator_url)
        rules.append(HostRule(SIMULATOR_KEY, simulator.raw_host.decode("ascii").lower(),
                              simulator.port or _DEFAULT_PORTS.get(simulator.scheme, 443)))
    except (httpx.InvalidURL, UnicodeDecodeError):
        pass  # a malformed simulator URL binds nothing; accounts pointing at it are refused with their own message
    rules.extend(HostRule(api_key_env, host, port) for api_key_env, host, port in hosts)
    return ProviderDestinations(rules=tuple(rules), plain_http_loopback_only=plain_http_loopback_only)


def _host_text(host: str) -> str:
    return f"[{host}]" if ":" in host else host
