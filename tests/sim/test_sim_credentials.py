"""Configuring AK/SK pairs and IAM users: SimConfig, scenario ``auth``, ``poller sim`` flags."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
from importlib import resources
from typing import Any

import jsonschema
import pytest

from poller.sim import (
    IamUser,
    Scenario,
    ScenarioError,
    SimConfig,
    config_from_scenario,
    parse_scenario,
    scenario_to_dict,
)
from poller.sim.cli import register
from poller.sim.credentials import parse_access_key_option, parse_iam_user_option

SECRET = "TOPSECRET-sk-42"
PASSWORD = "hunter2-pw"
AUTH_DOC: dict[str, Any] = {
    "access_keys": {"AK1": SECRET},
    "iam_users": [{"name": "bob", "password": PASSWORD, "domain": "acme"}],
    "iam_token_lifetime": 90,
    "aksk_lock_seconds": 5,
}


def test_sim_config_repr_shows_no_secret_key_nor_password() -> None:
    config = SimConfig(access_keys={"AK1": SECRET}, iam_users=(IamUser("bob", PASSWORD),))

    assert SECRET not in repr(config)
    assert PASSWORD not in repr(config)
    assert config.access_key_ids == ("AK1",)


def test_sim_config_rejects_an_access_key_that_cannot_be_signed() -> None:
    with pytest.raises(ValueError, match="access key 'A K'") as caught:
        SimConfig(access_keys={"A K": SECRET})

    assert SECRET not in str(caught.value)


def test_sim_config_rejects_a_non_positive_token_lifetime() -> None:
    with pytest.raises(ValueError, match="iam_token_lifetime"):
        SimConfig(iam_token_lifetime=0)


def test_iam_user_option_takes_the_domain_after_the_last_at_sign() -> None:
    assert parse_iam_user_option("bob:p@ss@acme") == IamUser("bob", "p@ss", "acme")
    assert parse_iam_user_option("bob:pass") == IamUser("bob", "pass", None)


def test_access_key_option_splits_at_the_first_colon() -> None:
    assert parse_access_key_option("AK1:sk:with:colons") == ("AK1", "sk:with:colons")


def test_scenario_auth_round_trips_and_is_valid_under_the_schema() -> None:
    schema = json.loads((resources.files("poller.sim") / "schema.json").read_text())
    doc = {"auth": AUTH_DOC, "jobs": []}

    errors = [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(doc)]

    assert errors == []
    assert scenario_to_dict(parse_scenario(doc)) == doc


def test_scenario_auth_error_names_the_field_but_not_the_password() -> None:
    doc = {"auth": {"iam_users": [{"name": "bob", "password": PASSWORD, "domian": "x"}]}}

    with pytest.raises(ScenarioError, match=r"auth\.iam_users\[0\]\.domian: unknown field") as e:
        parse_scenario(doc)

    assert PASSWORD not in str(e.value)


def test_config_from_scenario_adds_the_scenario_credentials_to_the_base() -> None:
    base = SimConfig(access_keys={"AK0": "sk0"}, iam_users=(IamUser("amy", "pw"),))

    config = config_from_scenario(parse_scenario({"auth": AUTH_DOC}), base)

    assert dict(config.access_keys) == {"AK0": "sk0", "AK1": SECRET}
    assert [u.name for u in config.iam_users] == ["amy", "bob"]
    assert (config.iam_token_lifetime, config.aksk_lock_seconds) == (90, 5)


def test_cli_flags_become_config_fields() -> None:
    from poller.sim.cli import _config

    parser = argparse.ArgumentParser(prog="poller")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "sim",
            *("--access-key", f"AK2:{SECRET}", "--iam-user", f"eve:{PASSWORD}@acme"),
            *("--iam-token-lifetime", "2", "--aksk-lock-seconds", "0.5"),
        ]
    )

    config = _config(args, Scenario())

    assert dict(config.access_keys) == {"AK2": SECRET}
    assert config.iam_users == (IamUser("eve", PASSWORD, "acme"),)
    assert (config.iam_token_lifetime, config.aksk_lock_seconds) == (2, 0.5)


def test_bad_access_key_flag_exits_2_without_echoing_the_secret() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "poller.sim", "--access-key", f"A K:{SECRET}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 2
    assert "--access-key" in result.stderr
    assert SECRET not in result.stderr + result.stdout


async def test_start_up_line_names_access_keys_and_users_but_no_secret() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "poller.sim",
        "--port",
        "0",
        "--access-key",
        f"AK1:{SECRET}",
        "--iam-user",
        f"bob:{PASSWORD}@acme",
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    try:
        line = (await asyncio.wait_for(process.stderr.readline(), 30)).decode()
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
        rest = (await process.stderr.read()).decode()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert "access_keys=AK1" in line
    assert "iam_users=bob@acme" in line
    assert "/v3/auth/tokens" in line
    assert SECRET not in line + rest
    assert PASSWORD not in line + rest
