"""``python -m poller.sim`` / ``poller sim``: help, printing scenarios, serving, stopping."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp

from poller.sim import example_scenario_path, generate, load_scenario, scenario_to_dict
from poller.sim.cli import register, run_sim


def _sim(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "poller.sim", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_help_describes_the_options_and_the_admin_api() -> None:
    result = _sim("--help")

    assert result.returncode == 0
    for option in (
        "--scenario",
        "--generate",
        "--duration",
        "--page-cap",
        "--upper-case-keys",
        "--token",
        "--time-scale",
        "--error-rate",
        "--throttled-429",
        "--latency",
        "--print-scenario",
        "POST /_sim/jobs",
    ):
        assert option in result.stdout


def test_print_scenario_prints_the_generated_scenario_as_json() -> None:
    result = _sim("--generate", "3", "--seed", "4", "--duration", "9", "--print-scenario")

    assert result.returncode == 0
    assert json.loads(result.stdout) == json.loads(
        json.dumps(scenario_to_dict(generate(3, 4, duration=9)))
    )


def test_example_option_loads_the_shipped_example_scenario() -> None:
    result = _sim("--example", "--print-scenario")

    assert result.returncode == 0
    assert json.loads(result.stdout) == scenario_to_dict(load_scenario(example_scenario_path()))


def test_print_scenario_without_jobs_fails_with_exit_code_2() -> None:
    result = _sim("--print-scenario")

    assert result.returncode == 2
    assert "--print-scenario needs --generate N, --scenario or --example" in result.stderr


def test_invalid_scenario_file_fails_with_a_message_naming_the_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"jobs": [{"job_status": [[0, "WAITING"]]}]}')

    result = _sim("--scenario", str(path))

    assert result.returncode == 2
    assert "bad.json: jobs[0].job_status[0][1]: 'WAITING' is not one of" in result.stderr


def test_bad_option_value_is_an_argparse_error() -> None:
    result = _sim("--error-rate", "2")

    assert result.returncode == 2
    assert "a probability is between 0 and 1" in result.stderr


def test_register_adds_the_sim_subcommand_with_a_func() -> None:
    parser = argparse.ArgumentParser(prog="poller")
    register(parser.add_subparsers(dest="command"))

    args = parser.parse_args(["sim", "--port", "9", "--token", "a", "--token", "b"])

    assert args.func is run_sim
    assert (args.port, args.token) == (9, ["a", "b"])


async def test_serves_until_sigterm_and_announces_url_project_and_token() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "poller.sim",
        "--port",
        "0",
        "--generate",
        "3",
        "--token",
        "t1",
        "--project-id",
        "proj-1",
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    try:
        line = (await asyncio.wait_for(process.stderr.readline(), 30)).decode()
        url = re.search(r"serving (http://\S+)", line)
        assert url is not None
        assert "project_id=proj-1" in line
        assert "token=t1" in line
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{url[1]}/_sim/jobs") as response:
                jobs = (await response.json())["jobs"]
            job_id = next(j["job_id"] for j in jobs if j["visibility"] == "visible")
            job_url = f"{url[1]}/v3/proj-1/cas/jobs/{job_id}"
            async with session.get(job_url, headers={"X-Auth-Token": "t1"}) as response:
                assert response.status == 200
                assert (await response.json())["job"]["job_id"] == job_id
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
        assert b"Traceback" not in await process.stderr.read()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_without_token_option_accepts_sim_token_and_says_so() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "poller.sim", "--port", "0", stderr=asyncio.subprocess.PIPE
    )
    assert process.stderr is not None
    try:
        line = (await asyncio.wait_for(process.stderr.readline(), 30)).decode()
        assert "token=sim-token (default" in line
        process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
