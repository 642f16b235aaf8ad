"""Chaos run: many daemon replicas, a hostile API and a crashing Redis, then the invariants.

Starts its own redis-server (append-only file, ``appendfsync always``), the emulator as a
subprocess (5xx, 429 with Retry-After, truncated bodies, resets, latency, bodies nested 5000
levels deep, and hostile data in a share of the jobs: lone surrogates, very long messages,
numbers as strings, upper-case keys) and N ``poller run`` replicas.  It creates the jobs through
the emulator's admin API and enqueues them in batches, mixed with poison intake messages and
some duplicate messages, and while the jobs run it injects faults at random times:

- ``kill_daemon``: SIGKILL a replica, start a new one in its place;
- ``pause_daemon``: SIGSTOP a replica past its lease, then SIGCONT;
- ``term_daemon``: SIGTERM a replica (it must drain and exit 0), start a new one;
- ``kill_redis``: SIGKILL redis-server, start it again on the same port and directory;
- ``client_kill``: ``CLIENT KILL TYPE normal`` (every replica loses its connections).

When every valid job has its final event (or the deadline passes) it reads everything from Redis
and runs the shared invariant checker (:mod:`poller.sim.invariants`), prints a report and writes
it as JSON to ``--report``.  Exit 0 only when there is no violation and every valid job finished;
1 otherwise; 2 when the setup failed.  Every process it starts it stops by PID.

    .venv/bin/python bench/chaos.py --replicas 3 --jobs 500 --duration 120 --seed 1 \\
        --report /tmp/chaos.json
    .venv/bin/python bench/chaos.py --replicas 2 --jobs 40 --duration 30 --faults-each 3
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

import redis
from redis.exceptions import RedisError

from poller.localredis import LocalRedis, RedisUnavailable, free_port, terminate
from poller.sim.generator import generate
from poller.sim.hostile import QUIRKS
from poller.sim.invariants import ABANDONED, Entry, check_run, is_final
from poller.sim.scenario import job_to_dict

PROJECT: Final = "chaos-project"
TOKEN: Final = "chaos-token-0123456789"  # noqa: S105 (the emulator's, local)
PREFIX: Final = "chaos"
FAULT_KINDS: Final = ("kill_daemon", "pause_daemon", "term_daemon", "kill_redis", "client_kill")
POISON_KINDS: Final = ("deep", "surrogate_meta", "not_utf8", "path", "numeric_project", "nan")
DEFAULT_API_FAULTS: Final = {
    "html_500": 0.01,
    "empty_502": 0.01,
    "unavailable_503": 0.01,
    "throttled_429": 0.02,
    "truncated": 0.02,
    "reset": 0.02,
    "deep_json": 0.01,
    "latency": 0.002,
    "latency_jitter": 0.02,
}
LOOP_TICK: Final = 0.1  # seconds between rounds of the supervision loop
_T = TypeVar("_T")


class SetupError(RuntimeError):
    """Something the run needs could not be started."""


def log(message: str) -> None:
    print(f"chaos: {message}", file=sys.stderr, flush=True)


# --- what goes into the intake queue ------------------------------------------------------


def poison_message(kind: str, k: int) -> bytes:
    """One invalid intake message of ``kind``; ``k`` tells instances apart."""
    if kind == "deep":  # 5000 levels of JSON nesting (meta is also far too large)
        nested = "[" * 5000 + "]" * 5000
        return f'{{"job_id":"JOBpoison-deep-{k}","meta":{{"deep":{nested}}}}}'.encode()
    if kind == "surrogate_meta":  # valid JSON text, but the meta string is not valid Unicode
        return f'{{"job_id":"JOBpoison-surrogate-{k}","meta":{{"k":"\\ud83d"}}}}'.encode()
    if kind == "not_utf8":
        return b"JOBpoison-\xff\xfe-" + str(k).encode() + b"\xc3\x28"
    if kind == "path":
        return b"../x" if k == 0 else f"../x{k}".encode()
    if kind == "numeric_project":
        return f'{{"job_id":"a{k or ""}","project_id":0}}'.encode()
    if kind == "nan":  # NaN is not JSON (Python's json module accepts it by default)
        return f'{{"job_id":"JOBpoison-nan-{k}","meta":{{"x":NaN}}}}'.encode()
    raise ValueError(kind)


def valid_message(job_id: str, rng: random.Random, n: int) -> bytes:
    """A bare ID or a JSON object with ``meta``."""
    if rng.random() < 0.7:
        return job_id.encode()
    return json.dumps({"job_id": job_id, "meta": {"chaos": n}}).encode()


def job_specs(args: argparse.Namespace, rng: random.Random) -> list[dict[str, Any]]:
    """Generated jobs lasting about ``job_share`` of the run, some with hostile data."""
    scenario = generate(
        args.jobs, args.seed, duration=max(1.0, args.duration * args.job_share), project_id=PROJECT
    )
    specs = []
    quirks = sorted(QUIRKS)
    for spec in scenario.jobs:
        doc = job_to_dict(spec)
        if rng.random() < args.hostile_fraction:
            chosen = [q for q in quirks if rng.random() < 0.5] or [rng.choice(quirks)]
            doc["hostile"] = chosen
        specs.append(doc)
    return specs


def field_text(fields: Mapping[Any, Any], name: str) -> str:
    """A stream entry's field as text (the entry read as bytes)."""
    value = fields.get(name.encode(), fields.get(name, b""))
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


