"""Fixtures of the safety tests: the models_app simulator fixtures (a simulator over real HTTP with the
seeded provider pointed at it) and a superuser."""

from __future__ import annotations

import pytest

from tests.models_app.conftest import demo_simulator, empty_broker, simulator_factory, usage_omitting_factory  # noqa: F401 - fixtures


@pytest.fixture
def chief(db):
    from tests.factories import UserFactory

    return UserFactory(username="chief", is_superuser=True)
