"""Assembling a replica from settings: Redis, HTTP session, authenticator, worker, probes."""

from __future__ import annotations

import os
import signal
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import anyio
from aiohttp import web
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisError

from poller.config import Settings, replace, unknown_variables
from poller.errors import PollerError
from poller.limits import LimitPolicy
from poller.servicestage.auth import AuthHooks, build_authenticator
from poller.servicestage.client import ServiceStageClient
from poller.servicestage.proxy import env_proxy
from poller.shared_limits import SharedLimits
from poller.store import Keys, Store, connect
from poller.store.connection import RedisClient
from poller.telemetry import REDACTOR, Health, Metrics, bind_replica, get_logger, health_app
from poller.worker import Worker, default_replica_id


class StartupError(PollerError):
    """The daemon cannot start in this environment (e.g. its port is taken); one line."""

    label = "cannot start"


def open_store(settings: Settings) -> Store:
    """A :class:`Store` for the configured Redis and prefix (close ``store.redis`` after)."""
    return Store(
        connect(settings.redis_url),
        Keys(settings.key_prefix, settings.shards),
        retention=settings.retention,
        maxlen=settings.events_maxlen,
        seq_memory=settings.seq_memory,
        wait_replicas=settings.redis_wait_replicas,
        wait_timeout=settings.redis_wait_timeout,
    )


# Policies that may evict any key, a tracked job's state included: a lost job.
_EVICTING_POLICIES = ("allkeys-lru", "allkeys-lfu", "allkeys-random")


async def durability_warnings(redis: RedisClient) -> list[str]:
    """What in this Redis's configuration can lose jobs or events (empty when nothing).

    Read from ``INFO`` (and ``CONFIG GET save`` where allowed: managed services often forbid
    ``CONFIG``), so it works on any Redis the daemon can talk to.
    """
    if isinstance(redis, RedisCluster):  # every primary holds some of the keys
        cluster = redis
        found: list[str] = []
        for node in cluster.get_primaries():

            async def info(section: str, node: ClusterNode = node) -> Any:
                return await cluster.info(section, target_nodes=node)

            async def save(node: ClusterNode = node) -> Any:
                return await cluster.config_get("save", target_nodes=node)

            found += [w for w in await _node_warnings(info, save) if w not in found]
        return found
    return await _node_warnings(redis.info, lambda: redis.config_get("save"))


async def _node_warnings(
    info: Callable[[str], Awaitable[Any]], config_save: Callable[[], Awaitable[Any]]
) -> list[str]:
    warnings = []
    memory = await info("memory")
    policy = str(memory.get("maxmemory_policy", ""))
    if policy in _EVICTING_POLICIES:
        warnings.append(
            f"Redis maxmemory-policy is {policy}: under memory pressure it may evict a tracked "
            "job's state (a lost job); use noeviction or a volatile-* policy"
        )
    persistence = await info("persistence")
    if not int(persistence.get("aof_enabled", 0)):
        try:
            save = (await config_save()).get("save", "")
        except RedisError:
            save = "unknown"
        if not save:
            warnings.append(
                "Redis persistence is off (no AOF, no RDB snapshots): a Redis restart loses "
                "every tracked job and event; enable appendonly (appendfsync everysec or always)"
            )
    return warnings


def limit_policy(settings: Settings) -> LimitPolicy:
    """The pauses every replica keeps to, from the settings: a probe may take a whole request
    (its timeout) and a little more before another replica may probe instead."""
    return LimitPolicy(
        auth_pause=settings.auth_pause,
        auth_pause_max=settings.auth_pause_max,
        probe_lease=settings.request_timeout + 5.0,
    )


def _ssl_context(settings: Settings) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=settings.ca_bundle or None)


def _auth_problem_reporter(health: Health) -> Callable[[str], None]:
    """Log an authentication problem when it begins or changes and when it ends, and keep it
    for ``/readyz``."""
    log = get_logger()

    def auth_problem(problem: str) -> None:
        if problem and problem != health.auth_problem:
            log.error("authentication problem", problem=problem)
        elif not problem and health.auth_problem:
            log.info("authentication recovered")
        health.auth_problem = problem

    return auth_problem


