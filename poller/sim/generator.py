"""Deterministic random scenarios with realistic mixes of job fates.

``generate(n, seed)`` always returns the same scenario for the same arguments.  Once ``n`` is at
least :data:`GUARANTEED_MIX` long, the mix contains every outcome (succeeded, failed, partially
failed, rolled back, cancelled) and every twist (skipped tasks, tasks appearing in a later phase,
a job invisible for a few seconds, a job with more tasks than one page).
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from typing import Final

from poller.sim.scenario import JobSpec, Scenario, Step, TaskSpec

OUTCOMES: Final = ("succeeded", "failed", "partially_failed", "rolled_back", "cancelled")
_OUTCOME_WEIGHTS: Final = (55, 12, 11, 12, 10)
_STAGES: Final = (
    "CONTEXT_PREPARE", "IMAGE_PULL", "CONFIG_RENDER", "VOLUME_MOUNT", "INSTANCE_CREATE",
    "UPGRADE", "HEALTH_CHECK", "LB_BIND", "DNS_UPDATE", "SCALE", "VERIFY", "CLEANUP",
)  # fmt: skip
_FAILURES: Final = (
    "health check failed after 3 retries",
    "image pull timed out",
    "insufficient quota: cpu",
    "instance did not become ready within 300s",
)


@dataclass(frozen=True, slots=True)
class _Profile:
    outcome: str
    skipped: bool = False
    late_tasks: bool = False
    late_visibility: bool = False
    large: bool = False


GUARANTEED_MIX: Final = (
    _Profile("succeeded", skipped=True),
    _Profile("succeeded", late_tasks=True),
    _Profile("failed", late_visibility=True),
    _Profile("partially_failed"),
    _Profile("rolled_back"),
    _Profile("cancelled"),
    _Profile("succeeded", large=True),
)


def generate(
    n: int, seed: int, *, duration: float | None = None, project_id: str | None = None
) -> Scenario:
    """A scenario of ``n`` jobs with 3-120 tasks each, the same for the same arguments.

    ``duration`` bounds how many seconds each job takes from creation to its final status
    (each takes 75-100 % of it); by default each job takes 20-60 s.
    """
    if n < 0:
        raise ValueError(f"n must not be negative, got {n}")
    if duration is not None and not duration > 0:
        raise ValueError(f"duration must be positive, got {duration}")
    rng = random.Random(seed)
    profiles = list(GUARANTEED_MIX[:n])
    profiles.extend(_random_profile(rng) for _ in range(n - len(profiles)))
    rng.shuffle(profiles)
    jobs = []
    for profile in profiles:
        total = rng.uniform(20.0, 60.0) if duration is None else duration * rng.uniform(0.75, 1.0)
        jobs.append(_job(profile, total, rng))
    return Scenario(
        jobs=tuple(jobs),
        project_id=project_id,
        description=f"generated: {n} jobs, seed {seed}",
    )


def _random_profile(rng: random.Random) -> _Profile:
    return _Profile(
        outcome=rng.choices(OUTCOMES, weights=_OUTCOME_WEIGHTS)[0],
        skipped=rng.random() < 0.2,
        late_tasks=rng.random() < 0.3,
        late_visibility=rng.random() < 0.15,
        large=rng.random() < 0.12,
    )


def _random_id(prefix: str, rng: random.Random) -> str:
    return f"{prefix}{uuid.UUID(int=rng.getrandbits(128), version=4)}"


def _ms(value: float) -> float:
    return round(value, 3)


class _TaskPlan:
    """One task's steps under construction."""

    __slots__ = ("appear", "end", "index", "name", "start", "steps")

    def __init__(self, index: int, name: str, appear: float, start: float, end: float) -> None:
        self.index = index
        self.name = name
        self.appear = appear
        self.start = start
        self.end = end
        self.steps: list[Step] = []

    def add(self, at: float, status: str, messages: str | None = None) -> None:
        self.steps.append(Step(_ms(at), status, messages))


