"""Takeover: claim what dead forwarders left pending, and keep what this one holds from
looking dead.

What a forwarder holds unacknowledged when it dies stays in the group's pending list; the
others take it over with ``XAUTOCLAIM`` once it has been idle ``claim_idle`` seconds (they
look every ``claim_interval``).  A live forwarder keeps what it holds from going idle by
re-claiming its own entries (a Lua script: only while it still owns them), so a slow delivery
with long retries is never taken over behind its back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import anyio
from redis.exceptions import RedisError

from poller.forward.entries import PAGE, text
from poller.forward.metrics import ForwardMetrics
from poller.forward.reading import GroupPart
from poller.store.store import is_transient

# Re-claim this consumer's own entries (resetting their idle time) only while it still owns
# them: KEYS[1] the stream, ARGV[1] the group, ARGV[2] this consumer, ARGV[3..] entry IDs.
# Returns the IDs it no longer owns.
_TOUCH: Final = """
local lost = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2])
  if #p == 1 then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  else
    table.insert(lost, ARGV[i])
  end
end
return lost
"""


@dataclass(eq=False, repr=False)
class Takeover(GroupPart):
    """Both sides of ``XAUTOCLAIM`` for one consumer of ``options.group`` on ``streams``:
    what it takes over goes to ``queues``, and what ``queues`` holds it keeps touched."""

    metrics: ForwardMetrics

    def __post_init__(self) -> None:
        self._touch = self.redis.register_script(_TOUCH)

    async def claim_once(self) -> int:
        """Take over every entry other consumers left idle ``claim_idle``; how many."""
        taken = 0
        idle_ms = max(1, int(self.options.claim_idle * 1000))
        for stream in self.streams:
            cursor = "0-0"
            while True:
                reply = await self.redis.xautoclaim(
                    stream, self.options.group, self.options.consumer, idle_ms, cursor,
                    count=PAGE,
                )  # fmt: skip
                cursor, entries = text(reply[0]), reply[1]
                for entry_id, raw in entries:
                    entry_id = text(entry_id)
                    if raw and (stream, entry_id) not in self.queues:
                        taken += 1
                        self.queues.take(stream, entry_id, raw, claimed=True, new=False)
                if cursor in ("0-0", "0"):
                    break
        return taken

    async def claim_forever(self) -> None:
        """:meth:`claim_once` every ``claim_interval``, riding out Redis outages."""
        while True:
            try:
                taken = await self.claim_once()
                if taken:
                    self.metrics.claimed.inc(taken)
                    self.log.info("took over pending deliveries", count=taken)
            except RedisError as exc:
                if not is_transient(exc):
                    raise
                self.log.warning("redis unavailable, retrying", op="xautoclaim", error=str(exc))
            await anyio.sleep(self.options.claim_interval)

    async def touch_forever(self) -> None:
        """Keep what this forwarder holds from looking idle to the others."""
        interval = max(0.05, self.options.claim_idle / 3)
        while True:
            await anyio.sleep(interval)
            await self._touch_held()

    async def _touch_held(self) -> None:
        by_stream: dict[str, list[str]] = {}
        for stream, entry_id in self.queues:
            by_stream.setdefault(stream, []).append(entry_id)
        for stream, ids in by_stream.items():  # the script names one stream: one slot
            for start in range(0, len(ids), PAGE):
                chunk = ids[start : start + PAGE]
                try:
                    lost = await self._touch(
                        keys=[stream], args=[self.options.group, self.options.consumer, *chunk]
                    )
                except RedisError as exc:
                    if not is_transient(exc):
                        raise
                    self.log.warning("redis unavailable, retrying", op="touch", error=str(exc))
                    return
                if lost:
                    self.log.warning(
                        "entries taken over by another forwarder", count=len(lost)
                    )  # fmt: skip
