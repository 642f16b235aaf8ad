"""The operator commands other than ``run``: enqueue, status, events, cancel."""

from __future__ import annotations

import json
import math
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, TextIO

import anyio

from poller.consumer import ConsumerGroup, JobEvent, tail_events
from poller.intake import Admission, Invalid, build_message, parse_message
from poller.snapshot import format_timestamp
from poller.store import Store
from poller.store.store import JobView
from poller.tracking import plan_cancel

Out = TextIO


class CommandError(Exception):
    """A command cannot do what was asked; the message says why (exit 1)."""


class UsageError(CommandError):
    """The command line itself is wrong (exit 2, like argparse's own errors)."""


def build_messages(
    job_ids: list[str],
    *,
    project_id: str,
    default_project: str,
    instance_id: str = "",
    meta: dict[str, Any] | None = None,
    force: bool = False,
) -> list[str]:
    """Intake messages for ``job_ids``; raises :class:`CommandError` naming an invalid one."""
    messages = []
    for job_id in job_ids:
        message = build_message(
            job_id, project_id=project_id, instance_id=instance_id, meta=meta, force=force
        )
        parsed = parse_message(message.encode(), default_project)
        if isinstance(parsed, Invalid):
            raise UsageError(f"{job_id!r}: {parsed.reason}")
        messages.append(message)
    return messages


async def enqueue(store: Store, messages: list[str], out: Out = sys.stdout) -> int:
    """Push ``messages`` onto the intake queue."""
    await store.enqueue(*messages)
    for message in messages:
        out.write(f"queued {message}\n")
    return 0


def _ago(now: float, then: float | None) -> str:
    if then is None:
        return "-"
    delta = then - now
    relative = f"in {delta:.1f}s" if delta >= 0 else f"{-delta:.1f}s ago"
    return f"{format_timestamp(then)} ({relative})"


def render_status(view: JobView, now: float) -> str:
    """A human-readable account of one job's stored state."""
    s = view.state
    snap = s.snapshot
    lines = [
        f"job        {s.job_id}  (project {s.project_id})",
        f"tracking   {'yes' if view.tracking else 'no, finished'}"
        + (f" at {format_timestamp(s.finished_at)}" if s.finished_at else ""),
        f"status     {snap.status if snap else '(not seen yet)'}"
        + (f"  [{view.outcome}]" if view.outcome else ""),
        f"events     {s.seq - 1}",
        f"taken at   {format_timestamp(s.taken_at)}",
        f"last poll  {_ago(now, s.last_poll_at)}",
    ]
    if view.tracking:
        lease = f"{s.owner} until {_ago(now, s.lease_until)}" if s.token else "none"
        lines += [
            f"next poll  {_ago(now, s.due_at if not s.token else view.due_at)}",
            f"interval   {f'{s.interval:g}s' if s.interval else '- (not polled successfully yet)'}"
            f"   failed attempts {s.attempts}",
            f"lease      {lease}",
        ]
    if s.last_error:
        lines.append(f"last error {s.last_error}")
    if s.meta:
        lines.append(f"meta       {s.meta}")
    if snap and snap.tasks:
        lines.append("tasks")
        lines += [f"  {t.task_index:>4}  {t.status:<17} {t.task_name}" for t in snap.tasks]
    return "\n".join(lines) + "\n"


def status_document(view: JobView) -> dict[str, Any]:
    """``poller status --json``: the stored state as a JSON-ready dict."""
    s = view.state
    return {
        "job_id": s.job_id,
        "project_id": s.project_id,
        "tracking": view.tracking,
        "status": s.snapshot.status if s.snapshot else None,
        "outcome": view.outcome or None,
        "events": s.seq - 1,
        "taken_at": s.taken_at,
        "last_poll_at": s.last_poll_at,
        "next_poll_at": None if not view.tracking else (view.due_at if s.token else s.due_at),
        "interval": s.interval,
        "attempts": s.attempts,
        "lease_owner": s.owner or None,
        "lease_until": s.lease_until,
        "last_error": s.last_error or None,
        "finished_at": s.finished_at,
        "meta": json.loads(s.meta) if s.meta else None,
        "tasks": [
            {"task_id": t.task_id, "task_index": t.task_index, "task_name": t.task_name,
             "status": t.status}
            for t in (s.snapshot.tasks if s.snapshot else ())
        ],
    }  # fmt: skip


async def status(
    store: Store, project_id: str, job_id: str, *, as_json: bool, out: Out = sys.stdout
) -> int:
    """Print a job's last snapshot, next poll and lease holder."""
    view = await store.get_job(project_id, job_id)
    if view is None:
        raise CommandError(
            f"job {job_id} (project {project_id}) is not tracked and not recently finished"
        )
    if as_json:
        out.write(json.dumps(status_document(view), indent=2) + "\n")
    else:
        out.write(render_status(view, await store.server_time()))
    return 0


async def cancel(
    store: Store,
    project_id: str,
    job_id: str,
    *,
    who: str = "operator",
    clock: Callable[[], float] | None = None,
    out: Out = sys.stdout,
) -> int:
    """Stop tracking a job, publishing ``job.abandoned`` reason ``cancelled_by_operator``.

    The commit is fenced like a worker's: it takes over any lease in progress, so a worker
    polling the job at that moment publishes nothing afterwards.
    """
    commit_id = uuid.uuid4().hex
    for _ in range(50):
        view = await store.get_job(project_id, job_id)
        if view is None or not view.tracking:
            raise CommandError(f"job {job_id} (project {project_id}) is not being tracked")
        # the daemon's times are Redis's clock (see Worker.clock); use the same here
        now = clock() if clock is not None else await store.server_time()
        result = await store.commit(view.state, plan_cancel(view.state, now, who), now, commit_id)
        if result in ("ok", "duplicate"):
            out.write(f"cancelled {job_id}: job.abandoned seq={view.state.seq}\n")
            return 0
        if result == "gone":
            raise CommandError(f"job {job_id} finished before it could be cancelled")
    raise CommandError(f"job {job_id} kept changing; try again")


