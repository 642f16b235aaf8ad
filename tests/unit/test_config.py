"""Settings: defaults, environment over file, and one clear line for each bad value."""

from __future__ import annotations

import re
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

    from poller.config import FILE_SECRETS, Settings, convert

    example = Path(__file__).parents[2] / "config" / "poller.example.toml"
    assert load_settings({}, config_file=example) == Settings()
    text = example.read_text()
    fields = [f.name for f in dataclasses.fields(Settings)]
    documented = list(tomllib.loads(text))
    # commented-out examples (secrets, endpoints): "# key = value  # comment", valid values
    commented: list[str] = []
    for line in text.splitlines():
        if line.startswith("# ") and " = " in line:
            ((key, value),) = tomllib.loads(line[2:]).items()
            if key.endswith("_file") and key[:-5] in FILE_SECRETS:
                assert isinstance(value, str), f"poller.example.toml: {key} is a path"
                key = key[:-5]
            elif key in fields:
                convert(key, value, key)
            commented.append(key)
    named = documented + commented
    assert sorted(set(fields) - set(named)) == [], "settings missing from poller.example.toml"
    assert sorted(set(named) - set(fields)) == [], "poller.example.toml names no such settings"
    assert sorted({n for n in named if named.count(n) > 1}) == [], "documented twice"


def test_unknown_poller_variables_are_reported() -> None:
    from poller.config import unknown_variables

    env = {"POLLER_POLL_INTERVALL": "3", "POLLER_SECRET_KEY_FILE": "/x", "POLLER_CONFIG": "c",
           "POLLER_REDIS_URL": "r", "HOME": "/root"}  # fmt: skip
    assert unknown_variables(env) == ["POLLER_POLL_INTERVALL"]


# --- plain http:// -------------------------------------------------------------------------

INSECURE_MESSAGE = (
    "http:// sends credentials in clear text; use https:// or set POLLER_ALLOW_INSECURE_HTTP=true"
)


@pytest.mark.parametrize("name", ["POLLER_API_ENDPOINT", "POLLER_IAM_ENDPOINT"])
@pytest.mark.parametrize(
    "url",
    [
        "http://servicestage.ap-southeast-1.myhuaweicloud.com",
        "http://10.0.0.8:8000",
        "HTTP://iam.example.com/",
        "http://[2001:db8::1]:80",
        "http://localhost.example.com",
        "http://127.0.0.1.nip.io",
        "http://169.254.169.254",  # link-local is fine for the metadata service only
    ],
)
def test_plain_http_to_a_remote_host_is_refused_in_one_line(name: str, url: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings({name: url})
    assert str(err.value) == f"{name}: {INSECURE_MESSAGE}"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000",
        "http://127.3.2.1",
        "http://localhost:9000/",
        "http://LOCALHOST",
        "http://[::1]:8000",
        "http://[::ffff:127.0.0.1]:8000",
        "https://servicestage.ap-southeast-1.myhuaweicloud.com",
        "https://10.0.0.8:8443",
    ],
)
def test_loopback_and_https_endpoints_are_allowed(url: str) -> None:
    s = load_settings({"POLLER_API_ENDPOINT": url, "POLLER_IAM_ENDPOINT": url})
    assert s.api_endpoint == url


@pytest.mark.parametrize("value", ["true", "TRUE", "1", "yes", "on"])
def test_plain_http_is_allowed_with_the_explicit_opt_in(value: str) -> None:
    env = {"POLLER_API_ENDPOINT": "http://sim:8000", "POLLER_ALLOW_INSECURE_HTTP": value,
           "POLLER_IAM_ENDPOINT": "http://iam.internal", "POLLER_PROJECT_ID": "p",
           "POLLER_AUTH_TOKEN": "t"}  # fmt: skip
    s = load_settings(env)
    assert s.allow_insecure_http is True
    s.require_polling()