def _job(profile: _Profile, total: float, rng: random.Random) -> JobSpec:
    count = rng.randint(51, 120) if profile.large else rng.randint(3, 20)
    running_at = 0.03 * total
    window_end = (0.6 if profile.outcome == "rolled_back" else 0.92) * total
    plans = _schedule(count, running_at, window_end, profile.late_tasks, rng)
    skipped = set()
    if profile.skipped:
        skipped = set(rng.sample(range(count), max(1, count // 5)))
    job_steps = [Step(0.0, "SUBMITTED"), Step(_ms(running_at), "RUNNING")]
    stop_index, stop_at = count, total
    if profile.outcome in {"failed", "rolled_back", "cancelled"}:
        stop_index = rng.randint(count // 2, count - 1)
        skipped.discard(stop_index)
        stop_at = plans[stop_index].end
    failing: set[int] = set()
    if profile.outcome == "partially_failed":
        candidates = [i for i in range(count) if i not in skipped]
        failing = set(rng.sample(candidates, max(1, count // 10)))
    _play_tasks(profile, plans, stop_index, stop_at, skipped, failing, rng)
    ended = _finish(profile, plans, stop_index, stop_at, total, skipped)
    job_steps.extend(ended)
    tasks = tuple(
        TaskSpec(
            task_index=plan.index,
            task_name=plan.name,
            steps=tuple(plan.steps),
            task_id=_random_id("Task-", rng),
        )
        for plan in plans
        if plan.steps
    )
    return JobSpec(
        job_status=tuple(job_steps),
        tasks=tasks,
        job_id=_random_id("JOB", rng),
        job_type=rng.choices(("PROVISION", "DAILY_OPERATION", "DEPROVISION"), (7, 2, 1))[0],
        visible_after=_ms(min(5.0, 0.15 * total)) if profile.late_visibility else 0.0,
        rollback_enabled=True if profile.outcome == "rolled_back" else None,
        description=_describe(profile, count),
    )


def _play_tasks(
    profile: _Profile,
    plans: list[_TaskPlan],
    stop_index: int,
    stop_at: float,
    skipped: set[int],
    failing: set[int],
    rng: random.Random,
) -> None:
    """Every task's steps up to the job's end: those before ``stop_index`` run (or are
    skipped, or fail), that one stops the job at ``stop_at``, later ones never run."""
    for i, plan in enumerate(plans):
        if i > stop_index and plan.appear >= stop_at:
            continue  # its phase never started
        if plan.appear < plan.start:
            plan.add(plan.appear, "SUBMITTED")
        if i in skipped and i < stop_index:
            plan.add(plan.start, "SKIPPED")
        elif i < stop_index:
            plan.add(plan.start, "RUNNING")
            if i in failing:
                plan.add(plan.end, "FAILED", _failure(rng))
            else:
                plan.add(plan.end, "SUCCEEDED")
        elif i == stop_index:
            plan.add(plan.start, "RUNNING")
            if profile.outcome == "cancelled":
                plan.add(stop_at, "CANCELLED")
            else:
                plan.add(stop_at, "FAILED", _failure(rng))
        else:
            follow = "SKIPPED" if profile.outcome == "rolled_back" else "CANCELLED"
            plan.add(max(stop_at, plan.appear), follow)


def _schedule(
    count: int, begin: float, end: float, phased: bool, rng: random.Random
) -> list[_TaskPlan]:
    """Tasks run one after another over ``[begin, end]``; in phases, a phase's tasks appear
    when its first task starts."""
    weights = [rng.uniform(0.5, 1.5) for _ in range(count)]
    scale = (end - begin) / sum(weights)
    prefix = rng.choice(("VMAPP", "CCE", "CSE"))
    first_index = rng.choice((1, 1, 4))
    phase_starts: set[int] = {0}
    if phased:
        phase_starts.update(rng.sample(range(1, count), min(count - 1, rng.randint(1, 2))))
    plans: list[_TaskPlan] = []
    cursor = begin
    appear = 0.0
    for i, weight in enumerate(weights):
        width = weight * scale
        if i in phase_starts and i > 0:
            appear = cursor
        name = f"{prefix}_{_STAGES[i % len(_STAGES)]}_{i // len(_STAGES) + 1:02d}"
        plans.append(_TaskPlan(first_index + i, name, appear, cursor, cursor + width))
        cursor += width
    return plans


def _finish(
    profile: _Profile,
    plans: list[_TaskPlan],
    stop_index: int,
    stop_at: float,
    total: float,
    skipped: set[int],
) -> list[Step]:
    """The job's final steps; for a rollback also the tasks' rollback steps."""
    settle = 0.02 * total
    if profile.outcome == "succeeded":
        return [Step(_ms(total), "SUCCEEDED")]
    if profile.outcome == "partially_failed":
        return [Step(_ms(total), "PARTIALLY_FAILED")]
    if profile.outcome == "failed":
        return [Step(_ms(stop_at + settle), "FAILED")]
    if profile.outcome == "cancelled":
        return [Step(_ms(stop_at + settle), "CANCELLED")]
    rollback_at = stop_at + settle
    undo = [i for i in range(stop_index, -1, -1) if i not in skipped]
    width = (0.97 * total - rollback_at) / len(undo)
    for n, i in enumerate(undo):
        start = rollback_at + n * width
        plans[i].add(start, "ROLLBACKING")
        plans[i].add(start + width, "ROLLBACKED")
    return [Step(_ms(rollback_at), "ROLLBACKING"), Step(_ms(total), "ROLLBACKED")]


def _failure(rng: random.Random) -> str:
    reason = rng.choice(_FAILURES)
    return f'{{"error_code":"SVCSTG.00100500","error_msg":"{reason}"}}'


def _describe(profile: _Profile, count: int) -> str:
    parts = [profile.outcome.replace("_", " "), f"{count} tasks"]
    if profile.skipped:
        parts.append("skipped tasks")
    if profile.late_tasks:
        parts.append("tasks appear in later phases")
    if profile.late_visibility:
        parts.append("404 for a few seconds")
    return ", ".join(parts)