_COLOURS = {
    "SUCCEEDED": "32", "FAILED": "31", "PARTIALLY_FAILED": "31", "CANCELLED": "33",
    "ROLLBACKED": "35", "ROLLBACKING": "35", "RUNNING": "36", "SKIPPED": "90",
}  # fmt: skip


def colour(status: str, text: str, enabled: bool) -> str:
    """``text`` in the colour of ``status`` when ``enabled`` (a terminal)."""
    code = _COLOURS.get(status)
    return f"\x1b[{code}m{text}\x1b[0m" if enabled and code else text


def format_event(fields: dict[str, str], *, colours: bool = False) -> str:
    """One readable line for an event."""
    kind = fields.get("event", "?")
    head = (
        f"{fields.get('observed_at', '')}  {fields.get('job_id', '')}  #{fields.get('seq', '?'):<3}"
    )
    to_status = fields.get("to_status", "")
    arrow = f"{fields.get('from_status') or '∅'} → {colour(to_status, to_status, colours)}"
    if kind == "task.status_changed":
        what = f"task {fields.get('task_index', '')} {fields.get('task_name', '')}: {arrow}"
    elif kind == "job.status_changed":
        what = f"JOB {arrow}" + ("  (terminal)" if fields.get("terminal") == "true" else "")
    else:
        what = f"JOB abandoned ({fields.get('reason', '')}: {fields.get('detail', '')})"
    return f"{head} {what}"


def _print_event(event: JobEvent, out: Out, *, as_json: bool, colours: bool) -> None:
    if as_json:
        out.write(json.dumps({"id": event.entry_id, **event.fields}, ensure_ascii=False) + "\n")
    else:
        out.write(format_event(dict(event.fields), colours=colours) + "\n")
    out.flush()


async def events(
    store: Store,
    *,
    job_id: str | None,
    follow: bool,
    as_json: bool,
    since: str = "0-0",
    count: int | None = None,
    group: str | None = None,
    consumer: str | None = None,
    out: Out = sys.stdout,
) -> int:
    """Print events of all jobs or one, from ``since``; with ``follow``, keep waiting.

    With ``group``, read through that consumer group (created at ``since`` if missing) and
    acknowledge each event after printing it, so a pipeline is a durable consumer.
    """
    colours = out.isatty() and not as_json
    printed = 0
    stream: AsyncIterator[JobEvent]
    group_reader: ConsumerGroup | None = None
    if group:
        key = store.keys.job_events(job_id) if job_id else store.keys.events
        group_reader = ConsumerGroup(
            store.redis, key, group=group, consumer=consumer or "cli", start=since
        )
        stream = group_reader.events(follow=follow)
    else:
        stream = tail_events(store.redis, store.keys, job_id=job_id, start=since, follow=follow)
    async for event in stream:
        _print_event(event, out, as_json=as_json, colours=colours)
        if group_reader is not None:
            await group_reader.ack(event)
        printed += 1
        if count is not None and printed >= count:
            break
    return 0


EXIT_SUCCEEDED, EXIT_FAILED, EXIT_ABANDONED, EXIT_TIMEOUT = 0, 1, 2, 124


def wait_exit_code(final: JobEvent) -> int:
    """``poller wait``'s exit code for a job's final event."""
    if final.event == "job.abandoned":
        return EXIT_ABANDONED
    return EXIT_SUCCEEDED if final.to_status == "SUCCEEDED" else EXIT_FAILED


async def wait(
    store: Store,
    project_id: str,
    job_id: str,
    *,
    give_up_after: float | None,
    enqueue_message: str | None = None,
    quiet: bool = False,
    out: Out = sys.stdout,
) -> int:
    """Follow one job's stream from its start until its final event; the exit code says how
    it ended (0 SUCCEEDED, 1 FAILED/PARTIALLY_FAILED/ROLLBACKED/CANCELLED, 2 abandoned,
    124 timeout).  Works before, during and after the job's tracking."""
    if enqueue_message is not None:
        await store.enqueue(enqueue_message)
    elif await store.get_job(project_id, job_id) is None:
        sys.stderr.write(
            f"poller: {job_id} is not tracked (yet); waiting for it to be queued "
            "(pass --enqueue to queue it now)\n"
        )
    colours = out.isatty()
    with anyio.move_on_after(give_up_after if give_up_after is not None else math.inf):
        async for event in tail_events(store.redis, store.keys, job_id=job_id, block_ms=2000):
            if event.project_id != project_id:
                continue
            if not quiet:
                _print_event(event, out, as_json=False, colours=colours)
            if event.is_final:
                return wait_exit_code(event)
    out.write(f"timed out waiting for {job_id}\n")
    return EXIT_TIMEOUT


def admission_for(job_id: str, project_id: str) -> Admission:
    """Validate a job named on the command line (raises :class:`CommandError`)."""
    parsed = parse_message(job_id.encode(), project_id)
    if isinstance(parsed, Invalid):
        raise UsageError(f"{job_id!r}: {parsed.reason}")
    return parsed
