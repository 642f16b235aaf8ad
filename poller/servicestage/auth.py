"""Request authentication: one seam, four methods.

An :class:`Authenticator` adds headers to each request and can ``refresh`` after a 401:

* :class:`StaticToken` — ``X-Auth-Token`` from ``POLLER_AUTH_TOKEN``;
* :class:`TokenFile` — ``X-Auth-Token`` from a file, re-read when it changes (secret rotation);
* :class:`AkSk` — ``SDK-HMAC-SHA256`` request signing with an access key pair;
* :class:`IamToken` — a token from IAM ``POST /v3/auth/tokens`` (password, project scope),
  cached until shortly before ``expires_at``, refreshed ahead of time, single-flight.

Secrets are held in :class:`~poller.config.Secret` and never put into messages.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import aiohttp
import anyio
from yarl import URL

from poller.backoff import exponential_ceiling
from poller.config import Secret, Settings
from poller.servicestage.models import decode_json, parse_error
from poller.servicestage.proxy import env_proxy
from poller.servicestage.signing import sign_request


def _ignore(_: str) -> None:
    return None


@dataclass(frozen=True, slots=True)
class AuthHooks:
    """How an authenticator reports to the daemon; every hook is optional.

    ``secret`` receives each credential obtained at run time (so logs can redact it),
    ``problem`` a reason the credentials are unusable (``""`` once they work again), and
    ``refreshed`` the result of each refresh (``"ok"`` or ``"failed"``) for metrics.
    """

    secret: Callable[[str], None] = _ignore
    problem: Callable[[str], None] = _ignore
    refreshed: Callable[[str], None] = _ignore


class AuthUnavailable(Exception):
    """Credentials cannot be produced right now (e.g. IAM unreachable); polls back off."""


class Authenticator(Protocol):
    """Adds credentials to requests."""

    name: str
    #: True when repeated 401s are costly (AK/SK: the key pair locks after 5 bad signatures),
    #: so the client pauses every poll after one instead of retrying job by job.
    pause_on_unauthorized: bool

    async def headers(
        self, method: str, url: URL, headers: Mapping[str, str], body: bytes
    ) -> dict[str, str]:
        """Headers that authenticate this request (may raise :class:`AuthUnavailable`).

        ``headers`` are the other headers the request will carry (signers sign them).
        """
        ...

    async def refresh(self, rejected: Mapping[str, str]) -> None:
        """Called once after a 401 with the credential headers that were refused: get fresh
        credentials if there are any to get (and none newer were obtained meanwhile)."""
        ...

    async def maintain(self) -> None:
        """Background upkeep for the daemon's lifetime (e.g. refresh a token ahead of time)."""
        ...


class _NoUpkeep:
    pause_on_unauthorized = False

    async def refresh(self, rejected: Mapping[str, str]) -> None:
        return None

    async def maintain(self) -> None:
        return None


class StaticToken(_NoUpkeep):
    """``X-Auth-Token`` from ``POLLER_AUTH_TOKEN``; nothing to refresh."""

    name = "token"

    def __init__(self, token: Secret) -> None:
        self._token = token

    async def headers(
        self, method: str, url: URL, headers: Mapping[str, str], body: bytes
    ) -> dict[str, str]:
        return {"X-Auth-Token": self._token.reveal()}


class TokenFile(_NoUpkeep):
    """``X-Auth-Token`` read from a file, re-read whenever the file changes and after a 401.

    Kubernetes rotates mounted secrets by swapping a symlink, so the check is on the
    resolved file's identity, mtime and size, which costs one ``stat`` per request.
    """

    name = "token_file"

    def __init__(self, path: str, *, hooks: AuthHooks | None = None) -> None:
        self._path = path
        self._stamp: tuple[int, int, int] | None = None
        self._token = Secret("")
        self._hooks = hooks or AuthHooks()

    def _stat(self) -> tuple[int, int, int]:
        st = os.stat(self._path)
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    async def _load(self) -> None:
        try:
            stamp = self._stat()
            text = await anyio.Path(self._path).read_text(encoding="utf-8")
        except OSError as exc:
            self._hooks.refreshed("failed")
            raise AuthUnavailable(f"cannot read token file: {exc.strerror}") from None
        token = text.strip()
        if not token:
            self._hooks.refreshed("failed")
            raise AuthUnavailable("token file is empty")
        self._hooks.secret(token)
        self._hooks.refreshed("ok")
        self._token = Secret(token)
        self._stamp = stamp

    async def headers(
        self, method: str, url: URL, headers: Mapping[str, str], body: bytes
    ) -> dict[str, str]:
        try:
            changed = self._stamp is None or self._stat() != self._stamp
        except OSError as exc:
            raise AuthUnavailable(f"cannot read token file: {exc.strerror}") from None
        if changed:
            await self._load()
        return {"X-Auth-Token": self._token.reveal()}

    async def refresh(self, rejected: Mapping[str, str]) -> None:
        await self._load()


