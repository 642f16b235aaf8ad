"""The ``poller forward`` subcommand."""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import anyio
from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from poller.argtypes import at_least_one, positive_seconds
from poller.config import ConfigError, Settings, load_settings
from poller.consumer import stream_id_since
from poller.forward.forwarder import Forwarder, ForwardMetrics, ForwardOptions, Retries, public_url
from poller.forward.signing import SECRET_PREFIX, WebhookSecret
from poller.store import Keys, connect
from poller.telemetry import REDACTOR, bind_replica, configure_logging, get_logger

#: What ``poller forward --help`` opens with.
DESCRIPTION: Final = (
    "Deliver every event of {prefix}:events (every shard's with POLLER_SHARDS: the group on "
    "each) to --webhook as a Standard Webhooks 1.0 POST (webhook-id {job_id}:{seq}, the same "
    "on every retry; webhook-timestamp; webhook-signature v1, HMAC-SHA256 with the whsec_ "
    "secret from --secret-file), through a consumer group: any number of forwarders share the "
    "work, at least once, each job's events in order.  Non-2xx answers, timeouts and "
    "connection errors are retried with backoff (Retry-After honoured) up to --max-attempts, "
    "then the event is parked in {prefix}:forward:dead.  A forwarder that dies leaves its "
    "deliveries pending; the others take them over after --claim-idle seconds."
)


def _port(text: str) -> int:
    if not text.strip().isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}")
    return int(text)


