"""Polls per CPU-second of the daemon against a bare HTTP loop and the official SDK.

One run, one emulator, the same jobs for every contender, one contender at a time:

- the emulator (``python -m poller sim``, its CPU not counted) with ``--jobs`` jobs created
  through its admin API (``POST /_sim/jobs``): each one page of three tasks whose statuses
  never change, RUNNING for a day, so every poll sees the same answer; it accepts a token
  and an AK/SK pair;
- ``floor``: a bare aiohttp loop in a subprocess (``bench/compare.py --role floor``): GET and
  ``json.loads`` of every job's URL round-robin, ``--concurrency`` in flight, token header,
  nothing else: the least CPU a poll can cost in Python;
- ``daemon-token``: ``python -m poller run`` (one replica) with ``POLLER_AUTH_TOKEN``, against
  a private redis-server (:class:`poller.localredis.LocalRedis`, a fresh one per daemon
  contender), the jobs queued on its intake, ``POLLER_POLL_INTERVAL`` =
  ``POLLER_POLL_INTERVAL_MAX`` = 0.001 s (every job always due: CPU-bound) and
  ``POLLER_CONCURRENCY`` = ``--concurrency``;
- ``daemon-aksk``: the same, signing every request with ``POLLER_ACCESS_KEY``/``_SECRET_KEY``;
- ``sdk``: ``huaweicloudsdkservicestage`` (``ServiceStageClient.show_job_info`` with
  ``BasicCredentials(ak, sk, project_id)``, the endpoint set to the emulator's ``http://`` URL,
  a connection pool as large as the thread pool) in ``--concurrency`` threads of one
  subprocess (``--role sdk``).  Skipped, with a line saying so, when the package is missing:
  ``pip install --group bench``.

Each contender runs until the emulator has answered a request for every job (for a daemon:
every job admitted from its intake and polled once, so its first-sight events are behind it),
then ``--warmup`` seconds, then a measured window of ``--seconds``: the window sees the steady
state, polls of jobs that did not change.  What is measured over that window:

- **polls**: the emulator's own count of 200 answers (``GET /_sim/stats``, ``by_status``,
  diffed), the same yardstick for every contender; any other answer is an error and shown.
  Every job is one page, so one poll is one request.  For the daemons the daemon's own
  ``poller_polls_total`` (its ``/metrics``) is kept in the JSON as a cross-check;
- **CPU**: user + system time of the contender's process and of its descendants (live ones
  from ``/proc/PID/stat`` utime+stime, reaped ones through cutime+cstime), all threads;
- **RSS**: ``VmRSS`` of the contender's process tree at the end of the window.

For the daemons, from their private redis-server (nothing else talks to it but this script,
whose only in-window commands are ``INFO``, left out of the counts):

- **Redis commands per poll**: the sum of ``calls`` over ``INFO commandstats``, diffed.  Redis
  counts the commands a Lua script runs (``redis.call``) under their own names as well as the
  ``EVALSHA`` itself, so this is the work Redis did, not what crossed the network;
- **Redis round trips per poll**: the TCP data segments the daemon's process sent to the
  Redis port (``ss -tinp``, ``data_segs_out`` of each of its sockets to that port, diffed;
  sockets opened during the window count from 0).  redis-py writes a command, a whole
  ``EVALSHA`` with its arguments, or a whole pipeline, with one ``send`` (``TCP_NODELAY``) and
  waits for the answer, and on loopback one send of less than the MSS (32-64 KiB) is one
  segment: so this counts requests, a pipeline as one.  A request larger than the MSS would
  count more than once (the daemon's are a few KiB).  Unlike ``total_commands_processed`` or
  commandstats it does not count the commands scripts run inside Redis, and unlike counting
  ``cmdstat_evalsha`` plus "direct" commands it needs no list of which command names the
  daemon sends itself (scripts call the same names);
- **Redis CPU per poll**: ``used_cpu_user + used_cpu_sys`` of ``INFO cpu``, diffed, in ms.

With two CPUs or more the emulator and redis-server are pinned to CPU 0 and the contender to
CPU 1 (``--no-pin`` to leave scheduling alone), so the contender has a core of its own.

    .venv/bin/python bench/compare.py                       # 600 jobs, 32 in flight, 3 + 10 s each
    .venv/bin/python bench/compare.py --only floor,daemon-token --seconds 5 --json /tmp/cmp.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import importlib.util
import itertools
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Final
from urllib.parse import urlsplit

import redis
from daemon_throughput import scrape, total

from poller.localredis import LocalRedis, RedisUnavailable, free_port

PROJECT: Final = "bench-project"
TOKEN: Final = "compare-token-0123456789"  # noqa: S105 (the emulator's, local)
ACCESS_KEY: Final = "AKCOMPAREBENCH000001"
SECRET_KEY: Final = "compare-secret-key-0123456789"  # noqa: S105 (the emulator's, local)
CONTENDERS: Final = ("floor", "daemon-token", "daemon-aksk", "sdk")
SDK_PACKAGE: Final = "huaweicloudsdkservicestage"
PREFIX: Final = "compare"
INTAKE: Final = f"{PREFIX}:jobs"
DEAD_LETTERS: Final = f"{PREFIX}:jobs:dead"
PAGE_QUERY: Final = "limit=100&offset=0"  # what the daemon asks (POLLER_PAGE_SIZE 100)
TICK: Final = os.sysconf("SC_CLK_TCK")
ROOT: Final = Path(__file__).resolve().parents[1]


class BenchError(RuntimeError):
    """The run cannot go on (a process died, the emulator did not answer); one line."""


# --- the jobs ------------------------------------------------------------------------------


def job_ids(count: int) -> list[str]:
    return [f"JOB-compare-{n:05d}" for n in range(count)]


def job_spec(job_id: str) -> dict[str, object]:
    """One page of three tasks; nothing changes for a day, and the job is never terminal."""
    return {
        "job_id": job_id,
        "project_id": PROJECT,
        "job_type": "PROVISION",
        "job_status": [[0, "RUNNING"], [86400, "SUCCEEDED"]],
        "tasks": [
            {"task_index": 1, "task_name": "prepare", "steps": [[0, "SUCCEEDED"]]},
            {"task_index": 2, "task_name": "deploy", "steps": [[0, "RUNNING"]]},
            {"task_index": 3, "task_name": "verify", "steps": [[0, "SUBMITTED"]]},
        ],
    }


def job_url(api: str, job_id: str) -> str:
    return f"{api}/v3/{PROJECT}/cas/jobs/{job_id}?{PAGE_QUERY}"


# --- processes -----------------------------------------------------------------------------


def pin(pid: int, cpu: int, enabled: bool) -> None:
    """Pin ``pid`` to one CPU where the platform allows it (Linux with 2+ CPUs)."""
    if enabled and hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        with contextlib.suppress(OSError):  # the process may be gone already
            os.sched_setaffinity(pid, {cpu})


def _proc_stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def descendants(pid: int) -> list[int]:
    """``pid`` and every live process below it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _proc_stat(int(entry.name))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` (all threads), its live descendants and reaped children."""
    ticks = 0
    for member in descendants(pid):
        fields = _proc_stat(member)
        if fields is not None:  # utime stime cutime cstime (fields 14-17 of proc(5))
            ticks += sum(int(v) for v in fields[11:15])
    return ticks / TICK


def thread_cpu_waits(pid: int) -> dict[int, float]:
    """Seconds each thread of ``pid`` and its live descendants spent runnable but waiting for
    a CPU (``/proc/PID/task/TID/schedstat``, second field): what other load took from it."""
    waits: dict[int, float] = {}
    for member in descendants(pid):
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{member}/task").iterdir():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    waits[int(task.name)] = int((task / "schedstat").read_text().split()[1]) / 1e9
    return waits


def tree_rss_mib(pid: int) -> float:
    kib = 0
    for member in descendants(pid):
        with contextlib.suppress(OSError):
            found = re.search(
                r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{member}/status").read_text(), re.M
            )
            kib += int(found[1]) if found else 0
    return kib / 1024


def stop(proc: subprocess.Popen[Any], grace: float = 30.0) -> None:
    """SIGTERM to the PID, SIGKILL to the PID if it is still there after ``grace``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def log_tail(path: Path, lines: int = 8, width: int = 400) -> str:
    try:
        tail = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return "\n".join(line if len(line) <= width else line[:width] + " ..." for line in tail)


# --- the emulator --------------------------------------------------------------------------


class Emulator:
    """``python -m poller.sim --port 0 OPTIONS`` in a subprocess, its stderr in ``log`` and pinned
    to CPU 0; the admin API over one kept-alive connection. ``start_within``: seconds it may take
    to serve (loading a large scenario takes a while); ``timeout``: for each admin request."""

    def __init__(
        self,
        log: Path,
        options: Sequence[str],
        *,
        pin_cpu: bool,
        start_within: float = 30.0,
        timeout: float = 30.0,
    ) -> None:
        self.log = log
        self._log_file = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "poller.sim", "--port", "0", *options],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=self._log_file,
        )  # fmt: skip
        pin(self.proc.pid, 0, pin_cpu)
        deadline = time.monotonic() + start_within
        while (found := re.search(r"serving (http://\S+)", log_tail(self.log, 5))) is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise BenchError(f"the emulator did not start:\n{log_tail(self.log)}")
            time.sleep(0.05)
        self.url: str = found[1]
        parts = urlsplit(self.url)
        self._conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)

    def admin(self, method: str, path: str, body: object = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        for attempt in (1, 2):
            try:
                self._conn.request(method, path, body=data,
                                   headers={"Content-Type": "application/json"})  # fmt: skip
                response = self._conn.getresponse()
                payload = response.read()
                break
            except ConnectionError:  # a kept-alive connection the server closed: once more
                # (not on a timeout: a POST that timed out may have been done, and would be twice)
                self._conn.close()
                if attempt == 2 or self.proc.poll() is not None:
                    raise
            except (OSError, http.client.HTTPException):
                self._conn.close()
                raise
        if response.status >= 300:
            raise BenchError(f"emulator {method} {path}: {response.status} {payload[:300]!r}")
        return json.loads(payload)

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = self.admin("GET", "/_sim/stats")
        return stats

    def alive(self) -> None:
        if self.proc.poll() is not None:
            raise BenchError(f"the emulator exited ({self.proc.returncode}):\n{log_tail(self.log)}")

    def close(self) -> None:
        with contextlib.suppress(AttributeError):  # no connection yet: it did not start
            self._conn.close()
        stop(self.proc)
        self._log_file.close()


# --- one contender --------------------------------------------------------------------------


@dataclass(slots=True)
class RedisSample:
    calls: dict[str, int]
    cpu: float
    segments: dict[str, int] | None


@dataclass(slots=True)
class Sample:
    at: float
    ok: int
    requests: int
    signature_failures: int
    cpu: float
    cpu_waits: dict[int, float]
    emulator_cpu: float
    redis: RedisSample | None = None


@dataclass(slots=True)
class Result:
    contender: str
    seconds: float = 0.0
    polls: int = 0
    errors: int = 0
    cpu_seconds: float = 0.0
    cpu_share: float = 0.0  # of one core, over the window
    cpu_wait_share: float = 0.0  # its most delayed thread: runnable but waiting for a CPU
    polls_per_s: float = 0.0
    polls_per_cpu_s: float = 0.0
    cpu_ms_per_poll: float = 0.0
    rss_mib: float = 0.0
    emulator_cpu_share: float = 0.0  # of one core, over the window
    redis_commands_per_poll: float | None = None
    redis_round_trips_per_poll: float | None = None
    redis_cpu_ms_per_poll: float | None = None
    redis_evalsha_per_poll: float | None = None
    redis_commands: dict[str, int] = field(default_factory=dict)
    daemon_polls: float | None = None  # the daemon's own poller_polls_total over the window
    vs_floor: float | None = None
    vs_sdk: float | None = None
    skipped: str = ""


def redis_segments(port: int, pid: int) -> dict[str, int] | None:
    """``data_segs_out`` of each TCP socket that ``pid`` has open to 127.0.0.1:``port``
    (``None`` without ``ss``)."""
    if shutil.which("ss") is None:
        return None
    out = subprocess.run(
        ["ss", "-tinpH", "state", "established", f"( dport = :{port} )"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    segments: dict[str, int] = {}
    # Each socket is a line of addresses and users:(...) then an indented line of TCP info.
    for head, info in re.findall(r"^(\S.*)\n\s+(.*)$", out, re.M):
        if f"pid={pid}," not in head:
            continue
        sent = re.search(r"\bdata_segs_out:(\d+)", info)
        segments[head.split()[2]] = int(sent[1]) if sent else 0  # key: the local address
    return segments


def redis_sample(client: redis.Redis, port: int, pid: int) -> RedisSample:
    stats = client.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}
    cpu = client.info("cpu")
    return RedisSample(
        calls=calls,
        cpu=float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
        segments=redis_segments(port, pid),
    )


class Measured:
    """Everything needed to sample one running contender."""

    def __init__(
        self,
        proc: subprocess.Popen[Any],
        emulator: Emulator,
        *,
        log: Path,
        redis_server: LocalRedis | None = None,
        metrics_port: int | None = None,
    ) -> None:
        self.proc, self.emulator, self.log = proc, emulator, log
        self.redis_server, self.metrics_port = redis_server, metrics_port
        self.redis = redis.Redis.from_url(redis_server.url) if redis_server else None

    def alive(self) -> None:
        if self.proc.poll() is not None:
            raise BenchError(f"exited with code {self.proc.returncode}:\n{log_tail(self.log)}")
        if self.redis is not None and (dead := self.redis.lrange(DEAD_LETTERS, 0, 0)):
            raise BenchError(
                f"the daemon dead-lettered intake messages, e.g. {dead[0][:300]!r}:\n"
                f"{log_tail(self.log)}"
            )

    def sample(self) -> Sample:
        stats = self.emulator.stats()
        now = time.monotonic()
        sample = Sample(
            at=now,
            ok=int(stats["by_status"].get("200", 0)),
            requests=int(stats["requests"]),
            signature_failures=int(stats.get("by_aksk", {}).get("signature_failure", 0)),
            cpu=tree_cpu_seconds(self.proc.pid),
            cpu_waits=thread_cpu_waits(self.proc.pid),
            emulator_cpu=tree_cpu_seconds(self.emulator.proc.pid),
        )
        if self.redis is not None and self.redis_server is not None:
            sample.redis = redis_sample(self.redis, self.redis_server.port, self.proc.pid)
        return sample

    def polls_total(self) -> float | None:
        if self.metrics_port is None:
            return None
        try:
            return total(scrape(self.metrics_port), "poller_polls_total")
        except OSError:
            return None

    def run(
        self, name: str, args: argparse.Namespace, ids: list[str], baseline: dict[str, int]
    ) -> Result:
        """Wait until the emulator has answered a request for each of ``ids`` since
        ``baseline`` (its ``by_job`` before the contender started), warm up, measure."""
        deadline = time.monotonic() + 120
        while True:
            by_job = self.emulator.stats()["by_job"]
            if all(by_job.get(job, 0) > baseline.get(job, 0) for job in ids):
                break
            self.alive()
            if time.monotonic() > deadline:
                raise BenchError(f"did not poll every job within 120 s:\n{log_tail(self.log)}")
            time.sleep(0.05)
        time.sleep(args.warmup)
        self.alive()
        polls_before = self.polls_total()  # scraping costs the daemon CPU: outside the window
        before = self.sample()
        time.sleep(args.seconds)
        after = self.sample()
        result = Result(contender=name, rss_mib=round(tree_rss_mib(self.proc.pid), 1))
        polls_after = self.polls_total()
        self.alive()
        if polls_before is not None and polls_after is not None:
            result.daemon_polls = polls_after - polls_before
        fill(result, before, after)
        return result

    def close(self) -> None:
        stop(self.proc)
        if self.redis is not None:
            self.redis.close()


def fill(result: Result, before: Sample, after: Sample) -> None:
    result.seconds = after.at - before.at
    result.polls = after.ok - before.ok
    result.errors = (after.requests - before.requests) - result.polls
    result.errors += after.signature_failures - before.signature_failures
    result.cpu_seconds = after.cpu - before.cpu
    result.cpu_share = result.cpu_seconds / result.seconds
    waits = [n - before.cpu_waits.get(tid, 0.0) for tid, n in after.cpu_waits.items()]
    result.cpu_wait_share = max(waits, default=0.0) / result.seconds
    result.polls_per_s = result.polls / result.seconds
    result.polls_per_cpu_s = result.polls / result.cpu_seconds if result.cpu_seconds else 0.0
    result.cpu_ms_per_poll = 1000 * result.cpu_seconds / result.polls if result.polls else 0.0
    result.emulator_cpu_share = (after.emulator_cpu - before.emulator_cpu) / result.seconds
    if before.redis is None or after.redis is None or not result.polls:
        return
    a, b = after.redis, before.redis
    calls = {
        name: n - b.calls.get(name, 0)
        for name, n in a.calls.items()
        if name != "info" and n - b.calls.get(name, 0)
    }
    result.redis_commands = dict(sorted(calls.items(), key=lambda kv: -kv[1]))
    result.redis_commands_per_poll = sum(calls.values()) / result.polls
    result.redis_evalsha_per_poll = (calls.get("evalsha", 0) + calls.get("eval", 0)) / result.polls
    if a.segments is not None and b.segments is not None:
        sent = sum(n - b.segments.get(sock, 0) for sock, n in a.segments.items())
        result.redis_round_trips_per_poll = sent / result.polls
    result.redis_cpu_ms_per_poll = 1000 * (a.cpu - b.cpu) / result.polls


# --- the contenders ---------------------------------------------------------------------------


def role_command(role: str, api: str, jobs_file: Path, concurrency: int) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--role", role, "--api", api,
            "--jobs-file", str(jobs_file), "--concurrency", str(concurrency)]  # fmt: skip


def daemon_env(
    redis_url: str, api: str, auth: dict[str, str], args: argparse.Namespace, metrics_port: int
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLLER_")}
    env.update({
        "POLLER_REDIS_URL": redis_url, "POLLER_KEY_PREFIX": PREFIX,
        "POLLER_API_ENDPOINT": api, "POLLER_PROJECT_ID": PROJECT,
        "POLLER_POLL_INTERVAL": "0.001", "POLLER_POLL_INTERVAL_MAX": "0.001",
        "POLLER_CONCURRENCY": str(args.concurrency), "POLLER_LOG_LEVEL": "warning",
        "POLLER_LOG_FORMAT": "json", "POLLER_HTTP_PORT": str(metrics_port),
        "POLLER_HTTP_HOST": "127.0.0.1", "POLLER_SHUTDOWN_GRACE": "3", **auth,
    })  # fmt: skip
    return env


def run_contender(
    name: str, emulator: Emulator, ids: list[str], workdir: Path, args: argparse.Namespace
) -> Result:
    log = workdir / f"{name}.log"
    baseline: dict[str, int] = emulator.stats()["by_job"]
    with log.open("w") as log_file, contextlib.ExitStack() as stack:
        redis_server = None
        metrics_port = None
        if name.startswith("daemon-"):
            redis_server = stack.enter_context(LocalRedis())
            assert redis_server.proc is not None
            pin(redis_server.proc.pid, 0, args.pin)
            with redis.Redis.from_url(redis_server.url) as client:
                client.lpush(INTAKE, *ids)
            auth = (
                {"POLLER_AUTH_TOKEN": TOKEN}
                if name == "daemon-token"
                else {"POLLER_ACCESS_KEY": ACCESS_KEY, "POLLER_SECRET_KEY": SECRET_KEY}
            )
            metrics_port = free_port()
            env = daemon_env(redis_server.url, emulator.url, auth, args, metrics_port)
            command = [sys.executable, "-m", "poller", "run"]
        else:
            jobs_file = workdir / "jobs.json"
            env = dict(os.environ)
            command = role_command(name, emulator.url, jobs_file, args.concurrency)
        proc = subprocess.Popen(command, env=env, cwd=ROOT, stdout=log_file, stderr=log_file)
        pin(proc.pid, 1, args.pin)
        measured = Measured(proc, emulator, log=log, redis_server=redis_server,
                            metrics_port=metrics_port)  # fmt: skip
        stack.callback(measured.close)
        try:
            return measured.run(name, args, ids, baseline)
        except BenchError as exc:
            raise BenchError(f"{name}: {exc}") from None


# --- the load loops run in their own processes (--role) -------------------------------------


def _stop_on_sigterm() -> threading.Event:
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    return stopping


def role_floor(api: str, ids: list[str], concurrency: int) -> dict[str, int]:
    """GET + JSON parse of every job round-robin, ``concurrency`` requests in flight."""
    import aiohttp

    counts = {"requests": 0, "errors": 0}
    urls = itertools.cycle([job_url(api, job_id) for job_id in ids])
    headers = {"X-Auth-Token": TOKEN}

    async def worker(session: aiohttp.ClientSession, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            try:
                async with session.get(next(urls), headers=headers) as response:
                    document = json.loads(await response.read())
                ok = response.status == 200 and "job" in document
            except (aiohttp.ClientError, ValueError):
                ok = False
            counts["requests"] += 1
            counts["errors"] += not ok

    async def main() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopping.set)
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:
            await asyncio.gather(*(worker(session, stopping) for _ in range(concurrency)))

    asyncio.run(main())
    return counts


def role_sdk(api: str, ids: list[str], concurrency: int) -> dict[str, int]:
    """``show_job_info`` of every job round-robin from ``concurrency`` threads."""
    from concurrent.futures import ThreadPoolExecutor

    from huaweicloudsdkcore.auth.credentials import BasicCredentials
    from huaweicloudsdkcore.http.http_config import HttpConfig
    from huaweicloudsdkservicestage.v3 import ServiceStageClient, ShowJobInfoRequest

    config = HttpConfig.get_default_config()
    config.ignore_ssl_verification = True
    config.pool_connections = config.pool_maxsize = concurrency
    client = (
        ServiceStageClient.new_builder()
        .with_credentials(BasicCredentials(ACCESS_KEY, SECRET_KEY, PROJECT))
        .with_endpoint(api)
        .with_http_config(config)
        .build()
    )
    stopping = _stop_on_sigterm()
    jobs = itertools.cycle(ids)  # next() on a cycle is atomic under the GIL
    lock = threading.Lock()
    counts = {"requests": 0, "errors": 0}

    def loop() -> None:
        done = errors = 0
        while not stopping.is_set():
            request = ShowJobInfoRequest(job_id=next(jobs), limit="100", offset="0")
            try:
                response = client.show_job_info(request)
                errors += response.job is None
            except Exception:
                errors += 1
            done += 1
        with lock:
            counts["requests"] += done
            counts["errors"] += errors

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for _ in range(concurrency):
            pool.submit(loop)
        stopping.wait()
    return counts


# --- output ------------------------------------------------------------------------------


def _num(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def table(results: list[Result]) -> str:
    head = ("contender", "polls/s", "CPU % of a core", "CPU ms/poll", "polls per CPU-s",
            "vs floor", "vs sdk", "Redis cmds/poll", "Redis round trips/poll",
            "Redis CPU ms/poll", "RSS MiB", "errors")  # fmt: skip
    rows = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in results:
        if r.skipped:
            rows.append(f"| {r.contender} | skipped: {r.skipped} |" + " |" * (len(head) - 2))
            continue
        cells = (r.contender, _num(r.polls_per_s), f"{r.cpu_share:.0%}",
                 _num(r.cpu_ms_per_poll, 3), _num(r.polls_per_cpu_s), _ratio(r.vs_floor),
                 _ratio(r.vs_sdk), _num(r.redis_commands_per_poll, 2),
                 _num(r.redis_round_trips_per_poll, 2), _num(r.redis_cpu_ms_per_poll, 3),
                 _num(r.rss_mib, 1), str(r.errors))  # fmt: skip
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def notes(results: list[Result]) -> Iterator[str]:
    for r in results:
        if r.skipped:
            continue
        if r.errors:
            yield f"{r.contender}: {r.errors} requests in the window were not answered 200"
        if r.cpu_share < 0.8:
            yield (
                f"{r.contender} was on a CPU {r.cpu_share:.0%} of the window; its most delayed "
                f"thread was runnable but waiting for a CPU {r.cpu_wait_share:.0%} of it (other "
                "load on its core, or its own threads for the GIL). Its polls/s understates what "
                "it does on a free core; its CPU per poll still holds"
            )
        if r.emulator_cpu_share > 0.9:
            yield (
                f"{r.contender}: the emulator used {r.emulator_cpu_share:.0%} of a core; it may "
                "have limited polls/s (not polls per CPU-second)"
            )
        if r.daemon_polls is not None and r.polls and abs(r.daemon_polls / r.polls - 1) > 0.05:
            yield (
                f"{r.contender}: the daemon counted {r.daemon_polls:.0f} polls, the emulator "
                f"{r.polls} answers"
            )


# --- main ----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=600, help="emulated jobs (600)")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight (32)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window (10)")
    parser.add_argument("--warmup", type=float, default=3.0, help="before each window (3)")
    parser.add_argument(
        "--only",
        default=",".join(CONTENDERS),
        metavar="CONTENDERS",
        help=f"comma-separated subset of {','.join(CONTENDERS)} (all)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="no CPU pinning")
    parser.add_argument("--role", choices=("floor", "sdk"), help=argparse.SUPPRESS)
    parser.add_argument("--api", help=argparse.SUPPRESS)
    parser.add_argument("--jobs-file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(CONTENDERS))
    if unknown or not chosen:
        parser.error(f"--only: expected some of {','.join(CONTENDERS)}, got {args.only!r}")
    args.contenders = [name for name in CONTENDERS if name in chosen]
    if args.jobs < 1 or args.concurrency < 1 or args.seconds <= 0 or args.warmup < 0:
        parser.error("--jobs and --concurrency must be >= 1, --seconds > 0, --warmup >= 0")
    return args


def run_role(args: argparse.Namespace) -> int:
    ids = json.loads(Path(args.jobs_file).read_text())
    loop = role_floor if args.role == "floor" else role_sdk
    counts = loop(args.api, ids, args.concurrency)
    print(json.dumps(counts), flush=True)
    return 0


def compare(args: argparse.Namespace, out: IO[str]) -> int:
    missing = [tool for tool in ("ss",) if shutil.which(tool) is None]
    if missing and any(name.startswith("daemon-") for name in args.contenders):
        print("note: `ss` (iproute2) is not on PATH: Redis round trips cannot be counted",
              file=out)  # fmt: skip
    ids = job_ids(args.jobs)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="poller-compare-") as tmp:
        workdir = Path(tmp)
        (workdir / "jobs.json").write_text(json.dumps(ids))
        emulator = Emulator(
            workdir / "emulator.log",
            [
                "--project-id",
                PROJECT,
                "--token",
                TOKEN,
                "--access-key",
                f"{ACCESS_KEY}:{SECRET_KEY}",
            ],
            pin_cpu=args.pin,
        )
        try:
            for job_id in ids:
                emulator.admin("POST", "/_sim/jobs", job_spec(job_id))
            for name in args.contenders:
                if name == "sdk" and importlib.util.find_spec(SDK_PACKAGE) is None:
                    reason = f"{SDK_PACKAGE} is not installed (pip install --group bench)"
                    print(f"sdk: skipped: {reason}", file=out, flush=True)
                    results.append(Result(contender=name, skipped=reason))
                    continue
                print(f"{name}: running ({args.warmup:g} s warm-up, {args.seconds:g} s measured)",
                      file=out, flush=True)  # fmt: skip
                results.append(run_contender(name, emulator, ids, workdir, args))
        except (BenchError, RedisUnavailable) as exc:
            print(f"compare: error: {exc}", file=sys.stderr)
            return 1
        finally:
            emulator.close()
    by_name = {r.contender: r for r in results if not r.skipped}
    for r in by_name.values():
        for ref, attr in (("floor", "vs_floor"), ("sdk", "vs_sdk")):
            if ref in by_name and by_name[ref].polls_per_cpu_s:
                setattr(r, attr, r.polls_per_cpu_s / by_name[ref].polls_per_cpu_s)
    pinned = args.pin and (os.cpu_count() or 1) > 1
    load = os.getloadavg()[0]
    print(file=out)
    print(f"{args.jobs} jobs (one page, 3 tasks, never changing), {args.concurrency} in flight, "
          f"{args.seconds:g} s measured after {args.warmup:g} s; {os.cpu_count()} CPUs, "
          + ("contender on CPU 1, emulator + redis on CPU 0" if pinned else "not pinned")
          + f"; load average {load:.1f} at the end", file=out)  # fmt: skip
    print(file=out)
    print(table(results), file=out)
    for line in notes(results):
        print(f"note: {line}", file=out)
    if args.json:
        document = {
            "args": {k: getattr(args, k) for k in ("jobs", "concurrency", "seconds", "warmup")},
            "cpus": os.cpu_count(),
            "pinned": pinned,
            "load_average_1min": load,
            "python": platform.python_version(),
            "results": [asdict(r) for r in results],
        }
        Path(args.json).write_text(json.dumps(document, indent=2) + "\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.role:
        return run_role(args)
    return compare(args, sys.stdout)


if __name__ == "__main__":
    raise SystemExit(main())
