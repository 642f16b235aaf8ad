"""Settings: typed, validated once at start-up, from a TOML file and ``POLLER_*`` variables.

Environment wins over the file.  Every bad value raises :class:`ConfigError` whose message is
one line naming the variable, so ``poller`` can print it and exit 2 before doing anything.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, get_type_hints
from urllib.parse import urlsplit

from poller.errors import EXIT_USAGE, PollerError
from poller.ids import is_valid_id

ENV_PREFIX: Final = "POLLER_"
#: Where ECS and CCE nodes serve their metadata, temporary credentials included.
DEFAULT_METADATA_ENDPOINT: Final = "http://169.254.169.254"
#: ``POLLER_CREDENTIALS`` values: empty (the other authentication settings decide) or
#: ``metadata`` (temporary AK/SK from the metadata service of the server the daemon runs on).
CREDENTIAL_SOURCES: Final = ("", "metadata")


class ConfigError(PollerError, ValueError):
    """A setting is missing or malformed; the message is one line naming it (exit 2)."""

    exit_code = EXIT_USAGE
    label = "configuration error"


class Secret:
    """A string that never shows itself in ``repr``/``str``/logs; call :meth:`reveal` to use it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


#: ``Settings`` field metadata.  ``group``: the grouped view holding the setting (``"polling"``:
#: :attr:`Settings.polling`, ``"auth"``: :attr:`Settings.auth`); ``from_file``: a secret that
#: may also be read from the file ``POLLER_<NAME>_FILE`` names.
_POLLING: Final = MappingProxyType({"group": "polling"})
_AUTH: Final = MappingProxyType({"group": "auth"})
_AUTH_FROM_FILE: Final = MappingProxyType({"group": "auth", "from_file": True})