def default_consumer() -> str:
    """A consumer name unique to this process: host, PID and a random suffix."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def read_secret(path: str) -> WebhookSecret:
    """The ``whsec_<base64>`` secret in ``path``, registered for redaction before anything
    can log it; errors name the file, never its content."""
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--secret-file {path}: cannot read it ({type(exc).__name__})") from None
    REDACTOR.add(text)
    REDACTOR.add(text.removeprefix(SECRET_PREFIX))
    try:
        return WebhookSecret.parse(text)
    except ValueError as exc:
        raise ConfigError(f"--secret-file {path}: {exc}") from None


def options_from(args: argparse.Namespace) -> ForwardOptions:
    url = urlsplit(args.webhook)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ConfigError(f"--webhook {public_url(args.webhook)!r}: expected an http(s) URL")
    if url.password:
        REDACTOR.add(url.password)
    try:
        start = stream_id_since(args.since)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return ForwardOptions(
        webhook=args.webhook,
        secret=read_secret(args.secret_file),
        group=args.group,
        consumer=args.consumer or default_consumer(),
        start=start,
        concurrency=args.concurrency,
        prefetch=args.prefetch or 0,
        timeout=args.timeout,
        retries=Retries(
            args.max_attempts, args.backoff_initial, args.backoff_max, args.retry_after_max
        ),
        claim_idle=args.claim_idle,
        claim_interval=args.claim_interval,
        events=frozenset(args.event),
        terminal_only=args.terminal_only,
        job_types=frozenset(args.job_type),
    )


@asynccontextmanager
async def _metrics_server(metrics: ForwardMetrics, host: str, port: int) -> AsyncIterator[None]:
    if not port:
        yield None
        return

    async def view(_: web.Request) -> web.Response:
        resp = web.Response(body=metrics.render())
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/metrics", view)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(f"--http-port {port}: {exc.strerror or exc}") from None
    try:
        yield None
    finally:
        await runner.cleanup()


async def run_forward(settings: Settings, options: ForwardOptions, http_port: int) -> int:
    """Forward until SIGTERM/SIGINT; what is held unacknowledged stays pending for the group."""
    log = get_logger(component="forward")
    redis = connect(settings.redis_url)
    metrics = ForwardMetrics()
    try:
        async with (
            _metrics_server(metrics, settings.http_host, http_port),
            anyio.create_task_group() as tg,
        ):

            async def stop_on_signal() -> None:
                with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for signum in signals:
                        log.info("signal received", signal=signal.Signals(signum).name)
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(stop_on_signal)
            forwarder = Forwarder(
                redis, Keys(settings.key_prefix, settings.shards), options, metrics=metrics
            )
            await tg.start(forwarder.run)
    finally:
        await redis.aclose()
    return 0


def cmd_forward(args: argparse.Namespace) -> int:
    settings = load_settings(config_file=getattr(args, "config", None))
    configure_logging(settings)
    options = options_from(args)
    bind_replica(options.consumer)
    return anyio.run(run_forward, settings, options, args.http_port)


def _add_route_options(p: argparse.ArgumentParser) -> None:
    """Where events come from and go to: the webhook, its secret, the consumer group."""
    p.add_argument("--webhook", required=True, metavar="URL", help="where to POST events")
    p.add_argument(
        "--secret-file", required=True, metavar="FILE",
        help="file holding the signing secret, whsec_<base64> (never logged)",
    )  # fmt: skip
    p.add_argument("--group", default="forward", help="consumer group name (default: forward)")
    p.add_argument("--consumer", help="consumer name, unique per process (default: generated)")
    p.add_argument(
        "--since", default="$", metavar="ID|TIME",
        help="where a group created now starts: '$' new events only (default), '0' the "
        "whole stream, a stream ID, epoch seconds or an RFC 3339 time",
    )  # fmt: skip


def _add_delivery_options(p: argparse.ArgumentParser) -> None:
    """How deliveries are paced, retried and taken over from forwarders that died."""
    p.add_argument("--max-attempts", type=at_least_one, default=8, help="attempts per event (8)")
    p.add_argument("--concurrency", type=at_least_one, default=16, help="requests at once (16)")
    p.add_argument(
        "--prefetch", type=at_least_one, help="new events held at once (default: 4 x concurrency)"
    )
    p.add_argument(
        "--timeout", type=positive_seconds, default=10.0, help="seconds per attempt (10)"
    )
    p.add_argument(
        "--backoff-initial", type=positive_seconds, default=1.0, help="first retry ceiling"
    )
    p.add_argument(
        "--backoff-max", type=positive_seconds, default=60.0, help="retry delay cap (60)"
    )
    p.add_argument(
        "--retry-after-max", type=positive_seconds, default=600.0,
        help="longest Retry-After honoured, seconds (600)",
    )  # fmt: skip
    p.add_argument(
        "--claim-idle", type=positive_seconds, default=30.0,
        help="take over another forwarder's delivery pending this long, seconds (30)",
    )  # fmt: skip
    p.add_argument(
        "--claim-interval", type=positive_seconds, default=10.0,
        help="how often to look for such deliveries, seconds (10)",
    )  # fmt: skip


def _add_filter_options(p: argparse.ArgumentParser) -> None:
    """Which events are delivered at all."""
    p.add_argument(
        "--event", action="append", default=[], metavar="KIND",
        help="deliver only this event kind (repeatable), e.g. job.status_changed",
    )  # fmt: skip
    p.add_argument(
        "--terminal-only", action="store_true",
        help="deliver only each job's final event (terminal status, or job.abandoned)",
    )  # fmt: skip
    p.add_argument(
        "--job-type", action="append", default=[], metavar="T",
        help="deliver only events whose job_type is T (job status events; repeatable)",
    )  # fmt: skip


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``forward`` subcommand (``common``: the options every command shares)."""
    p = subparsers.add_parser(
        "forward", parents=[common], help="deliver events to a webhook (Standard Webhooks, signed)",
        description=DESCRIPTION,
    )  # fmt: skip
    _add_route_options(p)
    _add_delivery_options(p)
    _add_filter_options(p)
    p.add_argument(
        "--http-port", type=_port, default=0,
        help="serve /metrics and /healthz on this port (default: off)",
    )  # fmt: skip
    p.set_defaults(func=cmd_forward)
