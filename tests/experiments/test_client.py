"""The in-process routing client: config shape, decisions equal to the server's, ETag refresh over HTTP."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any

import pytest

from experiments import client as client_module
from experiments.assignment import assign_variant
from experiments.client import (
    AgentConfigClient,
    AgentRouteConfig,
    ConfigError,
    ConfigFetchError,
    ConfigUnavailableError,
    decide_route,
)
from tests.http_servers import QuietHandler, on_loopback, serving, url_of


def _documented_config() -> dict[str, Any]:
    """The example config in experiments.client's docstring: the tests decide from it, so the example a
    reader copies stays one the client accepts."""
    doc = client_module.__doc__ or ""
    example = doc[doc.index("::\n") + 3:]
    return json.loads(example[:example.index("\n    }\n") + 6])


CONFIG: dict[str, Any] = _documented_config()
ROUTE_RESPONSE_KEYS = {"agent", "model", "provider", "variant", "experiment", "stage_percent"}  # CONTRACT.md, POST /route


def _config(**changes: Any) -> dict[str, Any]:
    payload = copy.deepcopy(CONFIG)
    payload.update(changes)
    return payload


def test_config_round_trips_through_json() -> None:
    config = AgentRouteConfig.from_json(CONFIG)
    assert config.to_json() == CONFIG
    assert AgentRouteConfig.from_json(json.loads(json.dumps(config.to_json()))) == config


def test_decisions_are_the_assignment_functions_and_have_the_route_response_shape() -> None:
    config = AgentRouteConfig.from_json(CONFIG)
    for index in range(2_000):
        user_id = f"user-{index}"
        decision = decide_route(config=config, user_id=user_id)
        expected = assign_variant(seed="9f2c4e1a7b3d5e60", user_id=user_id, treatment_fraction=0.25)
        assert decision.variant == expected
        served = CONFIG["experiment"][expected]
        assert (decision.model, decision.provider) == (served["model"], served["provider"])
        assert decision.experiment == "qa_agent-ft-2025-06-01" and decision.stage_percent == 25
    assert set(decision.to_json()) == ROUTE_RESPONSE_KEYS


def test_without_a_running_experiment_everyone_gets_the_live_model() -> None:
    decision = decide_route(config=AgentRouteConfig.from_json(_config(experiment=None)), user_id="user-1")
    assert decision.to_json() == {
        "agent": "qa_agent", "model": "open-mistral-7b", "provider": "simulator",
        "variant": "live", "experiment": None, "stage_percent": None,
    }


def test_stage_zero_sends_everyone_to_control() -> None:
    payload = _config()
    payload["experiment"]["stage_percent"] = 0
    config = AgentRouteConfig.from_json(payload)
    assert {decide_route(config=config, user_id=f"u{i}").variant for i in range(500)} == {"control"}


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda p: p.pop("agent"), "agent is missing"),
        (lambda p: p.update(config_version=True), "config_version must be a int"),
        (lambda p: p.update(live={"model": "m"}), "live.provider is missing"),
        (lambda p: p["experiment"].update(stage_percent=150), "stage_percent must be between 0 and 100"),
        (lambda p: p["experiment"].update(seed=""), "experiment.seed must not be empty"),
        (lambda p: p["experiment"].pop("treatment"), "experiment.treatment must be an object"),
        (lambda p: p.update(experiment=[1]), "experiment must be an object or null"),
    ],
)
def test_malformed_config_names_the_field(mutate: Any, message: str) -> None:
    payload = _config()
    mutate(payload)
    with pytest.raises(ConfigError, match=message):
        AgentRouteConfig.from_json(payload)


# ------------------------------------------------------------------ over real HTTP on loopback


@dataclass
class FakeControlPlane:
    """Serves GET /api/v1/agents/qa_agent/config like the contract says, with an ETag."""

    api_key: str = "test-key"
    payload: dict[str, Any] = field(default_factory=_config)
    requests: list[dict[str, str | None]] = field(default_factory=list)

    @property
    def etag(self) -> str:
        return f'"qa_agent-{self.payload["config_version"]}"'


@pytest.fixture
def control_plane() -> Iterator[tuple[FakeControlPlane, str, ThreadingHTTPServer]]:
    plane = FakeControlPlane()

    class Handler(QuietHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            plane.requests.append({"path": self.path, "if_none_match": self.headers.get("If-None-Match")})
            if self.headers.get("Authorization") != f"Bearer {plane.api_key}":
                return self._reply(401, {"detail": "missing or invalid API key"})
            if self.path != "/api/v1/agents/qa_agent/config":
                return self._reply(404, {"detail": "unknown agent"})
            if self.headers.get("If-None-Match") == plane.etag:
                self.send_response(304)
                self.send_header("ETag", plane.etag)
                self.end_headers()
                return None
            return self._reply(200, plane.payload, etag=plane.etag)

        def _reply(self, status: int, body: dict[str, Any], etag: str | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if etag:
                self.send_header("ETag", etag)
            self.end_headers()
            self.wfile.write(data)

    with serving(on_loopback(Handler)) as server:
        yield plane, url_of(server), server


def test_client_refreshes_with_etag_and_routes_without_the_network(control_plane: Any) -> None:
    plane, base_url, _ = control_plane
    client = AgentConfigClient(base_url=base_url, api_key="test-key", agent="qa_agent")
    with pytest.raises(ConfigUnavailableError, match="refresh"):
        client.decide(user_id="user-1")

    assert client.refresh() is True
    assert client.refresh() is False  # 304: nothing changed
    assert plane.requests[-1]["if_none_match"] == plane.etag

    requests_before = len(plane.requests)
    decision = client.decide(user_id="user-1")
    assert len(plane.requests) == requests_before  # decisions never call the server
    assert decision == decide_route(config=AgentRouteConfig.from_json(plane.payload), user_id="user-1")

    plane.payload = _config(config_version=13)
    plane.payload["experiment"]["stage_percent"] = 50
    assert client.refresh() is True
    assert client.config is not None and client.config.experiment is not None
    assert client.config.experiment.stage_percent == 50


def test_client_keeps_the_last_good_config_when_the_server_fails(control_plane: Any) -> None:
    plane, base_url, server = control_plane
    client = AgentConfigClient(base_url=base_url, api_key="test-key", agent="qa_agent", timeout_seconds=1.0)
    client.refresh()
    before = client.decide(user_id="user-7")

    plane.api_key = "rotated"
    with pytest.raises(ConfigFetchError, match="HTTP 401.*missing or invalid API key") as refused:
        client.refresh()
    assert refused.value.status == 401
    assert client.decide(user_id="user-7") == before

    server.shutdown()
    server.server_close()
    with pytest.raises(ConfigFetchError, match="no response"):
        client.refresh()
    assert client.decide(user_id="user-7") == before
