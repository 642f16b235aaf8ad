"""Redis URLs and the clients behind them: one node, Redis Cluster or Sentinel.

=========================================================================  ==================
URL                                                                        client
=========================================================================  ==================
``redis://[[user]:password@]host:port/db``, ``rediss://…``, ``unix://…``    one node
``redis+cluster://[[user]:password@]host:port[,host:port…]``                Redis Cluster
``rediss+cluster://…``                                                      the same over TLS
``redis+sentinel://[[user]:password@]host:port[,host:port…]/service[/db]``  Sentinel
``rediss+sentinel://…``                                                     the same, TLS to
                                                                           the data nodes
=========================================================================  ==================

Cluster seed nodes may be any nodes of the cluster (a replica too): the client learns the
slot map from the first that answers and follows ``MOVED``/failovers from then on; a cluster
has no database index.  A Sentinel URL names the sentinels and the monitored service; the
password (if any) is the data nodes' (sentinels are asked without one), and the client asks
the sentinels for the current primary again whenever a connection to it fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, TypeAlias
from urllib.parse import unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

#: Either client; both speak the same commands (a cluster routes each by its keys' slot).
RedisClient: TypeAlias = Redis | RedisCluster

SINGLE_SCHEMES: Final = ("redis", "rediss", "unix")
CLUSTER_SCHEMES: Final = ("redis+cluster", "rediss+cluster")
SENTINEL_SCHEMES: Final = ("redis+sentinel", "rediss+sentinel")


class BadRedisUrl(ValueError):
    """A Redis URL that names no usable topology; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """A parsed Redis URL: the topology, where to reach it, and how to log in."""

    kind: str  # "single", "cluster" or "sentinel"
    url: str
    hosts: tuple[tuple[str, int], ...] = ()
    service: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False

    @property
    def is_cluster(self) -> bool:
        return self.kind == "cluster"


def _hosts(netloc: str, default_port: int) -> tuple[tuple[str, int], ...]:
    hosts = []
    for part in netloc.split(","):
        part = part.strip()
        if not part:
            raise BadRedisUrl("an empty host in the host list")
        if part.startswith("["):  # [::1]:6379
            host, _, rest = part[1:].partition("]")
            port_text = rest[1:] if rest.startswith(":") else ""
        else:
            host, _, port_text = part.rpartition(":") if ":" in part else (part, "", "")
        if not host:
            raise BadRedisUrl(f"no host in {part!r}")
        try:
            port = int(port_text) if port_text else default_port
        except ValueError:
            raise BadRedisUrl(f"not a port number in {part!r}") from None
        if not 0 < port < 65536:
            raise BadRedisUrl(f"port out of range in {part!r}")
        hosts.append((host, port))
    return tuple(hosts)


def parse_redis_url(url: str) -> RedisTarget:
    """Parse ``url`` (see the module's table); raises :class:`BadRedisUrl` saying why not."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise BadRedisUrl("expected scheme://…")
    if scheme in SINGLE_SCHEMES:
        parts = urlsplit(url)
        if not (parts.netloc or parts.path):
            raise BadRedisUrl("no host or socket path")
        return RedisTarget("single", url)
    if scheme not in CLUSTER_SCHEMES + SENTINEL_SCHEMES:
        raise BadRedisUrl(
            f"unknown scheme {scheme}://; expected redis://, rediss://, unix://, "
            "redis+cluster://, rediss+cluster:// or redis+sentinel://"
        )
    location, _, path = rest.partition("/")
    path, _, _query = path.partition("?")
    userinfo, at, netloc = location.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    tls = scheme.startswith("rediss")
    if scheme in CLUSTER_SCHEMES:
        if path.strip("/"):
            raise BadRedisUrl("a cluster URL has no database index or path")
        return RedisTarget("cluster", url, _hosts(netloc, 6379), username=username,
                           password=password, tls=tls)  # fmt: skip
    segments = [s for s in path.split("/") if s]
    if not segments or len(segments) > 2:
        raise BadRedisUrl("expected redis+sentinel://host:port[,host:port…]/service_name[/db]")
    db = 0
    if len(segments) == 2:
        if not segments[1].isdigit():
            raise BadRedisUrl(f"not a database index: {segments[1]!r}")
        db = int(segments[1])
    return RedisTarget("sentinel", url, _hosts(netloc, 26379), service=unquote(segments[0]),
                       db=db, username=username, password=password, tls=tls)  # fmt: skip


def _common(socket_timeout: float) -> dict[str, Any]:
    return {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_timeout,
        "health_check_interval": 15,
        "retry": Retry(ExponentialBackoff(cap=1.0, base=0.05), 3),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
    }


def connect(url: str, *, socket_timeout: float = 5.0) -> RedisClient:
    """A client for ``url`` that retries a command a few times when a connection drops.

    Every write the poller makes is safe to retry: commits carry a unique ID, admissions and
    claims are checked against the state they change.
    """
    target = parse_redis_url(url)
    if target.kind == "single":
        return Redis.from_url(url, **_common(socket_timeout))
    if target.kind == "cluster":
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in target.hosts],
            username=target.username,
            password=target.password,
            ssl=target.tls,
            **_common(socket_timeout),
        )
    timeouts = {"socket_timeout": socket_timeout, "socket_connect_timeout": socket_timeout}
    # Any: redis-py types Sentinel's constructor in some releases and not in others
    make_sentinel: Any = Sentinel
    sentinel = make_sentinel(
        list(target.hosts), sentinel_kwargs=timeouts, **_common(socket_timeout)
    )
    client: Redis = sentinel.master_for(
        target.service,
        db=target.db,
        username=target.username,
        password=target.password,
        ssl=target.tls,
    )
    return client
