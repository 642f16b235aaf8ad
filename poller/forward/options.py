"""What ``poller forward`` is asked to do: the webhook, the group, limits, and which events."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from poller.consumer import JobEvent
from poller.forward.signing import WebhookSecret


@dataclass(frozen=True, slots=True)
class ForwardOptions:
    """What ``poller forward`` was asked to do: where to POST and how to sign, which group
    to read as whom, how to pace and retry deliveries and take over a dead forwarder's, and
    which events to deliver at all.  Most fields are the command's options of the same name;
    ``secret`` is what ``--secret-file`` holds and ``start`` is ``--since`` as a stream ID.
    Times are in seconds, but ``block_ms`` (how long one read of the group waits)."""

    webhook: str
    secret: WebhookSecret
    group: str = "forward"
    consumer: str = "forward"
    start: str = "$"  # where a group created here starts
    max_attempts: int = 8
    concurrency: int = 16
    prefetch: int = 0  # 0: 4 x concurrency
    timeout: float = 10.0
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    retry_after_max: float = 600.0
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