# --- processes ---------------------------------------------------------------------------


def rss_kb(pid: int) -> int | None:
    """VmRSS of ``pid`` in kB, ``None`` when unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


@dataclass
class Replica:
    """One replica slot: the current ``poller run`` process and its history."""

    slot: int
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    state: str = "down"  # running, paused, terminating, down
    logs: list[Path] = field(default_factory=list)
    rss_start_kb: int | None = None
    rss_end_kb: int | None = None
    rss_max_kb: int = 0
    unexpected_exits: list[int] = field(default_factory=list)
    term_exits: list[int] = field(default_factory=list)
    shutdown_exit: int | None = None
    started_at: float = 0.0

    def settled(self) -> bool:
        try:
            logged = self.logs[-1].stat().st_size > 0
        except (IndexError, OSError):
            return False
        return logged and time.monotonic() - self.started_at >= 2.0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def sample(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            rss = rss_kb(self.proc.pid)
            if rss is not None:
                self.rss_max_kb = max(self.rss_max_kb, rss)

    def as_dict(self) -> dict[str, object]:
        return {
            "slot": self.slot,
            "pid": self.pid,
            "starts": self.starts,
            "rss_start_kb": self.rss_start_kb,
            "rss_end_kb": self.rss_end_kb,
            "rss_max_kb": self.rss_max_kb,
            "unexpected_exits": self.unexpected_exits,
            "sigterm_exits": self.term_exits,
            "shutdown_exit": self.shutdown_exit,
            "uptime_s": round(time.monotonic() - self.started_at, 1),
        }


def stop_process(proc: subprocess.Popen[bytes], grace: float) -> int:
    """SIGCONT and SIGTERM ``proc`` (by PID), SIGKILL it after ``grace`` s; its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGCONT)  # a stopped process would sit out the SIGTERM
    return terminate(proc, grace)


# --- the run -----------------------------------------------------------------------------


