"""Response models of ``GET /v3/{project_id}/cas/jobs/{job_id}`` and their parsing.

Parsing is pure and strict about what we need (a job status, a task identity and status) and
lenient about the rest: keys in lower or upper case, numbers sent as strings, ``messages`` sent
as an object, unknown extra fields.  Anything unusable raises :class:`MalformedResponse`, which
the client treats as a transient failure.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class MalformedResponse(ValueError):
    """The body is not the JSON the API documents; retried as a transient failure."""


@dataclass(frozen=True, slots=True)
class Task:
    """One task of a job as the API reported it."""

    task_id: str
    task_index: int
    task_name: str
    status: str
    created_at: str = ""
    updated_at: str = ""
    messages: str = ""


@dataclass(frozen=True, slots=True)
class Page:
    """One page of the job-details response."""

    job_id: str
    job_status: str
    job_type: str
    task_count: int
    tasks: tuple[Task, ...]


@dataclass(frozen=True, slots=True)
class JobSnapshot:
    """The complete state of a job: every task, ordered by ``task_index`` then ``task_id``."""

    job_id: str
    status: str
    job_type: str
    tasks: tuple[Task, ...]


def _fields(raw: Any, problem: str) -> dict[str, Any]:
    """The fields of the JSON object ``raw`` by lower-cased name; :class:`MalformedResponse`
    saying ``problem`` when ``raw`` is no object."""
    if not isinstance(raw, Mapping):
        raise MalformedResponse(problem)
    return {str(k).lower(): v for k, v in raw.items()}


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(value: str) -> str:
    """``value`` with every lone UTF-16 surrogate (text that is not valid Unicode, which JSON
    escapes such as ``"\\ud83d"`` can carry) replaced by U+FFFD, so it encodes as UTF-8."""
    if value.isascii():
        return value
    return _LONE_SURROGATE.sub("\ufffd", value)


def decode_json(body: bytes | str) -> Any:
    """A JSON document from a response body; :class:`MalformedResponse` for anything else,
    including nesting too deep to decode (``RecursionError``)."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise MalformedResponse(f"not JSON: {type(exc).__name__}") from None


def _text(value: Any, *, field: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    if isinstance(value, dict | list):
        try:
            return json.dumps(value, separators=(",", ":"), sort_keys=True)
        except (ValueError, TypeError, RecursionError) as exc:
            raise MalformedResponse(f"{field} cannot be shown as text") from exc
    raise MalformedResponse(f"{field} has an unexpected type {type(value).__name__}")


def _integer(value: Any, *, field: str) -> int:
    if isinstance(value, bool):
        raise MalformedResponse(f"{field} is a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise MalformedResponse(f"{field} is not an integer: {value!r}")


def _status(fields: Mapping[str, Any], key: str) -> str:
    """The text of ``fields[key]``, which must be there and not be empty."""
    value = fields.get(key)
    if value is None:
        raise MalformedResponse(f"missing {key}")
    status = _text(value, field=key)
    if not status:
        raise MalformedResponse(f"empty {key}")
    return status


def parse_task(raw: Any) -> Task:
    """A :class:`Task` from one element of ``tasks`` (either key case)."""
    t = _fields(raw, "a task is not an object")
    status = _status(t, "task_status")
    index = _integer(
        t.get("task_index", 0) if t.get("task_index") is not None else 0, field="task_index"
    )
    task_id = _text(t.get("task_id"), field="task_id")
    if not task_id:
        # A task without an ID is still identifiable by its index within the job.
        if t.get("task_index") is None:
            raise MalformedResponse("a task has neither task_id nor task_index")
        task_id = f"#{index}"
    return Task(
        task_id=task_id,
        task_index=index,
        task_name=_text(t.get("task_name"), field="task_name"),
        status=status,
        created_at=_text(t.get("created_at"), field="created_at"),
        updated_at=_text(t.get("update_at", t.get("updated_at")), field="update_at"),
        messages=_text(t.get("messages"), field="messages"),
    )


def parse_page(body: Any) -> Page:
    """A :class:`Page` from a decoded JSON body; raises :class:`MalformedResponse`."""
    top = _fields(body, "the body is not a JSON object")
    job = _fields(top.get("job"), "missing job object")
    status = _status(job, "execution_status")
    tasks_raw = top.get("tasks")
    if tasks_raw is None:
        tasks_raw = []
    if not isinstance(tasks_raw, list):
        raise MalformedResponse("tasks is not an array")
    tasks = tuple(parse_task(t) for t in tasks_raw)
    count_raw = top.get("task_count")
    task_count = len(tasks) if count_raw is None else _integer(count_raw, field="task_count")
    if task_count < 0:
        raise MalformedResponse("task_count is negative")
    return Page(
        job_id=_text(job.get("job_id"), field="job_id"),
        job_status=status,
        job_type=_text(job.get("job_type"), field="job_type"),
        task_count=task_count,
        tasks=tasks,
    )


def assemble(pages: list[Page], job_id: str) -> JobSnapshot:
    """Merge pages into one snapshot; the last page's job status wins, tasks dedupe by ID."""
    if not pages:
        raise MalformedResponse("no pages")
    by_id: dict[str, Task] = {}
    for page in pages:
        for task in page.tasks:
            by_id[task.task_id] = task
    last = pages[-1]
    tasks = tuple(sorted(by_id.values(), key=lambda t: (t.task_index, t.task_id)))
    return JobSnapshot(job_id=job_id, status=last.job_status, job_type=last.job_type, tasks=tasks)


@dataclass(frozen=True, slots=True)
class ApiError:
    """An error body: ``error_code``/``error_msg`` and the gateway's ``request_id`` if any."""

    code: str = ""
    message: str = ""
    request_id: str = ""


def parse_error(text: str) -> ApiError:
    """The error fields of a body, or an empty :class:`ApiError` when it is not JSON."""
    try:
        b = _fields(decode_json(text), "the error body is not a JSON object")
        return ApiError(
            code=_text(b.get("error_code"), field="error_code")[:100],
            message=_text(b.get("error_msg"), field="error_msg")[:500],
            request_id=_text(b.get("request_id"), field="request_id")[:100],
        )
    except MalformedResponse:
        return ApiError()
