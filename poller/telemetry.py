"""Logs, metrics and health: how operators see the daemon.

Logs go to stderr (stdout is for command output): JSON lines when stderr is not a terminal,
a readable console otherwise.  The standard library's loggers (aiohttp, asyncio, redis …) go
through the same processors, so every line has the same shape and carries the replica's name.
A redaction processor replaces every configured secret value wherever it would appear in a
log line.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import prometheus_client
import structlog
from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from poller import __version__
from poller.config import Secret, Settings
from poller.snapshot import AbandonReason, Event, EventKind
from poller.statuses import TERMINAL_JOB_STATUSES
from poller.terminal import use_colour

# No ``*_created`` series: they double the series count and no dashboard or alert uses them.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

REDACTED = "**********"
_SENSITIVE_KEYS = frozenset(
    {"authorization", "x-auth-token", "token", "password", "secret", "secret_key", "access_key"}
)


def _secret_values(settings: Settings) -> list[str]:
    values = []
    for value in (
        settings.auth_token,
        settings.secret_key,
        settings.iam_password,
        settings.access_key,
    ):
        if isinstance(value, Secret) and len(value.reveal()) >= 4:
            values.append(value.reveal())
    return values


class Redactor:
    """A structlog processor that blanks secrets: known values anywhere, sensitive keys whole."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = [s for s in secrets if s]

    def add(self, secret: str) -> None:
        """Also redact ``secret`` (e.g. a token obtained at run time)."""
        if secret and secret not in self._secrets:
            self._secrets.append(secret)

    def _clean(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self._secrets:
                if secret in value:
                    value = value.replace(secret, REDACTED)
            return value
        if isinstance(value, Secret):
            return REDACTED
        if isinstance(value, dict):
            return {
                k: REDACTED if str(k).lower() in _SENSITIVE_KEYS else self._clean(v)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self._clean(v) for v in value]
        return value

    def __call__(
        self, logger: Any, method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key in list(event_dict):
            if key.lower() in _SENSITIVE_KEYS:
                event_dict[key] = REDACTED
            else:
                event_dict[key] = self._clean(event_dict[key])
        return event_dict


REDACTOR = Redactor()


def drop_empty(
    logger: Any, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Leave out fields whose value is ``None`` (optional context that does not apply)."""
    for key in [k for k, v in event_dict.items() if v is None]:
        del event_dict[key]
    return event_dict


_PROCESS_FIELDS: dict[str, str] = {}


def bind_replica(replica_id: str) -> None:
    """Put ``replica`` on every log line of this process from now on, the standard library's
    included (process-wide rather than a context variable: threads and tasks started before
    the call see it too)."""
    _PROCESS_FIELDS["replica"] = replica_id


def add_process_fields(
    logger: Any, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Add the process-wide fields (see :func:`bind_replica`) unless the line has its own."""
    for key, value in _PROCESS_FIELDS.items():
        event_dict.setdefault(key, value)
    return event_dict


# The handler configure_logging put on the root logger, replaced by the next call.
_ROOT_HANDLER: logging.Handler | None = None


def configure_logging(settings: Settings, *, stream: Any = None) -> None:
    """Set up structlog for the process according to ``log_format`` and ``log_level``.

    structlog's own loggers print straight to ``stream``; the standard library's loggers (the
    root logger) get a :class:`structlog.stdlib.ProcessorFormatter` that runs their records
    through the same processors, so an aiohttp or redis warning is a JSON line like any other.
    """
    global _ROOT_HANDLER
    stream = stream or sys.stderr
    for secret in _secret_values(settings):
        REDACTOR.add(secret)
    fmt = settings.log_format
    if fmt == "auto":
        fmt = "console" if getattr(stream, "isatty", lambda: False)() else "json"
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=use_colour(stream))
    level = getattr(logging, settings.log_level.upper())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        add_process_fields,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    finish: list[Any] = [structlog.processors.format_exc_info, drop_empty, REDACTOR, renderer]
    structlog.configure(
        processors=[*shared, *finish],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *finish],
        )
    )
    root = logging.getLogger()
    if _ROOT_HANDLER is not None:
        root.removeHandler(_ROOT_HANDLER)
    root.addHandler(handler)
    root.setLevel(level)
    _ROOT_HANDLER = handler


def get_logger(**bound: Any) -> Any:
    """A structlog logger with ``bound`` fields on every line."""
    return structlog.get_logger("poller").bind(**bound)


