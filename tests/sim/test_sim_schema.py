"""schema.json documents the scenario format and agrees with the parser."""

from __future__ import annotations

import json
import tomllib
from importlib import resources
from typing import Any

import jsonschema
import pytest

from poller.sim import ScenarioError, generate, parse_scenario, scenario_to_dict
from poller.sim.scenario import example_scenario_path


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads((resources.files("poller.sim") / "schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


TOML_EXAMPLE = """
project_id = "p1"
page_cap = 20

[faults]
throttled_429 = 0.05
retry_after = 3

[[jobs]]
job_status = [[0, "RUNNING"], [12, "SUCCEEDED"]]

[[jobs.tasks]]
task_index = 1
task_name = "PREPARE"
steps = [[0, "RUNNING"], [3.5, "SUCCEEDED", '{"ok": true}']]
"""


def _examples() -> list[tuple[str, Any]]:
    return [
        ("example.json", json.loads(example_scenario_path().read_text())),
        ("generated", scenario_to_dict(generate(40, 11))),
        ("toml", tomllib.loads(TOML_EXAMPLE)),
        ("empty", {}),
    ]


@pytest.mark.parametrize(("name", "doc"), _examples())
def test_example_is_valid_under_the_schema_and_accepted_by_the_parser(
    validator: jsonschema.Draft202012Validator, name: str, doc: Any
) -> None:
    errors = [error.message for error in validator.iter_errors(doc)]

    assert errors == []
    parse_scenario(doc)


GOOD_JOB: dict[str, Any] = {"job_status": [[0, "RUNNING"]]}

INVALID = [
    {"jobs": [{}]},
    {"jobs": [{"job_status": [[1, "RUNNING"]]}]},
    {"jobs": [{"job_status": [[0, "SKIPPED"]]}]},
    {"jobs": [{"job_status": [[0, "RUNNING", "x"]]}]},
    {"jobs": [{**GOOD_JOB, "job_id": "../x"}]},
    {"jobs": [{**GOOD_JOB, "job_type": "BUILD"}]},
    {"jobs": [{**GOOD_JOB, "missing": True, "forbidden": True}]},
    {"jobs": [{**GOOD_JOB, "tasks": [{"task_index": 1, "task_name": "A", "steps": []}]}]},
    {
        "jobs": [
            {
                **GOOD_JOB,
                "tasks": [{"task_index": 1.5, "task_name": "A", "steps": [[0, "RUNNING"]]}],
            }
        ]
    },
    {"jobs": [{**GOOD_JOB, "surprise": 1}]},
    {"page_cap": 0},
    {"faults": {"reset": 1.5}},
    {"faults": {"retry_after": -1}},
]


@pytest.mark.parametrize("doc", INVALID)
def test_document_refused_by_the_schema_is_refused_by_the_parser(
    validator: jsonschema.Draft202012Validator, doc: Any
) -> None:
    assert list(validator.iter_errors(doc))
    with pytest.raises(ScenarioError):
        parse_scenario(doc)