@pytest.mark.parametrize("value", ["false", "0", "no", "off", ""])
def test_the_opt_in_can_be_said_no_to(value: str) -> None:
    with pytest.raises(ConfigError, match=r"^POLLER_API_ENDPOINT: http:// sends credentials"):
        load_settings({"POLLER_API_ENDPOINT": "http://sim:8000",
                       "POLLER_ALLOW_INSECURE_HTTP": value})  # fmt: skip


def test_a_bad_opt_in_value_names_the_variable() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings({"POLLER_ALLOW_INSECURE_HTTP": "sure"})
    assert str(err.value) == "POLLER_ALLOW_INSECURE_HTTP: expected true or false, got 'sure'"


def test_the_opt_in_from_a_toml_file(tmp_path: Path) -> None:
    f = tmp_path / "p.toml"
    f.write_text('api_endpoint = "http://sim:8000"\nallow_insecure_http = true\n')
    assert load_settings({}, config_file=f).allow_insecure_http is True
    f.write_text('api_endpoint = "http://sim:8000"\nallow_insecure_http = false\n')
    with pytest.raises(ConfigError, match=r"^POLLER_API_ENDPOINT: http://"):
        load_settings({}, config_file=f)
    f.write_text('allow_insecure_http = "maybe"\n')
    with pytest.raises(ConfigError, match=r"^allow_insecure_http: expected true or false"):
        load_settings({}, config_file=f)


def test_cli_reports_the_refusal_as_a_configuration_error() -> None:
    import subprocess
    import sys

    env = {"PATH": "/usr/bin:/bin", "POLLER_API_ENDPOINT": "http://servicestage.example.com",
           "POLLER_PROJECT_ID": "p", "POLLER_AUTH_TOKEN": "t"}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "poller", "run"], env=env, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if "POLLER_API_ENDPOINT" in line]
    assert len(lines) == 1
    assert lines[0].endswith(f"POLLER_API_ENDPOINT: {INSECURE_MESSAGE}")


# --- temporary credentials -------------------------------------------------------------------

TEMPORARY = {**{k: v for k, v in BASE.items() if k != "POLLER_AUTH_TOKEN"},
             "POLLER_ACCESS_KEY": "TMPAK", "POLLER_SECRET_KEY": "tmp-sk-secret",
             "POLLER_SECURITY_TOKEN": "sec-token-value"}  # fmt: skip


def test_a_security_token_completes_a_temporary_key_pair(tmp_path: Path) -> None:
    s = load_settings(TEMPORARY)
    s.require_polling()
    assert s.security_token == Secret("sec-token-value")
    assert "sec-token-value" not in repr(s)
    token_file = tmp_path / "security-token"
    token_file.write_text("from-a-file\n")
    env = {k: v for k, v in TEMPORARY.items() if k != "POLLER_SECURITY_TOKEN"}
    from_file = load_settings({**env, "POLLER_SECURITY_TOKEN_FILE": str(token_file)})
    assert from_file.security_token == Secret("from-a-file")
    from_toml = tmp_path / "p.toml"
    from_toml.write_text(f'security_token_file = "{token_file}"\n')
    assert load_settings(env, config_file=from_toml).security_token == Secret("from-a-file")


def test_a_security_token_alone_is_not_a_method() -> None:
    env = {**BASE, "POLLER_SECURITY_TOKEN": "sec-token-value"}
    del env["POLLER_AUTH_TOKEN"]
    with pytest.raises(ConfigError, match=r"^POLLER_SECURITY_TOKEN: goes with the temporary"):
        load_settings(env).require_polling()
    with pytest.raises(ConfigError, match=r"more than one .*POLLER_SECURITY_TOKEN"):
        load_settings({**BASE, "POLLER_SECURITY_TOKEN": "x"}).require_polling()
    with pytest.raises(ConfigError, match=r"^POLLER_SECURITY_TOKEN_FILE: cannot read"):
        load_settings({"POLLER_SECURITY_TOKEN_FILE": "/nonexistent/token"})
    with pytest.raises(ConfigError, match=r"^POLLER_SECURITY_TOKEN: is empty"):
        load_settings({"POLLER_SECURITY_TOKEN": " "})