class Chaos:
    """One chaos run; :meth:`run` returns the report."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.rng = random.Random(args.seed)
        self.redis_server = LocalRedis(persistent=True)
        self.redis_up = False
        self.client: redis.Redis | None = None
        self.sim: subprocess.Popen[bytes] | None = None
        self.sim_url = ""
        self.replicas = [Replica(slot) for slot in range(args.replicas)]
        self.pending: list[tuple[float, str, Callable[[], None]]] = []
        self.faults: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()
        self.fault_log: list[dict[str, object]] = []
        self.problems: list[str] = []
        self.finishing = False
        self.hostile: Counter[str] = Counter()
        self.t0 = time.monotonic()
        # progress, from the global stream
        self.valid: list[str] = []
        self.poison: list[bytes] = []
        self.finished: set[str] = set()
        self.events_seen = 0
        self.last_id = "0-0"

    # -- small helpers --

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def note(self, kind: str, detail: str) -> None:
        self.faults[kind] += 1
        self.fault_log.append({"at": round(self.elapsed(), 2), "kind": kind, "detail": detail})
        log(f"{self.elapsed():6.1f}s {kind}: {detail}")

    def later(self, delay: float, name: str, action: Callable[[], None]) -> None:
        self.pending.append((time.monotonic() + delay, name, action))

    def redis_call(self, fn: Callable[[redis.Redis], _T], attempts: int = 1) -> _T:
        """``fn(client)``, retried on Redis errors up to ``attempts`` times, 0.5 s apart."""
        assert self.client is not None
        for attempt in range(attempts):
            try:
                return fn(self.client)
            except RedisError:
                if attempt == attempts - 1:
                    raise
                time.sleep(0.5)
        raise AssertionError("unreachable")

    # -- setup --

    def start_redis(self) -> None:
        for attempt in range(5):
            try:
                self.redis_server.start()
                self.redis_up = True
                return
            except RedisUnavailable as exc:
                log(f"redis-server did not start ({exc}); attempt {attempt + 1} of 5")
                time.sleep(0.5)
        raise SetupError("redis-server could not be (re)started on its port")

    def start_sim(self) -> None:
        port = free_port()
        rates: dict[str, float] = dict(DEFAULT_API_FAULTS)
        for item in filter(None, (self.args.api_faults or "").split(",")):
            key, _, value = item.partition("=")
            rates[key.strip()] = float(value)
        argv = [
            sys.executable, "-m", "poller", "sim", "--host", "127.0.0.1", "--port", str(port),
            "--token", TOKEN, "--project-id", PROJECT, "--seed", str(self.args.seed),
            "--retry-after", "1",
        ]  # fmt: skip
        for key, value in rates.items():
            argv += [f"--{key.replace('_', '-')}", str(value)]
        sink = (self.workdir / "sim.log").open("wb")
        self.sim = subprocess.Popen(argv, stdout=sink, stderr=sink, start_new_session=True)
        sink.close()
        self.sim_url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            if self.sim.poll() is not None:
                tail = (self.workdir / "sim.log").read_text(errors="replace")[-500:]
                raise SetupError(f"the emulator exited with {self.sim.returncode}: {tail}")
            try:
                self.admin("GET", "/_sim/clock")
                return
            except OSError:
                time.sleep(0.05)
        raise SetupError("the emulator did not answer within 10 s")

    def admin(self, method: str, path: str, body: object | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        url = self.sim_url + path  # always http://127.0.0.1:port/...
        request = urllib.request.Request(url, data=data, method=method)  # noqa: S310
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return json.loads(response.read())

    def daemon_env(self, replica: Replica) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("POLLER_")}
        env.update({
            "POLLER_REDIS_URL": self.redis_server.url, "POLLER_KEY_PREFIX": PREFIX,
            "POLLER_API_ENDPOINT": self.sim_url, "POLLER_PROJECT_ID": PROJECT,
            "POLLER_AUTH_TOKEN": TOKEN, "POLLER_POLL_INTERVAL": str(self.args.poll_interval),
            "POLLER_POLL_INTERVAL_MAX": str(self.args.poll_interval * 4),
            "POLLER_BACKOFF_INITIAL": "0.1", "POLLER_BACKOFF_MAX": "2",
            "POLLER_LEASE_SECONDS": str(self.args.lease), "POLLER_SHUTDOWN_GRACE": "3",
            "POLLER_NOT_FOUND_GRACE": "30", "POLLER_REQUEST_TIMEOUT": "5",
            "POLLER_HTTP_PORT": "0", "POLLER_LOG_FORMAT": "json", "POLLER_LOG_LEVEL": "info",
            "POLLER_REPLICA_ID": f"chaos-r{replica.slot}-{replica.starts}",
        })  # fmt: skip
        for item in self.args.env:
            key, _, value = item.partition("=")
            env[key] = value
        return env

    def start_replica(self, replica: Replica) -> None:
        path = self.workdir / f"replica{replica.slot}-{replica.starts}.log"
        env = self.daemon_env(replica)
        with path.open("wb") as sink:
            replica.proc = subprocess.Popen(
                [sys.executable, "-m", "poller", "run"],
                env=env,
                stdout=sink,
                stderr=sink,
                start_new_session=True,
            )
        replica.starts += 1
        replica.started_at = time.monotonic()
        replica.logs.append(path)
        replica.state = "running"

    # -- intake --

    def enqueue(self, messages: list[bytes]) -> None:
        self.redis_call(lambda r: r.lpush(f"{PREFIX}:jobs", *messages), attempts=20)

    def create_jobs(self, specs: list[dict[str, Any]]) -> list[str]:
        return [str(self.admin("POST", "/_sim/jobs", spec)["job_id"]) for spec in specs]

    def plan_batches(self) -> list[tuple[float, list[dict[str, Any]], list[bytes]]]:
        """(at, job specs, poison) batches spread over the first ``enqueue_share`` of the run."""
        specs = job_specs(self.args, self.rng)
        poison = [
            poison_message(kind, k) for kind in POISON_KINDS for k in range(self.args.poison_each)
        ]
        self.rng.shuffle(poison)
        count = max(1, min(self.args.batches, len(specs)))
        window = self.args.duration * self.args.enqueue_share
        batches = []
        for b in range(count):
            at = window * b / count
            batches.append((at, specs[b::count], poison[b::count]))
        return batches

    def run_batch(self, specs: list[dict[str, Any]], poison: list[bytes]) -> None:
        ids = self.create_jobs(specs)
        for spec in specs:
            self.hostile.update(spec.get("hostile", ()))
            self.hostile["jobs"] += bool(spec.get("hostile"))
        first = len(self.valid)
        messages = [valid_message(job_id, self.rng, first + i) for i, job_id in enumerate(ids)]
        self.valid.extend(ids)
        again = [job.encode() for job in self.valid if self.rng.random() < self.args.duplicates]
        batch = messages + poison + again
        self.rng.shuffle(batch)
        self.poison.extend(poison)
        self.enqueue(batch)
        log(
            f"{self.elapsed():6.1f}s enqueued {len(ids)} jobs, {len(poison)} poison, "
            f"{len(again)} duplicates"
        )

    # -- faults --

    def victim(self, *, settled: bool = False) -> Replica | None:
        """A running replica; ``settled``: one that has been up for a while and logged, so
        its signal handlers are in place (a SIGTERM during imports kills it with -15)."""
        running = [r for r in self.replicas if r.state == "running"]
        if settled:
            running = [r for r in running if r.settled()]
        return self.rng.choice(running) if running else None

    def inject(self, kind: str) -> bool:
        """Inject one fault of ``kind``; ``False`` when it cannot be now (no running replica,
        Redis already down): the caller tries again a little later."""
        if kind in ("kill_redis", "client_kill") and not self.redis_up:
            return False
        if kind == "kill_redis":
            self.redis_server.kill()
            self.redis_up = False
            down = self.rng.uniform(0.5, 3.0)
            self.note(kind, f"redis-server SIGKILLed, down for {down:.1f}s")
            self.later(down, "restart redis", self.restart_redis)
            return True
        if kind == "client_kill":
            try:
                killed = self.redis_call(lambda r: r.client_kill_filter(_type="normal"))
            except RedisError as exc:
                log(f"CLIENT KILL failed: {exc}")
                return False
            self.note(kind, f"CLIENT KILL TYPE normal closed {killed} connections")
            return True
        replica = self.victim(settled=kind == "term_daemon")
        if replica is None or replica.proc is None:
            return False
        proc = replica.proc
        if kind == "kill_daemon":
            proc.kill()
            proc.wait(10)
            self.note(kind, f"replica {replica.slot} (pid {proc.pid}) SIGKILLed")
            replica.state = "down"
            delay = self.rng.uniform(0.0, 1.0)
            self.later(delay, "restart replica", lambda: self.restart_replica(replica))
        elif kind == "pause_daemon":
            pause = self.args.lease * 1.5 + self.rng.uniform(0.0, self.args.lease)
            proc.send_signal(signal.SIGSTOP)
            replica.state = "paused"
            self.note(kind, f"replica {replica.slot} (pid {proc.pid}) SIGSTOPped for {pause:.1f}s")
            self.later(pause, "resume replica", lambda: self.resume(replica, proc))
        elif kind == "term_daemon":
            proc.terminate()
            replica.state = "terminating"
            self.note(kind, f"replica {replica.slot} (pid {proc.pid}) SIGTERMed")
            since = time.monotonic()
            self.later(0.2, "await drain", lambda: self.await_drain(replica, proc, since))
        return True

    def restart_replica(self, replica: Replica) -> None:
        if not self.finishing:
            self.start_replica(replica)

    def resume(self, replica: Replica, proc: subprocess.Popen[bytes]) -> None:
        if replica.proc is proc and proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            replica.state = "running"

    def await_drain(self, replica: Replica, proc: subprocess.Popen[bytes], since: float) -> None:
        code = proc.poll()
        limit = 3.0 + 5.0  # POLLER_SHUTDOWN_GRACE plus slack
        if code is None and time.monotonic() - since < limit:
            self.later(0.2, "await drain", lambda: self.await_drain(replica, proc, since))
            return
        if code is None:
            proc.kill()
            code = proc.wait(10)
            self.problems.append(
                f"replica {replica.slot} (pid {proc.pid}) did not exit within {limit:g}s "
                "of SIGTERM; SIGKILLed"
            )
        replica.term_exits.append(code)
        if code != 0:
            self.problems.append(f"replica {replica.slot} exited {code} after SIGTERM")
        replica.state = "down"
        if not self.finishing:
            self.start_replica(replica)

    def restart_redis(self) -> None:
        self.start_redis()
        log(f"{self.elapsed():6.1f}s redis-server back")

    def supervise(self) -> None:
        """Restart a replica that died by itself (and say so); sample memory."""
        for replica in self.replicas:
            proc = replica.proc
            if replica.state == "running" and proc is not None and proc.poll() is not None:
                replica.unexpected_exits.append(proc.returncode)
                self.problems.append(
                    f"replica {replica.slot} (pid {proc.pid}) exited by itself with "
                    f"{proc.returncode} at {self.elapsed():.1f}s"
                )
                log(f"replica {replica.slot} exited by itself ({proc.returncode}); restarting")
                self.start_replica(replica)
            replica.sample()

    def run_pending(self, everything: bool = False) -> None:
        now = time.monotonic()
        due = [p for p in self.pending if everything or p[0] <= now]
        self.pending = [p for p in self.pending if p not in due]
        for _, _, action in sorted(due, key=lambda p: p[0]):
            action()

    def finish_pending(self) -> None:
        """Run every scheduled recovery now (resume, restart, awaiting a drain)."""
        for _ in range(300):  # awaiting a drain reschedules itself for at most 8 s
            self.run_pending(everything=True)
            if not self.pending:
                return
            time.sleep(LOOP_TICK)
        raise SetupError("recovery actions kept rescheduling themselves")

    # -- progress --

    def poll_progress(self) -> None:
        if not self.redis_up:
            return
        try:
            reply: Any = self.redis_call(
                lambda r: r.xread({f"{PREFIX}:events": self.last_id}, count=5000)
            )
        except RedisError:
            return
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                self.last_id = entry_id.decode()
                self.events_seen += 1
                if is_final(fields):
                    self.finished.add(field_text(fields, "job_id"))

    def intake_drained(self) -> bool:
        try:
            return self.redis_call(lambda r: r.llen(f"{PREFIX}:jobs")) == 0
        except RedisError:
            return False

    def dead_count(self) -> int:
        try:
            return int(self.redis_call(lambda r: r.llen(f"{PREFIX}:jobs:dead")))
        except RedisError:
            return 0

    # -- the whole run --

    def run(self) -> dict[str, Any]:
        args = self.args
        self.start_redis()
        self.client = redis.Redis(
            host="127.0.0.1", port=self.redis_server.port, socket_timeout=3,
            socket_connect_timeout=2,
        )  # fmt: skip
        self.start_sim()
        for replica in self.replicas:
            self.start_replica(replica)
        batches = self.plan_batches()
        lo, hi = args.duration * 0.05, args.duration * 0.75  # while the jobs run
        plan = sorted(
            (self.rng.uniform(lo, hi), kind)
            for kind in args.faults
            for _ in range(args.faults_each)
        )
        log(
            f"{len(self.replicas)} replicas, {args.jobs} jobs in {len(batches)} batches, "
            f"{len(plan)} faults planned, workdir {self.workdir}"
        )
        self.t0 = time.monotonic()
        deadline = args.duration + args.settle
        drained_since: float | None = None
        rss_taken = False
        max_rounds = int(deadline / LOOP_TICK) + 10_000  # belt and braces: always stops
        for _ in range(max_rounds):
            now = self.elapsed()
            self.run_pending()
            while batches and batches[0][0] <= now and self.redis_up:
                _, specs, poison = batches.pop(0)
                self.run_batch(specs, poison)
            while plan and plan[0][0] <= now:
                kind = plan.pop(0)[1]
                if not self.inject(kind):  # try again soon, in order
                    plan = sorted([*plan, (now + 0.5, kind)])
                    break
            self.supervise()
            if self.sim is not None and self.sim.poll() is not None:
                self.problems.append(f"the emulator exited with {self.sim.returncode}")
                log(f"{now:6.1f}s the emulator exited ({self.sim.returncode}); stopping the run")
                break
            if not rss_taken and now >= args.rss_after:
                for replica in self.replicas:
                    replica.rss_start_kb = rss_kb(replica.pid) if replica.pid else None
                rss_taken = True
            self.poll_progress()
            all_final = not batches and self.redis_up and set(self.valid) <= self.finished
            if all_final and self.intake_drained():
                drained_since = drained_since if drained_since is not None else now
                if self.dead_count() >= len(self.poison) or now - drained_since > args.drain_grace:
                    log(f"{now:6.1f}s every valid job finished")
                    break
            if now > deadline:
                done = len(self.finished & set(self.valid))
                log(f"{now:6.1f}s deadline passed: {done} of {len(self.valid)} valid jobs finished")
                break
            time.sleep(LOOP_TICK)
        for kind in (kind for _, kind in plan):
            self.skipped[kind] += 1  # planned after the jobs were done
        self.finishing = True
        for replica in self.replicas:
            replica.rss_end_kb = rss_kb(replica.pid) if replica.pid else None
        self.finish_pending()
        snapshot = self.read_everything()
        return self.report(snapshot)

    def read_everything(self) -> dict[str, Any]:
        """The streams and the dead letters, retrying while Redis is unreachable."""

        def read(r: redis.Redis) -> dict[str, Any]:
            global_entries: list[Entry] = []
            start = "-"
            while True:
                chunk: Any = r.xrange(f"{PREFIX}:events", min=start, count=5000)
                global_entries.extend(chunk)
                if len(chunk) < 5000:
                    break
                start = "(" + chunk[-1][0].decode()
            streams = {
                key.decode(errors="surrogateescape")
                for key in r.scan_iter(match=f"{PREFIX}:events:*", count=1000, _type="stream")
            }
            ids = set(self.valid) | {key.removeprefix(f"{PREFIX}:events:") for key in streams}
            per_job: dict[str, list[Entry]] = {}
            for some in _chunks(sorted(ids), 200):
                pipe = r.pipeline(transaction=False)
                for job_id in some:
                    pipe.xrange(f"{PREFIX}:events:{job_id}")
                replies: list[Any] = pipe.execute()
                for job_id, entries in zip(some, replies, strict=True):
                    if entries:
                        per_job[job_id] = entries
            dead: Any = r.lrange(f"{PREFIX}:jobs:dead", 0, -1)
            return {"global": global_entries, "per_job": per_job, "dead": dead}

        if not self.redis_up:
            self.start_redis()
        return self.redis_call(read, attempts=30)

    def report(self, snapshot: dict[str, Any]) -> dict[str, Any]:
        global_entries: list[Entry] = snapshot["global"]
        per_job: dict[str, list[Entry]] = snapshot["per_job"]
        violations = check_run(
            global_entries=global_entries,
            job_entries=per_job,
            dead_letters=snapshot["dead"],
            enqueued=set(self.valid),
            poison=self.poison,
        )
        finals: Counter[str] = Counter()
        finished = set()
        for _, fields in global_entries:
            if not is_final(fields):
                continue
            finished.add(field_text(fields, "job_id"))
            if field_text(fields, "event") == ABANDONED:
                finals["abandoned:" + field_text(fields, "reason")] += 1
            else:
                finals[field_text(fields, "to_status")] += 1
        unfinished = sorted(set(self.valid) - finished)
        try:
            api = self.admin("GET", "/_sim/stats")
            api.pop("by_job", None)
        except OSError as exc:
            api = {"error": str(exc)}
        return {
            "ok": not violations and not unfinished,
            "config": {k: v for k, v in vars(self.args).items() if k != "report"},
            "elapsed_s": round(self.elapsed(), 1),
            "jobs": {
                "valid": len(self.valid),
                "finished": len(self.valid) - len(unfinished),
                "unfinished": len(unfinished),
                "unfinished_first": unfinished[:10],
                "final_events": dict(sorted(finals.items())),
                "hostile": dict(self.hostile),
            },
            "poison": {"sent": len(self.poison), "dead_letters": len(snapshot["dead"])},
            "events": {
                "global": len(global_entries),
                "per_job": sum(len(v) for v in per_job.values()),
                # evidence that lone surrogates reached the events, replaced by U+FFFD
                "with_replacement_char": sum(
                    any(isinstance(v, bytes) and b"\xef\xbf\xbd" in v for v in fields.values())
                    for _, fields in global_entries
                ),
            },
            "faults": {kind: self.faults[kind] for kind in self.args.faults},
            "faults_skipped": dict(self.skipped),
            "fault_log": self.fault_log,
            "api": api,
            "violations": {"count": len(violations), "first": violations[:20]},
            "problems": self.problems,
            "daemons": [r.as_dict() for r in self.replicas],
            "log_counts": self.log_counts(),
            "workdir": str(self.workdir),
        }

    def log_counts(self) -> dict[str, int]:
        """Warning and error lines of every daemon log, by level and event (the top 15)."""
        counts: Counter[str] = Counter()
        for replica in self.replicas:
            for path in replica.logs:
                for line in path.read_text(errors="replace").splitlines():
                    try:
                        doc = json.loads(line)
                    except ValueError:
                        counts["(not a JSON log line)"] += 1
                        continue
                    level = doc.get("level") if isinstance(doc, dict) else None
                    if level in ("warning", "error", "critical"):
                        counts[f"{doc['level']}: {doc.get('event')}"] += 1
        return dict(counts.most_common(15))

    def cleanup(self) -> None:
        """Stop everything this run started, by PID; remove Redis's directory."""
        for replica in self.replicas:
            if replica.proc is not None:
                up = time.monotonic() - replica.started_at
                code = stop_process(replica.proc, 8.0)
                # one SIGTERMed while still importing dies of the signal: not a finding
                if replica.state in ("running", "paused") and up > 5.0:
                    replica.shutdown_exit = code
        if self.sim is not None:
            stop_process(self.sim, 5.0)
        if self.client is not None:
            self.client.close()
        self.redis_server.cleanup()


