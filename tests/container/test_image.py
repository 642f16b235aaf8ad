"""The image is built from the Dockerfile and run the way Kubernetes runs it (issue 12).

The image is built with docker, or with buildah/podman from a debootstrap stand-in base (see
:mod:`tests.container.engine`), then one container runs ``poller run`` as UID 10001 on a
read-only root filesystem, on the host's network, against a private redis-server and the
emulator on the host's loopback.  It must: run as 10001, answer /healthz and /readyz (and its
own HEALTHCHECK), carry emulator jobs from the Redis intake to their final events, and exit 0
on SIGTERM.  The runtime virtualenv carries neither pip nor setuptools, nor the devkit's modules
(the emulator, the demo, poller.localredis): the image holds the daemon and its CLI only.

Skipped only when the machine cannot build images at all (no Docker daemon and no
podman/buildah/runc, not root, or no Debian mirror for the stand-in base); the reason says
which.  ``scripts/container-smoke`` runs just this module.  On two cores it takes about 2.5
minutes from scratch (debootstrap: 45-100 s) and under a minute once the base is cached.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from poller.consumer import JobEvent
from poller.localredis import LocalRedis, free_port, terminate
from poller.sim.invariants import Entry, Text, check_job_events
from poller.store import Keys
from tests.container.engine import (
    Built,
    Engine,
    Unavailable,
    build_image,
    build_wheelhouse,
    detect,
    ensure_base,
    marker_environment,
    serving,
)
from tests.integration.harness import PROJECT, TOKEN, daemon_env, quick_job

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

UID = 10001
BASE = "python:3.11-slim-bookworm"
Streams = list[tuple[str, list[tuple[str, dict[str, str]]]]]  # XREAD, decode_responses=True
Fields = Mapping[Text, Text]


def note(text: str) -> None:
    """Progress on the terminal even while pytest captures output (shown with -s or -rA)."""
    print(f"[container] {text}", flush=True)


@pytest.fixture(scope="module")
def engine() -> Engine:
    try:
        return detect()
    except Unavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def image(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    """The image, built for this module and removed (by ID) after it."""
    work = tmp_path_factory.mktemp("image")
    started = time.monotonic()
    try:
        how = ensure_base(engine, rebuild=os.environ.get("POLLER_CONTAINER_REBUILD_BASE") == "1")
    except Unavailable as exc:
        pytest.skip(str(exc))
    note(f"base {BASE}: {how} ({time.monotonic() - started:.1f}s)")

    started = time.monotonic()
    target = marker_environment(engine, BASE)
    index = build_wheelhouse(work / "wheelhouse", target)
    note(
        f"wheelhouse for Python {target['python_full_version']} ({target['platform_machine']}, "
        f"glibc {target['glibc']}): {len(list(index.iterdir()))} projects "
        f"({time.monotonic() - started:.1f}s)"
    )
    tag = f"localhost/servicestage-job-poller:smoke-{uuid.uuid4().hex[:8]}"
    with serving(index) as url:
        built = build_image(engine, tag, url, work)
    short = built.image_id.removeprefix("sha256:")[:12]
    note(f"built {tag} ({short}, {engine.name}): {built.size / 1e6:.1f} MB ({built.seconds:.1f}s)")
    try:
        yield built
    finally:
        engine.remove_image(built.image_id)


def test_runtime_venv_has_no_installers(engine: Engine, image: Built) -> None:
    script = (
        "import importlib.util, json, os, subprocess; "
        "site = '/opt/venv/lib/python3.11/site-packages'; "
        "size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk('/opt/venv') "
        "for f in fs if not os.path.islink(os.path.join(d, f))); "
        "print(json.dumps({'found': [m for m in ('pip', 'setuptools', '_distutils_hack') "
        "if importlib.util.find_spec(m)], 'dists': sorted(os.listdir(site)), "
        "'bin': sorted(os.listdir('/opt/venv/bin')), 'venv_bytes': size, "
        "'version': subprocess.run(['poller', '--version'], capture_output=True, text=True, "
        "check=True).stdout.strip()}))"
    )
    out = engine(
        *("run", "--rm", "--network", "none", "--read-only", *engine.run_args()),
        *("--entrypoint", "python", image.image_id, "-c", script),
    )
    facts = json.loads(out.stdout.strip().splitlines()[-1])
    note(f"/opt/venv: {facts['venv_bytes'] / 1e6:.1f} MB; {facts['version']}")

    assert facts["found"] == [], f"importable in the runtime venv: {facts['found']}"
    installers = ("pip", "setuptools", "distutils-precedence")
    leftovers = [n for n in facts["dists"] + facts["bin"] if n.lower().startswith(installers)]
    assert leftovers == [], leftovers
    assert "poller" in facts["bin"]
    assert facts["version"], "poller --version printed nothing"


DEVKIT_PATHS = ("poller/sim", "poller/demo.py", "poller/localredis.py")
DEVKIT_MODULES = ("poller.sim", "poller.demo", "poller.localredis")
# Run in the image: where the devkit's files are (anywhere under /opt/venv), what imports, and
# what the CLI offers and says.
DEVKIT_PROBE = f"""
import importlib.util, json, os, subprocess
found = sorted(
    path for top, dirs, files in os.walk("/opt/venv") for path in
    (os.path.join(top, name) for name in dirs + files) if path.endswith({DEVKIT_PATHS!r})
)
def poller(*args):
    done = subprocess.run(["poller", *args], capture_output=True, text=True, check=False)
    return {{"code": done.returncode, "out": done.stdout, "err": done.stderr}}