@dataclass(frozen=True, slots=True)
class MetricFactory:
    """Makes metrics in one registry, each from its name, its help text and its label names
    (a histogram from its buckets).  A subsystem's metrics give ``namespace`` and
    ``subsystem`` once and short names (Prometheus joins them with ``_``; a counter's exposed
    name ends in ``_total``)."""

    registry: CollectorRegistry
    namespace: str = ""
    subsystem: str = ""

    def counter(self, name: str, doc: str, *labels: str) -> Counter:
        return Counter(name, doc, labels, **self._naming())

    def gauge(self, name: str, doc: str, *labels: str) -> Gauge:
        return Gauge(name, doc, labels, **self._naming())

    def histogram(self, name: str, doc: str, buckets: Sequence[float]) -> Histogram:
        return Histogram(name, doc, buckets=buckets, **self._naming())

    def _naming(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "subsystem": self.subsystem,
            "registry": self.registry,
        }


class Metrics:
    """Prometheus metrics of one daemon, in their own registry."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        make = MetricFactory(r)
        self._declare_polling(make)
        self._declare_intake_and_redis(make)
        self._declare_limits(make)
        self._declare_jobs(make)
        Info("poller_build", "The running version.", registry=r).info({"version": __version__})
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)

    def _declare_polling(self, make: MetricFactory) -> None:
        self.polls = make.counter("poller_polls_total", "Polls of a job, by outcome.", "outcome")
        self.poll_duration = make.histogram(
            "poller_poll_duration_seconds",
            "Time from claim to commit of one poll (all pages).",
            POLL_DURATION_BUCKETS,
        )
        self.poll_lag = make.histogram(
            "poller_poll_lag_seconds",
            "How late polls start after they fall due: the daemon's headroom signal.",
            POLL_LAG_BUCKETS,
        )
        self.api_responses = make.counter(
            "poller_api_responses_total",
            "ServiceStage API responses by HTTP status (or 'timeout'/'error').",
            "code",
        )
        self.events = make.counter(
            "poller_events_published_total", "Events published, by type.", "event"
        )
        self.commits = make.counter(
            "poller_commits_total",
            "Poll commits by result: ok, duplicate (retried after a lost reply), fenced "
            "(lease lost: nothing published), gone.",
            "result",
        )

    def _declare_intake_and_redis(self, make: MetricFactory) -> None:
        self.intake = make.counter(
            "poller_intake_messages_total",
            "Intake messages by result: admitted, tracked, finished, dead_letter.",
            "result",
        )
        self.leases_lost = make.counter(
            "poller_leases_lost_total", "Leases found taken over while polling."
        )
        self.redis_wait_short = make.counter(
            "poller_redis_wait_short_total",
            "Commit batches whose WAIT (POLLER_REDIS_WAIT_REPLICAS) timed out before enough "
            "Redis replicas had them: a failover now could lose those events.",
        )
        self.orphans_recovered = make.counter(
            "poller_intake_recovered_total", "Intake messages handed back from replicas that died."
        )
        self.token_refreshes = make.counter(
            "poller_token_refreshes_total", "Credential refreshes, by result.", "result"
        )
        self.redis_errors = make.counter(
            "poller_redis_errors_total", "Redis operations that failed, by operation.", "op"
        )

    def _declare_limits(self, make: MetricFactory) -> None:
        self.limit_trips = make.counter(
            "poller_limit_trips_total",
            "Pauses of every replica this replica began, by cause: throttled (a 429), "
            "unauthorized (a 401 under AK/SK).",
            "cause",
        )
        self.limit_held = make.counter(
            "poller_limit_held_total",
            "API requests this replica held back because every replica pauses, by cause.",
            "cause",
        )
        self.limit_pause = make.gauge(
            "poller_limit_pause_seconds",
            "Seconds left of the pause every replica keeps to, as this replica knows it.",
            "cause",
        )

    def _declare_jobs(self, make: MetricFactory) -> None:
        """Where the jobs are (in flight, tracked, due, queued, dead), how many ended, and how
        long they took."""
        self.inflight = make.gauge("poller_polls_in_flight", "Polls running in this replica.")
        self.tracked = make.gauge("poller_jobs_tracked", "Jobs being tracked (all replicas).")
        self.due = make.gauge("poller_jobs_due", "Jobs due for a poll now (all replicas).")
        self.queue = make.gauge(
            "poller_intake_queue_depth", "Messages waiting in the intake queue."
        )
        self.dead = make.gauge("poller_dead_letters", "Messages in the dead-letter list.")
        self.jobs_finished = make.counter(
            "poller_jobs_finished_total",
            "Jobs whose tracking this replica ended, by final status: the terminal job status "
            "(SUCCEEDED, FAILED, …) or abandoned:<reason> (abandoned:timeout, …).",
            "status",
        )
        self.job_duration = make.histogram(
            "poller_job_duration_seconds",
            "Time from a job's first sight (taken from the queue) to the end of its tracking.",
            JOB_DURATION_BUCKETS,
        )
        # Every final status from the start, so rate() and increase() see the first one too.
        for status in FINISHED_STATUSES:
            self.jobs_finished.labels(status)

    def finished(self, status: str, seconds: float | None = None) -> None:
        """Count one job whose tracking ended in ``status``; ``seconds`` since first sight."""
        self.jobs_finished.labels(status).inc()
        if seconds is not None and seconds >= 0:
            self.job_duration.observe(seconds)

    def job_finished(self, events: Sequence[Event], taken_at: float, now: float) -> None:
        """Record a committed plan that retired its job (``events`` are the plan's events,
        ``taken_at`` the job's first sight and ``now`` the commit time, both on one clock)."""
        status = final_status(events)
        if status is not None:
            self.finished(status, now - taken_at if taken_at > 0 else None)

    def render(self) -> bytes:
        return generate_latest(self.registry)


# The reasons a daemon retires a job with (``cancelled_by_operator`` is the ``poller cancel``
# command's, not the daemon's, so it never shows up in a daemon's metrics).
ABANDONED_REASONS: Final = (
    AbandonReason.NOT_FOUND,
    AbandonReason.REJECTED,
    AbandonReason.TIMEOUT,
    AbandonReason.CORRUPT_STATE,
)
FINISHED_STATUSES: Final = (
    *sorted(TERMINAL_JOB_STATUSES),
    *(f"abandoned:{reason}" for reason in ABANDONED_REASONS),
)
POLL_DURATION_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
POLL_LAG_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)
# From seconds to past the default job timeout (6 h).
JOB_DURATION_BUCKETS: Final = (
    1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 21600, 43200, 86400
)  # fmt: skip


