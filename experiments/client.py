"""Route in-process, the way the server does (pure: stdlib + our assignment, no Django).

An agent's router (the HALO router) fetches ``GET /api/v1/agents/{agent}/config`` once, keeps it,
and answers "which model serves this user?" locally with :func:`decide_route` — the same function,
hence the same hash and the same answer, as ``POST /api/v1/route``. :class:`AgentConfigClient`
does the fetching with the ETag, and keeps answering from the last good config when the server
cannot be reached.

The config JSON (``config_version`` increases with every change that can alter a decision; the
response carries an ``ETag`` that changes with it)::

    {
      "agent": "qa_agent",
      "config_version": 12,
      "live": {"model": "open-mistral-7b", "provider": "simulator"},
      "experiment": {
        "key": "qa_agent-ft-2025-06-01",
        "seed": "9f2c4e1a7b3d5e60",
        "stage_percent": 25,
        "control": {"model": "open-mistral-7b", "provider": "simulator"},
        "treatment": {"model": "ft:open-mistral-7b:1a2b3c4d:20250601:5e6f7a8b", "provider": "simulator"}
      }
    }

``experiment`` is present only while an experiment is *running*; otherwise (none, paused, rolled
back, completed) it is ``null`` and everyone gets the live model with variant ``"live"``. While it
runs, a user is in treatment when their bucket (GrowthBook hash v2 of seed and user id, see
:mod:`experiments.assignment`) is below ``stage_percent / 100``; ``stage_percent`` 0 sends everyone
to control. The decision has the shape of the ``POST /route`` response:
``{"agent", "model", "provider", "variant", "experiment", "stage_percent"}``.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from experiments.assignment import assign_variant

RouteVariant = Literal["control", "treatment", "live"]


class ConfigError(ValueError):
    """The config JSON does not have the documented shape; the message names the field."""


class ConfigFetchError(RuntimeError):
    """The control plane did not give us a config (refused, unreachable, or sent garbage)."""

    def __init__(self, *, url: str, status: int | None, detail: str) -> None:
        self.url, self.status, self.detail = url, status, detail
        where = f"HTTP {status}" if status is not None else "no response"
        super().__init__(f"could not refresh the routing config from {url} ({where}): {detail}")


class ConfigUnavailableError(RuntimeError):
    """No config has ever been loaded, so there is nothing to decide from."""


@dataclass(frozen=True)
class ModelRef:
    model: str
    provider: str


@dataclass(frozen=True)
class ExperimentRouting:
    key: str
    seed: str
    stage_percent: int
    control: ModelRef
    treatment: ModelRef


@dataclass(frozen=True)
class AgentRouteConfig:
    agent: str
    config_version: int
    live: ModelRef
    experiment: ExperimentRouting | None

    @classmethod
    def from_json(cls, payload: Mapping[str, Any]) -> AgentRouteConfig:
        if not isinstance(payload, Mapping):
            raise ConfigError("config must be a JSON object")
        experiment_payload = payload.get("experiment")
        experiment = None
        if experiment_payload is not None:
            if not isinstance(experiment_payload, Mapping):
                raise ConfigError("experiment must be an object or null")
            stage_percent = _required(experiment_payload, "stage_percent", int, where="experiment.")
            if not 0 <= stage_percent <= 100:
                raise ConfigError(f"experiment.stage_percent must be between 0 and 100, got {stage_percent}")
            experiment = ExperimentRouting(
                key=_required(experiment_payload, "key", str, where="experiment."),
                seed=_required(experiment_payload, "seed", str, where="experiment."),
                stage_percent=stage_percent,
                control=_model_ref(experiment_payload, "control", where="experiment."),
                treatment=_model_ref(experiment_payload, "treatment", where="experiment."),
            )
        return cls(
            agent=_required(payload, "agent", str),
            config_version=_required(payload, "config_version", int),
            live=_model_ref(payload, "live"),
            experiment=experiment,
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RouteDecision:
    agent: str
    model: str
    provider: str
    variant: RouteVariant
    experiment: str | None
    stage_percent: int | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def decide_route(*, config: AgentRouteConfig, user_id: str) -> RouteDecision:
    """Which model serves ``user_id`` under ``config``: the same answer ``POST /route`` gives."""
    experiment = config.experiment
    if experiment is None:
        return RouteDecision(
            agent=config.agent,
            model=config.live.model,
            provider=config.live.provider,
            variant="live",
            experiment=None,
            stage_percent=None,
        )
    variant = assign_variant(seed=experiment.seed, user_id=user_id, treatment_fraction=experiment.stage_percent / 100)
    served = experiment.treatment if variant == "treatment" else experiment.control
    return RouteDecision(
        agent=config.agent,
        model=served.model,
        provider=served.provider,
        variant=variant,
        experiment=experiment.key,
        stage_percent=experiment.stage_percent,
    )


class AgentConfigClient:
    """Keeps one agent's config fresh over HTTP and routes from it without network I/O.

    Call :meth:`refresh` on your own schedule (e.g. every 30 s from a background thread); it sends
    ``If-None-Match`` so an unchanged config costs a 304. :meth:`decide` never touches the network.
    When a refresh fails, the last good config stays in use and the error is returned to the caller
    of :meth:`refresh` — a router keeps routing through a control-plane outage.
    """

    def __init__(self, *, base_url: str, api_key: str, agent: str, timeout_seconds: float = 2.0) -> None:
        self._url = f"{base_url.rstrip('/')}/api/v1/agents/{urllib.parse.quote(agent, safe='')}/config"
        self._api_key = api_key
        self._timeout_seconds = timeout_seconds
        self._lock = threading.Lock()
        self._config: AgentRouteConfig | None = None
        self._etag: str | None = None

    @property
    def config(self) -> AgentRouteConfig | None:
        return self._config

    def refresh(self) -> bool:
        """Fetch the config; True when it changed.

        Raises :class:`ConfigFetchError` (or :class:`ConfigError` for a malformed body) and keeps the
        last good config.
        """
        with self._lock:
            headers = {"Authorization": f"Bearer {self._api_key}", "Accept": "application/json"}
            if self._etag is not None and self._config is not None:
                headers["If-None-Match"] = self._etag
            request = urllib.request.Request(self._url, headers=headers, method="GET")
            try:
                with urllib.request.urlopen(request, timeout=self._timeout_seconds) as response:
                    payload = json.load(response)
                    etag = response.headers.get("ETag")
            except urllib.error.HTTPError as error:
                with error:
                    if error.code == 304:
                        return False
                    raise ConfigFetchError(url=self._url, status=error.code, detail=_error_detail(error)) from None
            except (urllib.error.URLError, OSError, json.JSONDecodeError) as error:
                # URLError: refused or unresolvable; OSError: timeouts and resets mid-body.
                raise ConfigFetchError(url=self._url, status=None, detail=str(error)) from error
            config = AgentRouteConfig.from_json(payload)
            changed = config != self._config
            self._config, self._etag = config, etag
            return changed

    def decide(self, *, user_id: str) -> RouteDecision:
        config = self._config
        if config is None:
            raise ConfigUnavailableError(f"no config loaded yet from {self._url}: call refresh() first")
        return decide_route(config=config, user_id=user_id)


def _error_detail(error: urllib.error.HTTPError) -> str:
    # The API answers errors as {"detail": ...}; anything else is shown as the reason phrase.
    try:
        detail = json.loads(error.read() or b"{}").get("detail")
    except (ValueError, AttributeError, OSError):
        detail = None
    return str(detail) if detail else str(error.reason)


def _required(payload: Mapping[str, Any], field: str, kind: type, *, where: str = "") -> Any:
    if field not in payload:
        raise ConfigError(f"{where}{field} is missing")
    value = payload[field]
    # bool is an int in Python; a JSON true is not a version or a percentage.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{where}{field} must be a {kind.__name__}, got {type(value).__name__}")
    if kind is str and not value:
        raise ConfigError(f"{where}{field} must not be empty")
    return value


def _model_ref(payload: Mapping[str, Any], field: str, *, where: str = "") -> ModelRef:
    value = payload.get(field)
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}{field} must be an object with model and provider")
    return ModelRef(
        model=_required(value, "model", str, where=f"{where}{field}."),
        provider=_required(value, "provider", str, where=f"{where}{field}."),
    )