@dataclass(frozen=True, slots=True)
class Settings:
    """Every knob of the daemon and the CLI.  Durations are seconds (floats).

    Typed once, here: each field's annotated type chooses how its value is read
    (:data:`_CONVERSIONS`), and its metadata (:data:`_POLLING`, :data:`_AUTH`,
    :data:`_AUTH_FROM_FILE`) puts it in a grouped view and lets a secret come from a file.
    A new setting also needs a row in README.md's settings table and a line in
    config/poller.example.toml, config/poller.env.example and (unless secret)
    deploy/kubernetes/configmap.yaml; tests compare each of them with this class.
    """

    # --- Redis -----------------------------------------------------------------------------
    redis_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "poller"
    # jobs spread over this many shards (by a hash of the job ID), for several primaries
    shards: int = 1
    # after each commit, WAIT for this many replicas to take it (0: don't), at most this long
    redis_wait_replicas: int = 0
    redis_wait_timeout: float = 1.0
    # --- ServiceStage API ------------------------------------------------------------------
    api_endpoint: str = ""
    region: str = ""
    project_id: str = ""
    # --- authentication (settings.auth): exactly one method (token, token file, AK/SK, IAM
    # or the metadata service) when polling
    auth_token: Secret | None = field(default=None, metadata=_AUTH)
    auth_token_file: str = field(default="", metadata=_AUTH)
    access_key: Secret | None = field(default=None, metadata=_AUTH_FROM_FILE)
    secret_key: Secret | None = field(default=None, metadata=_AUTH_FROM_FILE)
    # with AK/SK: the security token of temporary credentials (sent as X-Security-Token)
    security_token: Secret | None = field(default=None, metadata=_AUTH_FROM_FILE)
    iam_endpoint: str = field(default="", metadata=_AUTH)
    iam_user: str = field(default="", metadata=_AUTH)
    iam_password: Secret | None = field(default=None, metadata=_AUTH_FROM_FILE)
    iam_domain: str = field(default="", metadata=_AUTH)
    # "metadata": temporary AK/SK/security token from the metadata service, renewed ahead
    credentials: str = field(default="", metadata=_AUTH)
    metadata_endpoint: str = field(default=DEFAULT_METADATA_ENDPOINT, metadata=_AUTH)
    # --- TLS and plain HTTP ----------------------------------------------------------------
    ca_bundle: str = ""
    # plain http:// to a host that is not loopback sends credentials in clear text: refused
    # unless this is set
    allow_insecure_http: bool = False
    # --- polling policy (settings.polling) -------------------------------------------------
    poll_interval: float = field(default=2.0, metadata=_POLLING)
    poll_interval_max: float = field(default=30.0, metadata=_POLLING)
    backoff_initial: float = field(default=1.0, metadata=_POLLING)
    backoff_max: float = field(default=60.0, metadata=_POLLING)
    job_timeout: float = field(default=6 * 3600.0, metadata=_POLLING)
    not_found_grace: float = field(default=60.0, metadata=_POLLING)
    request_timeout: float = field(default=10.0, metadata=_POLLING)
    page_size: int = field(default=100, metadata=_POLLING)
    # --- capacity --------------------------------------------------------------------------
    concurrency: int = 64
    rate_limit: float = 0.0
    # after a 401 under AK/SK every replica pauses this long, doubling per 401 in a row up to
    # the max (the provider locks a key pair after more than 5 bad signatures in a row)
    auth_pause: float = 30.0
    auth_pause_max: float = 300.0
    lease_seconds: float = 30.0
    claim_batch: int = 100
    # --- retention of events and finished jobs ---------------------------------------------
    retention: float = 24 * 3600.0
    # how long a job ID's next ``seq`` is remembered after it was last tracked
    seq_memory: float = 30 * 24 * 3600.0
    events_maxlen: int = 1_000_000
    # --- process ---------------------------------------------------------------------------
    shutdown_grace: float = 10.0
    http_port: int = 9464
    http_host: str = "0.0.0.0"  # noqa: S104 - a container's probes and scrapes come from outside
    log_format: str = "auto"
    log_level: str = "info"
    replica_id: str = ""
    # --- `poller web`: the status page and HTTP API ----------------------------------------
    web_host: str = "127.0.0.1"
    web_port: int = 9465
    web_tokens_file: str = ""
    web_public_read: bool = False

    @property
    def polling(self) -> PollingSettings:
        """The polling policy's settings (the fields marked ``group="polling"``)."""
        return PollingSettings(**self._group("polling"))

    @property
    def auth(self) -> AuthSettings:
        """The authentication settings (the fields marked ``group="auth"``)."""
        return AuthSettings(**self._group("auth"))

    def _group(self, group: str) -> dict[str, Any]:
        return {key: getattr(self, key) for key in _GROUPS[group]}

    @property
    def base_url(self) -> str:
        """The API root: ``api_endpoint`` or the regional endpoint for ``region``."""
        if self.api_endpoint:
            return self.api_endpoint.rstrip("/")
        if self.region:
            return f"https://servicestage.{self.region}.myhuaweicloud.com"
        return ""

    def auth_methods(self) -> list[str]:
        """Names of the authentication methods configured (for the exactly-one check)."""
        return self.auth.methods()

    def require_polling(self) -> None:
        """Raise :class:`ConfigError` unless the settings suffice to poll the API."""
        if not self.base_url:
            raise ConfigError("POLLER_API_ENDPOINT: not set (nor POLLER_REGION to derive it)")
        if not self.project_id:
            raise ConfigError("POLLER_PROJECT_ID: not set; it is the default project of jobs")
        self.auth.require_one_method()


# --- grouped views -------------------------------------------------------------------------
# Read-only copies of some of the flat Settings fields, built on access.  Which fields: those
# whose metadata names the group; the classes below repeat their names and types for the type
# checker, and _group_fields refuses at import a class that does not match them exactly.