def final_status(events: Sequence[Event]) -> str | None:
    """How a job ended according to the last of its final poll's events: the terminal job
    status, ``abandoned:<reason>``, or ``None`` when the last event does not end the job."""
    if not events:
        return None
    last = events[-1].as_dict()
    if last.get("event") == EventKind.JOB_ABANDONED:
        return f"abandoned:{last.get('reason') or 'unknown'}"
    if last.get("event") == EventKind.JOB_STATUS_CHANGED and last.get("terminal") == "true":
        return last.get("to_status") or None
    return None


# Liveness gives up on a stalled scheduler loop this many times later than readiness does.
LIVENESS_FACTOR: Final = 4.0


@dataclass
class Health:
    """Liveness and readiness facts, updated by the daemon's loops, read by the probes.

    Readiness (``/readyz``) fails when the scheduler loop has not ticked for ``stall_after``
    seconds; liveness (``/healthz``) only after ``live_after`` (by default
    ``LIVENESS_FACTOR`` times ``stall_after``), so a loop that is merely slow makes the replica
    unready, and one that is wedged gets the container restarted.
    """

    started: float = field(default_factory=time.monotonic)
    loop_tick: float = field(default_factory=time.monotonic)
    redis_ok: bool = False
    redis_error: str = "not checked yet"
    auth_problem: str = ""
    stall_after: float = 15.0
    live_after: float | None = None

    @classmethod
    def for_settings(cls, settings: Settings) -> Health:
        """A Health whose liveness also outlasts a graceful drain (the loop stops ticking
        while in-flight polls finish, for up to ``shutdown_grace``)."""
        health = cls()
        health.live_after = max(
            LIVENESS_FACTOR * health.stall_after, settings.shutdown_grace + health.stall_after
        )
        return health

    @property
    def liveness_limit(self) -> float:
        """Seconds without a tick after which the replica counts as wedged."""
        if self.live_after is not None:
            return self.live_after
        return LIVENESS_FACTOR * self.stall_after

    def tick(self) -> None:
        self.loop_tick = time.monotonic()

    def stalled_for(self) -> float:
        return time.monotonic() - self.loop_tick

    def problems(self) -> list[str]:
        """Why the replica is not ready; empty when it is."""
        out = []
        if not self.redis_ok:
            out.append(f"redis: {self.redis_error}")
        stalled = self.stalled_for()
        if stalled > self.stall_after:
            out.append(f"scheduler loop stalled for {stalled:.0f}s")
        if self.auth_problem:
            out.append(f"credentials: {self.auth_problem}")
        return out

    def wedged(self) -> str:
        """Why the process should be restarted (empty while it is alive)."""
        stalled = self.stalled_for()
        if stalled > self.liveness_limit:
            return (
                f"scheduler loop stuck for {stalled:.0f}s (liveness limit {self.liveness_limit:g}s)"
            )
        return ""


def health_app(metrics: Metrics, health: Health) -> web.Application:
    """``/healthz`` (liveness: the scheduler loop is not wedged), ``/readyz`` (readiness) and
    ``/metrics``; none of them touches Redis or the API."""

    async def healthz(_: web.Request) -> web.Response:
        problem = health.wedged()
        if problem:
            return web.json_response({"status": "wedged", "problems": [problem]}, status=503)
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        problems = health.problems()
        if problems:
            return web.json_response({"status": "unready", "problems": problems}, status=503)
        return web.json_response({"status": "ready"})

    async def metrics_view(_: web.Request) -> web.Response:
        resp = web.Response(body=metrics.render())
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_view)
    return app
