"""Request authentication: one seam, five methods.

An :class:`Authenticator` adds headers to each request and can ``refresh`` after a 401:

* :class:`StaticToken` — ``X-Auth-Token`` from ``POLLER_AUTH_TOKEN``;
* :class:`TokenFile` — ``X-Auth-Token`` from a file, re-read when it changes (secret rotation);
* :class:`AkSk` — ``SDK-HMAC-SHA256`` request signing with an access key pair (plus
  ``X-Security-Token`` for temporary credentials);
* :class:`IamToken` — a token from IAM ``POST /v3/auth/tokens`` (password, project scope),
  cached until shortly before ``expires_at``, refreshed ahead of time, single-flight;
* :class:`MetadataCredentials` — temporary AK/SK and security token from the ECS/CCE
  metadata service (``GET /openstack/latest/securitykey``), renewed the same way.

Secrets are held in :class:`~poller.config.Secret` and never put into messages.
"""

from __future__ import annotations

import contextlib
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Generic, Protocol, TypeVar

import aiohttp
import anyio
from yarl import URL

from poller.backoff import exponential_ceiling
from poller.clock import SYSTEM_CLOCK, Clock
from poller.config import Secret, Settings
from poller.servicestage.models import decode_json, parse_error
from poller.servicestage.proxy import DIRECT, env_proxy
from poller.servicestage.signing import SECURITY_TOKEN_HEADER, SigningError, sign_request


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

    @property
    def pause_on_unauthorized(self) -> bool:
        """True when repeated 401s are costly (AK/SK: the key pair locks after 5 bad
        signatures), so the client pauses every poll after one instead of retrying job by
        job (and does not call :meth:`refresh`)."""
        ...

    @property
    def principal(self) -> str:
        """The access key ID requests are signed with now (``""`` when there is none): the key
        pair a 401 counts against, so the replicas signing with one share its pause."""
        ...

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

    @property
    def principal(self) -> str:
        return ""

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


def _signed_headers(
    method: str,
    url: URL,
    headers: Mapping[str, str],
    body: bytes,
    *,
    access_key: str,
    secret_key: str,
    security_token: str | None,
    now: float,
) -> dict[str, str]:
    try:
        signed = sign_request(
            method=method,
            url=str(url),
            headers=headers,
            body=body,
            access_key=access_key,
            secret_key=secret_key,
            security_token=security_token,
            now=datetime.fromtimestamp(now, UTC),
        )
    except SigningError as exc:  # its message never holds a secret
        raise AuthUnavailable(f"cannot sign the request: {exc}") from None
    return dict(signed.headers)


