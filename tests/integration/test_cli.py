"""The ``poller`` command as a user runs it: help, configuration errors, enqueue/status/events."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from poller.localredis import LocalRedis

COMMANDS = ["run", "enqueue", "status", "events", "wait", "cancel", "sim", "demo"]


def poller(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("POLLER_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "poller", *args],
        capture_output=True, text=True, env=full_env, timeout=timeout, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_explains_itself(command: str) -> None:
    result = poller(command, "--help")
    assert result.returncode == 0
    assert "usage: poller " + command in result.stdout
    assert len(result.stdout.splitlines()) > 4


def test_bad_setting_stops_start_up_with_one_line_naming_it() -> None:
    result = poller("run", env={"POLLER_POLL_INTERVAL": "fast"})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "POLLER_POLL_INTERVAL" in lines[0]
    assert "'fast'" in lines[0]


def test_run_without_credentials_names_the_missing_setting() -> None:
    env = {"POLLER_API_ENDPOINT": "http://127.0.0.1:9", "POLLER_PROJECT_ID": "p"}
    result = poller("run", env=env)
    assert result.returncode == 2
    assert result.stderr.startswith("poller: configuration error: POLLER_AUTH_TOKEN:")


def test_secret_values_never_appear_in_configuration_errors() -> None:
    env = {"POLLER_AUTH_TOKEN": "s3cr3t-token-value", "POLLER_ACCESS_KEY": "AKEXAMPLE",
           "POLLER_SECRET_KEY": "sk-very-secret", "POLLER_API_ENDPOINT": "http://127.0.0.1:9",
           "POLLER_PROJECT_ID": "p"}  # fmt: skip
    result = poller("run", env=env)
    assert result.returncode == 2
    assert "more than one authentication method" in result.stderr
    assert "s3cr3t-token-value" not in result.stderr
    assert "sk-very-secret" not in result.stderr


def test_enqueue_refuses_invalid_ids_and_pushes_nothing(
    redis_server: LocalRedis, prefix: str
) -> None:
    env = {"POLLER_REDIS_URL": redis_server.url, "POLLER_KEY_PREFIX": prefix,
           "POLLER_PROJECT_ID": "proj"}  # fmt: skip
    bad = poller("enqueue", "JOB-ok", "../etc", env=env)
    assert bad.returncode == 2  # a usage error, like argparse
    assert "'../etc'" in bad.stderr
    good = poller("enqueue", "JOB-1", "--meta", "change=CHG-1", env=env)
    assert good.returncode == 0, good.stderr
    import redis

    client = redis.Redis.from_url(redis_server.url)
    queued = client.lrange(f"{prefix}:jobs", 0, -1)
    client.close()
    assert [json.loads(q) for q in queued] == [{"job_id": "JOB-1", "meta": {"change": "CHG-1"}}]


def test_status_of_an_unknown_job_fails_clearly(redis_server: LocalRedis, prefix: str) -> None:
    env = {"POLLER_REDIS_URL": redis_server.url, "POLLER_KEY_PREFIX": prefix}
    result = poller("status", "JOB-none", "--project-id", "proj", env=env)
    assert result.returncode == 1
    assert "not tracked" in result.stderr


def test_unreachable_redis_is_a_clear_error_not_a_traceback() -> None:
    env = {"POLLER_REDIS_URL": "redis://127.0.0.1:1/0", "POLLER_PROJECT_ID": "p"}
    result = poller("status", "JOB-1", env=env)
    assert result.returncode == 1
    assert result.stderr.startswith("poller: Redis error")
    assert "Traceback" not in result.stderr


def test_a_taken_probe_port_is_one_line_not_a_traceback() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {"POLLER_HTTP_PORT": str(port), "POLLER_HTTP_HOST": "127.0.0.1",
               "POLLER_REDIS_URL": "redis://127.0.0.1:1/0", "POLLER_PROJECT_ID": "p",
               "POLLER_API_ENDPOINT": "http://127.0.0.1:9", "POLLER_AUTH_TOKEN": "t"}  # fmt: skip
        result = poller("run", env=env)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("poller: cannot start: POLLER_HTTP_PORT: cannot listen")


@pytest.mark.parametrize(
    "args",
    [["events", "--consumer", "c"], ["events", "--since", "whenever"],
     ["enqueue", "JOB-1", "--meta", "novalue"], ["wait", "a/b", "--project-id", "p"]],
)  # fmt: skip
def test_usage_mistakes_exit_2_with_one_line(args: list[str]) -> None:
    result = poller(*args, env={"POLLER_REDIS_URL": "redis://127.0.0.1:1/0"})
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1


def test_commands_needing_a_project_say_which_setting_is_missing() -> None:
    result = poller("status", "JOB-1", env={"POLLER_REDIS_URL": "redis://127.0.0.1:1/0"})
    assert result.returncode == 2
    assert result.stderr.startswith("poller: configuration error: POLLER_PROJECT_ID:")


def test_a_closed_pipe_ends_quietly_with_sigpipes_code() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "poller", "sim", "--generate", "200", "--print-scenario"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    proc.stdout.read(10)
    proc.stdout.close()  # like `| head -c 10`
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 141
    assert b"Traceback" not in err


def test_status_of_a_corrupt_job_is_one_line(redis_server: LocalRedis, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_server.url)
    broken = {"project": "proj", "job": "JOB-x", "state": "tracking", "snap": "{broken"}
    client.hset(f"{prefix}:job:proj:JOB-x", mapping=broken)
    client.close()
    env = {"POLLER_REDIS_URL": redis_server.url, "POLLER_KEY_PREFIX": prefix}
    result = poller("status", "JOB-x", "--project-id", "proj", env=env)
    assert result.returncode == 1
    assert result.stderr.startswith("poller: unreadable job state in Redis: proj:JOB-x")
    assert "Traceback" not in result.stderr
