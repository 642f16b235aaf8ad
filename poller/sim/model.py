"""The true state of a simulated job at a given moment: pure functions over a :class:`JobSpec`.

Times are seconds since the job's creation.  A job's visible state is piecewise constant: it
changes only at the times of its steps (:func:`change_points`), which is what lets the emulator
cache its answers per state version.
"""

from __future__ import annotations

import enum
from bisect import bisect_right
from dataclasses import dataclass

from poller.sim.scenario import JobSpec, Step, TaskSpec


class Visibility(enum.StrEnum):
    """What the API shows of a job: the job, 404 or 403 (each value is its name in lower case)."""

    VISIBLE = enum.auto()
    NOT_YET_VISIBLE = enum.auto()
    MISSING = enum.auto()
    FORBIDDEN = enum.auto()


@dataclass(frozen=True, slots=True)
class TaskState:
    """A visible task; ``created_at``/``updated_at`` are seconds since the job's creation."""

    task_index: int
    task_id: str
    task_name: str
    task_status: str
    created_at: float
    updated_at: float
    messages: str
    task_type: str | None


@dataclass(frozen=True, slots=True)
class EmulatedJobState:
    """The job's status and its visible tasks, ordered by ``task_index``."""

    execution_status: str
    tasks: tuple[TaskState, ...]


@dataclass(frozen=True, slots=True)
class Transition:
    """At ``at`` the job (``task_index`` is ``None``) or one task enters ``status``."""

    at: float
    task_index: int | None
    status: str


def visibility(job: JobSpec, elapsed: float) -> Visibility:
    """How the API answers for ``job`` ``elapsed`` seconds after its creation."""
    if job.forbidden:
        return Visibility.FORBIDDEN
    if job.missing:
        return Visibility.MISSING
    if elapsed < job.visible_after:
        return Visibility.NOT_YET_VISIBLE
    return Visibility.VISIBLE


def change_points(job: JobSpec) -> tuple[float, ...]:
    """The sorted distinct times at which the job's status or any task changes."""
    times = {step.at for step in job.job_status}
    for task in job.tasks:
        times.update(step.at for step in task.steps)
    return tuple(sorted(times))


def state_version(points: tuple[float, ...], elapsed: float) -> int:
    """How many change points have passed: equal versions mean equal states."""
    return bisect_right(points, elapsed)


def state_at(job: JobSpec, elapsed: float) -> EmulatedJobState:
    """The job's true state ``elapsed`` seconds after its creation (visible or not).

    A task is absent before its first step; afterwards it is in the status of its latest step
    reached, and its ``messages`` are those of the latest step that set any (else the task's).
    """
    status = _active(job.job_status, elapsed)
    tasks = [
        task_state for task in job.tasks if (task_state := _task_state(task, elapsed)) is not None
    ]
    tasks.sort(key=lambda t: t.task_index)
    return EmulatedJobState(
        execution_status=(status or job.job_status[0]).status, tasks=tuple(tasks)
    )


def timeline(job: JobSpec) -> tuple[Transition, ...]:
    """Every status change of the job and its tasks, in time order.

    At equal times task changes come before the job's, in ``task_index`` order, which is the
    order in which a poller publishes them.
    """
    items = [Transition(step.at, None, step.status) for step in _changes(job.job_status)]
    for task in job.tasks:
        items.extend(Transition(s.at, task.task_index, s.status) for s in _changes(task.steps))
    items.sort(key=lambda t: (t.at, t.task_index is None, t.task_index or 0))
    return tuple(items)


def _changes(steps: tuple[Step, ...]) -> list[Step]:
    """The steps that change the status (a repeated status is not a transition)."""
    changes: list[Step] = []
    for step in steps:
        if not changes or changes[-1].status != step.status:
            changes.append(step)
    return changes


def _active(steps: tuple[Step, ...], elapsed: float) -> Step | None:
    index = bisect_right([step.at for step in steps], elapsed)
    return steps[index - 1] if index else None


def _task_state(task: TaskSpec, elapsed: float) -> TaskState | None:
    index = bisect_right([step.at for step in task.steps], elapsed)
    if index == 0:
        return None
    current = task.steps[index - 1]
    messages = next(
        (s.messages for s in reversed(task.steps[:index]) if s.messages is not None),
        task.messages,
    )
    return TaskState(
        task_index=task.task_index,
        task_id=task.task_id or "",
        task_name=task.task_name,
        task_status=current.status,
        created_at=task.steps[0].at,
        updated_at=current.at,
        messages=messages,
        task_type=task.task_type,
    )
