"""Request authentication: the seam every method plugs into.

An :class:`Authenticator` adds headers to each request and can ``refresh`` after a 401.
Static token and token file live here; AK/SK signing and IAM tokens implement the same seam.
"""

from __future__ import annotations

import os
from typing import Protocol

import anyio
from yarl import URL

from poller.config import ConfigError, Secret, Settings


class AuthUnavailable(Exception):
    """Credentials cannot be produced right now (e.g. IAM unreachable); polls back off."""


class Authenticator(Protocol):
    """Adds credentials to requests."""

    name: str

    async def headers(self, method: str, url: URL, body: bytes) -> dict[str, str]:
        """Headers that authenticate this request (may raise :class:`AuthUnavailable`)."""
        ...

    async def refresh(self) -> None:
        """Called once after a 401: get fresh credentials if there are any to get."""
        ...

    async def aclose(self) -> None:
        """Release background resources."""
        ...


class StaticToken:
    """``X-Auth-Token`` from ``POLLER_AUTH_TOKEN``; nothing to refresh."""

    name = "token"

    def __init__(self, token: Secret) -> None:
        self._token = token

    async def headers(self, method: str, url: URL, body: bytes) -> dict[str, str]:
        return {"X-Auth-Token": self._token.reveal()}

    async def refresh(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


class TokenFile:
    """``X-Auth-Token`` read from a file, re-read whenever the file changes and after a 401.

    Kubernetes rotates mounted secrets by swapping a symlink, so the check is on the
    resolved file's identity and mtime, which costs one ``stat`` per request.
    """

    name = "token_file"

    def __init__(self, path: str) -> None:
        self._path = path
        self._stamp: tuple[int, int, int] | None = None
        self._token = Secret("")

    def _stat(self) -> tuple[int, int, int]:
        st = os.stat(self._path)
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    async def _load(self) -> None:
        try:
            stamp = self._stat()
            text = await anyio.Path(self._path).read_text(encoding="utf-8")
        except OSError as exc:
            raise AuthUnavailable(f"cannot read token file: {exc.strerror}") from None
        token = text.strip()
        if not token:
            raise AuthUnavailable("token file is empty")
        self._token = Secret(token)
        self._stamp = stamp

    async def headers(self, method: str, url: URL, body: bytes) -> dict[str, str]:
        try:
            changed = self._stamp is None or self._stat() != self._stamp
        except OSError as exc:
            raise AuthUnavailable(f"cannot read token file: {exc.strerror}") from None
        if changed:
            await self._load()
        return {"X-Auth-Token": self._token.reveal()}

    async def refresh(self) -> None:
        await self._load()

    async def aclose(self) -> None:
        return None


def build_authenticator(settings: Settings) -> Authenticator:
    """The authenticator for the one method ``settings`` configure."""
    settings.require_polling()
    if settings.auth_token is not None:
        return StaticToken(settings.auth_token)
    if settings.auth_token_file:
        return TokenFile(settings.auth_token_file)
    raise ConfigError(
        "POLLER_ACCESS_KEY: AK/SK and IAM authentication are not available in this build; "
        "use POLLER_AUTH_TOKEN or POLLER_AUTH_TOKEN_FILE"
    )
