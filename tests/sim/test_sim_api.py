"""The emulated GET /v3/{project_id}/cas/jobs/{job_id}: body shape, pagination, timelines."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from poller.sim import SimHandle

if TYPE_CHECKING:  # conftest.py is loaded by pytest; imported here for types only
    from conftest import Api, StartSim


async def test_answer_has_job_tasks_and_task_count_in_lower_snake_case(
    sim: SimHandle, api: Api, three_task_job: dict[str, Any]
) -> None:
    await sim.create_job(three_task_job)

    reply = await api.get("JOB-three")

    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("application/json")
    body = reply.json()
    assert set(body) == {"job", "tasks", "task_count"}
    assert body["job"] == {
        "execution_status": "RUNNING",
        "job_id": "JOB-three",
        "job_type": "PROVISION",
        "project_id": sim.project_id,
    }
    task = body["tasks"][0]
    assert set(task) == {
        "task_id",
        "task_index",
        "task_name",
        "task_status",
        "created_at",
        "update_at",
        "messages",
    }
    assert task["task_index"] == 1
    assert task["task_status"] == "RUNNING"
    assert task["messages"] == "{}"


async def test_task_timestamps_are_iso_8601_with_milliseconds_and_z(
    sim: SimHandle, api: Api, three_task_job: dict[str, Any]
) -> None:
    await sim.create_job(three_task_job)
    await sim.advance(2.5)

    task = (await api.get("JOB-three")).json()["tasks"][0]

    assert task["created_at"] == "2024-06-06T15:55:31.115Z"
    assert task["update_at"] == "2024-06-06T15:55:33.115Z"


async def test_upper_case_keys_option_upper_cases_job_and_task_keys_only(
    start_sim: StartSim, make_api: Callable[[SimHandle], Api], three_task_job: dict[str, Any]
) -> None:
    sim = await start_sim(upper_case_keys=True)
    await sim.create_job(three_task_job)

    body = (await make_api(sim).get("JOB-three")).json()

    assert set(body) == {"job", "tasks", "task_count"}
    assert body["job"]["EXECUTION_STATUS"] == "RUNNING"
    assert body["job"]["JOB_ID"] == "JOB-three"
    assert {"TASK_ID", "TASK_INDEX", "TASK_STATUS", "UPDATE_AT"} <= set(body["tasks"][0])


async def test_optional_job_fields_and_task_type_are_sent_when_specified(
    sim: SimHandle, api: Api
) -> None:
    await sim.create_job(
        {
            "job_id": "JOB-extra",
            "order_id": "ORD-1",
            "instance_id": "inst-1",
            "rollback_enabled": True,
            "job_status": [[0, "RUNNING"]],
            "tasks": [
                {
                    "task_index": 1,
                    "task_name": "A",
                    "task_type": "DEPLOY",
                    "steps": [[0, "RUNNING"]],
                }
            ],
        }
    )

    body = (await api.get("JOB-extra")).json()

    assert body["job"]["order_id"] == "ORD-1"
    assert body["job"]["service_instance_id"] == "inst-1"
    assert body["job"]["rollback_enabled"] is True
    assert body["tasks"][0]["task_type"] == "DEPLOY"


async def test_tasks_are_sorted_by_task_index_whatever_the_spec_order(
    sim: SimHandle, api: Api
) -> None:
    tasks = [{"task_index": i, "task_name": f"T{i}", "steps": [[0, "RUNNING"]]} for i in (7, 2, 5)]
    await sim.create_job({"job_id": "JOB-order", "job_status": [[0, "RUNNING"]], "tasks": tasks})

    body = (await api.get("JOB-order")).json()

    assert [t["task_index"] for t in body["tasks"]] == [2, 5, 7]


async def test_page_cap_limits_an_answer_without_limit(
    start_sim: StartSim,
    make_api: Callable[[SimHandle], Api],
    many_tasks_job: Callable[[int], dict[str, Any]],
) -> None:
    sim = await start_sim(page_cap=10)
    await sim.create_job(many_tasks_job(25))

    body = (await make_api(sim).get("JOB-many")).json()

    assert [t["task_index"] for t in body["tasks"]] == list(range(1, 11))
    assert body["task_count"] == 25


async def test_limit_above_the_page_cap_returns_the_cap(
    start_sim: StartSim,
    make_api: Callable[[SimHandle], Api],
    many_tasks_job: Callable[[int], dict[str, Any]],
) -> None:
    sim = await start_sim(page_cap=10)
    await sim.create_job(many_tasks_job(25))

    body = (await make_api(sim).get("JOB-many", limit="100")).json()

    assert len(body["tasks"]) == 10


async def test_default_page_cap_is_50(
    sim: SimHandle, api: Api, many_tasks_job: Callable[[int], dict[str, Any]]
) -> None:
    await sim.create_job(many_tasks_job(120))

    body = (await api.get("JOB-many")).json()

    assert len(body["tasks"]) == 50
    assert body["task_count"] == 120


async def test_limit_and_offset_select_a_page(
    sim: SimHandle, api: Api, many_tasks_job: Callable[[int], dict[str, Any]]
) -> None:
    await sim.create_job(many_tasks_job(12))

    body = (await api.get("JOB-many", limit="5", offset="10")).json()

    assert [t["task_index"] for t in body["tasks"]] == [11, 12]
    assert body["task_count"] == 12


async def test_desc_true_orders_by_task_index_descending_before_paging(
    sim: SimHandle, api: Api, many_tasks_job: Callable[[int], dict[str, Any]]
) -> None:
    await sim.create_job(many_tasks_job(12))

    body = (await api.get("JOB-many", limit="3", offset="1", desc="true")).json()

    assert [t["task_index"] for t in body["tasks"]] == [11, 10, 9]


async def test_offset_past_the_end_returns_no_tasks_and_the_total(
    sim: SimHandle, api: Api, many_tasks_job: Callable[[int], dict[str, Any]]
) -> None:
    await sim.create_job(many_tasks_job(4))

    body = (await api.get("JOB-many", offset="10")).json()

    assert body["tasks"] == []
    assert body["task_count"] == 4


async def test_task_count_is_the_number_of_currently_visible_tasks(
    sim: SimHandle, api: Api, three_task_job: dict[str, Any]
) -> None:
    await sim.create_job(three_task_job)

    before = (await api.get("JOB-three", limit="1")).json()
    await sim.advance(4)
    after = (await api.get("JOB-three", limit="1")).json()

    assert (before["task_count"], len(before["tasks"])) == (2, 1)
    assert (after["task_count"], len(after["tasks"])) == (3, 1)


async def test_a_task_appears_at_its_first_step(
    sim: SimHandle, api: Api, three_task_job: dict[str, Any]
) -> None:
    await sim.create_job(three_task_job)

    await sim.advance(3.999)
    before = [t["task_index"] for t in (await api.get("JOB-three")).json()["tasks"]]
    await sim.advance(0.001)
    after = (await api.get("JOB-three")).json()["tasks"]

    assert before == [1, 2]
    assert [t["task_index"] for t in after] == [1, 2, 3]
    assert after[2]["task_status"] == "SUBMITTED"


async def test_job_and_task_statuses_follow_the_timeline_as_the_clock_advances(
    sim: SimHandle, api: Api, three_task_job: dict[str, Any]
) -> None:
    await sim.create_job(three_task_job)
    seen = []
    for step in (0, 2, 4, 3, 1):
        await sim.advance(step)
        body = (await api.get("JOB-three")).json()
        seen.append((body["job"]["execution_status"], [t["task_status"] for t in body["tasks"]]))

    assert seen == [
        ("RUNNING", ["RUNNING", "SUBMITTED"]),
        ("RUNNING", ["SUCCEEDED", "RUNNING"]),
        ("RUNNING", ["SUCCEEDED", "SUCCEEDED", "RUNNING"]),
        ("RUNNING", ["SUCCEEDED", "SUCCEEDED", "SUCCEEDED"]),
        ("SUCCEEDED", ["SUCCEEDED", "SUCCEEDED", "SUCCEEDED"]),
    ]


async def test_step_messages_replace_the_task_messages_from_that_step_on(
    sim: SimHandle, api: Api
) -> None:
    steps = [[0, "RUNNING"], [5, "FAILED", '{"error":"disk full"}']]
    await sim.create_job(
        {
            "job_id": "JOB-msg",
            "job_status": [[0, "RUNNING"], [6, "FAILED"]],
            "tasks": [{"task_index": 1, "task_name": "A", "messages": "starting", "steps": steps}],
        }
    )

    before = (await api.get("JOB-msg")).json()["tasks"][0]["messages"]
    await sim.advance(5)
    after = (await api.get("JOB-msg")).json()["tasks"][0]["messages"]

    assert (before, after) == ("starting", '{"error":"disk full"}')


async def test_visible_after_answers_404_until_then_200(sim: SimHandle, api: Api) -> None:
    await sim.create_job({"job_id": "JOB-late", "visible_after": 3, "job_status": [[0, "RUNNING"]]})

    early = await api.get("JOB-late")
    await sim.advance(3)
    later = await api.get("JOB-late")

    assert early.status == 404
    assert early.json()["error_code"] == "SVCSTG.00100404"
    assert later.status == 200


async def test_missing_job_answers_404_forever(sim: SimHandle, api: Api) -> None:
    await sim.create_job({"job_id": "JOB-gone", "missing": True, "job_status": [[0, "RUNNING"]]})
    await sim.advance(10**6)

    reply = await api.get("JOB-gone")

    assert reply.status == 404
    assert reply.json()["error_code"] == "SVCSTG.00100404"


async def test_unknown_job_answers_404_with_error_json(api: Api) -> None:
    reply = await api.get("JOB-unknown")

    assert reply.status == 404
    assert set(reply.json()) == {"error_code", "error_msg"}


async def test_job_of_another_project_answers_404(
    sim: SimHandle, api: Api, three_task_job: dict[str, Any]
) -> None:
    await sim.create_job(three_task_job)

    reply = await api.get("JOB-three", project_id="other-project")

    assert reply.status == 404


async def test_forbidden_job_answers_403(sim: SimHandle, api: Api) -> None:
    await sim.create_job({"job_id": "JOB-no", "forbidden": True, "job_status": [[0, "RUNNING"]]})

    reply = await api.get("JOB-no")

    assert reply.status == 403
    assert reply.json()["error_code"] == "SVCSTG.00100403"


async def test_job_id_outside_the_id_grammar_answers_400(api: Api) -> None:
    for bad in ("JOB 1", "x?y", "-JOB", "a" * 129, ".x", "JOB%1", "a/b", "JOB\u00e9"):
        reply = await api.get(bad)
        assert (bad, reply.status) == (bad, 400)
        assert reply.json()["error_code"] == "SVCSTG.00100400"


async def test_project_id_outside_the_id_grammar_answers_400(api: Api) -> None:
    reply = await api.get("JOB-1", project_id="bad project")

    assert reply.status == 400
    assert reply.json()["error_code"] == "SVCSTG.00100400"


async def test_bad_limit_offset_or_desc_answers_400(
    sim: SimHandle, api: Api, three_task_job: dict[str, Any]
) -> None:
    await sim.create_job(three_task_job)
    for params in (
        {"limit": "-1"},
        {"limit": "ten"},
        {"offset": "-5"},
        {"offset": "1.5"},
        {"desc": "yes"},
    ):
        reply = await api.get("JOB-three", **params)
        assert (params, reply.status) == (params, 400)
        assert reply.json()["error_code"] == "SVCSTG.00100400"
        assert next(iter(params)) in reply.json()["error_msg"]


async def test_every_answer_carries_an_x_request_id(
    sim: SimHandle, api: Api, three_task_job: dict[str, Any]
) -> None:
    await sim.create_job(three_task_job)

    ok = await api.get("JOB-three")
    missing = await api.get("JOB-unknown")
    async with api.session.get(f"{sim.url}/_sim/stats") as admin:
        admin_id = admin.headers.get("X-Request-Id")

    assert len(ok.headers["X-Request-Id"]) == 32
    assert missing.headers["X-Request-Id"] != ok.headers["X-Request-Id"]
    assert admin_id
