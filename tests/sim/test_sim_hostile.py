"""Hostile API data: lone surrogates, very long messages, numbers as strings, upper-case keys
per job, and the transient deeply nested body."""

from __future__ import annotations

import argparse
import json
import random
from importlib import resources
from typing import TYPE_CHECKING, Any

import jsonschema
import pytest

from poller.servicestage.models import parse_page
from poller.sim import FaultConfig, FaultKind, ScenarioError, SimHandle, parse_faults, parse_job
from poller.sim.cli import _config, configure_parser
from poller.sim.faults import DEEP_JSON_DEPTH, choose_fault, fault_table
from poller.sim.hostile import LONE_SURROGATE, LONG_MESSAGES_CHARS
from poller.sim.scenario import Scenario, job_to_dict

if TYPE_CHECKING:  # conftest.py is loaded by pytest; imported here for types only
    from conftest import Api, StartSim


def hostile_job(job_id: str, *quirks: str) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "job_status": [[0, "RUNNING"]],
        "hostile": list(quirks),
        "tasks": [
            {"task_index": i, "task_name": f"T{i}", "messages": "{}", "steps": [[0, "RUNNING"]]}
            for i in (1, 2, 3)
        ],
    }


async def test_surrogate_messages_are_sent_as_a_json_escape_in_valid_utf8(
    sim: SimHandle, api: Api
) -> None:
    await sim.create_job(hostile_job("JOB-s", "surrogate_messages"))

    reply = await api.get("JOB-s")

    assert reply.status == 200
    assert b'\\ud83d"' in reply.body  # the six-character escape, not raw (CESU-8) bytes
    reply.body.decode("utf-8")  # the body itself is valid UTF-8
    tasks = reply.json()["tasks"]
    assert [t["messages"] for t in tasks] == ["{} " + LONE_SURROGATE] * 3
    with pytest.raises(UnicodeEncodeError):
        tasks[0]["messages"].encode()


async def test_a_lone_surrogate_posted_in_a_spec_is_served_as_an_escape(
    sim: SimHandle, api: Api
) -> None:
    text = (
        '{"job_id": "JOB-posted", "job_status": [[0, "RUNNING"]], "tasks": [{"task_index": 1,'
        ' "task_name": "A", "messages": "half \\ud83d", "steps": [[0, "RUNNING"]]}]}'
    )
    async with api.session.post(f"{sim.url}/_sim/jobs", data=text) as response:
        assert response.status == 201

    reply = await api.get("JOB-posted")

    assert reply.status == 200
    assert b'"half \\ud83d"' in reply.body
    assert reply.json()["tasks"][0]["messages"] == "half " + LONE_SURROGATE


async def test_long_messages_are_long_multibyte_text(sim: SimHandle, api: Api) -> None:
    await sim.create_job(hostile_job("JOB-long", "long_messages"))

    tasks = (await api.get("JOB-long")).json()["tasks"]

    for task in tasks:
        assert len(task["messages"]) == LONG_MESSAGES_CHARS
        assert len(task["messages"].encode()) > LONG_MESSAGES_CHARS  # multi-byte characters


async def test_string_numbers_send_task_index_and_task_count_as_strings(
    sim: SimHandle, api: Api
) -> None:
    await sim.create_job(hostile_job("JOB-str", "string_numbers"))

    body = (await api.get("JOB-str", limit="2")).json()

    assert body["task_count"] == "3"
    assert [t["task_index"] for t in body["tasks"]] == ["1", "2"]
    assert parse_page(body).task_count == 3  # the documented leniency of the client's parser


async def test_upper_case_keys_apply_to_that_job_only(sim: SimHandle, api: Api) -> None:
    await sim.create_job(hostile_job("JOB-up", "upper_case_keys"))
    await sim.create_job(hostile_job("JOB-plain"))

    upper = (await api.get("JOB-up")).json()
    plain = (await api.get("JOB-plain")).json()

    assert set(upper) == {"job", "tasks", "task_count"}
    assert upper["job"]["EXECUTION_STATUS"] == "RUNNING"
    assert "TASK_STATUS" in upper["tasks"][0]
    assert plain["job"]["execution_status"] == "RUNNING"


async def test_quirks_combine(sim: SimHandle, api: Api) -> None:
    await sim.create_job(
        hostile_job("JOB-all", "surrogate_messages", "long_messages", "string_numbers")
    )

    body = (await api.get("JOB-all")).json()

    task = body["tasks"][0]
    assert task["messages"].endswith(" " + LONE_SURROGATE)
    assert len(task["messages"]) == LONG_MESSAGES_CHARS + 2
    assert (task["task_index"], body["task_count"]) == ("1", "3")


