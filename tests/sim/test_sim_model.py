"""The pure job model: state at a time, visibility, change points and the timeline."""

from __future__ import annotations

from poller.sim import parse_job
from poller.sim.model import (
    Transition,
    Visibility,
    change_points,
    state_at,
    state_version,
    timeline,
    visibility,
)

JOB = parse_job(
    {
        "job_status": [[0, "RUNNING"], [8, "ROLLBACKING"], [12, "ROLLBACKED"]],
        "tasks": [
            {
                "task_index": 2,
                "task_name": "B",
                "steps": [[3, "RUNNING"], [7, "FAILED"], [8, "ROLLBACKING"], [10, "ROLLBACKED"]],
            },
            {
                "task_index": 1,
                "task_name": "A",
                "steps": [
                    [0, "RUNNING"],
                    [3, "SUCCEEDED"],
                    [10, "ROLLBACKING"],
                    [12, "ROLLBACKED"],
                ],
            },
        ],
    }
)


def test_state_before_a_task_first_step_leaves_the_task_out() -> None:
    state = state_at(JOB, 2.9)

    assert [(t.task_index, t.task_status) for t in state.tasks] == [(1, "RUNNING")]


def test_state_at_a_step_time_is_already_that_step() -> None:
    state = state_at(JOB, 8)

    assert state.execution_status == "ROLLBACKING"
    assert [t.task_status for t in state.tasks] == ["SUCCEEDED", "ROLLBACKING"]


def test_task_times_are_its_first_step_and_its_latest_step_reached() -> None:
    task = state_at(JOB, 9).tasks[1]

    assert (task.created_at, task.updated_at) == (3, 8)


def test_visibility_order_is_forbidden_then_missing_then_not_yet() -> None:
    late = parse_job({"job_status": [[0, "RUNNING"]], "visible_after": 5})
    both = parse_job({"job_status": [[0, "RUNNING"]], "visible_after": 5, "forbidden": True})

    assert visibility(late, 4.99) is Visibility.NOT_YET_VISIBLE
    assert visibility(late, 5) is Visibility.VISIBLE
    assert visibility(both, 100) is Visibility.FORBIDDEN


def test_state_version_changes_exactly_at_change_points() -> None:
    points = change_points(JOB)

    assert points == (0, 3, 7, 8, 10, 12)
    assert state_version(points, 2.99) == state_version(points, 0)
    assert state_version(points, 3) == state_version(points, 2.99) + 1


def test_timeline_orders_task_changes_before_the_job_change_at_equal_times() -> None:
    items = timeline(JOB)

    assert items[:3] == (
        Transition(0, 1, "RUNNING"),
        Transition(0, None, "RUNNING"),
        Transition(3, 1, "SUCCEEDED"),
    )
    assert [i for i in items if i.at == 8] == [
        Transition(8, 2, "ROLLBACKING"),
        Transition(8, None, "ROLLBACKING"),
    ]
    assert items[-1] == Transition(12, None, "ROLLBACKED")


def test_timeline_leaves_out_steps_that_repeat_the_status() -> None:
    job = parse_job({"job_status": [[0, "RUNNING"], [4, "RUNNING"], [5, "SUCCEEDED"]]})

    assert [t.at for t in timeline(job)] == [0, 5]