class AkSk(_NoUpkeep):
    """AK/SK request signing (``SDK-HMAC-SHA256``), as the official SDK signs.

    With a ``security_token`` (temporary credentials) every request also carries it as
    ``X-Security-Token``, signed like the SDK's credentials sign it.
    """

    name = "aksk"
    pause_on_unauthorized = True

    @property
    def principal(self) -> str:
        return self._ak.reveal()

    def __init__(
        self,
        access_key: Secret,
        secret_key: Secret,
        *,
        security_token: Secret | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._ak = access_key
        self._sk = secret_key
        self._token = security_token
        self._clock = clock

    async def headers(
        self, method: str, url: URL, headers: Mapping[str, str], body: bytes
    ) -> dict[str, str]:
        return _signed_headers(
            method,
            url,
            headers,
            body,
            access_key=self._ak.reveal(),
            secret_key=self._sk.reveal(),
            security_token=self._token.reveal() if self._token is not None else None,
            now=self._clock.now(),
        )


def _parse_time(text: object) -> float:
    """Epoch seconds of an RFC 3339 time such as ``2024-06-07T15:55:31.115000Z`` (UTC when it
    names no zone); :class:`ValueError` otherwise."""
    if not isinstance(text, str):
        raise ValueError("not a string")
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _parse_expiry(body: Any) -> float | None:
    try:
        return _parse_time(body["token"]["expires_at"])
    except (KeyError, TypeError, ValueError):
        return None


C = TypeVar("C")


@dataclass(frozen=True, slots=True)
class CredentialService:
    """Where a renewed credential comes from and how to ask for it: the HTTP ``session``, the
    service's base URL (``endpoint``) and each request's timeout in seconds; ``clock`` and
    ``hooks`` as for every authenticator."""

    session: aiohttp.ClientSession
    endpoint: str
    request_timeout: float = 10.0
    clock: Clock = SYSTEM_CLOCK
    hooks: AuthHooks | None = None


#: The fewest seconds between two background renewals, whatever a credential's lifetime.
_MIN_RENEWAL_GAP: Final = 0.5


class _Renewed(ABC, Generic[C]):
    """A credential obtained from a service (IAM, the metadata service), cached until shortly
    before it expires, renewed ahead of time, single-flight.

    However many polls find the credential missing or stale at once, one request goes to the
    service; the others wait for its result.  When renewal fails (or the service hands back the
    credential we already hold), the next attempt waits an exponential back-off (1 s doubling
    to 60 s) and the current credential keeps being used until it really expires.
    """

    def __init__(self, service: CredentialService) -> None:
        self._session = service.session
        self._timeout = aiohttp.ClientTimeout(total=service.request_timeout)
        self._clock = service.clock
        self._hooks = service.hooks or AuthHooks()
        self._current: C | None = None
        self._obtained_at = 0.0
        self._expires_at = 0.0
        self._lock = anyio.Lock()
        self._failures = 0
        self._retry_at = 0.0
        self._attempted_at = -_MIN_RENEWAL_GAP
        self._last_problem = ""
        self.fetches = 0  # requests for a credential (observable in tests and metrics)

    # --- what a subclass provides

    @abstractmethod
    async def _fetch(self) -> tuple[C, float | None]:
        """A new credential and its expiry (``None``: unknown, assume one hour); raises
        :class:`AuthUnavailable` made by :meth:`_problem`."""

    @abstractmethod
    def _identity(self, credential: C) -> str:
        """What tells two credentials apart (and matches the header a 401 refused)."""

    @abstractmethod
    def _secrets(self, credential: C) -> tuple[str, ...]:
        """The credential's secret strings, for the log redactor."""

    _nothing_yet = "no credential yet"

    # --- the shared machinery

    def _refresh_due(self) -> float:
        """When to renew: 10 % of the lifetime (5 min at most) before expiry."""
        lifetime = max(0.0, self._expires_at - self._obtained_at)
        return self._expires_at - min(300.0, lifetime * 0.1)

    def _fresh(self) -> bool:
        return self._current is not None and self._clock.now() < self._refresh_due()

    def _problem(self, message: str) -> AuthUnavailable:
        self._last_problem = message
        self._hooks.refreshed("failed")
        self._hooks.problem(message)
        return AuthUnavailable(message)

    def _still_valid(self) -> C:
        """The current credential if it has not expired yet (a failed renewal need not stop
        us)."""
        if self._current is not None and self._clock.now() < self._expires_at:
            return self._current
        raise AuthUnavailable(self._last_problem or self._nothing_yet)

    def _back_off(self, now: float) -> None:
        self._failures += 1
        self._retry_at = now + exponential_ceiling(self._failures, 1.0, 60.0)

    async def _ensure(self, *, replace: str | None = None) -> C:
        async with self._lock:
            now = self._clock.now()
            current = self._current
            stale = (
                replace is not None and current is not None and self._identity(current) == replace
            )
            if not stale and current is not None and self._fresh():
                return current
            if now < self._retry_at:
                # The service failed moments ago: don't ask again for every waiting poll.
                return self._still_valid()
            self._attempted_at = now
            try:
                credential, expires = await self._fetch()
            except AuthUnavailable:
                self._back_off(now)
                return self._still_valid()
            if current is not None and self._identity(credential) == self._identity(current):
                # Handed back what we hold: not renewed yet (the metadata service rotates its
                # credential some time before expiry).  Keep it, ask again after a back-off.
                self._back_off(now)
                return self._still_valid()
            for secret in self._secrets(credential):
                self._hooks.secret(secret)
            self._current = credential
            self._obtained_at = now
            self._expires_at = expires if expires is not None else now + 3600.0
            self._failures = 0
            self._retry_at = 0.0
            self._hooks.refreshed("ok")
            self._hooks.problem("")
            return credential

    async def _credential(self) -> C:
        current = self._current
        if current is not None and self._fresh():
            return current
        return await self._ensure()

    def _next_attempt(self) -> float:
        """When :meth:`maintain` should try next."""
        if self._current is None or (self._failures and not self._fresh()):
            return self._retry_at
        return self._refresh_due()

    def _maintain_replace(self) -> str | None:
        """The identity :meth:`maintain` must replace even if fresh (``None``: none)."""
        return None

    async def maintain(self) -> None:
        """Obtain the credential at start and renew it before it expires, backing off on
        failure."""
        while True:
            now = self._clock.now()
            wait = max(self._next_attempt() - now, self._attempted_at + _MIN_RENEWAL_GAP - now)
            await self._clock.sleep(max(0.0, wait))
            with contextlib.suppress(AuthUnavailable):
                await self._ensure(replace=self._maintain_replace())


class IamToken(_Renewed[Secret]):
    """An IAM user token (password method, scoped to the project), refreshed ahead of time.

    Single-flight: however many polls find the token missing or stale at once, one request
    goes to IAM; the others wait for its result.
    """

    name = "iam"
    pause_on_unauthorized = False
    principal = ""
    _nothing_yet = "no IAM token yet"

    def __init__(
        self,
        service: CredentialService,
        *,
        user: str,
        password: Secret,
        domain: str,
        project_id: str,
    ) -> None:
        super().__init__(service)
        self._url = URL(service.endpoint.rstrip("/")) / "v3" / "auth" / "tokens"
        self._proxy = env_proxy(self._url)
        self._user = user
        self._password = password
        self._domain = domain
        self._project_id = project_id

    def _identity(self, credential: Secret) -> str:
        return credential.reveal()

    def _secrets(self, credential: Secret) -> tuple[str, ...]:
        return (credential.reveal(),)

    async def _fetch(self) -> tuple[Secret, float | None]:
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
        return Secret(token), expires

    async def headers(
        self, method: str, url: URL, headers: Mapping[str, str], body: bytes
    ) -> dict[str, str]:
        token = await self._credential()
        return {"X-Auth-Token": token.reveal()}

    async def refresh(self, rejected: Mapping[str, str]) -> None:
        # Only the refused token is replaced: concurrent 401s for it share one fetch, and a
        # 401 for a token already replaced costs nothing.
        await self._ensure(replace=rejected.get("X-Auth-Token", ""))


# --- temporary credentials from the metadata service -----------------------------------------

SECURITY_KEY_PATH: Final = "/openstack/latest/securitykey"
METADATA_TOKEN_PATH: Final = "/meta-data/latest/api/token"  # noqa: S105  (a path)
METADATA_TOKEN_HEADER: Final = "X-Metadata-Token"  # noqa: S105  (a header name)
METADATA_TOKEN_TTL_HEADER: Final = "X-Metadata-Token-Ttl-Seconds"  # noqa: S105
#: What the metadata service answers when no agency lets this server act for the account.
AGENCY_ERROR: Final = "Please configure Cloud Service Agency first"
_METADATA_TOKEN_TTL: Final = 6 * 3600
_METADATA_TOKEN_RECHECK: Final = 24 * 3600.0
# The SDK's spellings of each field, in its order of preference.
_ACCESS_FIELDS: Final = ("access", "accessKeyId", "access_key_id")
_SECRET_FIELDS: Final = ("secret", "secretAccessKey", "secret_access_key")
_TOKEN_FIELDS: Final = ("securitytoken", "securityToken", "security_token")
_EXPIRY_FIELDS: Final = ("expires_at", "expiration")


@dataclass(frozen=True, slots=True)
class TemporaryCredential:
    """A temporary AK/SK with its security token and expiry (epoch seconds)."""

    access_key: str
    secret_key: Secret = field(repr=False)
    security_token: Secret = field(repr=False)
    expires_at: float


def _first(mapping: Mapping[str, Any], names: tuple[str, ...]) -> Any:
    return next((mapping[n] for n in names if mapping.get(n)), None)


def parse_security_key(document: Any) -> TemporaryCredential:
    """The credential in a ``securitykey`` answer, ``{"credential": {"access": ..., "secret":
    ..., "securitytoken": ..., "expires_at": "...Z"}}``, read as ``huaweicloudsdkcore`` reads
    it (``credentials`` and camel-case spellings too).

    Raises :class:`ValueError` naming the missing or bad field, never a value.
    """
    if not isinstance(document, dict):
        raise ValueError("the answer is not a JSON object")
    inner = document.get("credential", document.get("credentials", document))
    if not isinstance(inner, dict):
        raise ValueError("credential is not an object")
    values = []
    for names in (_ACCESS_FIELDS, _SECRET_FIELDS, _TOKEN_FIELDS):
        value = _first(inner, names)
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"credential.{names[0]} is missing or not a string")
        values.append(value.strip())
    access, secret, token = values
    if any(c.isspace() or c in ",=" or not c.isprintable() for c in access):
        raise ValueError("credential.access holds whitespace, ',', '=' or control characters")
    try:
        expires_at = _parse_time(_first(inner, _EXPIRY_FIELDS))
    except (ValueError, OverflowError):
        raise ValueError("credential.expires_at is missing or not an RFC 3339 time") from None
    return TemporaryCredential(access, Secret(secret), Secret(token), expires_at)


