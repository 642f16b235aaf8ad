"""Pure snapshot diff: previous stored state + new complete snapshot -> contract events.

Nothing here does I/O or reads a clock: ``observed_at`` and the first ``seq`` are parameters,
so the same inputs always give the same events.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from poller.servicestage.models import JobSnapshot, Task
from poller.statuses import is_terminal


class EventKind(StrEnum):
    """The ``event`` field of a stream entry (the contract's three kinds)."""

    TASK_STATUS_CHANGED = "task.status_changed"
    JOB_STATUS_CHANGED = "job.status_changed"
    JOB_ABANDONED = "job.abandoned"


class AbandonReason(StrEnum):
    """The ``reason`` of a ``job.abandoned`` event."""

    NOT_FOUND = "not_found"
    REJECTED = "rejected"
    TIMEOUT = "timeout"
    CANCELLED_BY_OPERATOR = "cancelled_by_operator"
    CORRUPT_STATE = "corrupt_state"


@dataclass(frozen=True, slots=True)
class StoredTask:
    """What we keep of a task between polls: enough to diff and to show in ``poller status``."""

    task_id: str
    task_index: int
    task_name: str
    status: str


@dataclass(frozen=True, slots=True)
class StoredSnapshot:
    """The last complete snapshot of a job as kept in Redis (compact JSON)."""

    status: str
    job_type: str
    tasks: tuple[StoredTask, ...]

    def to_json(self) -> str:
        """Compact JSON for the job's state hash."""
        return json.dumps(
            {
                "s": self.status,
                "y": self.job_type,
                "t": [[t.task_id, t.task_index, t.task_name, t.status] for t in self.tasks],
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> StoredSnapshot | None:
        """The snapshot stored as ``text``; ``None`` for an empty string (never polled)."""
        if not text:
            return None
        data: dict[str, Any] = json.loads(text)
        return cls(
            status=str(data["s"]),
            job_type=str(data.get("y", "")),
            tasks=tuple(
                StoredTask(str(tid), int(idx), str(name), str(status))
                for tid, idx, name, status in data["t"]
            ),
        )


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of the event streams: a flat map of string fields (the contract)."""

    fields: tuple[tuple[str, str], ...]

    def as_dict(self) -> dict[str, str]:
        return dict(self.fields)

    @property
    def kind(self) -> str:
        return self.as_dict()["event"]


@dataclass(frozen=True, slots=True)
class JobIdentity:
    """Who the events are about, and the producer's ``meta`` JSON (empty when not given)."""

    job_id: str
    project_id: str
    meta: str = ""


def format_timestamp(epoch_seconds: float) -> str:
    """RFC 3339 UTC with milliseconds, e.g. ``2026-11-27T02:23:31.123Z``."""
    millis = int(epoch_seconds * 1000)
    seconds, ms = divmod(millis, 1000)
    return f"{_second(seconds)}.{ms:03d}Z"


@functools.lru_cache(maxsize=4)
def _second(epoch_second: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS`` of a whole second (cached: polls of one second share it)."""
    return datetime.fromtimestamp(epoch_second, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _event(identity: JobIdentity, seq: int, observed_at: str, body: list[tuple[str, str]]) -> Event:
    fields = [
        ("event", body[0][1]),
        ("job_id", identity.job_id),
        ("project_id", identity.project_id),
        ("seq", str(seq)),
        ("observed_at", observed_at),
        *body[1:],
    ]
    if identity.meta:
        fields.append(("meta", identity.meta))
    return Event(tuple(fields))


def _change(
    kind: EventKind, from_status: str, to_status: str, job_status: str
) -> list[tuple[str, str]]:
    """The body every event starts with: its kind and the status move it reports."""
    return [
        ("event", kind),
        ("from_status", from_status),
        ("to_status", to_status),
        ("job_status", job_status),
    ]


def _task_changed(task: Task, old: str | None, job_status: str) -> list[tuple[str, str]]:
    return [
        *_change(EventKind.TASK_STATUS_CHANGED, old or "", task.status, job_status),
        ("task_id", task.task_id),
        ("task_index", str(task.task_index)),
        ("task_name", task.task_name),
        ("task_created_at", task.created_at),
        ("task_updated_at", task.updated_at),
        ("messages", task.messages),
    ]


def _job_changed(current: JobSnapshot, old: str | None) -> list[tuple[str, str]]:
    status = current.status
    return [
        *_change(EventKind.JOB_STATUS_CHANGED, old or "", status, status),
        ("job_type", current.job_type),
        ("terminal", "true" if is_terminal(status) else "false"),
    ]


def diff_snapshots(
    previous: StoredSnapshot | None,
    current: JobSnapshot,
    *,
    identity: JobIdentity,
    observed_at: str,
    first_seq: int,
) -> list[Event]:
    """The events that take ``previous`` to ``current``, numbered from ``first_seq``.

    Task events come first in ``task_index`` order (first sight has ``from_status`` empty),
    then one job event if the job's status changed (or on first sight).
    """
    before = {t.task_id: t.status for t in previous.tasks} if previous else {}
    bodies: list[list[tuple[str, str]]] = []
    for task in current.tasks:
        old = before.get(task.task_id)
        if old != task.status:
            bodies.append(_task_changed(task, old, current.status))
    old_status = previous.status if previous else None
    if old_status != current.status:
        bodies.append(_job_changed(current, old_status))
    return [_event(identity, first_seq + n, observed_at, body) for n, body in enumerate(bodies)]


def abandoned_event(
    previous: StoredSnapshot | None,
    *,
    identity: JobIdentity,
    observed_at: str,
    seq: int,
    reason: str,
    detail: str,
) -> Event:
    """The final ``job.abandoned`` event; ``from``/``to`` carry the last status seen."""
    last = previous.status if previous else ""
    body = [
        *_change(EventKind.JOB_ABANDONED, last, last, last),
        ("reason", reason),
        ("detail", detail),
    ]
    return _event(identity, seq, observed_at, body)


def merge_snapshot(previous: StoredSnapshot | None, current: JobSnapshot) -> StoredSnapshot:
    """The snapshot to store after ``current``: its tasks, plus any that vanished from view.

    Keeping vanished tasks means one that reappears is diffed against its last status rather
    than announced a second time as new.
    """
    tasks = {
        t.task_id: StoredTask(t.task_id, t.task_index, t.task_name, t.status) for t in current.tasks
    }
    if previous:
        for t in previous.tasks:
            tasks.setdefault(t.task_id, t)
    ordered = tuple(sorted(tasks.values(), key=lambda t: (t.task_index, t.task_id)))
    return StoredSnapshot(status=current.status, job_type=current.job_type, tasks=ordered)
