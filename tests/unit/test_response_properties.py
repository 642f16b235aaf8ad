"""The API edge, for anything the API (or a proxy in front) may answer: properties of the
response parsers and of the job URL.

The contract: a body that is not the expected JSON is a transient failure (``parse_page``
raises :class:`MalformedResponse`, nothing else), text copied from tasks is valid Unicode (a
lone surrogate becomes U+FFFD), and a poll never goes anywhere but ``/v3/{project}/cas/jobs/{job}``
on the configured endpoint.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses
from hypothesis import example, given, settings
from hypothesis import strategies as st
from yarl import URL

from poller.config import Secret
from poller.servicestage.auth import StaticToken
from poller.servicestage.client import ServiceStageClient, job_url
from poller.servicestage.models import (
    ApiError,
    MalformedResponse,
    Page,
    Task,
    parse_error,
    parse_page,
    parse_task,
)
from poller.servicestage.outcomes import Fetched, PollOutcome, Transient
from tests.strategies import (
    INJECTION_IDS,
    any_char,
    any_text,
    grammar_ids,
    huge_integers,
    json_values,
    non_ids,
    render,
    rendered_values,
)

PURE = settings(max_examples=200, deadline=None)
NETWORKED = settings(max_examples=50, deadline=None)

BASE = "http://api.test"
BASES = [BASE, "https://servicestage.cn-north-4.myhuaweicloud.com", "http://127.0.0.1:8080/"]
URL_RE = re.compile(r"^http://api\.test/v3/proj/cas/jobs/JOB-1\?.*$")
ANY_URL = re.compile(r".*")

TEXT_FIELDS_OF_PAGE = ("job_id", "job_status", "job_type")
TEXT_FIELDS_OF_TASK = ("task_id", "task_name", "status", "created_at", "updated_at", "messages")


# --- what the API may answer -------------------------------------------------------------


def _cased(doc: dict[str, Any], upper: bool) -> dict[str, Any]:
    return {k.upper(): v for k, v in doc.items()} if upper else doc


numbers_as_anything = st.one_of(
    st.integers(),
    huge_integers,
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers().map(str),
    st.sampled_from(["", " 7 ", "1e3", "9" * 5000, "-1", "0x10", "\u0661"]),
)

field_values = st.one_of(any_text, numbers_as_anything, json_values)

tasks_shaped = st.builds(
    _cased,
    st.fixed_dictionaries(
        {},
        optional={
            "task_id": st.one_of(any_text, field_values),
            "task_index": st.one_of(numbers_as_anything, field_values),
            "task_name": field_values,
            "task_status": st.one_of(any_text, field_values),
            "created_at": field_values,
            "update_at": field_values,
            "updated_at": field_values,
            "messages": field_values,
        },
    ),
    st.booleans(),
)

pages_shaped = st.builds(
    lambda job, tasks, count, upper: _cased({"job": job, "tasks": tasks, "task_count": count},
                                            upper),
    st.one_of(
        st.builds(_cased, st.fixed_dictionaries({}, optional={
            "execution_status": st.one_of(any_text, field_values),
            "job_id": field_values,
            "job_type": field_values,
        }), st.booleans()),
        json_values,
    ),
    st.one_of(st.lists(st.one_of(tasks_shaped, json_values), max_size=5), json_values),
    st.one_of(st.none(), numbers_as_anything, json_values),
    st.booleans(),
)  # fmt: skip

#: Bodies close to what the API documents, so that parsing mostly gets through to a Page.
plausible_pages = st.builds(
    lambda status, extra, tasks, upper: _cased(
        {"job": {"execution_status": status, **extra}, "tasks": tasks}, upper
    ),
    st.text(any_char, min_size=1, max_size=12),
    st.fixed_dictionaries({}, optional={"job_id": any_text, "job_type": any_text}),
    st.lists(
        st.builds(
            lambda tid, status, rest, upper: _cased(
                {"task_id": tid, "task_status": status, **rest}, upper
            ),
            st.text(any_char, min_size=1, max_size=12),
            st.text(any_char, min_size=1, max_size=12),
            st.fixed_dictionaries({}, optional={
                "task_index": numbers_as_anything, "task_name": field_values,
                "created_at": any_text, "update_at": any_text, "messages": field_values,
            }),
            st.booleans(),
        ),
        max_size=4,
    ),
    st.booleans(),
)  # fmt: skip

bodies = st.one_of(json_values, pages_shaped, plausible_pages)


def _parses_or_is_malformed(parse: Callable[[Any], Any], value: Any) -> Any:
    """The result of ``parse(value)``, or None when it raised MalformedResponse; any other
    exception propagates and fails the test."""
    try:
        return parse(value)
    except MalformedResponse:
        return None


def _nested_list(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def _nested_dict(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for _ in range(depth):
        value = {"a": value}
    return value


def _text_fields(page: Page) -> list[str]:
    texts = [getattr(page, f) for f in TEXT_FIELDS_OF_PAGE]
    for task in page.tasks:
        texts.extend(getattr(task, f) for f in TEXT_FIELDS_OF_TASK)
    return texts


def _page(**task: Any) -> dict[str, Any]:
    return {
        "job": {"execution_status": "RUNNING", "job_id": "JOB-1", "job_type": "PROVISION"},
        "tasks": [{"task_id": "T1", "task_index": 1, "task_status": "RUNNING", **task}],
    }


# --- parse_page / parse_task: a Page or MalformedResponse, nothing else -------------------


@PURE
@given(bodies)
def test_any_decoded_body_gives_a_page_or_malformed_response(body: Any) -> None:
    result = _parses_or_is_malformed(parse_page, body)
    assert result is None or isinstance(result, Page)


@PURE
@given(st.one_of(tasks_shaped, json_values))
def test_any_task_value_gives_a_task_or_malformed_response(raw: Any) -> None:
    result = _parses_or_is_malformed(parse_task, raw)
    assert result is None or isinstance(result, Task)


@PURE
@given(bodies)
def test_every_text_field_of_a_parsed_page_encodes_to_utf8(body: Any) -> None:
    page = _parses_or_is_malformed(parse_page, body)
    if page is not None:
        for text in _text_fields(page):
            text.encode("utf-8")


@pytest.mark.parametrize(
    ("body", "read", "expected"),
    [
        pytest.param({"job": {"execution_status": "RUN\ud800NING"}}, lambda p: p.job_status,
                     "RUN\ufffdNING", id="job_status"),
        pytest.param({"job": {"execution_status": "RUNNING", "job_id": "JOB\udc00-1"}},
                     lambda p: p.job_id, "JOB\ufffd-1", id="job_id"),
        pytest.param({"JOB": {"EXECUTION_STATUS": "RUNNING", "JOB_TYPE": "PROV\udbffISION"}},
                     lambda p: p.job_type, "PROV\ufffdISION", id="job_type"),
        pytest.param(_page(task_id="T\ud83d1"), lambda p: p.tasks[0].task_id, "T\ufffd1",
                     id="task_id"),
        pytest.param(_page(task_name="a\ud83db"), lambda p: p.tasks[0].task_name, "a\ufffdb",
                     id="task_name"),
        pytest.param(_page(task_status="RUN\ude00NING"), lambda p: p.tasks[0].status,
                     "RUN\ufffdNING", id="task_status"),
        pytest.param(_page(created_at="2024\ud800Z"), lambda p: p.tasks[0].created_at,
                     "2024\ufffdZ", id="created_at"),
        pytest.param(_page(update_at="2024\ud800Z"), lambda p: p.tasks[0].updated_at,
                     "2024\ufffdZ", id="update_at"),
        pytest.param(_page(messages="m\udfff!"), lambda p: p.tasks[0].messages, "m\ufffd!",
                     id="messages"),
        pytest.param(_page(task_name="\u00e9\U0001f680\ud800"), lambda p: p.tasks[0].task_name,
                     "\u00e9\U0001f680\ufffd", id="next-to-valid-non-ascii"),
    ],
)  # fmt: skip
def test_a_lone_surrogate_in_a_text_field_is_replaced_by_u_fffd(
    body: dict[str, Any], read: Callable[[Page], str], expected: str
) -> None:
    assert read(parse_page(body)) == expected


@pytest.mark.parametrize("depth", [1000, 5000])
@pytest.mark.parametrize("field", ["messages", "task_name", "created_at", "task_id"])
def test_a_deeply_nested_value_in_a_task_field_is_not_an_exception(depth: int, field: str) -> None:
    for nested in (_nested_list(depth), _nested_dict(depth)):
        result = _parses_or_is_malformed(parse_page, _page(**{field: nested}))
        assert result is None or isinstance(result, Page)


@pytest.mark.parametrize("depth", [1000, 5000])
@pytest.mark.parametrize("field", ["execution_status", "job_id", "job_type"])
def test_a_deeply_nested_value_in_a_job_field_is_not_an_exception(depth: int, field: str) -> None:
    body = {"job": {"execution_status": "RUNNING", field: _nested_list(depth)}}
    result = _parses_or_is_malformed(parse_page, body)
    assert result is None or isinstance(result, Page)


def test_an_oversized_page_gives_a_page_or_malformed_response() -> None:
    tasks = [{"task_id": f"T{i}", "task_index": i, "task_status": "RUNNING",
              "messages": {"i": i}} for i in range(20_000)]  # fmt: skip
    body = {"job": {"execution_status": "RUNNING"}, "tasks": tasks, "task_count": 10**4000}
    result = _parses_or_is_malformed(parse_page, body)
    assert result is None or isinstance(result, Page)


# --- parse_error: never raises -----------------------------------------------------------

error_texts = st.one_of(
    any_text,
    rendered_values.map(render),
    st.fixed_dictionaries(
        {}, optional={"error_code": rendered_values, "error_msg": rendered_values,
                      "request_id": rendered_values},
    ).map(render),
    st.integers(min_value=900, max_value=6000).map(lambda d: "[" * d + "]" * d),
    st.integers(min_value=900, max_value=6000).map(lambda d: '{"error_code":' + "[" * d),
)  # fmt: skip


@PURE
@given(error_texts)
@example("[" * 5000 + "]" * 5000)
@example('{"error_msg":' + '{"a":' * 5000 + "1" + "}" * 5001)
@example('{"error_code":"\\ud83d","error_msg":NaN,"request_id":1e999}')
def test_parse_error_never_raises(text: str) -> None:
    assert isinstance(parse_error(text), ApiError)


@PURE
@given(error_texts)
@example('{"error_code":"APIG.\\ud83d","error_msg":"x\\udc00","request_id":"\\udbff"}')
def test_parse_error_fields_encode_to_utf8(text: str) -> None:
    error = parse_error(text)
    for value in (error.code, error.message, error.request_id):
        value.encode("utf-8")


# --- the client: a deeply nested 200 body is a transient failure -------------------------


async def _fetch_once(body: str, project: str = "proj", job: str = "JOB-1") -> PollOutcome:
    async with aiohttp.ClientSession() as session:
        client = ServiceStageClient(session, BASE, StaticToken(Secret("tkn")), page_size=2)
        with aioresponses() as m:
            m.get(URL_RE, status=200, body=body)
            return await client.fetch_job(project, job)


DEEP_BODIES = [
    pytest.param("[" * 5000 + "]" * 5000, id="array"),
    pytest.param('{"a":' * 5000 + "1" + "}" * 5000, id="object"),
    pytest.param('{"job":{"execution_status":"RUNNING"},"tasks":[{"task_id":"t",'
                 '"task_status":"RUNNING","messages":' + "[" * 5000 + "]" * 5000 + "}]}",
                 id="in-messages"),
    pytest.param('{"job":' + "[" * 5000 + "]" * 5000 + "}", id="in-job"),
]  # fmt: skip


@pytest.mark.parametrize("body", DEEP_BODIES)
async def test_a_200_with_a_body_nested_5000_deep_is_transient(body: str) -> None:
    assert isinstance(await _fetch_once(body), Transient)


@NETWORKED
@given(depth=st.integers(min_value=1, max_value=6000), where=st.sampled_from(["top", "messages"]))
def test_a_200_nested_to_any_depth_is_fetched_or_transient(depth: int, where: str) -> None:
    nested = "[" * depth + "]" * depth
    if where == "top":
        body = nested
    else:
        body = ('{"job":{"execution_status":"RUNNING"},"tasks":[{"task_id":"t",'
                '"task_status":"RUNNING","messages":' + nested + "}]}")  # fmt: skip
    outcome = asyncio.run(_fetch_once(body))
    assert isinstance(outcome, Fetched | Transient)


# --- job_url: the configured host and the one path, or ValueError ------------------------

id_like = st.one_of(grammar_ids, non_ids, st.sampled_from(INJECTION_IDS))


def _is_the_job_url(url: URL, base: str, project: str, job: str) -> bool:
    origin = URL(base)
    return (
        (url.scheme, url.host, url.port) == (origin.scheme, origin.host, origin.port)
        and url.raw_path == f"/v3/{project}/cas/jobs/{job}"
        and url.path == f"/v3/{project}/cas/jobs/{job}"
        and url.raw_query_string == ""
        and url.raw_fragment == ""
        and url.user is None
        and str(url) == f"{str(origin).rstrip('/')}/v3/{project}/cas/jobs/{job}"
    )


@PURE
@given(base=st.sampled_from(BASES), project=id_like, job=id_like)
def test_job_url_is_the_job_path_on_the_base_host_or_a_value_error(
    base: str, project: str, job: str
) -> None:
    try:
        url = job_url(base, project, job)
    except ValueError:
        return
    assert _is_the_job_url(url, base, project, job), url


@PURE
@given(base=st.sampled_from(BASES), project=grammar_ids, job=grammar_ids)
def test_job_url_accepts_every_id_in_the_grammar(base: str, project: str, job: str) -> None:
    assert _is_the_job_url(job_url(base, project, job), base, project, job)


@pytest.mark.parametrize("bad", INJECTION_IDS)
def test_job_url_refuses_an_id_that_would_leave_its_path_segment(bad: str) -> None:
    with pytest.raises(ValueError, match="job_id"):
        job_url(BASE, "proj", bad)
    with pytest.raises(ValueError, match="project_id"):
        job_url(BASE, bad, "JOB-1")


async def _requested_urls(project: str, job: str) -> list[URL]:
    async with aiohttp.ClientSession() as session:
        client = ServiceStageClient(session, BASE, StaticToken(Secret("tkn")), page_size=2)
        with aioresponses() as m:
            m.get(ANY_URL, status=200, body="{}", repeat=True)
            await client.fetch_job(project, job, "inst-1")
            return [url for (_, url), calls in m.requests.items() for _ in calls]


@NETWORKED
@given(project=id_like, job=id_like)
def test_fetch_job_requests_nothing_but_the_job_url(project: str, job: str) -> None:
    for url in asyncio.run(_requested_urls(project, job)):
        assert (url.scheme, url.host, url.port) == ("http", "api.test", 80)
        assert url.raw_path == f"/v3/{project}/cas/jobs/{job}"
        assert set(url.query) <= {"limit", "offset", "instance_id"}
