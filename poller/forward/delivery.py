"""Delivery of one event to the webhook: the signed POST, retries, and parking.

An entry is acknowledged (``XACK``) only after a 2xx, or after it was parked in
``{prefix}:forward:dead`` (see :mod:`poller.forward.forwarder` for how with several shards).
Retries use the project's backoff (:func:`poller.backoff.full_jitter`), with a
``Retry-After`` answer as the floor, up to ``max_attempts`` attempts per event; at most
``concurrency`` requests are in flight at a time.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import KW_ONLY, dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
import anyio

from poller.forward.entries import Held, acknowledge, retrying, text
from poller.forward.metrics import ForwardMetrics
from poller.forward.options import ForwardOptions
from poller.forward.signing import headers, webhook_body, webhook_id
from poller.store.connection import RedisClient
from poller.store.schema import Keys

_RNG: Final = random.Random()


def public_url(url: str) -> str:
    """``url`` without credentials, query or fragment: what may appear in logs and records."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


async def dead_records(redis: RedisClient, keys: Keys) -> list[dict[str, Any]]:
    """The parked deliveries, oldest first."""
    rows: Iterable[Any] = await redis.lrange(keys.forward_dead, 0, -1)
    return [json.loads(text(r)) for r in rows]


@dataclass(slots=True)
class _Attempt:
    ok: bool
    error: str = ""
    cause: str = ""
    retry_after: float | None = None


@dataclass(eq=False, repr=False)
class WebhookDelivery:
    """Delivers held entries to ``options.webhook`` until each is acknowledged or parked, over
    ``session`` if one is given (else one of its own while :meth:`connected`)."""

    redis: RedisClient
    keys: Keys
    options: ForwardOptions
    metrics: ForwardMetrics
    log: Any
    _: KW_ONLY
    session: aiohttp.ClientSession | None = None

    def __post_init__(self) -> None:
        self._sem = anyio.Semaphore(max(1, self.options.concurrency))

    @asynccontextmanager
    async def connected(self) -> AsyncIterator[None]:
        """An HTTP session for the deliveries inside: the one given, else one of its own
        (``timeout`` per request, ``concurrency`` connections), closed on the way out."""
        own_session = self.session is None
        if own_session:
            self.session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.options.timeout),
                connector=aiohttp.TCPConnector(limit=max(1, self.options.concurrency)),
            )
        try:
            yield
        finally:
            if own_session and self.session is not None:
                await self.session.close()
                self.session = None

    async def deliver(self, held: Held) -> None:
        """POST ``held`` until a 2xx (then acknowledge it) or ``max_attempts`` (then park it);
        a malformed entry is parked at once."""
        if held.event is None:
            await self._park(held, "malformed event: " + json.dumps(sorted(held.raw)), 0)
            return
        event = held.event
        msg_id = webhook_id(event.job_id, event.seq)
        body = webhook_body(held.raw)
        log = self.log.bind(webhook_id=msg_id, entry_id=held.entry_id)
        attempt = 0
        while True:
            attempt += 1
            async with self._sem:
                result = await self._attempt(msg_id, body)
            if result.ok:
                await acknowledge(
                    self.redis, self.options.group, held.stream, held.entry_id, self.log
                )
                self.metrics.delivered.inc()
                self.metrics.latency.observe(time.monotonic() - held.taken)
                log.debug("delivered", attempts=attempt)
                return
            if attempt >= self.options.retries.max_attempts:
                await self._park(held, result.error, attempt)
                log.warning("delivery parked", attempts=attempt, error=result.error)
                return
            self.metrics.retried.labels(result.cause).inc()
            delay = self.options.retries.delay(attempt, result.retry_after, _RNG)
            log.info(
                "delivery failed, retrying",
                attempt=attempt,
                error=result.error,
                retry_after=result.retry_after,
                delay=round(delay, 3),
            )
            await anyio.sleep(delay)

    async def _attempt(self, msg_id: str, body: bytes) -> _Attempt:
        assert self.session is not None
        stamp = int(time.time())
        try:
            async with self.session.post(
                self.options.webhook,
                data=body,
                headers=headers(self.options.secret, msg_id, stamp, body),
                allow_redirects=False,
            ) as resp:
                await resp.read()
                if 200 <= resp.status < 300:
                    return _Attempt(ok=True)
                return _Attempt(
                    ok=False,
                    error=f"HTTP {resp.status}",
                    cause=str(resp.status),
                    retry_after=parse_retry_after(resp.headers.get("Retry-After")),
                )
        except TimeoutError:
            return _Attempt(ok=False, error="timeout", cause="timeout")
        except (aiohttp.ClientError, OSError) as exc:
            return _Attempt(ok=False, error=f"{type(exc).__name__}: {exc}", cause="error")

    async def _park(self, held: Held, error: str, attempts: int) -> None:
        record = json.dumps(
            {
                "event": held.raw,
                "entry_id": held.entry_id,
                "webhook_id": webhook_id(held.job_id, held.raw.get("seq", "")),
                "webhook": public_url(self.options.webhook),
                "group": self.options.group,
                "error": error,
                "attempts": attempts,
                "at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            },
            ensure_ascii=False,
        )

        async def park() -> Any:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.rpush(self.keys.forward_dead, record)
                pipe.xack(held.stream, self.options.group, held.entry_id)
                return await pipe.execute()

        if self.keys.shards == 1:  # the list and the stream share a slot: one MULTI
            await retrying(park, "park", self.log)
        else:  # other slots: the record first, then the ack (see forwarder's docstring)
            await retrying(
                lambda: self.redis.rpush(self.keys.forward_dead, record), "park", self.log
            )
            await acknowledge(self.redis, self.options.group, held.stream, held.entry_id, self.log)
        self.metrics.parked.inc()