def test_metadata_credentials_are_a_method_of_their_own() -> None:
    base = {k: v for k, v in BASE.items() if k != "POLLER_AUTH_TOKEN"}
    s = load_settings({**base, "POLLER_CREDENTIALS": "metadata"})
    s.require_polling()
    assert s.metadata_endpoint == "http://169.254.169.254"  # link-local: http is fine there
    assert s.auth_methods() == ["POLLER_CREDENTIALS=metadata"]
    with pytest.raises(ConfigError, match=r"more than one .*POLLER_CREDENTIALS=metadata"):
        load_settings({**BASE, "POLLER_CREDENTIALS": "metadata"}).require_polling()
    with pytest.raises(ConfigError, match=r"more than one"):
        load_settings({**TEMPORARY, "POLLER_CREDENTIALS": "metadata"}).require_polling()
    with pytest.raises(ConfigError) as err:
        load_settings({**base, "POLLER_CREDENTIALS": "instance"})
    assert str(err.value) == "POLLER_CREDENTIALS: expected metadata (or empty), got 'instance'"
    with pytest.raises(ConfigError, match=r"^POLLER_METADATA_ENDPOINT: required"):
        load_settings(
            {**base, "POLLER_CREDENTIALS": "metadata", "POLLER_METADATA_ENDPOINT": ""}
        ).require_polling()
    with pytest.raises(ConfigError, match=r"POLLER_CREDENTIALS=metadata"):
        load_settings(base).require_polling()  # "no authentication" lists the new method


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("http://169.254.169.254", True),
        ("http://169.254.0.1:8080/", True),
        ("http://[fe80::a9fe:a9fe]", True),
        ("http://127.0.0.1:8000", True),
        ("https://metadata.example.com", True),
        ("http://metadata.example.com", False),
        ("http://10.0.0.1", False),
        ("ftp://169.254.169.254", False),
    ],
)
def test_the_metadata_endpoint_may_be_plain_http_on_the_link_only(url: str, ok: bool) -> None:
    env = {"POLLER_METADATA_ENDPOINT": url}
    if ok:
        assert load_settings(env).metadata_endpoint == url
    else:
        with pytest.raises(ConfigError, match=r"^POLLER_METADATA_ENDPOINT: "):
            load_settings(env)


def test_new_variables_are_known() -> None:
    from poller.config import unknown_variables

    env = {"POLLER_SECURITY_TOKEN": "x", "POLLER_SECURITY_TOKEN_FILE": "/x",
           "POLLER_CREDENTIALS": "metadata", "POLLER_METADATA_ENDPOINT": "http://169.254.169.254",
           "POLLER_ALLOW_INSECURE_HTTP": "false"}  # fmt: skip
    assert unknown_variables(env) == []


# --- conversion chosen by each field's type ------------------------------------------------

# A value each conversion refuses, and the start of the one line it refuses it with.
REFUSED_BY_TYPE = {
    "float": ("-1", "expected a non-negative number of seconds, got '-1'"),
    "int": ("1.5", "expected a whole number, got '1.5'"),
    "bool": ("sure", "expected true or false, got 'sure'"),
    "Secret | None": (" ", "is empty"),
}


def _field_types() -> dict[str, str]:
    import dataclasses

    from poller.config import Settings

    return {f.name: str(f.type) for f in dataclasses.fields(Settings)}


@pytest.mark.parametrize(("key", "type_name"), sorted(_field_types().items()))
def test_every_setting_is_read_as_its_field_type(key: str, type_name: str, tmp_path: Path) -> None:
    from poller.config import env_var

    if type_name == "str":  # any string from the environment; a TOML number is not one
        f = tmp_path / "p.toml"
        f.write_text(f"{key} = 1\n")
        with pytest.raises(ConfigError) as err:
            load_settings({}, config_file=f)
        assert str(err.value) == f"{key}: expected a string, got int"
        return
    raw, message = REFUSED_BY_TYPE[type_name]
    with pytest.raises(ConfigError) as err:
        load_settings({env_var(key): raw})
    assert str(err.value) == f"{env_var(key)}: {message}"


