"""The schema every `genesis/config/<env>.yaml` must satisfy.

Every section forbids unknown keys, so a typo (`min_stage_hour`) is reported instead of ignored.
Secrets never live here: the YAML may only *name* environment variables through `${VAR}`.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Iterator
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal, NamedTuple
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from genesis.config.redaction import MASK, without_credentials


def _split_commas(value: object) -> object:
    """Accept "10,25,50" (what an environment variable can hold) as well as a YAML list."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _percent_steps(values: list[int]) -> list[int]:
    """Stage plans and budget thresholds: whole percents from 1 to 100, strictly increasing."""
    if not values:
        raise ValueError("must list at least one percent")
    if any(not 1 <= value <= 100 for value in values):
        raise ValueError(f"every percent must be between 1 and 100, got {values}")
    if any(later <= earlier for earlier, later in zip(values, values[1:])):
        raise ValueError(f"percents must increase strictly, got {values}")
    return values


def rollout_stage_problem(values: list[int]) -> str | None:
    """What is wrong with a rollout stage plan, or None. The one rule for ROLLOUT_STAGES and for every
    experiment's plan (experiments/rollout_settings.py): at least two whole percents, strictly increasing,
    the first below 100 and the last exactly 100. One stage would be 100 % at the start — no partial
    stage, no approval by a second person, and no next stage to approve, so it could never complete."""
    if len(values) < 2:
        return f"needs at least two stages, a partial one first and 100 last (e.g. 10,25,50,100), got {values}"
    if any(not 1 <= value <= 100 for value in values):
        return f"every stage must be between 1 and 100 %, got {values}"
    if any(later <= earlier for earlier, later in zip(values, values[1:])):
        return f"percents must increase strictly (a rollout never steps back), got {values}"
    if values[-1] != 100:
        return f"the last stage must be 100 (approving it makes the candidate live), got {values}"
    return None


def _rollout_stages(values: list[int]) -> list[int]:
    problem = rollout_stage_problem(values)
    if problem:
        raise ValueError(problem)
    return values


class ProviderHost(NamedTuple):
    """One entry of GENESIS_PROVIDER_HOSTS: provider accounts whose key is in $`api_key_env` ("" for
    accounts without a key) may call `host` on `port` (None: any port)."""

    api_key_env: str
    host: str  # lower case; an IPv6 address without its brackets
    port: int | None


# The names a provider account may give its key variable (and GENESIS_PROVIDER_HOSTS binds to hosts).
API_KEY_VARIABLE = re.compile(r"[A-Z][A-Z0-9_]*_API_KEY")
PROVIDER_HOST_SYNTAX = "NAME_API_KEY=host[:port] (or host[:port] for accounts without a key; port 443 when left out, * for any)"
_CARRIES_USERINFO = "carries a user name or password; give host[:port] only (the key comes from its variable)"


def parse_provider_host(value: object) -> object:
    """`"VLLM_API_KEY=vllm.internal:8000"` → ProviderHost("VLLM_API_KEY", "vllm.internal", 8000). A host
    without a port means 443 (https); `host:*` any port; an entry without `NAME=` is for accounts that
    send no key."""
    if not isinstance(value, str):
        return value
    # The refusals do not quote the entry: the loader's message does, with any password masked.
    name, separator, address = value.strip().partition("=")
    name, address = (name.strip(), address.strip()) if separator else ("", name)
    if separator and not API_KEY_VARIABLE.fullmatch(name):
        raise ValueError(f"{name!r} is not an API key variable; expected {PROVIDER_HOST_SYNTAX}")
    any_port = address.endswith(":*")
    try:
        parts = urlsplit("//" + (address[:-2] if any_port else address))
        port = parts.port
    except ValueError:
        parts, port = None, None
    if parts is not None and (parts.username is not None or parts.password is not None):
        raise ValueError(_CARRIES_USERINFO)
    if parts is None or not parts.hostname or parts.path or parts.query or parts.fragment \
            or not parts.hostname.isascii() or "=" in parts.hostname or port == 0:
        raise ValueError(f"expected {PROVIDER_HOST_SYNTAX}, without a scheme or a path")
    return ProviderHost(api_key_env=name, host=parts.hostname, port=None if any_port else 443 if port is None else port)


def _time_zone(name: str) -> str:
    """An IANA zone name. It decides what a budget's month and day are, the day a daily cost report is
    named by and beat's hours: Django refused a misspelt one with "Incorrect timezone setting", naming
    neither the file nor the key."""
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        # The refusal quotes the value after this ("(got 'Europe/Pariss')"): not named twice.
        raise ValueError("not a time zone name (an IANA name such as UTC or Europe/Paris)") from None
    return name


