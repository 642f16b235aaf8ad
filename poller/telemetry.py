"""Logs, metrics and health: how operators see the daemon.

Logs go to stderr (stdout is for command output): JSON lines when stderr is not a terminal,
a readable console otherwise.  A redaction processor replaces every configured secret value
wherever it would appear in a log line.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from poller.config import Secret, Settings

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


def configure_logging(settings: Settings, *, stream: Any = None) -> None:
    """Set up structlog for the process according to ``log_format`` and ``log_level``."""
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
        renderer = structlog.dev.ConsoleRenderer(colors=getattr(stream, "isatty", lambda: False)())
    level = getattr(logging, settings.log_level.upper())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            drop_empty,
            REDACTOR,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )


def get_logger(**bound: Any) -> Any:
    """A structlog logger with ``bound`` fields on every line."""
    return structlog.get_logger("poller").bind(**bound)


class Metrics:
    """Prometheus metrics of one daemon, in their own registry."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.polls = Counter(
            "poller_polls_total", "Polls of a job, by outcome.", ["outcome"], registry=r
        )
        self.poll_duration = Histogram(
            "poller_poll_duration_seconds",
            "Time from claim to commit of one poll (all pages).",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.poll_lag = Histogram(
            "poller_poll_lag_seconds",
            "How late polls start after they fall due: the daemon's headroom signal.",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
            registry=r,
        )
        self.api_responses = Counter(
            "poller_api_responses_total",
            "ServiceStage API responses by HTTP status (or 'timeout'/'error').",
            ["code"],
            registry=r,
        )
        self.events = Counter(
            "poller_events_published_total", "Events published, by type.", ["event"], registry=r
        )
        self.commits = Counter(
            "poller_commits_total",
            "Poll commits by result: ok, duplicate (retried after a lost reply), fenced "
            "(lease lost: nothing published), gone.",
            ["result"],
            registry=r,
        )
        self.intake = Counter(
            "poller_intake_messages_total",
            "Intake messages by result: admitted, tracked, finished, dead_letter.",
            ["result"],
            registry=r,
        )
        self.leases_lost = Counter(
            "poller_leases_lost_total", "Leases found taken over while polling.", registry=r
        )
        self.orphans_recovered = Counter(
            "poller_intake_recovered_total",
            "Intake messages handed back from replicas that died.",
            registry=r,
        )
        self.token_refreshes = Counter(
            "poller_token_refreshes_total",
            "Credential refreshes, by result.",
            ["result"],
            registry=r,
        )
        self.redis_errors = Counter(
            "poller_redis_errors_total",
            "Redis operations that failed, by operation.",
            ["op"],
            registry=r,
        )
        self.inflight = Gauge(
            "poller_polls_in_flight", "Polls running in this replica.", registry=r
        )
        self.tracked = Gauge(
            "poller_jobs_tracked", "Jobs being tracked (all replicas).", registry=r
        )
        self.due = Gauge("poller_jobs_due", "Jobs due for a poll now (all replicas).", registry=r)
        self.queue = Gauge(
            "poller_intake_queue_depth", "Messages waiting in the intake queue.", registry=r
        )
        self.dead = Gauge("poller_dead_letters", "Messages in the dead-letter list.", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)


@dataclass
class Health:
    """Liveness and readiness facts, updated by the daemon's loops, read by the probes."""

    started: float = field(default_factory=time.monotonic)
    loop_tick: float = field(default_factory=time.monotonic)
    redis_ok: bool = False
    redis_error: str = "not checked yet"
    auth_problem: str = ""
    stall_after: float = 15.0

    def tick(self) -> None:
        self.loop_tick = time.monotonic()

    def problems(self) -> list[str]:
        """Why the replica is not ready; empty when it is."""
        out = []
        if not self.redis_ok:
            out.append(f"redis: {self.redis_error}")
        stalled = time.monotonic() - self.loop_tick
        if stalled > self.stall_after:
            out.append(f"scheduler loop stalled for {stalled:.0f}s")
        if self.auth_problem:
            out.append(f"credentials: {self.auth_problem}")
        return out


def health_app(metrics: Metrics, health: Health) -> web.Application:
    """``/healthz``, ``/readyz`` and ``/metrics``; none of them touches Redis or the API."""

    async def healthz(_: web.Request) -> web.Response:
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
