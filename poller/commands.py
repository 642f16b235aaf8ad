"""The operator commands other than ``run``: enqueue, status, events, wait, cancel, dead."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, TextIO

import anyio
from redis.exceptions import RedisError

from poller import errors
from poller.backoff import Backoff
from poller.consumer import (
    ConsumerGroup,
    JobEvent,
    WaitTimeout,
    merge_entries,
    tail_events,
    wait_for_job,
)
from poller.errors import PollerError
from poller.intake import Admission, Invalid, JobRequest, build_message, parse_message
from poller.snapshot import EventKind, format_timestamp
from poller.store import Store
from poller.store.store import CorruptJobState, JobView
from poller.terminal import use_colour

Out = TextIO


class CommandError(PollerError):
    """A command cannot do what was asked; the message says why (exit 1)."""


class UsageError(CommandError):
    """The command line itself is wrong (exit 2, like argparse's own errors)."""

    exit_code = errors.EXIT_USAGE


def build_messages(requests: Iterable[JobRequest], *, default_project: str) -> list[str]:
    """Intake messages for ``requests``; raises :class:`CommandError` naming an invalid one."""
    messages = []
    for request in requests:
        message = build_message(request)
        parsed = parse_message(message.encode(), default_project)
        if isinstance(parsed, Invalid):
            raise UsageError(f"{request.job_id!r}: {parsed.reason}")
        messages.append(message)
    return messages


def read_job_ids(args: Iterable[str], stdin: TextIO) -> list[str]:
    """The job IDs named on the command line, where ``-`` stands for those read from
    ``stdin``, one per line (surrounding blanks stripped, blank lines skipped)."""
    ids: list[str] = []
    read_stdin = False
    for arg in args:
        if arg != "-":
            ids.append(arg)
            continue
        if read_stdin:
            raise UsageError("'-' (read job IDs from stdin) can be given only once")
        read_stdin = True
        ids += [line.strip() for line in stdin if line.strip()]
    return ids


_ENQUEUE_CHUNK: Final = 1000


async def enqueue(
    store: Store,
    messages: list[str],
    *,
    default_project: str = "",
    as_json: bool = False,
    out: Out = sys.stdout,
) -> int:
    """Push ``messages`` (validated by :func:`build_messages`) onto the intake queue.

    Prints ``queued <message>`` per message, or with ``as_json`` one JSON object per line:
    ``{"job_id", "project_id", "message"}`` (``project_id``: the one the daemon will use).
    """
    for start in range(0, len(messages), _ENQUEUE_CHUNK):
        await store.enqueue(*messages[start : start + _ENQUEUE_CHUNK])
    for message in messages:
        if as_json:
            parsed = parse_message(message.encode(), default_project)
            doc = {"job_id": getattr(parsed, "job_id", None),
                   "project_id": getattr(parsed, "project_id", None) or None,
                   "message": message}  # fmt: skip
            out.write(json.dumps(doc, ensure_ascii=False) + "\n")
        else:
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
    as_json: bool = False,
    out: Out = sys.stdout,
) -> int:
    """Stop tracking a job, publishing ``job.abandoned`` reason ``cancelled_by_operator``.

    One store operation (:meth:`Store.cancel`): it takes over any lease in progress, so a
    worker polling the job at that moment publishes nothing afterwards.  With ``as_json`` it prints
    ``{"job_id", "project_id", "cancelled": true, "event": "job.abandoned", "seq"}``.
    """
    view = await store.get_job(project_id, job_id)
    # the daemon's times are Redis's clock (see Worker.clock); use the same here
    now = clock() if clock is not None else await store.server_time()
    if view is None or not await store.cancel(project_id, job_id, who, now):
        raise CommandError(f"job {job_id} (project {project_id}) is not being tracked")
    seq = (await store.get_job(project_id, job_id) or view).state.seq - 1  # the final event's
    if as_json:
        doc = {"job_id": job_id, "project_id": project_id, "cancelled": True,
               "event": EventKind.JOB_ABANDONED, "seq": seq}  # fmt: skip
        out.write(json.dumps(doc) + "\n")
    else:
        out.write(f"cancelled {job_id}: job.abandoned seq={seq}\n")
    return 0


_COLOURS = {
    "SUCCEEDED": "32", "FAILED": "31", "PARTIALLY_FAILED": "31", "CANCELLED": "33",
    "ROLLBACKED": "35", "ROLLBACKING": "35", "RUNNING": "36", "SKIPPED": "90",
}  # fmt: skip