def test_secrets_from_files_are_marked_on_their_fields() -> None:
    from poller.config import FILE_SECRETS, unknown_variables

    assert set(FILE_SECRETS) == {"access_key", "secret_key", "security_token", "iam_password"}
    names = [f"POLLER_{key.upper()}_FILE" for key in FILE_SECRETS]
    assert unknown_variables(dict.fromkeys([*names, "POLLER_AUTH_TOKEN_FILE"], "x")) == []
    # POLLER_AUTH_TOKEN_FILE is a setting of its own (re-read on change), not a secret's file
    assert unknown_variables({"POLLER_REDIS_URL_FILE": "x"}) == ["POLLER_REDIS_URL_FILE"]


def test_a_field_no_conversion_fits_fails_at_import() -> None:
    import dataclasses

    from poller.config import _conversions

    listed = dataclasses.make_dataclass("Listed", [("hosts", list[str])])
    with pytest.raises(TypeError, match=r"^Listed\.hosts: no conversion for list\[str\]"):
        _conversions(listed)
    plain = dataclasses.make_dataclass(
        "Plain", [("user", str, dataclasses.field(default="", metadata={"from_file": True}))]
    )
    with pytest.raises(TypeError, match=r"^Plain\.user: from_file needs a Secret field"):
        _conversions(plain)


# --- grouped views: settings.polling and settings.auth ----------------------------------------

POLLING_FIELDS = ("poll_interval", "poll_interval_max", "backoff_initial", "backoff_max",
                  "job_timeout", "not_found_grace", "request_timeout", "page_size")  # fmt: skip
AUTH_FIELDS = ("auth_token", "auth_token_file", "access_key", "secret_key", "security_token",
               "iam_endpoint", "iam_user", "iam_password", "iam_domain", "credentials",
               "metadata_endpoint")  # fmt: skip


def test_grouped_views_are_read_only_copies_of_the_flat_settings() -> None:
    import dataclasses

    from poller.config import AuthSettings, PollingSettings, Settings

    s = Settings(poll_interval=3.0, page_size=7, access_key=Secret("AK"), iam_user="u")
    assert isinstance(s.polling, PollingSettings)
    assert isinstance(s.auth, AuthSettings)
    assert tuple(f.name for f in dataclasses.fields(PollingSettings)) == POLLING_FIELDS
    assert tuple(f.name for f in dataclasses.fields(AuthSettings)) == AUTH_FIELDS
    for view, names in ((s.polling, POLLING_FIELDS), (s.auth, AUTH_FIELDS)):
        assert {n: getattr(view, n) for n in names} == {n: getattr(s, n) for n in names}
    assert (s.polling.poll_interval, s.polling.page_size) == (3.0, 7)
    assert (s.auth.access_key, s.auth.iam_user) == (Secret("AK"), "u")
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.polling.poll_interval = 1.0  # type: ignore[misc]
    assert "AK" not in repr(s.auth)


def test_group_membership_is_the_fields_metadata() -> None:
    import dataclasses

    from poller.config import Settings

    groups: dict[str, list[str]] = {}
    for f in dataclasses.fields(Settings):
        if "group" in f.metadata:
            groups.setdefault(f.metadata["group"], []).append(f.name)
    assert groups == {"polling": list(POLLING_FIELDS), "auth": list(AUTH_FIELDS)}