print(json.dumps({{
    "found": found,
    "importable": [m for m in {DEVKIT_MODULES!r} if importlib.util.find_spec(m)],
    "dists": sorted(d for d in os.listdir("/opt/venv/lib/python3.11/site-packages")
                    if d.endswith(".dist-info")),
    "help": poller("--help"), "sim": poller("sim", "--port", "0"), "demo": poller("demo"),
    "run": poller("run", "--help"),
}}))
"""


def test_image_holds_the_daemon_and_its_cli_only(engine: Engine, image: Built) -> None:
    out = engine(
        *("run", "--rm", "--network", "none", "--read-only", *engine.run_args()),
        *("--entrypoint", "python", image.image_id, "-c", DEVKIT_PROBE),
    )
    facts = json.loads(out.stdout.strip().splitlines()[-1])
    assert facts["found"] == [], f"devkit files in the image: {facts['found']}"
    assert facts["importable"] == [], facts["importable"]
    assert not [d for d in facts["dists"] if "devkit" in d], facts["dists"]
    assert facts["help"]["code"] == 0, facts["help"]
    listed = {m[1] for m in re.finditer(r"^ {4}(\w+) ", facts["help"]["out"], re.M)}
    assert {"run", "enqueue", "events", "web", "forward"} <= listed, facts["help"]["out"]
    assert not {"sim", "demo"} & listed, facts["help"]["out"]
    assert facts["run"]["code"] == 0, facts["run"]
    for command in ("sim", "demo"):
        answer = facts[command]
        assert answer["code"] == 2, answer
        assert "Traceback" not in answer["err"], answer["err"]
        assert "pip install servicestage-job-poller-devkit==" in answer["err"], answer["err"]


class Sim:
    """``python -m poller sim`` on a free loopback port, stopped by its PID."""

    def __init__(self, log: Path) -> None:
        self.log = log
        with log.open("wb") as sink:
            self.proc = subprocess.Popen(
                [
                    *(sys.executable, "-m", "poller", "sim", "--host", "127.0.0.1"),
                    *("--port", "0", "--project-id", PROJECT, "--token", TOKEN),
                ],
                stdout=sink,
                stderr=sink,
            )
        deadline = time.monotonic() + 30
        while "serving " not in (text := log.read_text(encoding="utf-8", errors="replace")):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"the emulator did not start:\n{text}")
            time.sleep(0.05)
        # "poller sim: serving http://127.0.0.1:PORT project_id=... "
        self.url = text.split("serving ", 1)[1].split()[0]

    def add_job(self, spec: dict[str, Any]) -> str:
        request = urllib.request.Request(  # noqa: S310 - the emulator on loopback
            f"{self.url}/_sim/jobs",
            data=json.dumps(spec).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            return str(json.load(answer)["job_id"])

    def stop(self) -> None:
        terminate(self.proc)


class Container:
    """One detached container, by ID."""

    def __init__(self, engine: Engine, container_id: str) -> None:
        self.engine = engine
        self.id = container_id

    def exec(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.engine("exec", self.id, *args, check=False)

    def logs(self) -> str:
        result = self.engine("logs", self.id, check=False)
        return result.stdout + result.stderr

    def running(self) -> bool:
        return self.engine.inspect(self.id, "{{.State.Running}}") == "true"

    def remove(self) -> None:
        self.engine("rm", "--force", self.id, check=False)


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:  # noqa: S310 - loopback
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def await_final_events(
    client: redis.Redis, keys: Keys, job_ids: set[str], within: float
) -> list[JobEvent]:
    """Every event of the global stream until each of ``job_ids`` has its final one."""
    seen: list[JobEvent] = []
    last = "0-0"
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        answer = cast(Streams, client.xread({keys.events: last}, block=500, count=100))
        for _stream, entries in answer or []:
            for entry_id, fields in entries:
                seen.append(JobEvent.from_entry(entry_id, fields))
                last = entry_id
        if job_ids <= {e.job_id for e in seen if e.is_final}:
            return seen
    finals = {e.job_id for e in seen if e.is_final}
    raise AssertionError(f"no final event within {within:g}s for {sorted(job_ids - finals)}")


def start_daemon(engine: Engine, image: Built, env: dict[str, str], tmp_path: Path) -> Container:
    """``poller run`` hardened as in Kubernetes: UID 10001, read-only root (tmpfs /tmp), no
    capabilities, no privilege escalation; on the host's network, configured by POLLER_*."""
    env_file = tmp_path / "poller.env"  # not on the command line: it holds the token
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()), encoding="utf-8")
    out = engine(
        *("run", "--detach", "--name", f"poller-smoke-{uuid.uuid4().hex[:8]}"),
        *("--network", "host", "--read-only", "--tmpfs", "/tmp:rw,mode=1777,size=16m"),
        *("--user", f"{UID}:{UID}", "--cap-drop", "ALL", "--security-opt", "no-new-privileges"),
        *engine.run_args(),
        *("--env-file", str(env_file), image.image_id, "run"),
        timeout=300,
    )
    return Container(engine, out.stdout.strip().splitlines()[-1])