def colour(status: str, text: str, enabled: bool) -> str:
    """``text`` in the colour of ``status`` when ``enabled`` (see :func:`use_colour`)."""
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
    if kind == EventKind.TASK_STATUS_CHANGED:
        what = f"task {fields.get('task_index', '')} {fields.get('task_name', '')}: {arrow}"
    elif kind == EventKind.JOB_STATUS_CHANGED:
        what = f"JOB {arrow}" + ("  (terminal)" if fields.get("terminal") == "true" else "")
    else:
        what = f"JOB abandoned ({fields.get('reason', '')}: {fields.get('detail', '')})"
    return f"{head} {what}"


def _print_event(event: JobEvent, out: Out, *, as_json: bool, colours: bool) -> None:
    if as_json:
        out.write(json.dumps(event_document(event), ensure_ascii=False) + "\n")
    else:
        out.write(format_event(dict(event.fields), colours=colours) + "\n")
    out.flush()


async def events(
    store: Store,
    *,
    job_id: str | None,
    follow: bool,
    as_json: bool,
    since: str | None = None,
    tail: int | None = None,
    count: int | None = None,
    group: str | None = None,
    consumer: str | None = None,
    out: Out = sys.stdout,
) -> int:
    """Print events of all jobs (every shard's global stream, merged by entry ID) or one.

    Where it starts: after ``since`` when given (in every shard: an ID or a time); with
    ``tail``, the last ``tail`` entries (over all shards); otherwise the beginning, or with
    ``follow`` only what is published from now on (like ``tail -f``).  With ``follow`` it
    keeps waiting for new events.

    With ``group``, read through that consumer group (created at ``since``, or at the
    beginning, or with ``follow`` at now, if missing; on every shard's stream) and
    acknowledge each event after printing it, so a pipeline is a durable consumer.
    """
    if tail is not None and (since is not None or group):
        raise UsageError("--tail goes neither with --since nor with --group")
    colours = use_colour(out) and not as_json
    keys = store.keys
    streams = (keys.job_events(job_id),) if job_id else keys.event_streams
    start: str | dict[str, str] = since if since is not None else ("$" if follow else "0-0")
    printed = 0
    stream: AsyncIterator[JobEvent]
    group_reader: ConsumerGroup | None = None
    if tail is not None:
        history, start = await _last_events(store, streams, tail)
        for event in history[:count]:
            _print_event(event, out, as_json=as_json, colours=colours)
        printed = min(len(history), count if count is not None else len(history))
        if not follow or (count is not None and printed >= count):
            return 0
    if group:
        assert isinstance(start, str)  # --tail (the only mapping) goes without --group
        group_reader = ConsumerGroup(
            store.redis, streams, group=group, consumer=consumer or "cli", start=start
        )
        stream = group_reader.events(follow=follow)
    else:
        stream = tail_events(store.redis, keys, job_id=job_id, start=start, follow=follow)
    if count is not None and printed >= count:
        return 0
    async for event in stream:
        _print_event(event, out, as_json=as_json, colours=colours)
        if group_reader is not None:
            await group_reader.ack(event)
        printed += 1
        if count is not None and printed >= count:
            break
    return 0


async def _last_events(
    store: Store, streams: tuple[str, ...], tail: int
) -> tuple[list[JobEvent], str | dict[str, str]]:
    """The last ``tail`` events over ``streams`` (merged by entry ID, oldest first), and
    where to follow on: after each stream's newest entry as it was read (not after the
    newest shown: another shard's clock may lag, and its next entries sort before it)."""
    if tail <= 0:
        return [], "$"
    async with store.redis.pipeline(transaction=False) as pipe:
        for key in streams:
            pipe.xrevrange(key, count=tail)
        newest: list[Any] = await pipe.execute()
    pages = [(key, list(reversed(entries))) for key, entries in zip(streams, newest, strict=True)]
    history = [entry.event() for entry in merge_entries(pages)][-tail:]
    after = {key: _text(entries[-1][0]) if entries else "0-0" for key, entries in pages}
    return history, after


# ``poller wait``'s exit codes (the contract in DESIGN.md, "Operations").
EXIT_SUCCEEDED: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = errors.EXIT_USAGE  # the same 2 as every command's usage errors
EXIT_ABANDONED: Final = 3
EXIT_UNREACHABLE: Final = 4
EXIT_TIMEOUT: Final = 124


def wait_exit_code(final: JobEvent) -> int:
    """``poller wait``'s exit code for a job's final event: 0 SUCCEEDED, 1 ended failed
    (FAILED, PARTIALLY_FAILED, CANCELLED, ROLLBACKED), 3 abandoned (any reason)."""
    if final.event == EventKind.JOB_ABANDONED:
        return EXIT_ABANDONED
    return EXIT_SUCCEEDED if final.to_status == "SUCCEEDED" else EXIT_FAILED


def event_document(event: JobEvent) -> dict[str, str]:
    """An event as ``--json`` prints it: the stream entry's ``id`` and its fields."""
    return {"id": event.entry_id, **event.fields}


