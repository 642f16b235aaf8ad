"""``poller web``: a status page and an HTTP API over the poller's Redis state.

Its own process (any number of them); it only reads, except ``POST /api/jobs``, which queues a
message exactly as a producer would.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any, Final

from aiohttp import web

from poller.config import ConfigError, Settings, load_settings
from poller.daemon import open_store
from poller.telemetry import configure_logging, get_logger
from poller.web.app import WebLimits, build_app

__all__ = ["WebLimits", "build_app", "register", "serve"]

log = get_logger(component="web")

#: What ``poller web --help`` opens with.
DESCRIPTION: Final = (
    "Serve a live status page (GET /) and an HTTP API: job state (GET /api/jobs/ID), "
    "Server-Sent Events (GET /api/jobs/ID/events, GET /api/events) and enqueueing "
    "(POST /api/jobs).  Bearer tokens come from POLLER_WEB_TOKENS_FILE (one per line, re-read "
    "when it changes); POLLER_WEB_PUBLIC_READ=true lets anyone read."
)


async def serve(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Serve until ``stop`` is set (or SIGTERM/SIGINT when none is given)."""
    store = open_store(settings)
    app = build_app(settings, store)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.web_host, settings.web_port)
        await site.start()
        port = runner.addresses[0][1] if runner.addresses else settings.web_port
        log.info("web_listening", host=settings.web_host, port=port)
        if stop is None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()
        await store.redis.aclose()


def cmd_web(args: argparse.Namespace) -> int:
    settings = load_settings(config_file=getattr(args, "config", None))
    if args.host is not None or args.port is not None:
        from poller.config import replace

        settings = replace(
            settings,
            web_host=args.host if args.host is not None else settings.web_host,
            web_port=args.port if args.port is not None else settings.web_port,
        )
    if not settings.web_tokens_file and not settings.web_public_read:
        raise ConfigError(
            "POLLER_WEB_TOKENS_FILE: not set, so nobody could read or queue anything; set it "
            "(one bearer token per line) or POLLER_WEB_PUBLIC_READ=true"
        )
    configure_logging(settings)
    asyncio.run(serve(settings))
    return 0


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``web`` subcommand (``common``: the options every command shares)."""
    p = subparsers.add_parser(
        "web",
        parents=[common],
        help="serve the status page and the HTTP API",
        description=DESCRIPTION,
    )
    p.add_argument("--host", help="address to listen on (default: POLLER_WEB_HOST, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: POLLER_WEB_PORT, 9465; 0: any)")
    p.set_defaults(func=cmd_web)