# --- command line --------------------------------------------------------------------------


def print_report(report: dict[str, Any]) -> None:
    jobs, events, viol = report["jobs"], report["events"], report["violations"]
    out = sys.stdout
    cfg = report["config"]
    print(
        f"chaos run: {cfg['replicas']} replicas, {jobs['valid']} jobs, "
        f"{report['poison']['sent']} poison messages, seed {cfg['seed']}, "
        f"{report['elapsed_s']} s",
        file=out,
    )
    print(
        "faults injected: "
        + ", ".join(f"{k} {v}" for k, v in report["faults"].items())
        + (f" (not injected: {report['faults_skipped']})" if report["faults_skipped"] else ""),
        file=out,
    )
    api = report["api"]
    if "by_fault" in api:
        served = ", ".join(f"{k} {v}" for k, v in api["by_fault"].items() if v)
        print(f"API: {api['requests']} requests; faults served: {served}", file=out)
    print(
        f"jobs finished: {jobs['finished']}/{jobs['valid']}  final events: "
        + ", ".join(f"{k} {v}" for k, v in jobs["final_events"].items()),
        file=out,
    )
    if jobs["hostile"]:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(jobs["hostile"].items()) if k != "jobs")
        print(f"  hostile data in {jobs['hostile']['jobs']} jobs: {kinds}", file=out)
    if jobs["unfinished"]:
        print(f"  unfinished (first): {', '.join(jobs['unfinished_first'])}", file=out)
    print(
        f"events: {events['global']} in the global stream, {events['per_job']} in per-job "
        f"streams ({events['with_replacement_char']} carry U+FFFD); "
        f"dead letters: {report['poison']['dead_letters']}",
        file=out,
    )
    print(f"violations: {viol['count']}", file=out)
    for line in viol["first"][:10]:
        print(f"  - {line}", file=out)
    for problem in report["problems"][:10]:
        print(f"problem: {problem}", file=out)
    for d in report["daemons"]:
        print(
            f"replica {d['slot']}: RSS start {d['rss_start_kb']} kB, end {d['rss_end_kb']} kB, "
            f"max {d['rss_max_kb']} kB; {d['starts']} starts, exits by itself "
            f"{d['unexpected_exits'] or 'none'}, after SIGTERM {d['sigterm_exits'] or '-'}, "
            f"at shutdown {d['shutdown_exit']}",
            file=out,
        )
    if report["log_counts"]:
        print("daemon log warnings/errors:", file=out)
        for key, n in report["log_counts"].items():
            print(f"  {n:6d}  {key}", file=out)
    print(f"logs: {report['workdir']}", file=out)
    print("result: " + ("PASS" if report["ok"] else "FAIL"), file=out, flush=True)


