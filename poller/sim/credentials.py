"""Credentials the emulator knows: AK/SK pairs and IAM users, as data.

Parsed from a scenario's ``auth`` object or from ``poller sim`` options.  Secrets (secret keys,
passwords) are kept out of every ``repr`` and every error message.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from poller.sim._fields import (
    ScenarioError,
    as_list,
    as_mapping,
    check_keys,
    join,
    number,
    require,
    string,
)

DEFAULT_IAM_TOKEN_LIFETIME: Final = 24 * 3600.0
DEFAULT_AKSK_LOCK_SECONDS: Final = 300.0
DEFAULT_AKSK_MAX_FAILURES: Final = 5
# What the signer refuses in an AK (it would break the Authorization header).
_BAD_ACCESS_KEY_RE: Final = re.compile(r"[\s,=:\x00-\x1f\x7f]")
_AUTH_FIELDS: Final = frozenset(
    {"access_keys", "iam_users", "iam_token_lifetime", "aksk_lock_seconds"}
)
_USER_FIELDS: Final = frozenset({"name", "password", "domain"})


@dataclass(frozen=True, slots=True)
class IamUser:
    """An IAM user that may obtain tokens: ``domain`` ``None`` accepts any domain name."""

    name: str
    password: str = field(repr=False)
    domain: str | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("an IAM user needs a name")
        if not self.password:
            raise ValueError(f"IAM user {self.name!r} needs a password")
        if self.domain == "":
            raise ValueError(f"IAM user {self.name!r}: the domain must not be empty")

    @property
    def label(self) -> str:
        """``name`` or ``name@domain``: printable, no secret."""
        return self.name if self.domain is None else f"{self.name}@{self.domain}"


@dataclass(frozen=True, slots=True)
class AuthSpec:
    """A scenario's ``auth`` object; a field that is ``None`` is not set (an empty one: none
    is)."""

    access_keys: Mapping[str, str] | None = field(default=None, repr=False, hash=False)
    iam_users: tuple[IamUser, ...] | None = None
    iam_token_lifetime: float | None = None
    aksk_lock_seconds: float | None = None


def check_access_keys(keys: Mapping[str, str]) -> Mapping[str, str]:
    """A read-only copy of ``keys`` (AK -> SK); raises :class:`ValueError` naming the bad AK."""
    for access_key, secret_key in keys.items():
        if not isinstance(access_key, str) or not access_key:
            raise ValueError("an access key must be a non-empty string")
        if _BAD_ACCESS_KEY_RE.search(access_key):
            raise ValueError(
                f"access key {access_key!r} contains whitespace, ',', '=', ':' or control "
                "characters"
            )
        if not isinstance(secret_key, str) or not secret_key:
            raise ValueError(f"access key {access_key!r} needs a non-empty secret key")
    return MappingProxyType(dict(keys))


def check_seconds(value: float, name: str, *, positive: bool) -> float:
    """``value`` as a finite number of seconds (positive, or at least 0)."""
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        kind = "positive" if positive else "0 or more"
        raise ValueError(f"{name} must be a finite {kind} number of seconds, got {value!r}")
    return float(value)


# ------------------------------------------------------------------------ command line


def parse_access_key_option(text: str) -> tuple[str, str]:
    """``AK:SK`` -> ``(AK, SK)``; the message of a :class:`ValueError` never holds the SK."""
    access_key, sep, secret_key = text.partition(":")
    if not sep or not access_key or not secret_key:
        raise ValueError("expected AK:SK with both parts non-empty")
    check_access_keys({access_key: secret_key})
    return access_key, secret_key


def parse_iam_user_option(text: str) -> IamUser:
    """``NAME:PASSWORD[@DOMAIN]`` -> :class:`IamUser`; the domain follows the *last* ``@``.

    A password containing ``@`` therefore needs an explicit domain.
    """
    name, sep, rest = text.partition(":")
    if not sep or not name or not rest:
        raise ValueError("expected NAME:PASSWORD[@DOMAIN]")
    password, at, domain = rest.rpartition("@") if "@" in rest else (rest, "", "")
    if at and (not password or not domain):
        raise ValueError(f"IAM user {name!r}: expected NAME:PASSWORD[@DOMAIN]")
    return IamUser(name=name, password=password, domain=domain or None)


# ----------------------------------------------------------------------------- scenarios


def parse_auth(doc: object, where: str = "auth") -> AuthSpec:
    """Validate a scenario's ``auth`` object; errors name the field, never a secret."""
    mapping = as_mapping(doc, where)
    check_keys(mapping, where, _AUTH_FIELDS)
    access_keys: Mapping[str, str] | None = None
    if "access_keys" in mapping:
        at = join(where, "access_keys")
        raw = as_mapping(mapping["access_keys"], at)
        keys: dict[str, str] = {}
        for access_key, secret in raw.items():
            if not isinstance(secret, str):
                raise ScenarioError(f"{join(at, access_key)}: expected a string secret key")
            keys[access_key] = secret
        try:
            access_keys = check_access_keys(keys)
        except ValueError as exc:
            raise ScenarioError(f"{at}: {exc}") from None
    users: tuple[IamUser, ...] | None = None
    if "iam_users" in mapping:
        at = join(where, "iam_users")
        items = as_list(mapping["iam_users"], at)
        users = tuple(_parse_user(item, join(at, i)) for i, item in enumerate(items))
    lifetime = None
    if "iam_token_lifetime" in mapping:
        at = join(where, "iam_token_lifetime")
        lifetime = number(mapping["iam_token_lifetime"], at)
        if lifetime == 0:
            raise ScenarioError(f"{at}: expected a positive number, got 0")
    lock = None
    if "aksk_lock_seconds" in mapping:
        lock = number(mapping["aksk_lock_seconds"], join(where, "aksk_lock_seconds"))
    return AuthSpec(
        access_keys=access_keys,
        iam_users=users,
        iam_token_lifetime=lifetime,
        aksk_lock_seconds=lock,
    )


def _parse_user(doc: object, where: str) -> IamUser:
    mapping = as_mapping(doc, where)
    check_keys(mapping, where, _USER_FIELDS)
    name = string(require(mapping, "name", where), join(where, "name"))
    password = require(mapping, "password", where)
    if not isinstance(password, str):
        raise ScenarioError(f"{join(where, 'password')}: expected a string")
    domain = string(mapping["domain"], join(where, "domain")) if "domain" in mapping else None
    try:
        return IamUser(name=name, password=password, domain=domain)
    except ValueError as exc:
        raise ScenarioError(f"{where}: {exc}") from None


def auth_to_dict(spec: AuthSpec) -> dict[str, object]:
    """The JSON ``auth`` object of ``spec`` (secrets included: it is the scenario's own data)."""
    doc: dict[str, object] = {}
    if spec.access_keys is not None:
        doc["access_keys"] = dict(spec.access_keys)
    if spec.iam_users is not None:
        doc["iam_users"] = [_user_to_dict(user) for user in spec.iam_users]
    if spec.iam_token_lifetime is not None:
        doc["iam_token_lifetime"] = _num(spec.iam_token_lifetime)
    if spec.aksk_lock_seconds is not None:
        doc["aksk_lock_seconds"] = _num(spec.aksk_lock_seconds)
    return doc


def _user_to_dict(user: IamUser) -> dict[str, object]:
    doc: dict[str, object] = {"name": user.name, "password": user.password}
    if user.domain is not None:
        doc["domain"] = user.domain
    return doc


def _num(value: float) -> float | int:
    return int(value) if value.is_integer() else value