def assert_healthy(container: Container, image: Built, http_port: int) -> None:
    """/readyz and /healthz on POLLER_HTTP_PORT answer 200, and so does the image's own
    HEALTHCHECK command, run inside the container."""
    deadline = time.monotonic() + 90
    while http_status(f"http://127.0.0.1:{http_port}/readyz") != 200:
        assert container.running(), f"the container exited:\n{container.logs()}"
        assert time.monotonic() < deadline, f"/readyz never answered 200:\n{container.logs()}"
        time.sleep(0.2)
    assert http_status(f"http://127.0.0.1:{http_port}/healthz") == 200
    test = container.engine(
        "image", "inspect", "--format", "{{json .Config.Healthcheck.Test}}", image.image_id
    ).stdout
    check = json.loads(test)
    assert check[0] == "CMD", check
    probe = container.exec(*check[1:])
    assert probe.returncode == 0, f"HEALTHCHECK failed: {probe.stdout}{probe.stderr}"


def assert_unprivileged_and_read_only(container: Container) -> None:
    """PID 1 is the daemon itself (exec-form entrypoint), as 10001:10001, on a read-only root."""
    status = container.exec("cat", "/proc/1/status").stdout
    ids = {
        line.split(":")[0]: line.split()[1:]
        for line in status.splitlines()
        if line.startswith(("Uid:", "Gid:"))
    }
    assert ids == {"Uid": [str(UID)] * 4, "Gid": [str(UID)] * 4}, status
    cmdline = container.exec("cat", "/proc/1/cmdline").stdout.split("\0")
    assert cmdline[-3:] == ["/opt/venv/bin/poller", "run", ""], cmdline  # python <script> run
    mounts = [line.split() for line in container.exec("cat", "/proc/1/mounts").stdout.splitlines()]
    root = [m for m in mounts if m[1] == "/"]
    assert root, mounts
    assert "ro" in root[-1][3].split(","), root
    assert container.engine.inspect(container.id, "{{.HostConfig.ReadonlyRootfs}}") == "true"