PercentSteps = Annotated[list[int], BeforeValidator(_split_commas), AfterValidator(_percent_steps)]
TimeZoneName = Annotated[str, AfterValidator(_time_zone)]
RolloutStages = Annotated[list[int], BeforeValidator(_split_commas), AfterValidator(_rollout_stages)]
StrList = Annotated[list[str], BeforeValidator(_split_commas)]
def _no_userinfo(value: object) -> object:
    """Before the list is split at commas: a password may hold one, and each piece's refusal would
    then quote a part of it unmasked."""
    if isinstance(value, str) and "@" in value:
        raise ValueError(f"an entry {_CARRIES_USERINFO}")
    return value


# BeforeValidators run last-listed first: _no_userinfo sees the whole variable before _split_commas.
ProviderHostList = Annotated[list[Annotated[ProviderHost, BeforeValidator(parse_provider_host)]],
                             BeforeValidator(_split_commas), BeforeValidator(_no_userinfo)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Fields whose whole value is a credential (a webhook URL is its own key): their repr says only
    # that they are set. Every other text field's repr has the passwords of its URLs masked, so the
    # config object printed — by the debug page, a log line, a shell — shows no secret.
    secret_fields: ClassVar[frozenset[str]] = frozenset()

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            if name in self.secret_fields and value:
                yield name, MASK
            elif isinstance(value, str):
                yield name, without_credentials(value)
            else:
                yield name, value


class AbTestingSection(Section):
    stages: RolloutStages = Field(default_factory=lambda: [10, 25, 50, 100])
    min_stage_hours: float = Field(default=48, ge=0)
    # At least 20: below that the guardrail and sample-ratio tests say nothing (experiments/rollout_settings.py
    # MIN_SAMPLES_PER_ARM_FLOOR refuses such an experiment too).
    min_samples_per_arm: int = Field(default=150, ge=20)
    success_rate_drop_points: float = Field(default=5.0, ge=0)
    latency_increase_warn: float = Field(default=0.30, ge=0)
    # The chance that a correctly split rollout is ever paused for SRM, over all its stages, checked
    # every minute (the anytime-valid test of experiments/stats.py; each stage gets an equal share).
    srm_alpha: float = Field(default=0.01, gt=0, lt=1)
    # The chance that a candidate whose harm is within every tolerance is ever rolled back by a
    # guardrail, at any sample size (shared by the rules that roll back, Bonferroni). A warning rule
    # is tested at the whole of it, and only for its "confidently worse: review" verdict; it bounds no
    # hold: any guardrail whose estimate is beyond its tolerance holds the stage while it is (a point
    # estimate, not a test), so a good candidate near a tolerance can be held, never rolled back.
    guardrail_alpha: float = Field(default=0.05, gt=0, lt=0.5)


class BenchmarksSection(Section):
    min_relative_improvement: float = 0.08
    # Below this many paired cases the gate is always INCONCLUSIVE: a tiny suite can show a zero-width
    # interval and would otherwise PASS on no evidence.
    min_cases: int = Field(default=20, ge=1)
    # The gate's hypothesis (models_app/benchmarks/stats.py RULES; README "Benchmarks"): "at_least_threshold"
    # PASSes only when confident the improvement is at least min_relative_improvement.
    gate_rule: Literal["at_least_threshold", "improves_and_reaches"] = "at_least_threshold"
    # At least 10 000: the verdict must not hang on the resampling seed (more are drawn near a boundary).
    bootstrap_resamples: int = Field(default=10_000, ge=10_000)


class CostsSection(Section):
    budget_usd: Decimal = Field(default=Decimal("30"), ge=0)
    thresholds: PercentSteps = Field(default_factory=lambda: [25, 50, 83])
    hard_limit: bool = True


class LoggingSection(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"


class AuditsSection(Section):
    # Largest dataset upload (admin, API) in bytes; 1 GiB.
    max_upload_bytes: int = Field(default=1 << 30, ge=1)


class ProvidersSection(Section):
    # Where provider accounts may send requests, and which key with them (models_app/providers/destinations.py;
    # README "Providers"), beyond the built-in MISTRAL_API_KEY=api.mistral.ai and the simulator's URL.
    hosts: ProviderHostList = Field(default_factory=list)


class AlertingSection(Section):
    secret_fields = frozenset({"slack_webhook"})

    slack_webhook: str = ""
    email_to: StrList = Field(default_factory=list)


class GenesisConfig(Section):
    debug: bool
    allowed_hosts: StrList
    database_url: str
    redis_url: str = ""
    simulator_url: str = "http://127.0.0.1:8765"
    time_zone: TimeZoneName = "UTC"
    ab_testing: AbTestingSection = Field(default_factory=AbTestingSection)
    benchmarks: BenchmarksSection = Field(default_factory=BenchmarksSection)
    costs: CostsSection = Field(default_factory=CostsSection)
    logging: LoggingSection = Field(default_factory=LoggingSection)
    audits: AuditsSection = Field(default_factory=AuditsSection)
    providers: ProvidersSection = Field(default_factory=ProvidersSection)
    alerting: AlertingSection = Field(default_factory=AlertingSection)