@dataclass(slots=True)
class _WaitReport:
    """What ``poller wait`` shows while it waits: event lines on ``out`` (none with
    ``as_json``), notes on ``err``; with ``quiet`` nothing at all."""

    out: Out
    err: Out
    quiet: bool
    as_json: bool
    give_up_after: float | None
    colours: bool = field(init=False)

    def __post_init__(self) -> None:
        self.colours = use_colour(self.out)

    def note(self, text: str) -> None:
        """A ``poller: ...`` line on ``err``."""
        if not self.quiet:
            self.err.write(f"poller: {text}\n")
            self.err.flush()

    def event(self, event: JobEvent) -> None:
        """One of the job's events, as it is read."""
        if not (self.quiet or self.as_json):
            _print_event(event, self.out, as_json=False, colours=self.colours)

    def redis_error(self, exc: RedisError | None) -> None:
        """Redis stopped answering (``exc``) or answers again (``None``)."""
        limit = "until the timeout" if self.give_up_after is not None else "(no --timeout)"
        self.note(f"Redis unreachable ({exc}); retrying {limit}" if exc else "Redis answers again")

    def final(self, final: JobEvent) -> None:
        """The final event, as the one JSON object ``as_json`` prints."""
        if self.as_json and not self.quiet:
            self.out.write(json.dumps(event_document(final), ensure_ascii=False) + "\n")
            self.out.flush()


async def _note_if_untracked(
    store: Store, project_id: str, job_id: str, give_up_after: float | None, report: _WaitReport
) -> None:
    """Say so when the job is not tracked (yet): a hint only, so not retried, and never
    longer than a moment of the caller's timeout."""
    with anyio.move_on_after(min(2.0, give_up_after if give_up_after is not None else 2.0)):
        with contextlib.suppress(RedisError, CorruptJobState):
            if await store.get_job(project_id, job_id) is None:
                report.note(
                    f"{job_id} is not tracked (yet); waiting for it to be queued "
                    "(pass --enqueue to queue it now)"
                )


async def wait(
    store: Store,
    project_id: str,
    job_id: str,
    *,
    give_up_after: float | None,
    enqueue_message: str | None = None,
    quiet: bool = False,
    as_json: bool = False,
    out: Out = sys.stdout,
    err: Out = sys.stderr,
    backoff: Backoff | None = None,
) -> int:
    """Follow one job's stream from its start until its final event; the exit code says how
    it ended: 0 SUCCEEDED; 1 FAILED, PARTIALLY_FAILED, CANCELLED or ROLLBACKED; 3 abandoned;
    4 Redis unreachable until ``give_up_after`` (or failing in a way retries cannot mend);
    124 ``give_up_after`` passed first.

    Works before, during and after the job's tracking, and rides out Redis outages (retries
    with backoff, resuming after the last event seen).  Event lines go to ``out`` as they
    come; with ``as_json`` only the final event, as one JSON object; with ``quiet`` nothing
    at all, notes on ``err`` included.
    """
    started = anyio.current_time()
    report = _WaitReport(out, err, quiet=quiet, as_json=as_json, give_up_after=give_up_after)
    if enqueue_message is None and not quiet:
        await _note_if_untracked(store, project_id, job_id, give_up_after, report)
    remaining = None
    if give_up_after is not None:
        remaining = max(0.0, give_up_after - (anyio.current_time() - started))
    try:
        final = await wait_for_job(
            store.redis,
            store.keys,
            job_id,
            project_id,
            remaining,
            enqueue=enqueue_message,
            on_event=report.event,
            on_redis_error=report.redis_error,
            backoff=backoff,
        )
    except WaitTimeout as exc:
        if exc.redis_error is not None:
            report.note(
                f"Redis unreachable until the timeout ({give_up_after:g}s): {exc.redis_error}"
            )
            return EXIT_UNREACHABLE
        report.note(f"timed out waiting for {job_id} after {give_up_after:g}s")
        return EXIT_TIMEOUT
    except RedisError as exc:  # one that retrying cannot mend
        report.note(f"Redis error: {exc}")
        return EXIT_UNREACHABLE
    report.final(final)
    return wait_exit_code(final)


# --- dead letters ---------------------------------------------------------------------------


def _dead_record(record: str) -> dict[str, Any]:
    """A dead-letter record's fields; ``raw`` is ``None`` when the record is unreadable."""
    try:
        doc = json.loads(record)
    except ValueError:
        doc = None
    if not isinstance(doc, dict) or not isinstance(doc.get("raw"), str):
        return {"raw": None, "reason": "(unreadable dead-letter record)", "at": None}
    reason, at = doc.get("reason"), doc.get("at")
    return {"raw": doc["raw"], "reason": reason if isinstance(reason, str) else "",
            "at": at if isinstance(at, str) else None}  # fmt: skip