def _wait_short_reporter(metrics: Metrics) -> Callable[[int, int], None]:
    """Count every commit batch a ``WAIT`` gave up on; say so in the log once a minute."""
    log = get_logger()
    last_warned = [-60.0]

    def wait_short(wanted: int, got: int) -> None:
        metrics.redis_wait_short.inc()
        if time.monotonic() - last_warned[0] >= 60.0:
            last_warned[0] = time.monotonic()
            log.warning("redis replicas behind; commits not yet on a replica",
                        wanted=wanted, acknowledged=got)  # fmt: skip

    return wait_short


@asynccontextmanager
async def build_worker(
    settings: Settings, *, metrics: Metrics | None = None, health: Health | None = None
) -> AsyncIterator[Worker[Store]]:
    """A ready :class:`Worker` for ``settings``; closes its connections on exit."""
    metrics = metrics or Metrics()
    health = health or Health()
    settings.require_polling()
    store = open_store(settings)
    connector = aiohttp.TCPConnector(limit=settings.concurrency, ssl=_ssl_context(settings))
    auth_problem = _auth_problem_reporter(health)
    try:
        async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:
            hooks = AuthHooks(
                secret=REDACTOR.add,
                problem=auth_problem,
                refreshed=lambda result: metrics.token_refreshes.labels(result).inc(),
            )
            auth = build_authenticator(settings, session, hooks=hooks)
            limits = SharedLimits(
                store,
                limit_policy(settings),
                rate=settings.rate_limit,
                metrics=metrics,
                owner=settings.replica_id,
            )
            client = ServiceStageClient(
                session,
                settings.base_url,
                auth,
                page_size=settings.page_size,
                request_timeout=settings.request_timeout,
                on_response=lambda code: metrics.api_responses.labels(code).inc(),
                on_auth_problem=auth_problem,
                proxy=env_proxy(settings.base_url),
                limits=limits,
            )
            worker = Worker(settings, store, client, metrics=metrics, health=health)
            store.on_wait_short = _wait_short_reporter(metrics)
            async with anyio.create_task_group() as tg:
                tg.start_soon(auth.maintain)
                tg.start_soon(limits.maintain)
                yield worker
                tg.cancel_scope.cancel()
    finally:
        await store.redis.aclose()


@asynccontextmanager
async def serve_probes(
    settings: Settings, metrics: Metrics, health: Health
) -> AsyncIterator[int | None]:
    """Serve ``/healthz``, ``/readyz``, ``/metrics`` on ``http_port`` (0: off); yields the port."""
    if not settings.http_port:
        yield None
        return
    runner = web.AppRunner(health_app(metrics, health), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.http_host, settings.http_port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise StartupError(
            f"POLLER_HTTP_PORT: cannot listen on {settings.http_host}:{settings.http_port}: "
            f"{exc.strerror or exc}"
        ) from None
    try:
        yield settings.http_port
    finally:
        await runner.cleanup()


def name_replica(settings: Settings) -> Settings:
    """``settings`` with this replica's name fixed (``POLLER_REPLICA_ID`` or a generated one),
    which from now on is on every log line of the process, the libraries' included."""
    settings = replace(settings, replica_id=settings.replica_id or default_replica_id())
    bind_replica(settings.replica_id)
    return settings


async def run_daemon(settings: Settings) -> int:
    """``poller run``: poll until SIGTERM/SIGINT, drain, exit 0."""
    settings = name_replica(settings)  # a no-op when the caller named it already
    log = get_logger()
    metrics, health = Metrics(), Health.for_settings(settings)
    for name in unknown_variables(os.environ):
        log.warning("unknown setting ignored", variable=name)
    async with (
        serve_probes(settings, metrics, health) as port,
        build_worker(settings, metrics=metrics, health=health) as worker,
        anyio.create_task_group() as tg,
    ):
        log.info(
            "poller starting",
            replica=worker.replica_id,
            api=settings.base_url,
            prefix=settings.key_prefix,
            http_port=port,
        )
        try:
            for warning in await durability_warnings(worker.store.redis):
                log.warning("redis may lose jobs", problem=warning)
        except RedisError as exc:  # not reachable yet: the worker waits for it and says so
            log.info("redis configuration not checked", error=str(exc))

        async def stop_on_signal() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for signum in signals:
                    log.info("signal received", signal=signal.Signals(signum).name)
                    worker.stop()

        tg.start_soon(stop_on_signal)
        await worker.run()
        tg.cancel_scope.cancel()
    return 0
