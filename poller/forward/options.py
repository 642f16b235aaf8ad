"""What ``poller forward`` is asked to do: the webhook, the group, limits, and which events."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from poller.backoff import full_jitter
from poller.consumer import JobEvent
from poller.forward.signing import WebhookSecret


@dataclass(frozen=True, slots=True)
class Retries:
    """How a failed delivery is retried: up to ``max_attempts`` attempts in all, waiting a
    full-jitter exponential backoff from ``backoff_initial`` up to ``backoff_max`` seconds,
    with a webhook's ``Retry-After`` (capped at ``retry_after_max``) as the floor."""

    max_attempts: int = 8
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    retry_after_max: float = 600.0

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        floor = None if retry_after is None else min(retry_after, self.retry_after_max)
        return full_jitter(
            attempt, initial=self.backoff_initial, cap=self.backoff_max, rng=rng, floor=floor
        )


@dataclass(frozen=True, slots=True)
class ForwardOptions:
    """What ``poller forward`` was asked to do: where to POST and how to sign, which group
    to read as whom, how to pace and retry deliveries and take over a dead forwarder's, and
    which events to deliver at all.  Most fields are the command's options of the same name;
    ``secret`` is what ``--secret-file`` holds, ``start`` is ``--since`` as a stream ID and
    ``retries`` holds ``--max-attempts``, ``--backoff-initial``, ``--backoff-max`` and
    ``--retry-after-max``.
    Times are in seconds, but ``block_ms`` (how long one read of the group waits)."""

    webhook: str
    secret: WebhookSecret
    group: str = "forward"
    consumer: str = "forward"
    start: str = "$"  # where a group created here starts
    concurrency: int = 16
    prefetch: int = 0  # 0: 4 x concurrency
    timeout: float = 10.0
    retries: Retries = Retries()
    claim_idle: float = 30.0
    claim_interval: float = 10.0
    block_ms: int = 2000
    events: frozenset[str] = field(default_factory=frozenset)
    terminal_only: bool = False
    job_types: frozenset[str] = field(default_factory=frozenset)

    @property
    def held_max(self) -> int:
        return self.prefetch if self.prefetch > 0 else 4 * self.concurrency


def event_filter(options: ForwardOptions) -> Callable[[JobEvent], bool]:
    """Whether an event is to be delivered: ``--event`` kinds, ``--terminal-only`` (a job's
    final event: terminal ``job.status_changed`` or ``job.abandoned``), ``--job-type`` (events
    carrying that ``job_type``: job status events)."""

    def wanted(event: JobEvent) -> bool:
        if options.events and event.event not in options.events:
            return False
        if options.terminal_only and not event.is_final:
            return False
        return not (options.job_types and event.job_type not in options.job_types)

    return wanted
