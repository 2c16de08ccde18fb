"""The launch console drives experiments and asks the routing endpoints, so each of its tests starts,
like the experiments tests, from a fresh in-process routing table and clean routing keys in Redis (a
table cached by an earlier test would answer for agents that test's database held)."""

from tests.experiments.conftest import _fresh_routing  # noqa: F401  (an autouse fixture, shared)
