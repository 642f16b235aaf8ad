"""Response parsing (both key cases, missing fields, odd types) and intake message validation."""

from __future__ import annotations

import json

import pytest

from poller.ids import is_valid_id
from poller.intake import Admission, Invalid, JobRequest, build_message, parse_message
from poller.servicestage.models import MalformedResponse, assemble, parse_error, parse_page

DOC_EXAMPLE = {
    "job": {"execution_status": "SUCCEEDED", "job_id": "JOB17cb", "job_type": "PROVISION"},
    "tasks": [
        {"task_id": "Task-a", "task_index": 4, "task_name": "PREPARE", "task_status": "SUCCEEDED",
         "created_at": "2024-06-06T15:55:31.115Z", "update_at": "2024-06-06T15:55:31.136Z",
         "messages": "{}"},
        {"task_id": "Task-b", "task_index": 5, "task_name": "UPGRADE", "task_status": "SUCCEEDED",
         "created_at": "2024-06-06T15:55:31.136Z", "update_at": "2024-06-06T15:55:31.36Z",
         "messages": "{}"},
    ],
    "task_count": 2,
}  # fmt: skip


def upper(doc: dict[str, object]) -> dict[str, object]:
    job = {k.upper(): v for k, v in doc["job"].items()}  # type: ignore[attr-defined]
    tasks = [{k.upper(): v for k, v in t.items()} for t in doc["tasks"]]  # type: ignore[attr-defined]
    return {"job": job, "tasks": tasks, "task_count": doc["task_count"]}


def test_parses_the_documented_example() -> None:
    page = parse_page(DOC_EXAMPLE)
    assert (page.job_status, page.job_type, page.task_count) == ("SUCCEEDED", "PROVISION", 2)
    assert [t.task_index for t in page.tasks] == [4, 5]
    assert page.tasks[1].updated_at == "2024-06-06T15:55:31.36Z"


def test_upper_case_keys_parse_the_same() -> None:
    assert parse_page(upper(DOC_EXAMPLE)) == parse_page(DOC_EXAMPLE)


def test_numbers_as_strings_and_objects_as_messages_are_accepted() -> None:
    doc = json.loads(json.dumps(DOC_EXAMPLE))
    doc["task_count"] = "2"
    doc["tasks"][0]["task_index"] = "4"
    doc["tasks"][0]["messages"] = {"b": 1, "a": [1]}
    page = parse_page(doc)
    assert page.task_count == 2
    assert page.tasks[0].task_index == 4
    assert page.tasks[0].messages == '{"a":[1],"b":1}'


def test_missing_optional_fields_default_to_empty() -> None:
    page = parse_page({"job": {"execution_status": "RUNNING"}, "tasks": [
        {"task_id": "t", "task_status": "RUNNING"}]})  # fmt: skip
    task = page.tasks[0]
    assert (task.task_name, task.created_at, task.messages, task.task_index) == ("", "", "", 0)
    assert page.task_count == 1


def test_task_without_id_is_identified_by_index() -> None:
    page = parse_page({"job": {"execution_status": "RUNNING"},
                       "tasks": [{"task_index": 3, "task_status": "RUNNING"}],
                       "task_count": 1})  # fmt: skip
    assert page.tasks[0].task_id == "#3"


@pytest.mark.parametrize(
    "body",
    [
        [],
        "text",
        {"tasks": []},
        {"job": {"job_id": "x"}},
        {"job": {"execution_status": ""}},
        {"job": {"execution_status": "RUNNING"}, "tasks": {}},
        {"job": {"execution_status": "RUNNING"}, "tasks": ["x"]},
        {"job": {"execution_status": "RUNNING"}, "tasks": [{"task_id": "t"}]},
        {"job": {"execution_status": "RUNNING"}, "tasks": [{"task_status": "RUNNING"}]},
        {"job": {"execution_status": "RUNNING"}, "task_count": "many"},
        {"job": {"execution_status": "RUNNING"}, "task_count": True},
        {"job": {"execution_status": "RUNNING"}, "task_count": -1},
        {"job": {"execution_status": "RUNNING"},
         "tasks": [{"task_id": "t", "task_status": "X", "task_index": 1.5}]},
    ],
)  # fmt: skip
def test_unusable_bodies_are_malformed(body: object) -> None:
    with pytest.raises(MalformedResponse):
        parse_page(body)