async def test_config_hostile_applies_to_every_job_on_top_of_its_own(
    start_sim: StartSim, make_api: Any
) -> None:
    sim = await start_sim(hostile=("string_numbers",))
    await sim.create_job(hostile_job("JOB-a"))
    await sim.create_job(hostile_job("JOB-b", "upper_case_keys"))
    api = make_api(sim)

    a = (await api.get("JOB-a")).json()
    b = (await api.get("JOB-b")).json()

    assert a["task_count"] == "3"
    assert b["task_count"] == "3"
    assert b["tasks"][0]["TASK_INDEX"] == "1"
    assert sim.state.jobs["JOB-b"].spec.hostile == ("string_numbers", "upper_case_keys")


def test_job_spec_hostile_is_validated_and_round_trips() -> None:
    spec = parse_job(hostile_job("JOB-r", "upper_case_keys", "long_messages"))

    assert spec.hostile == ("long_messages", "upper_case_keys")
    assert job_to_dict(spec)["hostile"] == ["long_messages", "upper_case_keys"]
    assert parse_job(job_to_dict(spec)) == spec
    with pytest.raises(ScenarioError, match=r"job\.hostile: unknown hostile data kind 'emoji'"):
        parse_job(hostile_job("JOB-r", "emoji"))
    with pytest.raises(ScenarioError, match="appears more than once"):
        parse_job(hostile_job("JOB-r", "long_messages", "long_messages"))


async def test_deep_json_answers_200_with_a_body_nested_thousands_of_levels(
    sim: SimHandle, api: Api
) -> None:
    await sim.create_job(hostile_job("JOB-deep"))
    await sim.set_faults(deep_json=1.0)

    reply = await api.get("JOB-deep")

    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("application/json")
    assert DEEP_JSON_DEPTH >= 2000
    assert reply.body == b"[" * DEEP_JSON_DEPTH + b"]" * DEEP_JSON_DEPTH
    assert (await sim.stats())["by_fault"]["deep_json"] == 1


async def test_deep_json_is_transient(sim: SimHandle, api: Api) -> None:
    await sim.create_job(hostile_job("JOB-deep"))
    await sim.set_faults(deep_json=0.5, seed=1)

    statuses_and_depths = []
    for _ in range(40):
        reply = await api.get("JOB-deep")
        statuses_and_depths.append((reply.status, reply.body.startswith(b"[[")))

    assert {s for s, _ in statuses_and_depths} == {200}
    assert {deep for _, deep in statuses_and_depths} == {True, False}


def test_error_rate_is_not_spread_onto_deep_json() -> None:
    config = FaultConfig({FaultKind.DEEP_JSON: 0.1}, error_rate=0.6)

    assert config.rate_of(FaultKind.DEEP_JSON) == pytest.approx(0.1)
    assert config.rate_of(FaultKind.RESET) == pytest.approx(0.1)
    assert config.total_rate == pytest.approx(0.7)
    rng = random.Random(5)
    table = fault_table(FaultConfig(error_rate=1.0))
    assert FaultKind.DEEP_JSON not in {choose_fault(table, rng) for _ in range(2000)}


def test_deep_json_is_read_from_a_fault_document() -> None:
    assert parse_faults({"deep_json": 0.25}).rates == {FaultKind.DEEP_JSON: 0.25}
    with pytest.raises(ScenarioError, match="add up to"):
        parse_faults({"deep_json": 0.6, "reset": 0.6})


async def test_post_faults_accepts_deep_json(sim: SimHandle, api: Api) -> None:
    async with api.session.post(f"{sim.url}/_sim/faults", json={"deep_json": 0.2}) as response:
        assert response.status == 200
        assert await response.json() == {"faults": {"deep_json": 0.2}}


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    return parser.parse_args(list(argv))


def test_cli_reads_hostile_and_deep_json(capsys: pytest.CaptureFixture[str]) -> None:
    args = _parse("--hostile", "surrogate_messages, string_numbers", "--deep-json", "0.05")
    config = _config(args, Scenario())

    assert config.hostile == ("string_numbers", "surrogate_messages")
    assert config.faults.rates[FaultKind.DEEP_JSON] == 0.05
    with pytest.raises(SystemExit):
        _parse("--hostile", "emoji")
    assert "unknown hostile data kind 'emoji'" in capsys.readouterr().err


async def test_hostile_jobs_still_serve_every_page_consistently(
    start_sim: StartSim, make_api: Any
) -> None:
    sim = await start_sim(page_cap=2)
    await sim.create_job(hostile_job("JOB-p", "string_numbers", "surrogate_messages"))
    api = make_api(sim)

    first = (await api.get("JOB-p", limit="2")).json()
    second = (await api.get("JOB-p", limit="2", offset="2")).json()

    assert [t["task_index"] for t in first["tasks"] + second["tasks"]] == ["1", "2", "3"]
    assert first["task_count"] == second["task_count"] == "3"


def test_schema_documents_hostile_and_deep_json() -> None:
    schema = json.loads((resources.files("poller.sim") / "schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    doc = {"faults": {"deep_json": 0.1}, "jobs": [hostile_job("JOB-x", "long_messages")]}

    assert list(validator.iter_errors(doc)) == []
    bad = {"jobs": [hostile_job("JOB-x", "emoji")]}
    assert list(validator.iter_errors(bad))
