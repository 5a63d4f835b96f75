"""Fixtures of the fleet tests; they live in fleet_support beside the helpers."""

from fleet.fleet_support import fleet, running, testhosts  # noqa: F401 (fixtures)