@dataclass(frozen=True, slots=True)
class PollingSettings:
    """How often jobs are polled, how failures back off, when a job is given up (seconds)."""

    poll_interval: float
    poll_interval_max: float
    backoff_initial: float
    backoff_max: float
    job_timeout: float
    not_found_grace: float
    request_timeout: float
    page_size: int


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """How requests to the API authenticate: exactly one method when polling."""

    auth_token: Secret | None
    auth_token_file: str
    access_key: Secret | None
    secret_key: Secret | None
    security_token: Secret | None
    iam_endpoint: str
    iam_user: str
    iam_password: Secret | None
    iam_domain: str
    credentials: str
    metadata_endpoint: str

    def methods(self) -> list[str]:
        """Names of the authentication methods configured (for the exactly-one check)."""
        methods = []
        if self.auth_token is not None:
            methods.append("POLLER_AUTH_TOKEN")
        if self.auth_token_file:
            methods.append("POLLER_AUTH_TOKEN_FILE")
        if self.access_key is not None or self.secret_key is not None:
            methods.append("POLLER_ACCESS_KEY/POLLER_SECRET_KEY")
        elif self.security_token is not None:
            methods.append("POLLER_SECURITY_TOKEN")
        if self.iam_user or self.iam_password is not None:
            methods.append("POLLER_IAM_USER/POLLER_IAM_PASSWORD")
        if self.credentials == "metadata":
            methods.append("POLLER_CREDENTIALS=metadata")
        return methods

    def require_one_method(self) -> None:
        """Raise :class:`ConfigError` unless exactly one method is configured, completely."""
        methods = self.methods()
        if not methods:
            raise ConfigError(
                "POLLER_AUTH_TOKEN: no authentication configured; set one of POLLER_AUTH_TOKEN, "
                "POLLER_AUTH_TOKEN_FILE, POLLER_ACCESS_KEY+POLLER_SECRET_KEY "
                "(+POLLER_SECURITY_TOKEN), POLLER_IAM_USER+POLLER_IAM_PASSWORD or "
                "POLLER_CREDENTIALS=metadata"
            )
        if len(methods) > 1:
            raise ConfigError(
                f"{methods[0]}: more than one authentication method configured "
                f"({', '.join(methods)}); set exactly one"
            )
        if (self.access_key is None) != (self.secret_key is None):
            raise ConfigError(
                "POLLER_SECRET_KEY: POLLER_ACCESS_KEY and POLLER_SECRET_KEY go together"
            )
        if self.security_token is not None and self.access_key is None:
            raise ConfigError(
                "POLLER_SECURITY_TOKEN: goes with the temporary POLLER_ACCESS_KEY and "
                "POLLER_SECRET_KEY it was issued with"
            )
        if self.iam_user or self.iam_password is not None:
            for name, value in (
                ("POLLER_IAM_ENDPOINT", self.iam_endpoint),
                ("POLLER_IAM_USER", self.iam_user),
                ("POLLER_IAM_DOMAIN", self.iam_domain),
            ):
                if not value:
                    raise ConfigError(f"{name}: required with IAM password authentication")
            if self.iam_password is None:
                raise ConfigError("POLLER_IAM_PASSWORD: required with IAM password authentication")
        if self.credentials == "metadata" and not self.metadata_endpoint:
            raise ConfigError("POLLER_METADATA_ENDPOINT: required with POLLER_CREDENTIALS=metadata")


def _group_fields(
    settings: type[Any], views: Mapping[str, type[Any]]
) -> dict[str, tuple[str, ...]]:
    """The names of each group's fields, from the metadata of ``settings``' fields; a view
    class whose fields are not exactly those (names, order and types) fails at import."""
    hints = get_type_hints(settings)
    groups: dict[str, list[str]] = {group: [] for group in views}
    for f in dataclasses.fields(settings):
        group = f.metadata.get("group")
        if group is not None:
            if group not in groups:
                raise TypeError(f"{settings.__name__}.{f.name}: no view for group {group!r}")
            groups[group].append(f.name)
    for group, view in views.items():
        expected = {key: hints[key] for key in groups[group]}
        found = get_type_hints(view)
        if list(found.items()) != list(expected.items()):
            wanted = ", ".join(f"{k}: {getattr(v, '__name__', v)}" for k, v in expected.items())
            raise TypeError(f"{view.__name__}: must have the fields of group {group!r}: {wanted}")
    return {group: tuple(keys) for group, keys in groups.items()}


