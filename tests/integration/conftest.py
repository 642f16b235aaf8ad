"""Fixtures for tests that run workers: the emulator, on a manual or a real clock."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from poller.sim import SimConfig, SimHandle, running_sim
from poller.sim.auth import token_auth
from tests.integration.harness import PROJECT, TOKEN


@pytest.fixture
async def sim() -> AsyncIterator[SimHandle]:
    """An emulator whose time moves only when the test says (``await sim.advance(s)``)."""
    config = SimConfig(project_id=PROJECT, authenticators=(token_auth([TOKEN]),), manual_clock=True)
    async with running_sim(config) as handle:
        yield handle


@pytest.fixture
async def live_sim() -> AsyncIterator[SimHandle]:
    """An emulator on the real clock."""
    config = SimConfig(project_id=PROJECT, authenticators=(token_auth([TOKEN]),))
    async with running_sim(config) as handle:
        yield handle