def _age_seconds(at: str | None, now: float) -> float | None:
    if not at:
        return None
    try:
        return max(0.0, now - datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return None


def format_age(seconds: float | None) -> str:
    """A short age: ``42s``, ``5m12s``, ``3h05m``, ``2d03h`` (``?`` when unknown)."""
    if seconds is None:
        return "?"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


async def _dead_records(store: Store, skip: int = 0, limit: int | None = None) -> list[str]:
    """Dead-letter records oldest first, from the ``skip``-th oldest.  Records are pushed at
    the head, so counting from the tail keeps an index stable while more arrive."""
    records: list[str] = []
    page = 1000
    while limit is None or len(records) < limit:
        offset = skip + len(records)
        chunk = await store.redis.lrange(store.keys.dead, -(offset + page), -(offset + 1))
        records += [_text(r) for r in reversed(chunk)]
        if len(chunk) < page:
            break
    return records if limit is None else records[:limit]


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


async def dead_list(store: Store, *, as_json: bool = False, out: Out = sys.stdout) -> int:
    """Print the dead-letter list, oldest first, numbered from 0 (the numbers ``dead
    requeue`` takes; they stay put while new dead letters arrive).

    Text: ``N  age  reason  raw="…"`` per record; with ``as_json`` one object per line:
    ``{"index", "reason", "at", "age_seconds", "raw"}`` (``raw`` is ``null`` for a record
    that is not readable).
    """
    records = await _dead_records(store)
    now = await store.server_time()
    if not records and not as_json:
        out.write("no dead letters\n")
    for index, record in enumerate(records):
        doc = _dead_record(record)
        age = _age_seconds(doc["at"], now)
        if as_json:
            seconds = None if age is None else round(age, 3)
            line = {"index": index, "reason": doc["reason"], "at": doc["at"],
                    "age_seconds": seconds, "raw": doc["raw"]}  # fmt: skip
            out.write(json.dumps(line, ensure_ascii=False) + "\n")
        else:
            raw = json.dumps(doc["raw"] if doc["raw"] is not None else record, ensure_ascii=False)
            raw = raw if len(raw) <= 120 else raw[:119] + "…"
            out.write(f"{index:>4}  {format_age(age):>6}  {doc['reason']}  raw={raw}\n")
    return 0


async def dead_requeue(
    store: Store,
    indexes: list[int] | None,
    *,
    out: Out = sys.stdout,
    batch: int = 200,
) -> int:
    """Move dead letters' raw messages back onto the intake queue, each atomically (see
    :meth:`Store.requeue_dead`), oldest first so they are taken in their original order.

    ``indexes`` are the numbers ``dead list`` shows; ``None`` means every record there is now
    (those that arrive meanwhile, such as a requeued message that is still invalid, stay).
    An unreadable record stays where it is.
    """
    moved = 0
    if indexes is not None:
        chosen = sorted(set(indexes))
        records = await _dead_records(store)
        pairs: list[tuple[int, str, str]] = []
        for index in chosen:
            if index >= len(records):
                raise CommandError(f"no dead letter #{index} (there are {len(records)})")
            raw = _dead_record(records[index])["raw"]
            if raw is None:
                raise CommandError(f"dead letter #{index} is unreadable; it has no message")
            pairs.append((index, records[index], raw))
        done = await store.requeue_dead([(r, m) for _, r, m in pairs])
        for (index, _, raw), ok in zip(pairs, done, strict=True):
            if int(ok):
                moved += 1
                out.write(f"requeued #{index}: {raw}\n")
            else:
                out.write(f"#{index} was gone already (requeued by someone else?)\n")
        return 0
    total = int(await store.redis.llen(store.keys.dead))
    examined = skipped = 0
    while examined < total:
        window = await _dead_records(store, skip=skipped, limit=min(batch, total - examined))
        if not window:
            break
        examined += len(window)
        readable = [(r, m) for r in window if (m := _dead_record(r)["raw"]) is not None]
        skipped += len(window) - len(readable)
        if readable:
            done = await store.requeue_dead(readable)
            for (_, raw), ok in zip(readable, done, strict=True):
                if int(ok):
                    moved += 1
                    out.write(f"requeued {raw}\n")
    out.write(f"{moved} requeued" + (f", {skipped} unreadable left" if skipped else "") + "\n")
    return 0


def admission_for(job_id: str, project_id: str) -> Admission:
    """Validate a job named on the command line (raises :class:`CommandError`)."""
    parsed = parse_message(job_id.encode(), project_id)
    if isinstance(parsed, Invalid):
        raise UsageError(f"{job_id!r}: {parsed.reason}")
    return parsed