class MetadataCredentials(_Renewed[TemporaryCredential]):
    """Temporary AK/SK and security token from the ECS/CCE metadata service, signing like
    :class:`AkSk`, renewed ahead of ``expires_at`` like :class:`IamToken`.

    As ``huaweicloudsdkcore``'s ``MetadataAccessor``: a session token is asked for first with
    ``PUT /meta-data/latest/api/token`` (a service that does not know that call answers 404,
    405 or 503 and is then asked without one, the question repeated once a day), sent as
    ``X-Metadata-Token``, and renewed once after a 401.  Requests to the metadata service never
    go through a proxy: it only exists on the server's own link.

    A 401 from the API makes it ask the metadata service once for another credential and retry;
    when the service still hands out the refused one, further 401s pause all polling like AK/SK
    (the provider locks a key pair after repeated bad signatures) until a new one arrives.
    """

    name = "metadata"
    _nothing_yet = "no credential from the metadata service yet"

    def __init__(self, service: CredentialService) -> None:
        super().__init__(service)
        base = service.endpoint.rstrip("/")
        self._key_url = URL(base + SECURITY_KEY_PATH)
        self._token_url = URL(base + METADATA_TOKEN_PATH)
        self._metadata_token: Secret | None = None
        self._token_checked_at: float | None = None
        self._refused: str | None = None

    @property
    def pause_on_unauthorized(self) -> bool:
        """True once the API refused the current credential and the metadata service had no
        other one to give."""
        current = self._current
        return current is not None and self._refused == current.security_token.reveal()

    @property
    def principal(self) -> str:
        current = self._current
        return current.access_key if current is not None else ""

    def _identity(self, credential: TemporaryCredential) -> str:
        return credential.security_token.reveal()

    def _secrets(self, credential: TemporaryCredential) -> tuple[str, ...]:
        return (
            credential.secret_key.reveal(),
            credential.security_token.reveal(),
            credential.access_key,
        )

    async def _call(self, method: str, url: URL, headers: Mapping[str, str]) -> tuple[int, str]:
        try:
            async with self._session.request(
                method,
                url,
                headers=dict(headers),
                timeout=self._timeout,
                allow_redirects=False,
                proxy=DIRECT.url,
            ) as resp:
                return resp.status, (await resp.read()).decode("utf-8", "replace")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise self._problem(f"metadata service unreachable: {type(exc).__name__}") from None

    async def _session_token(self, *, renew: bool) -> dict[str, str]:
        """The ``X-Metadata-Token`` header to send (empty where the service has no tokens)."""
        now = self._clock.now()
        checked = self._token_checked_at
        if renew or (
            self._metadata_token is None
            and (checked is None or now - checked > _METADATA_TOKEN_RECHECK)
        ):
            self._token_checked_at = now
            self._metadata_token = None
            status, text = await self._call(
                "PUT", self._token_url, {METADATA_TOKEN_TTL_HEADER: str(_METADATA_TOKEN_TTL)}
            )
            if status == 200 and text.strip():
                self._hooks.secret(text.strip())
                self._metadata_token = Secret(text.strip())
            elif renew or status not in (404, 405, 503):
                raise self._problem(f"metadata service refused a session token: HTTP {status}")
        token = self._metadata_token
        return {METADATA_TOKEN_HEADER: token.reveal()} if token is not None else {}

    async def _fetch(self) -> tuple[TemporaryCredential, float | None]:
        self.fetches += 1
        status, text = await self._call(
            "GET", self._key_url, await self._session_token(renew=False)
        )
        if status == 401 and AGENCY_ERROR not in text:
            # the session token expired (or the service began to require one)
            headers = await self._session_token(renew=True)
            status, text = await self._call("GET", self._key_url, headers)
        if status != 200:
            if AGENCY_ERROR in text:
                raise self._problem(
                    f"metadata service: HTTP {status} {AGENCY_ERROR} (no agency lets this "
                    "server act for the account)"
                )
            raise self._problem(f"metadata service refused the credential request: HTTP {status}")
        try:
            credential = parse_security_key(decode_json(text))
        except ValueError as exc:  # MalformedResponse included; neither quotes the body
            raise self._problem(
                f"metadata service answered an unusable credential: {exc}"
            ) from None
        if credential.expires_at <= self._clock.now():
            raise self._problem("metadata service handed out an expired credential")
        return credential, credential.expires_at

    async def headers(
        self, method: str, url: URL, headers: Mapping[str, str], body: bytes
    ) -> dict[str, str]:
        credential = await self._credential()
        return _signed_headers(
            method,
            url,
            headers,
            body,
            access_key=credential.access_key,
            secret_key=credential.secret_key.reveal(),
            security_token=credential.security_token.reveal(),
            now=self._clock.now(),
        )

    async def refresh(self, rejected: Mapping[str, str]) -> None:
        """After a 401: ask the metadata service once for another credential than the refused
        one; if it has none, later 401s pause all polling (see :attr:`pause_on_unauthorized`)."""
        refused = rejected.get(SECURITY_TOKEN_HEADER)
        current = self._current
        if refused is None or current is None or self._identity(current) != refused:
            return  # already replaced meanwhile: just retry with the new one
        if self._refused == refused:
            return  # asked already for this one
        await self._ensure(replace=refused)
        current = self._current
        if current is not None and self._identity(current) == refused:
            self._refused = refused

    def _next_attempt(self) -> float:
        if self.pause_on_unauthorized:
            return self._retry_at
        return super()._next_attempt()

    def _maintain_replace(self) -> str | None:
        return self._refused if self.pause_on_unauthorized else None


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
    hooks = hooks or AuthHooks()

    def service(endpoint: str) -> CredentialService:
        return CredentialService(
            session, endpoint, request_timeout=settings.request_timeout, hooks=hooks
        )

    if settings.credentials == "metadata":
        return MetadataCredentials(service(settings.metadata_endpoint))
    if settings.access_key is not None and settings.secret_key is not None:
        if settings.security_token is not None:
            hooks.secret(settings.security_token.reveal())
        return AkSk(
            settings.access_key, settings.secret_key, security_token=settings.security_token
        )
    assert settings.iam_password is not None
    return IamToken(
        service(settings.iam_endpoint),
        user=settings.iam_user,
        password=settings.iam_password,
        domain=settings.iam_domain,
        project_id=settings.project_id,
    )
