"""Shared fixtures: a private redis-server for the session, a unique key prefix per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from poller.localredis import LocalRedis as RedisServer
from poller.store import Keys, Store, connect


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the whole session; tests keep apart by key prefix, never flush."""
    server = RedisServer(persistent=False)
    server.start()
    yield server
    server.cleanup()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of this test's own, with an append-only file, free to kill and restart."""
    server = RedisServer(persistent=True)
    server.start()
    yield server
    server.cleanup()


@pytest.fixture
def prefix() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def store(redis_server: RedisServer, prefix: str) -> AsyncIterator[Store]:
    s = Store(connect(redis_server.url), Keys(prefix), retention=3600, maxlen=10_000)
    yield s
    await s.redis.aclose()
