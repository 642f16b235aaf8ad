"""Settings: defaults, environment over file, and one clear line for each bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from poller.config import ConfigError, Secret, load_settings

BASE = {"POLLER_API_ENDPOINT": "http://127.0.0.1:8000", "POLLER_PROJECT_ID": "proj",
        "POLLER_AUTH_TOKEN": "tok-secret-value"}  # fmt: skip


def test_defaults_follow_the_contract() -> None:
    s = load_settings({})
    assert (s.key_prefix, s.poll_interval, s.poll_interval_max) == ("poller", 2.0, 30.0)
    assert (s.job_timeout, s.not_found_grace, s.http_port) == (21600.0, 60.0, 9464)
    assert (s.retention, s.events_maxlen, s.shutdown_grace) == (86400.0, 1_000_000, 10.0)
    assert s.rate_limit == 0


def test_environment_wins_over_the_file(tmp_path: Path) -> None:
    f = tmp_path / "p.toml"
    f.write_text('poll_interval = 5\nkey_prefix = "fromfile"\nconcurrency = 8\n')
    s = load_settings({"POLLER_POLL_INTERVAL": "0.5"}, config_file=f)
    assert (s.poll_interval, s.key_prefix, s.concurrency) == (0.5, "fromfile", 8)


def test_config_file_from_poller_config(tmp_path: Path) -> None:
    f = tmp_path / "p.toml"
    f.write_text('region = "ap-southeast-1"\n')
    s = load_settings({"POLLER_CONFIG": str(f)})
    assert s.base_url == "https://servicestage.ap-southeast-1.myhuaweicloud.com"


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"POLLER_POLL_INTERVAL": "abc"}, "POLLER_POLL_INTERVAL"),
        ({"POLLER_POLL_INTERVAL": "-1"}, "POLLER_POLL_INTERVAL"),
        ({"POLLER_POLL_INTERVAL": "nan"}, "POLLER_POLL_INTERVAL"),
        ({"POLLER_POLL_INTERVAL": "0"}, "POLLER_POLL_INTERVAL"),
        ({"POLLER_POLL_INTERVAL_MAX": "1"}, "POLLER_POLL_INTERVAL_MAX"),
        ({"POLLER_CONCURRENCY": "1.5"}, "POLLER_CONCURRENCY"),
        ({"POLLER_CONCURRENCY": "0"}, "POLLER_CONCURRENCY"),
        ({"POLLER_HTTP_PORT": "70000"}, "POLLER_HTTP_PORT"),
        ({"POLLER_REDIS_URL": "http://x"}, "POLLER_REDIS_URL"),
        ({"POLLER_API_ENDPOINT": "ftp://x"}, "POLLER_API_ENDPOINT"),
        ({"POLLER_PROJECT_ID": "a/b"}, "POLLER_PROJECT_ID"),
        ({"POLLER_LOG_FORMAT": "xml"}, "POLLER_LOG_FORMAT"),
        ({"POLLER_KEY_PREFIX": "a b"}, "POLLER_KEY_PREFIX"),
        ({"POLLER_AUTH_TOKEN_FILE": "/nonexistent/token"}, "POLLER_AUTH_TOKEN_FILE"),
        ({"POLLER_AUTH_TOKEN": ""}, "POLLER_AUTH_TOKEN"),
        ({"POLLER_SECRET_KEY_FILE": "/nonexistent/sk"}, "POLLER_SECRET_KEY_FILE"),
    ],
)
def test_bad_values_name_the_variable_in_one_line(env: dict[str, str], name: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(env)
    message = str(err.value)
    assert message.startswith(name + ":")
    assert "\n" not in message


def test_bad_toml_and_unknown_keys_are_reported(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("poll_interval = \n")
    with pytest.raises(ConfigError, match=r"^POLLER_CONFIG: .*not valid TOML"):
        load_settings({}, config_file=bad)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("pol_interval = 3\n")
    with pytest.raises(ConfigError, match=r"^pol_interval: unknown setting"):
        load_settings({}, config_file=unknown)


def test_polling_needs_exactly_one_auth_method() -> None:
    load_settings(BASE).require_polling()
    with pytest.raises(ConfigError, match=r"no authentication"):
        load_settings({k: v for k, v in BASE.items() if k != "POLLER_AUTH_TOKEN"}).require_polling()
    with pytest.raises(ConfigError, match=r"more than one"):
        load_settings(
            {**BASE, "POLLER_ACCESS_KEY": "ak", "POLLER_SECRET_KEY": "sk"}
        ).require_polling()


def test_polling_needs_an_endpoint_and_a_project() -> None:
    with pytest.raises(ConfigError, match=r"^POLLER_API_ENDPOINT"):
        load_settings({"POLLER_AUTH_TOKEN": "t", "POLLER_PROJECT_ID": "p"}).require_polling()
    with pytest.raises(ConfigError, match=r"^POLLER_PROJECT_ID"):
        load_settings({"POLLER_AUTH_TOKEN": "t", "POLLER_REGION": "r"}).require_polling()


def test_secrets_never_show_in_repr_or_errors(tmp_path: Path) -> None:
    s = load_settings(BASE)
    assert "tok-secret-value" not in repr(s)
    assert isinstance(s.auth_token, Secret)
    assert s.auth_token.reveal() == "tok-secret-value"
    sk = tmp_path / "sk"
    sk.write_text("very-secret-sk\n")
    s2 = load_settings({"POLLER_SECRET_KEY_FILE": str(sk), "POLLER_ACCESS_KEY": "AK"})
    assert s2.secret_key is not None
    assert s2.secret_key.reveal() == "very-secret-sk"
    assert "very-secret-sk" not in repr(s2)


def test_example_toml_documents_every_setting_at_its_default() -> None:
    import dataclasses
    import tomllib

    from poller.config import Settings

    example = Path(__file__).parents[2] / "config" / "poller.example.toml"
    assert load_settings({}, config_file=example) == Settings()
    text = example.read_text()
    documented = set(tomllib.loads(text))
    commented = {
        line.lstrip("# ").split(" ")[0]
        for line in text.splitlines()
        if line.startswith("# ") and " = " in line
    }
    secrets_by_file = {"secret_key_file": "secret_key", "iam_password_file": "iam_password"}
    names = documented | {secrets_by_file.get(n, n) for n in commented}
    assert {f.name for f in dataclasses.fields(Settings)} <= names


def test_unknown_poller_variables_are_reported() -> None:
    from poller.config import unknown_variables

    env = {"POLLER_POLL_INTERVALL": "3", "POLLER_SECRET_KEY_FILE": "/x", "POLLER_CONFIG": "c",
           "POLLER_REDIS_URL": "r", "HOME": "/root"}  # fmt: skip
    assert unknown_variables(env) == ["POLLER_POLL_INTERVALL"]
