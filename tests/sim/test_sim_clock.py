"""Emulated time: jobs count from their own creation; real time can be sped up or frozen."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import aiohttp

from poller.sim import SimConfig, SimHandle, config_from_scenario, parse_scenario, running_sim
from poller.sim.state import SimClock

if TYPE_CHECKING:  # conftest.py is loaded by pytest; imported here for types only
    from conftest import Api


class FakeTime:
    """A real-time clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_time_scale_multiplies_the_passing_of_real_time() -> None:
    real = FakeTime()
    clock = SimClock(real, manual=False, scale=10.0)

    real.now += 1.5

    assert clock.now() == 1_015.0


def test_manual_clock_ignores_real_time_and_moves_only_when_advanced() -> None:
    real = FakeTime()
    clock = SimClock(real, manual=True, scale=10.0)

    real.now += 100
    clock.advance(2)

    assert clock.now() == 1_002.0


async def test_job_created_later_starts_its_timeline_at_its_own_creation(
    sim: SimHandle, api: Api, three_task_job: dict[str, Any]
) -> None:
    await sim.advance(100)
    await sim.create_job(three_task_job)

    body = (await api.get("JOB-three")).json()

    assert body["job"]["execution_status"] == "RUNNING"
    assert body["tasks"][0]["created_at"] == "2024-06-06T15:57:11.115Z"


async def test_sped_up_real_time_drives_job_timelines(
    session: aiohttp.ClientSession, three_task_job: dict[str, Any]
) -> None:
    real = FakeTime()
    config = SimConfig(time_scale=5.0)
    async with running_sim(config, clock=real) as sim:
        await sim.create_job(three_task_job)
        real.now += 2.0  # 10 emulated seconds

        async with session.get(sim.job_url("JOB-three"), headers=sim.auth_headers) as response:
            body = await response.json()

    assert body["job"]["execution_status"] == "SUCCEEDED"


def test_scenario_settings_override_the_base_config_and_add_jobs() -> None:
    scenario = parse_scenario(
        {"project_id": "p2", "page_cap": 7, "jobs": [{"job_status": [[0, "RUNNING"]]}]}
    )
    base = SimConfig(manual_clock=True, upper_case_keys=True)

    config = config_from_scenario(scenario, base)

    assert (config.project_id, config.page_cap, len(config.jobs)) == ("p2", 7, 1)
    assert (config.manual_clock, config.upper_case_keys) == (True, True)
