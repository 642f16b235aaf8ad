"""Deliver the global event stream to one webhook, through a Redis consumer group.

With several shards (``POLLER_SHARDS``) the global stream is one stream per shard, each in a
hash slot of its own: the group is one group of that name on each, and everything below holds
per shard stream (every command names one stream only; the touch script is run per stream).
A job lives in one shard, so its events are all in one stream and keep their order.

How the guarantees hold, with any number of forwarders sharing one group:

- **At least once.**  An entry is acknowledged (``XACK``) only after a 2xx, or after it was
  parked in ``{prefix}:forward:dead`` (in the same ``MULTI``; with several shards the list
  and the stream are in different slots, so the record is pushed first and the entry
  acknowledged after: a forwarder that dies in between leaves the entry pending, and whoever
  takes it over parks or delivers it again, so a second record of the same ``entry_id`` can
  appear, a lost event cannot).  What a forwarder holds
  unacknowledged when it dies stays in the group's pending list; the others take it over with
  ``XAUTOCLAIM`` once it has been idle ``claim_idle`` seconds (they look every
  ``claim_interval``).  A live forwarder keeps what it holds from going idle by re-claiming
  its own entries (a Lua script: only while it still owns them), so a slow delivery with long
  retries is never taken over behind its back.
- **Per-job order.**  Each forwarder keeps one queue per job, ordered by stream ID, and one
  task per job delivers that queue's head, then the next.  Before delivering an entry it
  checks the group's pending list for an older entry of the same job held by another consumer
  (a dead one, typically): then it waits until that one is acknowledged (taken over and
  delivered by whoever claims it, possibly itself), so a job's later event never overtakes an
  earlier one.  Different jobs are delivered concurrently, at most ``concurrency`` requests at
  a time; at most ``prefetch`` new entries are held at once (over all shards: their streams
  are read in turn, each for what room is left, starting with another each round).
- **Retries** use the project's backoff (:func:`poller.backoff.full_jitter`), with a
  ``Retry-After`` answer as the floor, up to ``max_attempts`` attempts per event.

:class:`Forwarder` composes one part per idea, under one anyio task group:
:class:`~poller.forward.reading.GroupReader` (the group on each shard stream: own pending
entries, then new ones within ``prefetch``), :class:`~poller.forward.takeover.Takeover`
(claiming what dead peers left idle, touching what this one holds),
:class:`~poller.forward.queues.JobQueues` (what is held, one queue and one task per job, the
check for an older entry held elsewhere) and :class:`~poller.forward.delivery.WebhookDelivery`
(the signed POST, retries, acknowledging or parking).
"""

from __future__ import annotations

import aiohttp
import anyio
import anyio.abc

from poller.forward.delivery import WebhookDelivery, dead_records, parse_retry_after, public_url
from poller.forward.entries import Held, retrying
from poller.forward.metrics import ForwardMetrics
from poller.forward.options import ForwardOptions, Retries, event_filter
from poller.forward.queues import JobQueues
from poller.forward.reading import GroupReader
from poller.forward.takeover import Takeover
from poller.store.connection import RedisClient
from poller.store.schema import Keys
from poller.telemetry import get_logger

__all__ = [
    "ForwardMetrics",
    "ForwardOptions",
    "Forwarder",
    "Retries",
    "dead_records",
    "event_filter",
    "parse_retry_after",
    "public_url",
]


class Forwarder:
    """One consumer of ``{prefix}:events`` (every shard's) in ``options.group``, POSTing to
    the webhook."""

    def __init__(
        self,
        redis: RedisClient,
        keys: Keys,
        options: ForwardOptions,
        *,
        metrics: ForwardMetrics | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.options = options
        self.metrics = metrics or ForwardMetrics()
        self.streams = keys.event_streams
        self._log = get_logger(component="forward", group=options.group)
        self._delivery = WebhookDelivery(
            redis, keys, options, self.metrics, self._log, session=session
        )
        self._queues = JobQueues(
            redis, options, self.metrics, self._log, deliver=self._delivery.deliver
        )
        self._reader = GroupReader(redis, self.streams, options, self._queues, self._log)
        self._takeover = Takeover(
            redis, self.streams, options, self._queues, self._log, metrics=self.metrics
        )

    @property
    def stream(self) -> str:
        """The global stream with one shard (see :attr:`streams`)."""
        return self.keys.events

    async def ensure_group(self) -> None:
        """Create the group (at ``options.start``) and the streams if they do not exist."""
        await self._reader.ensure_group()

    async def claim_once(self) -> int:
        """Take over every entry other consumers left idle ``claim_idle``; how many."""
        return await self._takeover.claim_once()

    async def blocked_by(self, held: Held) -> str | None:
        """An older pending entry of the same job that this forwarder does not hold, if any
        (in the job's stream: a job is in one shard)."""
        return await self._queues.blocked_by(held)

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Forward until cancelled.  ``task_status.started()`` once the group exists."""
        await retrying(self.ensure_group, "xgroup_create", self._log)
        async with self._delivery.connected(), anyio.create_task_group() as tg:
            self._queues.attach(tg)
            await self._reader.read_own_pending()
            self._log.info(
                "forwarding",
                webhook=public_url(self.options.webhook),
                consumer=self.options.consumer,
            )
            tg.start_soon(self._takeover.claim_forever)
            tg.start_soon(self._takeover.touch_forever)
            tg.start_soon(self._reader.read_forever)
            task_status.started()