_GROUPS: Final = _group_fields(Settings, {"polling": PollingSettings, "auth": AuthSettings})


# --- parsing -----------------------------------------------------------------------------


def _as_str(name: str, raw: Any) -> str:
    if not isinstance(raw, str):
        raise ConfigError(f"{name}: expected a string, got {type(raw).__name__}")
    return raw.strip()


def _as_float(name: str, raw: Any) -> float:
    try:
        value = float(raw) if not isinstance(raw, bool) else math.nan
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name}: expected a non-negative number of seconds, got {raw!r}")
    return value


def _as_int(name: str, raw: Any) -> int:
    try:
        if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
            raise ValueError
        value = int(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: expected a whole number, got {raw!r}") from None
    return value


_TRUE: Final = frozenset({"true", "1", "yes", "on"})
_FALSE: Final = frozenset({"false", "0", "no", "off", ""})


def _as_bool(name: str, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = raw.strip().lower() if isinstance(raw, str) else None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"{name}: expected true or false, got {raw!r}")


def _as_secret(name: str, raw: Any) -> Secret:
    value = _as_str(name, raw)
    if not value:
        raise ConfigError(f"{name}: is empty")
    return Secret(value)


#: How a setting's value is read, chosen by the annotated type of its ``Settings`` field: a
#: string from the environment or a TOML value in, the field's type out, or ConfigError.
_CONVERSIONS: Final[Mapping[object, Callable[[str, Any], Any]]] = {
    float: _as_float,  # durations and rates: non-negative seconds
    int: _as_int,
    bool: _as_bool,
    str: _as_str,
    Secret | None: _as_secret,  # unset (None) unless given, and never empty
}


def _conversions(cls: type[Any]) -> dict[str, Callable[[str, Any], Any]]:
    """Each field's conversion, by its type; a field no conversion fits (or a ``from_file``
    mark on anything but a secret) fails at import, not on some later start-up."""
    hints = get_type_hints(cls)
    chosen = {}
    for f in dataclasses.fields(cls):
        where = f"{cls.__name__}.{f.name}"
        convert = _CONVERSIONS.get(hints[f.name])
        if convert is None:
            raise TypeError(f"{where}: no conversion for {hints[f.name]!r}")
        if f.metadata.get("from_file") and (convert is not _as_secret or f.name + "_file" in hints):
            raise TypeError(f"{where}: from_file needs a Secret field without a {f.name}_file")
        chosen[f.name] = convert
    return chosen


_CONVERTERS: Final = _conversions(Settings)
#: Secrets that may also be read from the file ``POLLER_<NAME>_FILE`` (or ``<name>_file``) names.
FILE_SECRETS: Final = frozenset(
    f.name for f in dataclasses.fields(Settings) if f.metadata.get("from_file")
)


def env_var(key: str) -> str:
    """The environment variable of setting ``key``: ``POLLER_<KEY>``."""
    return ENV_PREFIX + key.upper()


def convert(key: str, raw: Any, name: str | None = None) -> Any:
    """``raw`` (an environment string or a TOML value) as setting ``key``'s type.

    A bad value raises :class:`ConfigError` naming ``name`` (default: ``POLLER_<KEY>``).
    """
    return _CONVERTERS[key](env_var(key) if name is None else name, raw)


def _read_secret_file(name: str, path: str) -> Secret:
    try:
        return _as_secret(name, Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read {path!r}: {exc.strerror}") from None


def load_settings(
    env: Mapping[str, str] | None = None, config_file: str | os.PathLike[str] | None = None
) -> Settings:
    """Build :class:`Settings` from ``config_file`` (or ``POLLER_CONFIG``) then ``env``.

    Raises :class:`ConfigError` (one line, naming the setting) on any bad value.
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    path = config_file or env.get("POLLER_CONFIG")
    if path:
        try:
            with open(path, "rb") as fh:
                document = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"POLLER_CONFIG: cannot read {str(path)!r}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"POLLER_CONFIG: {str(path)!r} is not valid TOML: {exc}") from None
        for key, raw in document.items():
            if key in _CONVERTERS:
                values[key] = convert(key, raw, key)
            elif key.endswith("_file") and key[:-5] in FILE_SECRETS:
                values[key[:-5]] = _read_secret_file(key, _as_str(key, raw))
            else:
                raise ConfigError(f"{key}: unknown setting in {str(path)!r}")
    for key in sorted(_CONVERTERS):
        name = env_var(key)
        if key in FILE_SECRETS and (name + "_FILE") in env:
            values[key] = _read_secret_file(name + "_FILE", env[name + "_FILE"])
        if name in env:
            values[key] = convert(key, env[name])
    settings = Settings(**values)
    _validate(settings)
    return settings


def unknown_variables(env: Mapping[str, str]) -> list[str]:
    """``POLLER_*`` variables that name no setting (typos are otherwise silently ignored)."""
    known = {ENV_PREFIX + "CONFIG"}
    known |= {env_var(key) for key in _CONVERTERS}
    known |= {env_var(key) + "_FILE" for key in FILE_SECRETS}
    return sorted(k for k in env if k.startswith(ENV_PREFIX) and k not in known)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_loopback_host(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ::1: traffic that never leaves the machine."""
    host = host.lower().rstrip(".")
    address = _ip(host)
    return host == "localhost" if address is None else address.is_loopback


def _is_link_local_host(host: str) -> bool:
    """True for 169.254.0.0/16 and fe80::/10, where the metadata service answers."""
    address = _ip(host.lower())
    return address is not None and address.is_link_local


def _check_cleartext(name: str, url: str, *, link_local_ok: bool = False) -> None:
    """Refuse ``http://`` to anything but loopback (and, for the metadata service, link-local
    addresses, which never leave the host's network segment)."""
    parts = urlsplit(url)
    if parts.scheme != "http":
        return
    host = parts.hostname or ""
    if is_loopback_host(host) or (link_local_ok and _is_link_local_host(host)):
        return
    raise ConfigError(
        f"{name}: http:// sends credentials in clear text; use https:// or set "
        "POLLER_ALLOW_INSECURE_HTTP=true"
    )


def _validate_redis(s: Settings) -> None:
    # here, not at the top: poller.store's package imports modules that import this one
    from poller.store.connection import BadRedisUrl, parse_redis_url
    from poller.store.schema import MAX_SHARDS, hash_tag

    try:
        target = parse_redis_url(s.redis_url)
    except BadRedisUrl as exc:
        raise ConfigError(
            f"POLLER_REDIS_URL: {exc} (expected redis://host:port/db, rediss://…, unix://…, "
            "redis+cluster://host:port,… or redis+sentinel://host:port,…/service)"
        ) from None
    _check(
        bool(s.key_prefix) and all(c.isprintable() and not c.isspace() for c in s.key_prefix),
        f"POLLER_KEY_PREFIX: must be non-empty without spaces, got {s.key_prefix!r}",
    )
    if target.is_cluster:
        _check(
            hash_tag(s.key_prefix) is not None,
            f"POLLER_KEY_PREFIX: Redis Cluster needs a hash-tagged prefix such as "
            f"{{{s.key_prefix.strip('{}') or 'poller'}}}, got {s.key_prefix!r}",
        )
    _check(1 <= s.shards <= MAX_SHARDS, f"POLLER_SHARDS: must be between 1 and {MAX_SHARDS}")
    _check(0 <= s.redis_wait_replicas <= 100,
           "POLLER_REDIS_WAIT_REPLICAS: must be between 0 and 100")  # fmt: skip
    _check(s.redis_wait_timeout > 0, "POLLER_REDIS_WAIT_TIMEOUT: must be greater than 0")


def _check_positive(values: Settings | PollingSettings, *keys: str) -> None:
    """Each setting ``key`` of ``values`` is greater than 0."""
    for key in keys:
        _check(getattr(values, key) > 0, f"{env_var(key)}: must be greater than 0")


def _check_at_least(values: Settings | PollingSettings, high: str, low: str) -> None:
    """Setting ``high`` of ``values`` is at least setting ``low``."""
    _check(
        getattr(values, high) >= getattr(values, low),
        f"{env_var(high)}: must be at least {env_var(low)}",
    )


def _validate_polling(p: PollingSettings) -> None:
    _check_positive(p, "poll_interval", "backoff_initial", "job_timeout", "request_timeout")
    _check_at_least(p, "poll_interval_max", "poll_interval")
    _check_at_least(p, "backoff_max", "backoff_initial")
    _check(1 <= p.page_size <= 1000, "POLLER_PAGE_SIZE: must be between 1 and 1000")


def _validate(s: Settings) -> None:
    _validate_redis(s)
    for name, url in (
        ("POLLER_API_ENDPOINT", s.api_endpoint),
        ("POLLER_IAM_ENDPOINT", s.iam_endpoint),
        ("POLLER_METADATA_ENDPOINT", s.metadata_endpoint),
    ):
        if url:
            p = urlsplit(url)
            _check(
                p.scheme in ("http", "https") and bool(p.hostname),
                f"{name}: expected an http(s):// URL, got {url!r}",
            )
            if not s.allow_insecure_http:
                _check_cleartext(name, url, link_local_ok=name == "POLLER_METADATA_ENDPOINT")
    _check(
        s.credentials in CREDENTIAL_SOURCES,
        f"POLLER_CREDENTIALS: expected metadata (or empty), got {s.credentials!r}",
    )
    if s.project_id:
        _check(
            is_valid_id(s.project_id),
            f"POLLER_PROJECT_ID: not a valid project ID: {s.project_id!r}",
        )
    _validate_polling(s.polling)
    _check_positive(s, "lease_seconds", "retention", "seq_memory", "auth_pause")
    _check_at_least(s, "auth_pause_max", "auth_pause")
    _check(1 <= s.concurrency <= 100_000, "POLLER_CONCURRENCY: must be between 1 and 100000")
    _check(1 <= s.claim_batch <= 10_000, "POLLER_CLAIM_BATCH: must be between 1 and 10000")
    _check(s.events_maxlen >= 1, "POLLER_EVENTS_MAXLEN: must be at least 1")
    _check(0 <= s.http_port <= 65535, "POLLER_HTTP_PORT: must be a port number (0 disables)")
    _check(0 <= s.web_port <= 65535, "POLLER_WEB_PORT: must be a port number (0: any free one)")
    _check(
        s.log_format in ("auto", "json", "console"),
        f"POLLER_LOG_FORMAT: expected auto, json or console, got {s.log_format!r}",
    )
    _check(
        s.log_level.lower() in ("debug", "info", "warning", "error"),
        f"POLLER_LOG_LEVEL: expected debug, info, warning or error, got {s.log_level!r}",
    )
    if s.auth_token_file:
        _check(
            os.path.isfile(s.auth_token_file),
            f"POLLER_AUTH_TOKEN_FILE: no such file {s.auth_token_file!r}",
        )
    if s.ca_bundle:
        _check(os.path.isfile(s.ca_bundle), f"POLLER_CA_BUNDLE: no such file {s.ca_bundle!r}")


def replace(settings: Settings, **changes: Any) -> Settings:
    """A copy of ``settings`` with ``changes`` (for tests and the demo)."""
    return dataclasses.replace(settings, **changes)