def test_pages_merge_by_task_id_and_sort_by_index() -> None:
    a = parse_page(
        {
            "job": {"execution_status": "RUNNING"},
            "task_count": 3,
            "tasks": [{"task_id": "b", "task_index": 2, "task_status": "RUNNING"}],
        }
    )
    b = parse_page({"job": {"execution_status": "RUNNING"}, "task_count": 3,
                    "tasks": [{"task_id": "a", "task_index": 1, "task_status": "RUNNING"},
                              {"task_id": "b", "task_index": 2,
                               "task_status": "SUCCEEDED"}]})  # fmt: skip
    snap = assemble([a, b], "J")
    assert [(t.task_id, t.status) for t in snap.tasks] == [("a", "RUNNING"), ("b", "SUCCEEDED")]


def test_error_bodies_give_code_message_and_request_id() -> None:
    err = parse_error('{"error_code":"APIG.0308","error_msg":"throttled","request_id":"abc"}')
    assert (err.code, err.message, err.request_id) == ("APIG.0308", "throttled", "abc")
    assert parse_error("<html>bad gateway</html>").code == ""


@pytest.mark.parametrize(
    "good", ["JOB17cb1778-07b1-4c8f-a183-c86cffbe8f9e", "a", "A.b_c-1", "9" * 128]
)
def test_valid_ids(good: str) -> None:
    assert is_valid_id(good)


@pytest.mark.parametrize(
    "bad", ["", "../x", ".x", "-x", "JOB 1", "a/b", "x?y", "a:b", "é", "9" * 129, "a%2F"]
)
def test_invalid_ids(bad: str) -> None:
    assert not is_valid_id(bad)


def test_bare_id_message_uses_the_default_project() -> None:
    assert parse_message(b"  JOB-1\n", "proj") == Admission(job_id="JOB-1", project_id="proj")


def test_json_message_with_every_field() -> None:
    raw = (
        b'{"job_id":"JOB-1","project_id":"p2","instance_id":"i1",'
        b'"meta":{"b":1,"a":"x"},"force":true}'
    )
    assert parse_message(raw, "proj") == Admission(
        job_id="JOB-1", project_id="p2", instance_id="i1", meta='{"a":"x","b":1}', force=True
    )


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty"),
        (b"   ", "empty"),
        (b"x" * 20000, "too long"),
        (b"\xff\xfeJOB", "UTF-8"),
        (b"{not json", "bad JSON"),
        (b"[1,2]", "invalid job_id"),
        (b'{"project_id":"p"}', "job_id missing"),
        (b'{"job_id": 5}', "job_id missing"),
        (b"../x", "invalid job_id"),
        (b"JOB 1", "invalid job_id"),
        (b"a/b", "invalid job_id"),
        (b"x?y", "invalid job_id"),
        (b'{"job_id":"ok","meta":[1]}', "meta is not"),
        (b'{"job_id":"ok","force":"yes"}', "force"),
        (b'{"job_id":"ok","project_id":"a/b"}', "project_id"),
    ],
)
def test_invalid_messages_say_why(raw: bytes, reason: str) -> None:
    result = parse_message(raw, "proj")
    assert isinstance(result, Invalid)
    assert reason in result.reason


def test_unknown_fields_are_ignored_and_null_means_absent() -> None:
    raw = b'{"job_id":"JOB-1","source":"ci","project_id":null,"meta":null,"force":null}'
    assert parse_message(raw, "proj") == Admission(job_id="JOB-1", project_id="proj")


def test_missing_default_project_is_invalid() -> None:
    result = parse_message(b"JOB-1", "")
    assert isinstance(result, Invalid)
    assert "project_id" in result.reason


def test_build_message_round_trips() -> None:
    assert build_message(JobRequest("JOB-1")) == "JOB-1"
    raw = build_message(JobRequest("JOB-1", project_id="p", meta={"k": "v"}, force=True))
    assert parse_message(raw.encode(), "d") == Admission("JOB-1", "p", "", '{"k":"v"}', True)
