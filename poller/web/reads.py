"""Read-only queries for the status page: replicas, tracked and recently finished jobs.

Kept here rather than in :mod:`poller.store.store`: they serve the page only, and read keys
the daemon writes without changing any.
"""

from __future__ import annotations

import json
from typing import Any, Final

from poller.commands import status_document
from poller.consumer import JobEvent, merge_entries
from poller.store import Store
from poller.store.store import CorruptJobState

#: At most this many tracked jobs are listed (the earliest due first).
MAX_TRACKED: Final = 200
#: At most this many recently finished jobs are listed (newest first).
MAX_FINISHED: Final = 50
#: How far back in the global streams (all shards together) finished jobs are looked for.
FINISHED_SCAN: Final = 2000
#: Dead letters shown (newest first).
MAX_DEAD_SHOWN: Final = 5


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


async def replicas(store: Store, now: float) -> list[dict[str, Any]]:
    """Every registered replica with its heartbeat deadline; ``live`` while it is ahead."""
    rows: Any = await store.redis.zrange(store.keys.replicas, 0, -1, withscores=True)
    return [
        {
            "replica": _text(member),
            "deadline": float(score),
            "seconds_left": round(float(score) - now, 3),
            "live": float(score) > now,
        }
        for member, score in rows
    ]


async def _document(store: Store, project_id: str, job_id: str) -> dict[str, Any] | None:
    try:
        view = await store.get_job(project_id, job_id)
    except (CorruptJobState, ValueError):
        return None
    return None if view is None else status_document(view)


async def tracked_jobs(store: Store, limit: int = MAX_TRACKED) -> list[dict[str, Any]]:
    """The jobs in the schedules of every shard (earliest due first), as ``poller status
    --json``."""
    async with store.redis.pipeline(transaction=False) as pipe:
        for shard in store.keys.all_shards:
            pipe.zrange(shard.schedule, 0, limit - 1, withscores=True)
        pages: list[Any] = await pipe.execute()
    due = sorted(((float(score), _text(member)) for page in pages for member, score in page))
    out = []
    for _, member in due[:limit]:
        project_id, _, job_id = member.partition(":")
        doc = await _document(store, project_id, job_id)
        if doc is not None:
            out.append(doc)
    return out


async def _newest_events(store: Store, scan: int) -> list[tuple[str, Any]]:
    """The newest ``scan`` entries over every shard's global stream, newest first (merged by
    entry ID)."""
    async with store.redis.pipeline(transaction=False) as pipe:
        for stream in store.keys.event_streams:
            pipe.xrevrange(stream, count=scan)
        pages: list[Any] = await pipe.execute()
    merged = merge_entries(
        [(s, list(reversed(p))) for s, p in zip(store.keys.event_streams, pages, strict=True)]
    )
    return [(e.entry_id, e.raw) for e in reversed(merged[-scan:])]


async def finished_jobs(
    store: Store, limit: int = MAX_FINISHED, scan: int = FINISHED_SCAN
) -> list[dict[str, Any]]:
    """Jobs whose final event is among the last ``scan`` entries of the global streams (all
    shards), newest first: their stored state when still kept, else what the final event
    says."""
    entries = await _newest_events(store, scan)
    seen: set[tuple[str, str]] = set()
    out: list[dict[str, Any]] = []
    for entry_id, raw in entries:
        try:
            event = JobEvent.from_entry(entry_id, raw)
        except (KeyError, ValueError):
            continue
        key = (event.project_id, event.job_id)
        if not event.is_final or key in seen:
            continue
        seen.add(key)
        doc = await _document(store, event.project_id, event.job_id)
        if doc is None or doc["tracking"]:  # expired, or tracked again since
            if doc is not None:
                continue
            doc = {"job_id": event.job_id, "project_id": event.project_id, "tracking": False,
                   "status": event.to_status or None, "outcome": event.reason or event.to_status,
                   "tasks": []}  # fmt: skip
        doc["final_event"] = {"id": event.entry_id, "event": event.event,
                              "observed_at": event.observed_at, "reason": event.reason}  # fmt: skip
        out.append(doc)
        if len(out) >= limit:
            break
    return out


async def dead_letters(store: Store, limit: int = MAX_DEAD_SHOWN) -> list[dict[str, Any]]:
    """The newest dead letters: ``{raw, reason, at}`` (whatever part of it is readable)."""
    out = []
    for record in await store.redis.lrange(store.keys.dead, 0, limit - 1):
        text = _text(record)
        try:
            doc = json.loads(text)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            doc = {"raw": text, "reason": "(unreadable record)", "at": None}
        out.append({k: doc.get(k) for k in ("raw", "reason", "at")})
    return out


async def overview(store: Store) -> dict[str, Any]:
    """Everything the page shows at once."""
    now = await store.server_time()
    counts = await store.counts(now)
    return {
        "now": now,
        "prefix": store.keys.prefix,
        "counts": counts,
        "replicas": await replicas(store, now),
        "dead_letters": await dead_letters(store),
        "tracked": await tracked_jobs(store),
        "finished": await finished_jobs(store),
    }
