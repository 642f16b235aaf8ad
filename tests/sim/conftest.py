"""Fixtures for the emulator's tests: a manual-clock emulator on a real port and a client."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDictProxy

from poller.sim import SimConfig, SimHandle, running_sim

# 2024-06-06T15:55:31.115Z, the time in the API page's example response.
EPOCH = 1_717_689_331.115


@dataclass(frozen=True, slots=True)
class Reply:
    """One HTTP answer, read completely."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True, slots=True)
class Api:
    """Calls the emulated job-details endpoint."""

    sim: SimHandle
    session: aiohttp.ClientSession

    async def get(
        self,
        job_id: str,
        *,
        project_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        **params: str,
    ) -> Reply:
        url = self.sim.job_url(job_id, project_id)
        sent = self.sim.auth_headers if headers is None else headers
        async with self.session.get(url, headers=sent, params=params) as response:
            return Reply(response.status, response.headers, await response.read())


StartSim = Callable[..., Awaitable[SimHandle]]


@pytest.fixture
async def start_sim() -> AsyncIterator[StartSim]:
    """Start emulators (manual clock at EPOCH unless told otherwise); all stop after the test."""
    async with AsyncExitStack() as stack:

        async def start(**settings: Any) -> SimHandle:
            settings.setdefault("manual_clock", True)
            return await stack.enter_async_context(
                running_sim(SimConfig(**settings), clock=lambda: EPOCH)
            )

        yield start


@pytest.fixture
async def sim(start_sim: StartSim) -> SimHandle:
    """A default emulator with no jobs and a manual clock."""
    return await start_sim()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """A client whose connections are never reused, so each request meets its own fault."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as client:
        yield client


@pytest.fixture
def api(sim: SimHandle, session: aiohttp.ClientSession) -> Api:
    """The job-details endpoint of :func:`sim`."""
    return Api(sim, session)


@pytest.fixture
def make_api(session: aiohttp.ClientSession) -> Callable[[SimHandle], Api]:
    """The job-details endpoint of another emulator."""
    return lambda handle: Api(handle, session)


def _steps(*pairs: tuple[float, str]) -> list[list[object]]:
    return [[at, status] for at, status in pairs]


@pytest.fixture
def three_task_job() -> dict[str, Any]:
    """A job running 0-10 s: task 1 done at 2, task 2 done at 6, task 3 appears at 4."""
    return {
        "job_id": "JOB-three",
        "job_status": _steps((0, "RUNNING"), (10, "SUCCEEDED")),
        "tasks": [
            {
                "task_index": 1,
                "task_name": "PREPARE",
                "steps": _steps((0, "RUNNING"), (2, "SUCCEEDED")),
            },
            {
                "task_index": 2,
                "task_name": "DEPLOY",
                "steps": _steps((0, "SUBMITTED"), (2, "RUNNING"), (6, "SUCCEEDED")),
            },
            {
                "task_index": 3,
                "task_name": "VERIFY",
                "steps": _steps((4, "SUBMITTED"), (6, "RUNNING"), (9, "SUCCEEDED")),
            },
        ],
    }


@pytest.fixture
def many_tasks_job() -> Callable[[int], dict[str, Any]]:
    """A factory of running jobs with ``n`` visible tasks indexed 1..n."""

    def build(n: int, job_id: str = "JOB-many") -> dict[str, Any]:
        return {
            "job_id": job_id,
            "job_status": [[0, "RUNNING"]],
            "tasks": [
                {"task_index": i, "task_name": f"T{i}", "steps": [[0, "RUNNING"]]}
                for i in range(1, n + 1)
            ],
        }

    return build
