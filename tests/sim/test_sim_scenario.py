"""Scenario documents: what parses, what is refused and how the refusal names the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from poller.sim import (
    FaultKind,
    ScenarioError,
    load_scenario,
    parse_job,
    parse_scenario,
    scenario_to_dict,
)
from poller.sim.scenario import Step, example_scenario_path, resolve_job

RUNNING: list[list[Any]] = [[0, "RUNNING"]]


def _task(**overrides: Any) -> dict[str, Any]:
    return {"task_index": 1, "task_name": "A", "steps": [[0, "RUNNING"]], **overrides}


def test_minimal_job_takes_the_documented_defaults() -> None:
    job = parse_job({"job_status": RUNNING})

    assert job.job_type == "PROVISION"
    assert (job.job_id, job.project_id, job.tasks) == (None, None, ())
    assert (job.visible_after, job.missing, job.forbidden) == (0.0, False, False)


def test_steps_may_carry_messages_for_tasks() -> None:
    job = parse_job(
        {"job_status": RUNNING, "tasks": [_task(steps=[[0, "RUNNING"], [2, "FAILED", "x"]])]}
    )

    assert job.tasks[0].steps == (Step(0.0, "RUNNING"), Step(2.0, "FAILED", "x"))


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({}, "job.job_status: required field is missing"),
        ({"job_status": []}, "job.job_status: needs at least one"),
        ({"job_status": [[1, "RUNNING"]]}, "job.job_status[0]: the first job status must be at 0"),
        ({"job_status": [[0, "DONE"]]}, "job.job_status[0][1]: 'DONE' is not one of"),
        ({"job_status": [[0, "SKIPPED"]]}, "job.job_status[0][1]: 'SKIPPED' is not one of"),
        (
            {"job_status": [[0, "RUNNING", "m"]]},
            "job.job_status[0]: expected [seconds, status], got 3",
        ),
        (
            {"job_status": [[0, "RUNNING"], [-1, "FAILED"]]},
            "job.job_status[1][0]: expected a number at least 0",
        ),
        (
            {"job_status": [[0, "RUNNING"], [5, "FAILED"], [3, "SUCCEEDED"]]},
            "job.job_status[2]: time 3 is before the previous step's 5",
        ),
        (
            {"job_status": [[0, "RUNNING"]], "job_type": "BUILD"},
            "job.job_type: 'BUILD' is not one of",
        ),
        ({"job_status": RUNNING, "job_id": "JOB 1"}, "job.job_id: 'JOB 1' does not match"),
        (
            {"job_status": RUNNING, "visible_after": "3"},
            "job.visible_after: expected a number, got the string '3'",
        ),
        ({"job_status": RUNNING, "missing": 1}, "job.missing: expected true or false"),
        (
            {"job_status": RUNNING, "missing": True, "forbidden": True},
            "job: 'missing' and 'forbidden' cannot both be true",
        ),
        ({"job_status": RUNNING, "stauts": 1}, "job.stauts: unknown field"),
        ({"job_status": RUNNING, "tasks": {}}, "job.tasks: expected an array, got an object"),
        (
            {"job_status": RUNNING, "tasks": [_task(task_index=True)]},
            "job.tasks[0].task_index: expected an integer, got a boolean",
        ),
        (
            {"job_status": RUNNING, "tasks": [_task(task_index=-1)]},
            "job.tasks[0].task_index: expected an integer of at least 0",
        ),
        (
            {"job_status": RUNNING, "tasks": [_task(), _task()]},
            "job.tasks: task_index 1 appears more than once",
        ),
        (
            {"job_status": RUNNING, "tasks": [_task(steps=[])]},
            "job.tasks[0].steps: needs at least one",
        ),
        (
            {"job_status": RUNNING, "tasks": [_task(steps=[[0, "RUNNING"], [1, "NOPE"]])]},
            "job.tasks[0].steps[1][1]: 'NOPE' is not one of",
        ),
        (
            {"job_status": RUNNING, "tasks": [{"task_index": 1, "steps": RUNNING}]},
            "job.tasks[0].task_name: required field is missing",
        ),
        (
            {"job_status": RUNNING, "description": None},
            "job.description: expected a string, got null",
        ),
    ],
)
def test_invalid_job_is_refused_with_a_message_naming_the_field(
    doc: dict[str, Any], message: str
) -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_job(doc)

    assert str(caught.value).startswith(message)


def test_skipped_is_a_task_status_but_not_a_job_status() -> None:
    job = parse_job({"job_status": RUNNING, "tasks": [_task(steps=[[0, "SKIPPED"]])]})

    assert job.tasks[0].steps[0].status == "SKIPPED"


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "document: expected an object, got an array"),
        (
            {"jobs": [{"job_status": RUNNING}, {"job_status": "x"}]},
            "jobs[1].job_status: expected an array",
        ),
        (
            {"jobs": [{"job_id": "J", "job_status": RUNNING}] * 2},
            "jobs: job_id 'J' appears more than once",
        ),
        ({"page_cap": 0}, "page_cap: expected an integer of at least 1"),
        ({"project_id": "a/b"}, "project_id: 'a/b' does not match"),
        ({"faults": {"reset": 2}}, "faults.reset: expected a number at least 0 and at most 1"),
        ({"faults": {"reset": 0.5, "truncated": 0.6}}, "faults: the fault rates add up to 1.1"),
        ({"faults": {"timeout": 0.5}}, "faults.timeout: unknown field"),
        ({"job": []}, "job: unknown field"),
    ],
)
def test_invalid_scenario_is_refused_with_a_message_naming_the_field(
    doc: object, message: str
) -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(doc)

    assert str(caught.value).startswith(message)


def test_scenario_settings_are_read() -> None:
    scenario = parse_scenario(
        {"project_id": "p1", "page_cap": 5, "upper_case_keys": True, "faults": {"reset": 0.1}}
    )

    assert (scenario.project_id, scenario.page_cap, scenario.upper_case_keys) == ("p1", 5, True)
    assert scenario.faults is not None
    assert scenario.faults.rates[FaultKind.RESET] == 0.1


def test_scenario_round_trips_through_its_json_document() -> None:
    scenario = load_scenario(example_scenario_path())

    again = parse_scenario(json.loads(json.dumps(scenario_to_dict(scenario))))

    assert again == scenario


def test_toml_scenario_is_read_by_its_extension(tmp_path: Path) -> None:
    path = tmp_path / "jobs.toml"
    path.write_text(
        'project_id = "p1"\n\n[[jobs]]\njob_id = "JOB-1"\n'
        'job_status = [[0, "RUNNING"], [12, "SUCCEEDED"]]\n\n'
        '[[jobs.tasks]]\ntask_index = 1\ntask_name = "A"\n'
        'steps = [[0, "RUNNING"], [3.5, "SUCCEEDED"]]\n'
    )

    scenario = load_scenario(path)

    assert scenario.project_id == "p1"
    assert scenario.jobs[0].tasks[0].steps[1] == Step(3.5, "SUCCEEDED")


def test_unreadable_or_malformed_file_is_a_scenario_error_naming_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{")

    with pytest.raises(ScenarioError, match=r"broken\.json: not valid JSON"):
        load_scenario(broken)
    with pytest.raises(ScenarioError, match=r"absent\.json: cannot read"):
        load_scenario(tmp_path / "absent.json")


def test_error_inside_a_file_is_prefixed_with_the_file_name(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"jobs": [{"job_status": [[0, "RUN"]]}]}')

    with pytest.raises(ScenarioError, match=r"bad.json: jobs\[0\].job_status\[0\]\[1\]"):
        load_scenario(path)


def test_resolving_fills_ids_and_derives_task_ids_from_the_job_id() -> None:
    spec = parse_job({"job_status": RUNNING, "tasks": [_task()]})

    first = resolve_job(spec, "p1", job_id="JOB-x")
    second = resolve_job(spec, "p1", job_id="JOB-x")
    other = resolve_job(spec, "p1")

    assert (first.job_id, first.project_id) == ("JOB-x", "p1")
    assert first.tasks[0].task_id == second.tasks[0].task_id
    assert (first.tasks[0].task_id or "").startswith("Task-")
    assert (other.job_id or "").startswith("JOB")
    assert other.tasks[0].task_id != first.tasks[0].task_id
