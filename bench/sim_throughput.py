"""Requests per second one ``poller sim`` process serves.

Starts the emulator in a subprocess (``python -m poller.sim --generate N --port 0``), then drives
``GET /v3/{project}/cas/jobs/{job}`` over the generated jobs from a separate load process: ``wrk``
when it is on PATH, otherwise a multi-connection aiohttp client.  The run is bounded in time
(``--seconds``) and, for the aiohttp client, in count (``--max-requests``).  On Linux the emulator
is pinned to one CPU and the load generator to another.

    .venv/bin/python bench/sim_throughput.py [--seconds 5] [--connections 32] [--tool auto]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from poller.sim.auth import DEFAULT_TOKEN

TOKEN = DEFAULT_TOKEN


def main() -> int:
    """Run the benchmark described by the command line; print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200, help="generated jobs (200)")
    parser.add_argument("--max-tasks", type=int, default=20, help="only jobs this small (20)")
    parser.add_argument("--seconds", type=float, default=5.0, help="load duration (5)")
    parser.add_argument("--connections", type=int, default=32, help="open connections (32)")
    parser.add_argument("--max-requests", type=int, default=200_000, help="aiohttp cap")
    parser.add_argument("--tool", choices=("auto", "wrk", "aiohttp"), default="auto")
    parser.add_argument("--load-only", metavar="URL_FILE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load_only:
        urls = json.loads(Path(args.load_only).read_text())
        result = asyncio.run(_aiohttp_load(urls, args.connections, args.seconds, args.max_requests))
        print(json.dumps(result))
        return 0
    return _benchmark(args)


def _benchmark(args: argparse.Namespace) -> int:
    server = subprocess.Popen(
        [sys.executable, "-m", "poller.sim", "--generate", str(args.jobs), "--seed", "1",
         "--duration", "3600", "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert server.stderr is not None
        line = server.stderr.readline()
        found = re.search(r"serving (http://\S+) project_id=(\S+)", line)
        if found is None:
            print(f"emulator did not start: {line}{server.stderr.read()}", file=sys.stderr)
            return 1
        base, project = found[1], found[2]
        _pin(server.pid, 0)
        paths = _job_paths(base, project, args.max_tasks)
        tool = args.tool
        if tool == "auto":
            tool = "wrk" if shutil.which("wrk") else "aiohttp"
        started = time.monotonic()
        client = _run_wrk(base, paths, args) if tool == "wrk" else _run_aiohttp(base, paths, args)
        wall = time.monotonic() - started
        stats = _get_json(f"{base}/_sim/stats")
        print(f"tool: {tool}, connections: {args.connections}, jobs: {len(paths)} "
              f"(<= {args.max_tasks} tasks each), cpus: {os.cpu_count()}")  # fmt: skip
        print(f"client: {client['requests']} requests, {client['rps']:.0f} requests/s, "
              f"errors: {client['errors']}")  # fmt: skip
        print(f"server: {stats['requests']} requests, by status {stats['by_status']}, "
              f"~{stats['requests'] / wall:.0f} requests/s over {wall:.1f} s wall")  # fmt: skip
        return 0
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _pin(pid: int, cpu: int) -> None:
    """Pin ``pid`` to one CPU where the platform allows (Linux with 2+ CPUs)."""
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(pid, {cpu})


def _get_json(url: str) -> Any:
    async def fetch() -> Any:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            return await response.json()

    return asyncio.run(fetch())


def _job_paths(base: str, project: str, max_tasks: int) -> list[str]:
    jobs = _get_json(f"{base}/_sim/jobs")["jobs"]
    chosen = [
        j["job_id"] for j in jobs if j["visibility"] == "visible" and j["total_tasks"] <= max_tasks
    ]
    return [f"/v3/{project}/cas/jobs/{job_id}" for job_id in chosen]


def _run_wrk(base: str, paths: list[str], args: argparse.Namespace) -> dict[str, Any]:
    script = (
        "local paths = {"
        + ",".join(json.dumps(p) for p in paths)
        + "}\n"
        + (
            "local i = 0\n"
            "request = function()\n"
            "  i = i + 1\n"
            f'  local headers = {{["X-Auth-Token"] = "{TOKEN}"}}\n'
            '  return wrk.format("GET", paths[(i % #paths) + 1], headers)\n'
            "end\n"
        )
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
        lua.write(script)
    try:
        command = ["wrk", "-t1", f"-c{args.connections}", f"-d{max(1, round(args.seconds))}s",
                   "-s", lua.name, base]  # fmt: skip
        if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
            command = ["taskset", "-c", "1", *command]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(lua.name)
    requests = re.search(r"(\d+) requests in", output)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: (.*)", output)
    return {
        "requests": int(requests[1]) if requests else 0,
        "rps": float(rps[1]) if rps else 0.0,
        "errors": (int(errors[1]) if errors else 0, socket_errors[1] if socket_errors else "none"),
    }


def _run_aiohttp(base: str, paths: list[str], args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as urls:
        json.dump([base + path for path in paths], urls)
    try:
        command = [sys.executable, __file__, "--load-only", urls.name,
                   "--connections", str(args.connections), "--seconds", str(args.seconds),
                   "--max-requests", str(args.max_requests)]  # fmt: skip
        load = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        _pin(load.pid, 1)
        output, _ = load.communicate(timeout=args.seconds + 60)
    finally:
        os.unlink(urls.name)
    result: dict[str, Any] = json.loads(output)
    return result


async def _aiohttp_load(
    urls: list[str], connections: int, seconds: float, max_requests: int
) -> dict[str, Any]:
    """``connections`` workers each loop over ``urls`` until time or count runs out."""
    deadline = time.monotonic() + seconds
    counts = {"requests": 0, "errors": 0}
    headers = {"X-Auth-Token": TOKEN}

    async def worker(offset: int, session: aiohttp.ClientSession) -> None:
        i = offset
        while time.monotonic() < deadline and counts["requests"] < max_requests:
            counts["requests"] += 1
            async with session.get(urls[i % len(urls)], headers=headers) as response:
                await response.read()
                if response.status != 200:
                    counts["errors"] += 1
            i += 1

    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.monotonic()
        await asyncio.gather(*(worker(n, session) for n in range(connections)))
        elapsed = time.monotonic() - started
    return {**counts, "rps": counts["requests"] / elapsed}


if __name__ == "__main__":
    raise SystemExit(main())
