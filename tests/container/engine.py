"""Building the Dockerfile's image and running containers of it, for the container smoke test.

Docker when its daemon answers; otherwise buildah (build) and podman (run) with runc, as root,
in local container storage (the ``vfs`` driver unless ``STORAGE_DRIVER`` or storage.conf says
otherwise).  Without Docker Hub, the Dockerfile's base ``python:3.11-slim-bookworm`` resolves to
a stand-in that ``make-base-image`` creates once with debootstrap and imports as
``localhost/python:3.11-slim-bookworm``; later runs find it there and reuse it.

The builder stage's pip gets its packages from a wheelhouse served on the host's loopback
(``--build-arg PIP_INDEX_URL``, ``--network host``), filled by the host's own pip (whatever
index it is configured with) for the *image's* interpreter and platform.  So the build needs
no network beyond what the host's pip already uses.

Every container and image made here is removed by its ID; processes are stopped by PID.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.server
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import urllib.request
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
MAKE_BASE = HERE / "make-base-image"
BASE_IMAGE = "python:3.11-slim-bookworm"  # the Dockerfile's default PYTHON_IMAGE
STAND_IN = f"localhost/{BASE_IMAGE}"
DEBIAN_MIRROR = os.environ.get("MIRROR", "http://deb.debian.org/debian")
CONSTRAINTS = ROOT / "deploy" / "constraints.txt"


class Unavailable(Exception):
    """This machine cannot build or run images, for a reason outside the project."""


def _run(
    args: Sequence[str],
    *,
    timeout: float = 120,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        list(args), capture_output=True, text=True, timeout=timeout, check=False,
        env=None if env is None else dict(env), cwd=cwd,
    )  # fmt: skip
    if check and result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args)} exited with {result.returncode}\n"
            f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"
        )
    return result


def ulimit_args() -> list[str]:
    """Explicit ulimits no higher than this process's hard limits.

    Engines otherwise ask for their own defaults (podman: nproc 4194304, nofile 1048576), which
    a process without CAP_SYS_RESOURCE cannot raise its limits to: runc fails the container.
    """

    def cap(kind: int, ceiling: int) -> int:
        hard = resource.getrlimit(kind)[1]
        return ceiling if hard == resource.RLIM_INFINITY else min(hard, ceiling)

    nofile = cap(resource.RLIMIT_NOFILE, 65536)
    nproc = cap(resource.RLIMIT_NPROC, 4096)
    return ["--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", f"nproc={nproc}:{nproc}"]


@dataclass(frozen=True)
class Engine:
    """An image builder and a container runner that share one image store."""

    name: str  # "docker" or "podman"
    cli: tuple[str, ...]  # run, exec, inspect, logs, kill, wait, rm, rmi ...
    builder: tuple[str, ...]  # build / bud, with its global options
    run_options: tuple[str, ...] = ()  # for every `run`, besides the ulimits

    def run_args(self) -> list[str]:
        """Options every ``run`` needs here: explicit ulimits, and the engine's own."""
        return [*ulimit_args(), *self.run_options]

    def __call__(
        self, *args: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return _run([*self.cli, *args], timeout=timeout, check=check)

    def image_exists(self, ref: str) -> bool:
        return self("image", "inspect", "--format", "{{.Id}}", ref, check=False).returncode == 0

    def inspect(self, ref: str, template: str) -> str:
        return self("inspect", "--format", template, ref).stdout.strip()

    def image_size(self, ref: str) -> int:
        return int(self("image", "inspect", "--format", "{{.Size}}", ref).stdout.strip())

    def remove_image(self, image_id: str, *, force: bool = True) -> None:
        self("rmi", *(["--force"] if force else []), image_id, check=False)


def _storage_args() -> list[str]:
    """``--storage-driver vfs`` unless the driver is already chosen by env or storage.conf."""
    if os.environ.get("STORAGE_DRIVER"):
        return []  # containers/storage reads it itself
    for conf in (Path("/etc/containers/storage.conf"), Path("/usr/share/containers/storage.conf")):
        try:
            if tomllib.loads(conf.read_text(encoding="utf-8")).get("storage", {}).get("driver"):
                return []
        except (OSError, tomllib.TOMLDecodeError):
            continue
    return ["--storage-driver", "vfs"]


def detect() -> Engine:
    """Docker when its daemon answers (or POLLER_CONTAINER_ENGINE=docker), else podman."""
    forced = os.environ.get("POLLER_CONTAINER_ENGINE", "")
    if forced not in ("", "docker", "podman"):
        raise ValueError(f"POLLER_CONTAINER_ENGINE={forced!r}: docker or podman")
    docker_error = "no docker on PATH"
    if forced != "podman" and shutil.which("docker"):
        try:
            info = _run(["docker", "info", "--format", "{{.ServerVersion}}"], timeout=30,
                        check=False)  # fmt: skip
        except subprocess.TimeoutExpired:
            info = None
        if info is not None and info.returncode == 0:
            return Engine("docker", ("docker",), ("docker", "build"))
        docker_error = "docker on PATH but its daemon does not answer (docker info failed)"
    if forced == "docker":
        raise Unavailable(f"POLLER_CONTAINER_ENGINE=docker, but {docker_error}")
    missing = [tool for tool in ("podman", "buildah", "runc") if not shutil.which(tool)]
    if missing:
        raise Unavailable(
            f"cannot build images: {docker_error}, and {', '.join(missing)} not installed "
            "(apt-get install buildah podman runc debootstrap; ./scripts/test does so when it "
            "can use apt-get as root)"
        )
    if os.geteuid() != 0:
        raise Unavailable(
            f"{docker_error}; podman/buildah are there but this test runs them as root only "
            "(rootless: no debootstrap, no subuid setup assumed)"
        )
    storage = _storage_args()
    cli = ["podman", *storage, "--runtime", "runc"]
    run_options: list[str] = []
    if not Path("/run/systemd/system").is_dir():
        # No systemd: no systemd cgroups, no journald, and no timers to run HEALTHCHECKs with
        # (the test runs the image's HEALTHCHECK command itself, with exec).
        cli += ["--cgroup-manager", "cgroupfs", "--events-backend", "file"]
        run_options.append("--no-healthcheck")
    builder = ["buildah", *storage, "bud", "--isolation", "chroot", "--format", "docker"]
    return Engine("podman", tuple(cli), tuple(builder), tuple(run_options))


# --- the base image ----------------------------------------------------------------------------


def ensure_base(engine: Engine, *, rebuild: bool = False) -> str:
    """Make sure the Dockerfile's base image resolves, and say how.

    For podman: an image already in local storage under the Dockerfile's name (pulled, or the
    stand-in from an earlier run) is used as it is; otherwise the stand-in is made (about a
    minute), under a lock so that concurrent runs make it once.  ``rebuild`` first removes the
    stand-in (by ID; never a pulled image).
    """
    if engine.name == "docker":
        return "docker pulls it when missing"
    candidates = (STAND_IN, f"docker.io/library/{BASE_IMAGE}")
    if rebuild and engine.image_exists(STAND_IN):
        stand_in = engine("image", "inspect", "--format", "{{.Id}}", STAND_IN).stdout.strip()
        engine.remove_image(stand_in, force=False)  # fails while images built on it remain
    if any(engine.image_exists(ref) for ref in candidates):
        return "cached in local container storage"
    lock_path = Path(tempfile.gettempdir()) / "poller-container-base.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if any(engine.image_exists(ref) for ref in candidates):
            return "cached in local container storage (made by a concurrent run)"
        if not shutil.which("debootstrap"):
            raise Unavailable(
                f"no {BASE_IMAGE} in local container storage and no debootstrap to make a "
                "stand-in (apt-get install debootstrap)"
            )
        release = f"{DEBIAN_MIRROR}/dists/bookworm/Release"
        try:
            with urllib.request.urlopen(release, timeout=20) as answer:  # noqa: S310
                answer.read(64)
        except OSError as exc:
            raise Unavailable(
                f"no {BASE_IMAGE} in local container storage, and the Debian mirror debootstrap "
                f"would make a stand-in from is unreachable ({release}: {exc})"
            ) from exc
        env = {**os.environ, "MIRROR": DEBIAN_MIRROR, "PODMAN": " ".join(engine.cli)}
        _run([str(MAKE_BASE), STAND_IN], timeout=900, env=env)
    return "made with debootstrap and imported"


def marker_environment(engine: Engine, image: str) -> dict[str, str]:
    """PEP 508 marker values of ``image``'s python (its version may differ from ours)."""
    script = (
        "import json, os, platform, sys; v = sys.implementation.version; "
        "print(json.dumps({'implementation_name': sys.implementation.name, "
        "'implementation_version': f'{v.major}.{v.minor}.{v.micro}', 'os_name': os.name, "
        "'platform_machine': platform.machine(), 'platform_release': platform.release(), "
        "'platform_system': platform.system(), 'platform_version': platform.version(), "
        "'python_full_version': platform.python_version(), "
        "'platform_python_implementation': platform.python_implementation(), "
        "'python_version': '.'.join(platform.python_version_tuple()[:2]), "
        "'sys_platform': sys.platform, "
        "'glibc': (os.confstr('CS_GNU_LIBC_VERSION') or ' 0.0').split()[1]}))"
    )
    out = engine("run", "--rm", "--network", "none", *engine.run_args(), "--entrypoint", "python3",
                 image, "-c", script, timeout=300)  # fmt: skip
    values: dict[str, str] = json.loads(out.stdout.strip().splitlines()[-1])
    return values


# --- the wheelhouse ----------------------------------------------------------------------------


def _requirements() -> list[str]:
    with (ROOT / "pyproject.toml").open("rb") as fh:
        pyproject = tomllib.load(fh)
    return [*pyproject["project"]["dependencies"], *pyproject["build-system"]["requires"]]


def _wheel_requires(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = zf.read(name).decode("utf-8")
    return [
        line.split(":", 1)[1].strip()
        for line in metadata.splitlines()
        if line.startswith("Requires-Dist:")
    ]


def build_wheelhouse(dest: Path, target: Mapping[str, str]) -> Path:
    """A PEP 503 directory (``dest/simple/<name>/<wheel>``) with every wheel the Dockerfile's
    pip installs for ``target`` (see :func:`marker_environment`): the pinned closure of
    deploy/constraints.txt, the build backend, and whatever the target's interpreter needs
    beyond ours (e.g. ``async-timeout`` for redis on Python < 3.11.3).  Returns ``dest/simple``.
    """
    wheels = dest / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    major, minor, *_ = target["python_full_version"].split(".")
    abi = f"cp{major}{minor}"
    arch = target["platform_machine"]
    glibc_minor = int(target["glibc"].split(".")[1])
    platforms = [f"manylinux_2_{m}_{arch}" for m in range(glibc_minor, 4, -1)]
    platforms += [f"manylinux{tag}_{arch}" for tag in ("2014", "2010", "1")] + [f"linux_{arch}"]
    pip = [sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(wheels),
           "--only-binary=:all:", "--python-version", f"{major}.{minor}",
           "--implementation", "cp", "--abi", abi, "--abi", "abi3", "--abi", "none",
           *(arg for p in platforms for arg in ("--platform", p)),
           "--constraint", str(CONSTRAINTS)]  # fmt: skip
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    wanted = _requirements()
    for _ in range(10):  # our pip resolves for our interpreter; close it over the target's
        _run([*pip, *wanted], timeout=600, env=env)
        have = {canonicalize_name(parse_wheel_filename(w.name)[0]) for w in wheels.glob("*.whl")}
        wanted = []
        for wheel in wheels.glob("*.whl"):
            for spec in _wheel_requires(wheel):
                req = Requirement(spec)
                applies = req.marker is None or Marker(str(req.marker)).evaluate(
                    {**target, "extra": ""}
                )
                if applies and canonicalize_name(req.name) not in have:
                    extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
                    wanted.append(f"{req.name}{extras}{req.specifier}")
        if not wanted:
            break
    else:
        raise RuntimeError(f"the wheelhouse does not close: still missing {wanted}")
    simple = dest / "simple"
    for wheel in wheels.glob("*.whl"):
        project = simple / canonicalize_name(parse_wheel_filename(wheel.name)[0])
        project.mkdir(parents=True, exist_ok=True)
        shutil.copy2(wheel, project / wheel.name)
    return simple


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serving(directory: Path) -> Iterator[str]:
    """``directory`` over HTTP on 127.0.0.1 (a free port) for the block; yields its URL."""

    def handler(*args: Any, **kw: Any) -> _QuietHandler:
        return _QuietHandler(*args, directory=str(directory), **kw)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="wheelhouse", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


# --- building ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Built:
    image_id: str
    tag: str
    size: int  # bytes, as the engine reports it
    seconds: float


def build_image(engine: Engine, tag: str, index_url: str, workdir: Path) -> Built:
    """Build the Dockerfile at the repository root (context: the root, per .dockerignore)."""
    iidfile = workdir / "iid"
    args = [*engine.builder, "--network", "host", "--file", str(ROOT / "Dockerfile"),
            "--tag", tag, "--iidfile", str(iidfile),
            "--build-arg", f"PIP_INDEX_URL={index_url}"]  # fmt: skip
    revision = _run(["git", "rev-parse", "HEAD"], check=False, cwd=ROOT).stdout.strip()
    if revision:
        args += ["--build-arg", f"REVISION={revision}"]
    if engine.name == "podman":
        args += ["--pull=never", *ulimit_args()]  # the base is local (ensure_base), never pulled
    started = time.monotonic()
    _run([*args, str(ROOT)], timeout=900, cwd=ROOT)
    seconds = time.monotonic() - started
    image_id = iidfile.read_text(encoding="utf-8").strip()
    return Built(image_id, tag, engine.image_size(image_id), seconds)
