"""Authentication end to end against the emulator: token file rotation, AK/SK, IAM tokens."""

from __future__ import annotations

from pathlib import Path

from poller.localredis import LocalRedis
from poller.sim import SimConfig, SimHandle, running_sim
from poller.sim.auth import token_auth
from poller.store import Store
from tests.integration.harness import (
    PROJECT,
    all_final,
    assert_consistent,
    by_job,
    events_until,
    eventually,
    fast_settings,
    running_worker,
)

QUICK = {"job_type": "PROVISION", "job_status": [[0, "RUNNING"], [0.2, "SUCCEEDED"]],
         "tasks": [{"task_name": "A", "task_index": 1,
                    "steps": [[0, "RUNNING"], [0.2, "SUCCEEDED"]]}]}  # fmt: skip


async def test_rotated_token_file_is_picked_up_without_a_restart(
    redis_server: LocalRedis, prefix: str, store: Store, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("expired-token\n")
    config = SimConfig(project_id=PROJECT, authenticators=(token_auth(["rotated-token"]),))
    async with running_sim(config) as sim:
        ids = [await sim.create_job(QUICK) for _ in range(3)]
        settings = fast_settings(
            redis_server.url, prefix, sim.url, auth_token=None, auth_token_file=str(token_file)
        )
        async with running_worker(settings) as worker:
            await store.enqueue(*ids)
            await eventually(lambda: _count(sim, "401") >= 3)
            assert await store.read_events() == []  # failed polls publish nothing
            token_file.write_text("rotated-token\n")  # what a Kubernetes secret update does
            events = await events_until(store, all_final(ids))
        assert worker.metrics.polls.labels("auth_failed")._value.get() >= 1
    for job_events in by_job(events).values():
        assert_consistent(job_events)
        assert job_events[0].from_status == ""


def _count(sim: SimHandle, status: str) -> int:
    return int(sim.state.stats.by_status.get(int(status), 0))