class AkSk(_NoUpkeep):
    """AK/SK request signing (``SDK-HMAC-SHA256``), as the official SDK signs."""

    name = "aksk"
    pause_on_unauthorized = True

    def __init__(
        self, access_key: Secret, secret_key: Secret, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._ak = access_key
        self._sk = secret_key
        self._clock = clock

    async def headers(
        self, method: str, url: URL, headers: Mapping[str, str], body: bytes
    ) -> dict[str, str]:
        signed = sign_request(
            method=method,
            url=str(url),
            headers=headers,
            body=body,
            access_key=self._ak.reveal(),
            secret_key=self._sk.reveal(),
            now=datetime.fromtimestamp(self._clock(), UTC),
        )
        return dict(signed.headers)


def _parse_expiry(body: Any) -> float | None:
    try:
        text = body["token"]["expires_at"]
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except (KeyError, TypeError, ValueError):
        return None


class IamToken:
    """An IAM user token (password method, scoped to the project), refreshed ahead of time.

    Single-flight: however many polls find the token missing or stale at once, one request
    goes to IAM; the others wait for its result.
    """

    name = "iam"
    pause_on_unauthorized = False

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        endpoint: str,
        user: str,
        password: Secret,
        domain: str,
        project_id: str,
        request_timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
        hooks: AuthHooks | None = None,
    ) -> None:
        self._session = session
        self._url = URL(endpoint.rstrip("/")) / "v3" / "auth" / "tokens"
        self._proxy = env_proxy(self._url)
        self._user = user
        self._password = password
        self._domain = domain
        self._project_id = project_id
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._clock = clock
        self._hooks = hooks or AuthHooks()
        self._token: Secret | None = None
        self._obtained_at = 0.0
        self._expires_at = 0.0
        self._lock = anyio.Lock()
        self._failures = 0
        self._retry_at = 0.0
        self._last_problem = ""
        self.fetches = 0  # IAM requests made (observable in tests and metrics)

    def _refresh_due(self) -> float:
        """When to renew: 10 % of the lifetime (5 min at most) before expiry."""
        lifetime = max(0.0, self._expires_at - self._obtained_at)
        return self._expires_at - min(300.0, lifetime * 0.1)

    def _fresh(self) -> bool:
        return self._token is not None and self._clock() < self._refresh_due()

    async def _fetch(self) -> None:
        body = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {
                            "name": self._user,
                            "password": self._password.reveal(),
                            "domain": {"name": self._domain},
                        }
                    },
                },
                "scope": {"project": {"id": self._project_id}},
            }
        }
        self.fetches += 1
        try:
            async with self._session.post(
                self._url,
                json=body,
                timeout=self._timeout,
                proxy=self._proxy.url,
                proxy_auth=self._proxy.auth,
            ) as resp:
                raw = await resp.read()
                token = resp.headers.get("X-Subject-Token", "")
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise self._problem(f"IAM unreachable: {type(exc).__name__}") from None
        text = raw.decode("utf-8", "replace")
        if status != 201 or not token:
            err = parse_error(text)
            raise self._problem(f"IAM refused the token request: HTTP {status} {err.code}".strip())
        try:
            expires = _parse_expiry(decode_json(text))
        except ValueError:  # MalformedResponse included
            expires = None
        now = self._clock()
        self._hooks.secret(token)
        self._token = Secret(token)
        self._obtained_at = now
        self._expires_at = expires if expires is not None else now + 3600.0
        self._hooks.refreshed("ok")
        self._hooks.problem("")

    def _problem(self, message: str) -> AuthUnavailable:
        self._last_problem = message
        self._hooks.refreshed("failed")
        self._hooks.problem(message)
        return AuthUnavailable(message)

    def _still_valid(self) -> Secret:
        """The current token if it has not expired yet (a failed renewal need not stop us)."""
        if self._token is not None and self._clock() < self._expires_at:
            return self._token
        raise AuthUnavailable(self._last_problem or "no IAM token yet")

    async def _ensure(self, *, replace: str | None = None) -> Secret:
        async with self._lock:
            now = self._clock()
            stale = (
                replace is not None and self._token is not None and self._token.reveal() == replace
            )
            if not stale and self._fresh():
                assert self._token is not None
                return self._token
            if now < self._retry_at:
                # IAM failed moments ago: don't ask again for every waiting poll.
                return self._still_valid()
            try:
                await self._fetch()
            except AuthUnavailable:
                self._failures += 1
                self._retry_at = now + exponential_ceiling(self._failures, 1.0, 60.0)
                return self._still_valid()
            self._failures = 0
            self._retry_at = 0.0
            assert self._token is not None
            return self._token

    async def headers(
        self, method: str, url: URL, headers: Mapping[str, str], body: bytes
    ) -> dict[str, str]:
        token = self._token if self._fresh() else await self._ensure()
        assert token is not None
        return {"X-Auth-Token": token.reveal()}

    async def refresh(self, rejected: Mapping[str, str]) -> None:
        # Only the refused token is replaced: concurrent 401s for it share one fetch, and a
        # 401 for a token already replaced costs nothing.
        await self._ensure(replace=rejected.get("X-Auth-Token", ""))

    async def maintain(self) -> None:
        """Obtain the token at start and renew it before it expires, backing off on failure."""
        while True:
            now = self._clock()
            if self._token is None or (self._failures and not self._fresh()):
                wait = max(0.0, self._retry_at - now)
            else:
                wait = max(0.0, self._refresh_due() - now)
            await anyio.sleep(wait)
            with contextlib.suppress(AuthUnavailable):
                await self._ensure()


def build_authenticator(
    settings: Settings,
    session: aiohttp.ClientSession,
    *,
    hooks: AuthHooks | None = None,
) -> Authenticator:
    """The authenticator for the one method ``settings`` configure."""
    settings.require_polling()
    if settings.auth_token is not None:
        return StaticToken(settings.auth_token)
    if settings.auth_token_file:
        return TokenFile(settings.auth_token_file, hooks=hooks)
    if settings.access_key is not None and settings.secret_key is not None:
        return AkSk(settings.access_key, settings.secret_key)
    assert settings.iam_password is not None
    return IamToken(
        session,
        endpoint=settings.iam_endpoint,
        user=settings.iam_user,
        password=settings.iam_password,
        domain=settings.iam_domain,
        project_id=settings.project_id,
        request_timeout=settings.request_timeout,
        hooks=hooks,
    )