# The numeric options, by section of --help, as (flag, type, default, help).
OPTIONS: Final[dict[str, tuple[tuple[str, type, float | None, str | None], ...]]] = {
    "the run": (
        ("--replicas", int, 3, "daemon processes (3)"),
        ("--jobs", int, 500, "valid jobs (500)"),
        ("--duration", float, 120.0, "s of chaos; jobs run for about --job-share of it (120)"),
        ("--settle", float, None, "s after --duration for the final events (max(30, duration))"),
        ("--seed", int, 1, None),
        ("--batches", int, 5, "enqueue batches (5)"),
        ("--enqueue-share", float, 0.3, "batches are spread over this share of --duration (0.3)"),
        ("--job-share", float, 0.6, "each job lasts 75-100%% of this share of --duration (0.6)"),
        ("--drain-grace", float, 5.0, "s at most for the dead letters once every job finished (5)"),
        ("--rss-after", float, 3.0, "the start RSS is read this many seconds after the start (3)"),
    ),
    "faults": (
        ("--faults-each", int, None, "faults of each kind (one per 20 s of --duration, >= 2)"),
        ("--poison-each", int, 1, f"poison messages of each kind ({', '.join(POISON_KINDS)}) (1)"),
        ("--hostile-fraction", float, 0.2, "share of jobs whose answers carry hostile data (0.2)"),
        ("--duplicates", float, 0.03, "chance per job to be enqueued again in a later batch"),
    ),
    "daemons": (
        ("--lease", float, 2.0, "POLLER_LEASE_SECONDS (2)"),
        ("--poll-interval", float, 0.5, "POLLER_POLL_INTERVAL; the maximum is 4x (0.5)"),
    ),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    groups = {title: parser.add_argument_group(title) for title in OPTIONS}
    groups["faults"].add_argument(
        "--faults",
        type=lambda s: [k for k in s.split(",") if k],
        default=list(FAULT_KINDS),
        help=f"fault kinds to inject (default: {','.join(FAULT_KINDS)})",
    )
    for title, options in OPTIONS.items():
        for flag, kind, default, text in options:
            groups[title].add_argument(flag, type=kind, default=default, help=text)
    groups["faults"].add_argument(
        "--api-faults",
        default="",
        help="emulator fault settings overriding the defaults, "
        "e.g. reset=0.05,latency=0 (defaults: "
        + ",".join(f"{k}={v}" for k, v in DEFAULT_API_FAULTS.items())
        + ")",
    )
    groups["daemons"].add_argument(
        "--env",
        action="append",
        default=[],
        metavar="POLLER_X=VALUE",
        help="extra environment for the daemons, repeatable",
    )
    output = parser.add_argument_group("report and logs")
    output.add_argument("--report", type=Path, help="write the report as JSON here")
    output.add_argument(
        "--workdir",
        type=Path,
        help="keep logs here (default: a temporary directory, removed on PASS)",
    )
    output.add_argument("--keep", action="store_true", help="keep the logs even on PASS")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.faults) - set(FAULT_KINDS))
    if unknown:
        parser.error(f"unknown fault kind {unknown[0]!r} (known: {', '.join(FAULT_KINDS)})")
    if args.replicas < 1 or args.jobs < 1 or args.duration <= 0:
        parser.error("--replicas and --jobs must be at least 1, --duration positive")
    if args.settle is None:
        args.settle = max(30.0, args.duration)
    if args.faults_each is None:
        args.faults_each = max(2, int(args.duration // 20))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="poller-chaos-"))
    workdir.mkdir(parents=True, exist_ok=True)

    def on_signal(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    chaos = Chaos(args, workdir)
    try:
        report = chaos.run()
    except (SetupError, RedisUnavailable, OSError, RedisError) as exc:
        log(f"setup or read failed: {type(exc).__name__}: {exc} (logs in {workdir})")
        return 2
    finally:
        chaos.cleanup()
    for replica in report["daemons"]:  # shutdown codes are known only after cleanup
        replica["shutdown_exit"] = chaos.replicas[replica["slot"]].shutdown_exit
        if replica["shutdown_exit"] not in (0, None):
            report["problems"].append(
                f"replica {replica['slot']} exited {replica['shutdown_exit']} at the final SIGTERM"
            )
    if report["ok"] and not args.keep and args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
        report["workdir"] = f"{workdir} (removed after a PASS; --keep keeps it)"
    print_report(report)
    if args.report:
        args.report.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 0 if report["ok"] else 1


def _chunks(items: list[_T], size: int) -> Iterator[list[_T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


if __name__ == "__main__":
    sys.exit(main())
