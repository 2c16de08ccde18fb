"""The Prometheus tools the ops tests run: skipped when absent on a dev machine, an error when
GENESIS_REQUIRE_SERVICES=1 (set by .ci/run, which installs them)."""

from __future__ import annotations

import os
import shutil

import pytest


def tool(name: str, package: str) -> pytest.MarkDecorator:
    """A mark for tests that need `name`: skip without it, unless services are required."""
    missing = shutil.which(name) is None
    if missing and os.environ.get("GENESIS_REQUIRE_SERVICES") == "1":
        raise RuntimeError(f"{name} is required (GENESIS_REQUIRE_SERVICES=1); install Debian's '{package}'")
    return pytest.mark.skipif(missing, reason=f"{name} not installed (Debian package '{package}'; .ci/run installs it)")