def test_a_view_that_does_not_match_its_group_fails_at_import() -> None:
    import dataclasses

    from poller.config import _group_fields

    field = dataclasses.field
    flat = dataclasses.make_dataclass("Flat", [
        ("a", float, field(default=1.0, metadata={"group": "g"})),
        ("b", int, field(default=1, metadata={"group": "g"})),
        ("c", str, field(default="")),
    ])  # fmt: skip
    good = dataclasses.make_dataclass("Good", [("a", float), ("b", int)])
    assert _group_fields(flat, {"g": good}) == {"g": ("a", "b")}
    short = dataclasses.make_dataclass("Short", [("a", float)])
    with pytest.raises(TypeError, match=r"^Short: must have the fields of group 'g': a: float, b"):
        _group_fields(flat, {"g": short})
    retyped = dataclasses.make_dataclass("Retyped", [("a", float), ("b", str)])
    with pytest.raises(TypeError, match=r"^Retyped: must have the fields"):
        _group_fields(flat, {"g": retyped})
    with pytest.raises(TypeError, match=r"^Flat\.a: no view for group 'g'"):
        _group_fields(flat, {})


def test_the_polling_policy_comes_from_the_polling_group() -> None:
    from poller.config import Settings
    from poller.policy import Policy

    s = Settings(poll_interval=3.0, poll_interval_max=9.0, backoff_initial=0.5, backoff_max=8.0,
                 job_timeout=100.0, not_found_grace=7.0)  # fmt: skip
    assert Policy.from_settings(s) == Policy(
        poll_interval=3.0, poll_interval_max=9.0, backoff_initial=0.5, backoff_max=8.0,
        job_timeout=100.0, not_found_grace=7.0,
    )  # fmt: skip
    assert Policy.from_settings(Settings()) == Policy()


# --- the documentation of the settings: README.md's table and config/poller.example.toml ------

ROOT = Path(__file__).resolve().parents[2]


def _split_outside_code(cell: str) -> list[str]:
    """``cell`` cut at each ``,`` or ``/`` that is not inside backticks."""
    parts, current, in_code = [], "", False
    for char in cell:
        in_code ^= char == "`"
        if char in ",/" and not in_code:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    return [*parts, current.strip()]


def readme_settings_table() -> tuple[dict[str, str], set[str]]:
    """README.md's ``## Configuration`` table: each variable's default cell, and the variables
    of the rows that say ``(`_FILE`)``.  A row may name several variables, with their defaults
    in order (``a`` / ``b``, ``a``, ``b``), or one word or nothing for all of them."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    defaults: dict[str, str] = {}
    with_file: set[str] = set()
    for line in section.splitlines():
        if not line.startswith("| `POLLER_"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        assert len(cells) == 3, f"README: not a variable | default | meaning row: {line}"
        names = re.findall(r"`(POLLER_[A-Z0-9_]+)`", cells[0])
        written = _split_outside_code(cells[1])
        if len(written) == 1 and "`" not in written[0]:
            written *= len(names)
        assert len(written) == len(names), f"README: one default per variable: {line}"
        for name, default in zip(names, written, strict=True):
            assert name not in defaults, f"README: {name} is in the settings table twice"
            defaults[name] = default
        if "`_FILE`" in cells[0]:
            with_file |= set(names)
    return defaults, with_file


def test_readme_settings_table_names_every_setting_at_its_default() -> None:
    import dataclasses

    from poller.config import FILE_SECRETS, Settings, convert, env_var

    table, with_file = readme_settings_table()
    keys = {env_var(f.name): f.name for f in dataclasses.fields(Settings)}
    assert sorted(set(keys) - set(table)) == [], "settings missing from README.md's table"
    assert sorted(set(table) - set(keys)) == [], "README.md's table names no such settings"
    defaults = Settings()
    for name, written in table.items():
        key = keys[name]
        actual = getattr(defaults, key)
        code = re.findall(r"`([^`]*)`", written)
        if code:  # e.g. `2` (seconds), `0` (off), `false`: read as the setting itself is
            assert len(code) == 1, f"README: {name}: one default, got {written!r}"
            try:
                value = convert(key, code[0])
            except ConfigError as exc:
                pytest.fail(f"README: {exc}")
            assert value == actual, f"README: {name} defaults to {actual!r}"
        else:  # nothing, "empty", or what empty means ("from region", "host + random")
            assert actual in ("", None), f"README: {name} defaults to {actual!r}, not {written!r}"
    assert {env_var(key) for key in FILE_SECRETS} <= with_file, "README: say (`_FILE`)"
