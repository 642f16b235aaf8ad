"""The /_sim admin API over HTTP: jobs, clock, faults and counters."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import aiohttp

from poller.sim import SimHandle

if TYPE_CHECKING:  # conftest.py is loaded by pytest; imported here for types only
    from conftest import Api


async def _post(
    session: aiohttp.ClientSession, url: str, body: object
) -> tuple[int, dict[str, Any]]:
    async with session.post(url, json=body) as response:
        return response.status, await response.json()


async def test_post_job_creates_it_and_answers_201_with_its_ids(
    sim: SimHandle, api: Api, three_task_job: dict[str, Any]
) -> None:
    status, body = await _post(api.session, f"{sim.url}/_sim/jobs", three_task_job)

    assert status == 201
    assert body == {"job_id": "JOB-three", "project_id": sim.project_id}
    assert (await api.get("JOB-three")).status == 200


async def test_post_job_without_id_gets_a_generated_job_id(sim: SimHandle, api: Api) -> None:
    status, body = await _post(
        api.session, f"{sim.url}/_sim/jobs", {"job_status": [[0, "RUNNING"]]}
    )

    assert status == 201
    assert body["job_id"].startswith("JOB")
    assert (await api.get(body["job_id"])).status == 200


async def test_post_job_with_a_taken_id_answers_409(
    sim: SimHandle, api: Api, three_task_job: dict[str, Any]
) -> None:
    await sim.create_job(three_task_job)

    status, body = await _post(api.session, f"{sim.url}/_sim/jobs", three_task_job)

    assert status == 409
    assert "JOB-three" in body["error"]


async def test_post_invalid_job_answers_400_naming_the_field(sim: SimHandle, api: Api) -> None:
    spec = {
        "job_status": [[0, "RUNNING"]],
        "tasks": [{"task_index": 1, "task_name": "A", "steps": [[0, "DONE"]]}],
    }

    status, body = await _post(api.session, f"{sim.url}/_sim/jobs", spec)

    assert status == 400
    assert body["error"].startswith("job.tasks[0].steps[0][1]: 'DONE' is not one of")


async def test_post_job_with_a_body_that_is_not_json_answers_400(sim: SimHandle, api: Api) -> None:
    async with api.session.post(f"{sim.url}/_sim/jobs", data=b"{nope") as response:
        assert response.status == 400
        assert "not JSON" in (await response.json())["error"]


async def test_get_job_shows_spec_timeline_and_current_state(
    sim: SimHandle, api: Api, three_task_job: dict[str, Any]
) -> None:
    await sim.create_job(three_task_job)
    await sim.advance(5)

    async with api.session.get(f"{sim.url}/_sim/jobs/JOB-three") as response:
        body = await response.json()

    assert body["created_at"] == "2024-06-06T15:55:31.115Z"
    assert body["elapsed"] == 5
    assert body["visibility"] == "visible"
    assert body["spec"]["tasks"][0]["task_name"] == "PREPARE"
    assert body["timeline"][:4] == [
        {"at": 0, "task_index": 1, "status": "RUNNING"},
        {"at": 0, "task_index": 2, "status": "SUBMITTED"},
        {"at": 0, "task_index": None, "status": "RUNNING"},
        {"at": 2, "task_index": 1, "status": "SUCCEEDED"},
    ]
    assert body["timeline"][-1] == {"at": 10, "task_index": None, "status": "SUCCEEDED"}
    assert body["state"]["job"]["execution_status"] == "RUNNING"
    assert [t["task_status"] for t in body["state"]["tasks"]] == [
        "SUCCEEDED",
        "RUNNING",
        "SUBMITTED",
    ]


async def test_get_unknown_job_answers_404(sim: SimHandle, api: Api) -> None:
    async with api.session.get(f"{sim.url}/_sim/jobs/JOB-nope") as response:
        assert response.status == 404


async def test_list_jobs_summarises_every_job(
    sim: SimHandle, api: Api, three_task_job: dict[str, Any]
) -> None:
    await sim.create_job(three_task_job)
    await sim.create_job({"job_id": "JOB-late", "visible_after": 9, "job_status": [[0, "RUNNING"]]})
    await sim.advance(10)

    async with api.session.get(f"{sim.url}/_sim/jobs") as response:
        jobs = (await response.json())["jobs"]

    assert [(j["job_id"], j["execution_status"], j["terminal"], j["visibility"]) for j in jobs] == [
        ("JOB-three", "SUCCEEDED", True, "visible"),
        ("JOB-late", "RUNNING", False, "visible"),
    ]
    assert jobs[0]["visible_tasks"] == jobs[0]["total_tasks"] == 3


async def test_post_clock_advances_the_emulated_time(
    sim: SimHandle, api: Api, three_task_job: dict[str, Any]
) -> None:
    await sim.create_job(three_task_job)

    status, clock = await _post(api.session, f"{sim.url}/_sim/clock", {"advance": 10})

    assert status == 200
    assert clock["now"] == "2024-06-06T15:55:41.115Z"
    assert clock["manual"] is True
    assert (await api.get("JOB-three")).json()["job"]["execution_status"] == "SUCCEEDED"


async def test_post_clock_rejects_going_back(sim: SimHandle, api: Api) -> None:
    status, body = await _post(api.session, f"{sim.url}/_sim/clock", {"advance": -1})

    assert status == 400
    assert "advance" in body["error"]


async def test_post_faults_replaces_the_fault_settings(
    sim: SimHandle, api: Api, three_task_job: dict[str, Any]
) -> None:
    await sim.create_job(three_task_job)

    status, body = await _post(api.session, f"{sim.url}/_sim/faults", {"empty_502": 1.0})
    faulted = await api.get("JOB-three")
    await _post(api.session, f"{sim.url}/_sim/faults", {})
    healed = await api.get("JOB-three")

    assert (status, body) == (200, {"faults": {"empty_502": 1.0}})
    assert (faulted.status, healed.status) == (502, 200)


async def test_post_faults_with_rates_above_one_answers_400(sim: SimHandle, api: Api) -> None:
    status, body = await _post(
        api.session, f"{sim.url}/_sim/faults", {"reset": 0.7, "html_500": 0.6}
    )

    assert status == 400
    assert "must not exceed 1" in body["error"]


async def test_admin_requests_are_never_faulted_nor_counted(sim: SimHandle, api: Api) -> None:
    await sim.set_faults(reset=1.0)

    async with api.session.get(f"{sim.url}/_sim/jobs") as response:
        assert response.status == 200
    stats = await sim.stats()

    assert stats["requests"] == 0


async def test_get_stats_counts_requests_by_status_and_job(
    sim: SimHandle, api: Api, three_task_job: dict[str, Any]
) -> None:
    await sim.create_job(three_task_job)
    await api.get("JOB-three")
    await api.get("JOB-three")
    await api.get("JOB-unknown")

    async with api.session.get(f"{sim.url}/_sim/stats") as response:
        stats = await response.json()

    assert stats["requests"] == 3
    assert stats["by_status"] == {"200": 2, "404": 1}
    assert stats["by_job"] == {"JOB-three": 2}
    assert set(stats["by_fault"]) >= {"reset", "truncated", "latency"}


async def test_delete_stats_zeroes_the_counters(
    sim: SimHandle, api: Api, three_task_job: dict[str, Any]
) -> None:
    await sim.create_job(three_task_job)
    await api.get("JOB-three")

    async with api.session.delete(f"{sim.url}/_sim/stats") as response:
        assert (await response.json())["requests"] == 0
    assert (await sim.stats())["requests"] == 0
