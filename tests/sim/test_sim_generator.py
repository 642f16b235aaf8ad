"""generate(n, seed): deterministic, realistic mixes of job fates."""

from __future__ import annotations

import pytest

from poller.sim import generate, parse_scenario, scenario_to_dict
from poller.sim.generator import GUARANTEED_MIX
from poller.sim.model import state_at, timeline
from poller.statuses import is_terminal


def test_the_same_seed_gives_the_same_scenario() -> None:
    assert generate(30, 5) == generate(30, 5)


def test_another_seed_gives_another_scenario() -> None:
    assert generate(30, 5) != generate(30, 6)


def test_generated_scenario_is_valid_and_round_trips() -> None:
    scenario = generate(50, 2)

    assert parse_scenario(scenario_to_dict(scenario)) == scenario


def test_every_job_has_3_to_120_tasks() -> None:
    counts = [len({t.task_index for t in job.tasks}) for job in generate(200, 8).jobs]
    planned = [
        int((job.description or "").split(", ")[1].split()[0]) for job in generate(200, 8).jobs
    ]

    assert min(planned) >= 3
    assert max(planned) <= 120
    assert all(1 <= n <= 120 for n in counts)
    assert max(planned) > 50


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_mix_contains_every_fate(seed: int) -> None:
    jobs = generate(len(GUARANTEED_MIX), seed).jobs
    final = {job.job_status[-1].status for job in jobs}
    task_statuses = {step.status for job in jobs for task in job.tasks for step in task.steps}

    assert final == {"SUCCEEDED", "FAILED", "PARTIALLY_FAILED", "ROLLBACKED", "CANCELLED"}
    assert {"SKIPPED", "ROLLBACKING", "ROLLBACKED", "FAILED", "CANCELLED"} <= task_statuses
    assert any(job.visible_after > 0 for job in jobs)
    assert any(max(t.steps[0].at for t in job.tasks) > 0 for job in jobs)
    assert any(len(job.tasks) > 50 for job in jobs)


def test_rollbacks_pass_through_rollbacking_for_job_and_tasks() -> None:
    jobs = [j for j in generate(40, 4).jobs if j.job_status[-1].status == "ROLLBACKED"]

    assert jobs
    for job in jobs:
        assert [s.status for s in job.job_status][-2:] == ["ROLLBACKING", "ROLLBACKED"]
        assert job.rollback_enabled is True
        rolled = [t for t in job.tasks if t.steps[-1].status == "ROLLBACKED"]
        assert rolled
        assert all(t.steps[-2].status == "ROLLBACKING" for t in rolled)


def test_duration_bounds_every_job_and_the_job_status_changes_last() -> None:
    for job in generate(60, 9, duration=4).jobs:
        last = max(item.at for item in timeline(job))
        assert job.job_status[-1].at == last <= 4
        assert job.visible_after <= 4


def test_by_default_jobs_take_20_to_60_seconds() -> None:
    ends = [job.job_status[-1].at for job in generate(60, 10).jobs]

    assert min(ends) > 5
    assert max(ends) <= 60


def test_every_job_ends_terminal_with_no_task_left_running() -> None:
    for job in generate(80, 12).jobs:
        end = state_at(job, 10_000)
        assert is_terminal(end.execution_status)
        assert not {t.task_status for t in end.tasks} & {"RUNNING", "SUBMITTED", "ROLLBACKING"}


def test_negative_n_is_refused() -> None:
    with pytest.raises(ValueError, match="n must not be negative"):
        generate(-1, 0)