def test_container_runs_as_10001_read_only_polls_and_stops_on_sigterm(
    engine: Engine, image: Built, tmp_path: Path
) -> None:
    prefix = f"ctr-{uuid.uuid4().hex[:10]}"
    keys = Keys(prefix)
    http_port = free_port()
    with LocalRedis() as server:
        sim = Sim(tmp_path / "sim.log")
        client = redis.Redis.from_url(server.url, decode_responses=True)
        container: Container | None = None
        try:
            env = daemon_env(
                server.url,
                prefix,
                sim.url,
                POLLER_HTTP_PORT=str(http_port),
                POLLER_HTTP_HOST="127.0.0.1",
                POLLER_SHUTDOWN_GRACE="5",
            )
            started = time.monotonic()
            poller_env = {k: v for k, v in env.items() if k.startswith("POLLER_")}
            container = start_daemon(engine, image, poller_env, tmp_path)

            assert_healthy(container, image, http_port)
            note(f"container {container.id[:12]} ready {time.monotonic() - started:.1f}s after run")
            assert_unprivileged_and_read_only(container)

            # Events flow: emulator jobs pushed onto the Redis intake reach their final events.
            run_id = uuid.uuid4().hex[:8]
            specs = [
                {
                    **quick_job(job_done=0.6 + 0.3 * n, task_done=0.3),
                    "job_id": f"JOBsmoke-{run_id}-{n}",
                }
                for n in range(3)
            ]
            jobs = {sim.add_job(spec) for spec in specs}
            client.lpush(keys.intake, *sorted(jobs))
            events = await_final_events(client, keys, jobs, within=90)
            for job_id in jobs:
                mine = [e for e in events if e.job_id == job_id]
                entries: list[Entry] = [(e.entry_id, cast(Fields, e.fields)) for e in mine]
                violations = check_job_events(job_id, entries)
                assert not violations, "\n".join(violations)
                assert (mine[-1].event, mine[-1].to_status) == ("job.status_changed", "SUCCEEDED")
            note(f"{len(events)} events for {len(jobs)} jobs")

            # SIGTERM (what docker/podman stop and Kubernetes send): drain, then exit 0.
            engine("kill", "--signal", "TERM", container.id)
            stopped = time.monotonic()
            code = engine("wait", container.id, timeout=60).stdout.strip().splitlines()[-1]
            note(f"exit {code} {time.monotonic() - stopped:.1f}s after SIGTERM")
            assert code == "0", f"exit code {code} after SIGTERM:\n{container.logs()}"
        finally:
            if container is not None:
                container.remove()
            client.close()
            sim.stop()


def test_skip_reason_names_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without any engine the module skips (never fails), saying what to install."""
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("POLLER_CONTAINER_ENGINE", raising=False)
    with pytest.raises(Unavailable, match="podman, buildah, runc not installed"):
        detect()
