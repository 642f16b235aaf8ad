"""Huawei Cloud AK/SK request signing (``SDK-HMAC-SHA256``), signer and verifier.

A pure, stdlib-only re-implementation of ``huaweicloudsdkcore.signer.signer.Signer`` (the
official SDK is the oracle in the tests, never a runtime dependency).  :func:`sign_request` is
what the HTTP client calls; :func:`verify_request` is what the emulator calls.

The scheme, exactly as the SDK implements it::

    CanonicalRequest = METHOD.upper() "\\n" CanonicalURI "\\n" CanonicalQuery "\\n"
                       CanonicalHeaders "\\n" SignedHeaders "\\n" PayloadHash
    StringToSign     = "SDK-HMAC-SHA256" "\\n" X-Sdk-Date "\\n" hex(sha256(CanonicalRequest))
    Signature        = hex(hmac_sha256(SK, StringToSign))
    Authorization    = "SDK-HMAC-SHA256 Access=AK, SignedHeaders=h1;h2, Signature=hex"

SDK behaviours reproduced on purpose (they are part of what a verifier recomputes):

* CanonicalURI: the whole path is percent-decoded first (invalid UTF-8 becomes U+FFFD), then
  split on ``/`` and every segment re-encoded with ``quote(safe="~")``; a ``/`` is appended
  unless the result already ends with one.  Hence ``/a`` and ``/a/`` sign alike, and so do
  ``a%2Fb`` and ``a/b``.
* CanonicalQuery: ``(key, value)`` pairs are sorted on the *decoded* strings (code-point order,
  key first, then value; repeated keys are kept), then both sides are encoded with
  ``quote(safe="~")`` and joined as ``k=v&k=v``.  A key without ``=`` signs as ``k=``.  The SDK
  also *sends* the query in this form; :attr:`SignedRequest.url` does the same.
* Headers: every header whose name contains no ``_`` is signed (names lower-cased and sorted,
  values ``str.strip()``-ed); headers with ``_`` are sent unsigned.  ``Host`` is added from the
  URL's authority when absent.
* Payload hash: an empty body hashes as the SHA-256 of nothing; otherwise an
  ``X-Sdk-Content-Sha256`` header value, when present, is used verbatim instead of hashing.  When
  a header spelled exactly ``Content-Type`` is present and starts with neither
  ``application/json`` nor ``application/bson``, the SDK adds ``X-Sdk-Content-Sha256:
  UNSIGNED-PAYLOAD`` (the check is case-sensitive on the header name, as in the SDK).
* Temporary credentials: the SDK's ``Credentials.sign_request`` puts the security token into
  the request's headers as ``X-Security-Token`` *before* signing, so it is a signed header like
  any other (``x-security-token`` in ``SignedHeaders``); ``sign_request(security_token=...)``
  does the same.

This module never puts a secret key into an exception message, a ``repr`` or a result.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum, auto
from types import MappingProxyType
from typing import Final
from urllib.parse import quote, unquote, urlsplit

__all__ = [
    "ALGORITHM",
    "AUTHORIZATION_HEADER",
    "CONTENT_SHA256_HEADER",
    "DATE_HEADER",
    "DEFAULT_MAX_SKEW_SECONDS",
    "SECURITY_TOKEN_HEADER",
    "UNSIGNED_PAYLOAD",
    "SignedRequest",
    "SigningError",
    "VerifyReason",
    "VerifyResult",
    "authorization_access_key",
    "canonical_query_string",
    "canonical_uri",
    "parse_query",
    "sign_request",
    "verify_request",
]

ALGORITHM: Final = "SDK-HMAC-SHA256"
DATE_HEADER: Final = "X-Sdk-Date"
HOST_HEADER: Final = "Host"
AUTHORIZATION_HEADER: Final = "Authorization"
CONTENT_SHA256_HEADER: Final = "X-Sdk-Content-Sha256"
SECURITY_TOKEN_HEADER: Final = "X-Security-Token"  # noqa: S105  (a header name)
UNSIGNED_PAYLOAD: Final = "UNSIGNED-PAYLOAD"
DEFAULT_MAX_SKEW_SECONDS: Final = 900.0

_EMPTY_HASH: Final = hashlib.sha256(b"").hexdigest()
_DATE_FORMAT: Final = "%Y%m%dT%H%M%SZ"
_DATE_RE: Final = re.compile(r"[0-9]{8}T[0-9]{6}Z")
_SIGNATURE_RE: Final = re.compile(r"[0-9a-f]{64}")
_HEX_SHA256_RE: Final = re.compile(r"[0-9a-fA-F]{64}")
# Characters that would make the Authorization header unparseable or unsendable.
_BAD_ACCESS_KEY_RE: Final = re.compile(r"[\s,=\x00-\x1f\x7f]")
_REQUIRED_SIGNED: Final = ("host", "x-sdk-date")


class SigningError(ValueError):
    """The inputs to :func:`sign_request` cannot be signed (never mentions the secret)."""


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """What to send: the URL (query in canonical form) plus the headers to add.

    ``headers`` holds only headers the signer adds: always ``X-Sdk-Date`` and
    ``Authorization``, ``Host`` when the caller's headers had none,
    ``X-Sdk-Content-Sha256: UNSIGNED-PAYLOAD`` when the SDK's ``Content-Type`` rule applies, and
    ``X-Security-Token`` when signing with temporary credentials.
    Send every one of them, together with every caller header, unchanged.
    """

    url: str
    headers: Mapping[str, str]


class VerifyReason(StrEnum):
    """Why :func:`verify_request` accepted or rejected a request (each value is the member's
    name in lower case)."""

    OK = auto()
    MISSING_AUTHORIZATION = auto()
    MALFORMED_AUTHORIZATION = auto()
    UNSUPPORTED_ALGORITHM = auto()
    REQUIRED_HEADER_NOT_SIGNED = auto()
    SIGNED_HEADER_MISSING = auto()
    DUPLICATE_HEADER = auto()
    MALFORMED_DATE = auto()
    DATE_TOO_OLD = auto()
    DATE_IN_FUTURE = auto()
    UNKNOWN_ACCESS_KEY = auto()
    UNSIGNED_PAYLOAD = auto()
    PAYLOAD_HASH_MISMATCH = auto()
    MALFORMED_REQUEST = auto()
    SIGNATURE_MISMATCH = auto()


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """Outcome of :func:`verify_request`.

    ``detail`` is a short human-readable explanation that never contains a secret key.
    ``access_key`` is the AK named by the Authorization header once it could be parsed.
    ``canonical_request`` is the canonical request the verifier computed (empty when it got
    not that far); it can contain signed header values, so log it at debug level only.
    """

    reason: VerifyReason
    detail: str
    access_key: str | None = None
    canonical_request: str = field(default="", repr=False)

    @property
    def ok(self) -> bool:
        """True when the signature is valid and fresh."""
        return self.reason is VerifyReason.OK


# --------------------------------------------------------------------------- canonical parts


def _encode(value: str) -> str:
    return quote(value, safe="~")


def canonical_uri(path: str) -> str:
    """The SDK's canonical URI of a (percent-encoded) request path; always ends with ``/``.

    Raises :class:`UnicodeEncodeError` for strings holding lone surrogates.
    """
    encoded = "/".join(_encode(segment) for segment in unquote(path).split("/"))
    if not encoded.endswith("/"):
        encoded += "/"
    return encoded


def parse_query(raw_query: str) -> list[tuple[str, str]]:
    """Split a raw query string into decoded ``(key, value)`` pairs, in order.

    Pieces are separated by ``&`` (empty pieces skipped) and split at the first ``=``; both
    sides are percent-decoded with RFC 3986 rules (``+`` stays a literal plus sign, as in the
    API gateway's reference signer; the SDK never emits ``+``).
    """
    pairs: list[tuple[str, str]] = []
    for piece in raw_query.split("&"):
        if not piece:
            continue
        key, _, value = piece.partition("=")
        pairs.append((unquote(key), unquote(value)))
    return pairs


def canonical_query_string(pairs: Sequence[tuple[str, str]]) -> str:
    """The SDK's canonical query string of decoded ``(key, value)`` pairs.

    Sorted on the decoded pairs, then ``quote(safe="~")`` on each side. Repeated keys are kept
    (the SDK's ``multi`` collection format sends a list as repeated keys, values sorted).
    """
    return "&".join(f"{_encode(key)}={_encode(value)}" for key, value in sorted(pairs))


def _format_date(moment: datetime) -> str:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise SigningError("now must be a timezone-aware datetime")
    utc = moment.astimezone(UTC)
    return (
        f"{utc.year:04d}{utc.month:02d}{utc.day:02d}"
        f"T{utc.hour:02d}{utc.minute:02d}{utc.second:02d}Z"
    )


def _canonical_request(
    *,
    method: str,
    path: str,
    query_pairs: Sequence[tuple[str, str]],
    canonical_headers: Mapping[str, str],
    signed_headers: Sequence[str],
    payload_hash: str,
) -> str:
    header_block = "".join(f"{name}:{canonical_headers[name]}\n" for name in signed_headers)
    return "\n".join(
        (
            method.upper(),
            canonical_uri(path),
            canonical_query_string(query_pairs),
            header_block,
            ";".join(signed_headers),
            payload_hash,
        )
    )


def _signature(secret: bytes, date: str, canonical_request: str) -> str:
    digest = hashlib.sha256(canonical_request.encode("utf-8")).hexdigest()
    string_to_sign = f"{ALGORITHM}\n{date}\n{digest}"
    return hmac.new(secret, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def _secret_bytes(secret: str) -> bytes:
    try:
        return secret.encode("utf-8")
    except UnicodeEncodeError:
        # ``from None``: the UnicodeEncodeError object carries the whole secret string.
        raise SigningError("the secret key is not encodable as UTF-8") from None


def _split_target(url: str) -> tuple[str, str, str, str]:
    """``(scheme, netloc, path, raw_query)`` of an absolute URL or an origin-form target."""
    url = url.partition("#")[0]
    if url.startswith("/"):
        path, _, query = url.partition("?")
        return "", "", path, query
    parts = urlsplit(url)
    return parts.scheme, parts.netloc, parts.path, parts.query


# --------------------------------------------------------------------------------- signing


def _checked_secret(access_key: str, secret_key: str, security_token: str | None) -> bytes:
    """The secret key as bytes, once the credentials are known to be signable."""
    if not access_key:
        raise SigningError("access key is required")
    if not secret_key:
        raise SigningError("secret key is required")
    if _BAD_ACCESS_KEY_RE.search(access_key):
        raise SigningError("access key contains whitespace, ',', '=' or control characters")
    secret = _secret_bytes(secret_key)
    if security_token is not None and (
        not security_token or any(c in security_token for c in "\r\n\x00")
    ):
        raise SigningError("the security token is empty or holds a line break or NUL")
    return secret


def _signable_target(url: str) -> tuple[str, str, str, str]:
    """``(scheme, netloc, path, raw_query)`` of an absolute http(s) URL; path at least ``/``."""
    scheme, netloc, path, raw_query = _split_target(url)
    if scheme.lower() not in ("http", "https") or not netloc:
        raise SigningError("url must be an absolute http(s) URL")
    if "@" in netloc:
        raise SigningError("url must not carry user information")
    return scheme, netloc, path or "/", raw_query


def _caller_header_names(headers: Mapping[str, str], security_token: str | None) -> set[str]:
    """The lower-cased names of the caller's headers, none repeated, none the signer's own."""
    names: set[str] = set()
    for name in headers:
        low = name.lower()
        if low in names:
            raise SigningError(f"header {name!r} is given more than once (case-insensitively)")
        names.add(low)
    reserved_names: tuple[str, ...] = (AUTHORIZATION_HEADER, DATE_HEADER)
    if security_token is not None:
        reserved_names += (SECURITY_TOKEN_HEADER,)
    for reserved in reserved_names:
        if reserved.lower() in names:
            raise SigningError(f"header {reserved!r} is set by the signer, do not pass it")
    return names


def _headers_to_add(
    headers: Mapping[str, str],
    caller_names: set[str],
    *,
    netloc: str,
    now: datetime,
    security_token: str | None,
) -> dict[str, str]:
    """The headers the signer adds before signing, in the order the SDK adds them."""
    added: dict[str, str] = {}
    if security_token is not None:
        added[SECURITY_TOKEN_HEADER] = security_token
    # SDK: ``request.header_params.get("Content-Type")`` -- an exact-case lookup (done by hand
    # so that a case-insensitive mapping behaves like the SDK's plain dict).
    content_type = next((v for k, v in headers.items() if k == "Content-Type"), None)
    if content_type and not content_type.startswith(("application/json", "application/bson")):
        if CONTENT_SHA256_HEADER.lower() in caller_names:
            raise SigningError(
                f"{CONTENT_SHA256_HEADER!r} conflicts with the SDK's unsigned-payload rule "
                "for a non-JSON Content-Type"
            )
        added[CONTENT_SHA256_HEADER] = UNSIGNED_PAYLOAD
    added[DATE_HEADER] = _format_date(now)
    if HOST_HEADER.lower() not in caller_names:
        added[HOST_HEADER] = netloc
    return added


def _signed_payload_hash(canonical_headers: Mapping[str, str], body: bytes) -> str:
    """The payload hash the SDK signs: a declared ``X-Sdk-Content-Sha256`` or the body's."""
    if not body:
        return _EMPTY_HASH
    # The SDK reads this header after it has stripped the value and re-encoded it from
    # UTF-8 to ISO-8859-1 for sending; reproduce that so odd values sign identically.
    declared = canonical_headers.get(CONTENT_SHA256_HEADER.lower(), "")
    declared = declared.encode("utf-8").decode("iso-8859-1")
    return declared or hashlib.sha256(body).hexdigest()


def sign_request(
    *,
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    access_key: str,
    secret_key: str,
    now: datetime,
    security_token: str | None = None,
) -> SignedRequest:
    """Sign a request the way ``huaweicloudsdkcore``'s ``Signer.sign`` does, byte for byte.

    ``url`` is the absolute ``http(s)`` URL to call (path and query percent-encoded; a fragment
    is ignored).  ``headers`` are the headers that will be sent; all of them are signed except
    those whose name contains ``_``, so pass exactly what goes on the wire and do not let the
    HTTP client rewrite them.  They must not already hold ``Authorization`` or ``X-Sdk-Date``
    (``now``, timezone-aware, gives the date) and must not repeat a name case-insensitively.
    ``security_token`` (temporary credentials) is sent and signed as ``X-Security-Token``, as
    the SDK's credentials do; the caller's headers must not hold that header then.

    Returns the URL to send (same scheme, authority and path; query in the canonical order and
    encoding, exactly as the SDK sends it) and the headers to add.  Raises :class:`SigningError`
    for unusable inputs; its message never contains the secret key.
    """
    secret = _checked_secret(access_key, secret_key, security_token)
    scheme, netloc, path, raw_query = _signable_target(url)
    caller_names = _caller_header_names(headers, security_token)
    added = _headers_to_add(
        headers, caller_names, netloc=netloc, now=now, security_token=security_token
    )

    all_headers = {**headers, **added}
    canonical_headers = {name.lower(): str(value).strip() for name, value in all_headers.items()}
    signed = sorted(name.lower() for name in all_headers if "_" not in name)

    query_pairs = parse_query(raw_query)
    try:
        canonical = _canonical_request(
            method=method,
            path=path,
            query_pairs=query_pairs,
            canonical_headers=canonical_headers,
            signed_headers=signed,
            payload_hash=_signed_payload_hash(canonical_headers, body),
        )
        query = canonical_query_string(query_pairs)
        signature = _signature(secret, added[DATE_HEADER], canonical)
    except UnicodeEncodeError:
        raise SigningError("the request holds text that is not encodable as UTF-8") from None

    added[AUTHORIZATION_HEADER] = (
        f"{ALGORITHM} Access={access_key}, SignedHeaders={';'.join(signed)}, Signature={signature}"
    )
    send_url = f"{scheme}://{netloc}{path}" + (f"?{query}" if query else "")
    return SignedRequest(url=send_url, headers=MappingProxyType(added))


# ---------------------------------------------------------------------------- verification


@dataclass(frozen=True, slots=True)
class _Authorization:
    """A received ``Authorization`` header: the AK it names, the headers it says are signed and
    the signature it carries."""

    access_key: str
    signed_headers: tuple[str, ...]
    signature: str

    def verdict(
        self,
        *,
        method: str,
        url: str,
        secret_key: str,
        canonical_headers: Mapping[str, str],
        payload_hash: str,
    ) -> VerifyResult:
        """Recompute the signature the client should have sent and compare it with the one sent."""
        _scheme, _netloc, path, raw_query = _split_target(url)
        try:
            secret = _secret_bytes(secret_key)
        except SigningError:
            return VerifyResult(
                VerifyReason.UNKNOWN_ACCESS_KEY,
                "the stored secret key is unusable",
                self.access_key,
            )
        try:
            canonical = _canonical_request(
                method=method,
                path=path or "/",
                query_pairs=parse_query(raw_query),
                canonical_headers=canonical_headers,
                signed_headers=self.signed_headers,
                payload_hash=payload_hash,
            )
            expected = _signature(secret, canonical_headers["x-sdk-date"], canonical)
        except UnicodeEncodeError:
            return VerifyResult(
                VerifyReason.MALFORMED_REQUEST,
                "the request holds text that is not valid UTF-8",
                self.access_key,
            )
        if not hmac.compare_digest(expected.encode("ascii"), self.signature.encode("ascii")):
            return VerifyResult(
                VerifyReason.SIGNATURE_MISMATCH,
                "signature does not match (wrong secret key, or method, path, query, signed "
                "headers or body changed)",
                self.access_key,
                canonical,
            )
        return VerifyResult(VerifyReason.OK, "signature valid", self.access_key, canonical)


def _parse_authorization(value: str) -> _Authorization | VerifyResult:
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        return VerifyResult(VerifyReason.UNSUPPORTED_ALGORITHM, f"algorithm must be {ALGORITHM}")
    fields: dict[str, str] = {}
    for item in rest.split(","):
        name, sep, field_value = item.strip().partition("=")
        if not sep or name in fields:
            return VerifyResult(
                VerifyReason.MALFORMED_AUTHORIZATION, "authorization fields are malformed"
            )
        fields[name] = field_value
    if set(fields) != {"Access", "SignedHeaders", "Signature"}:
        return VerifyResult(
            VerifyReason.MALFORMED_AUTHORIZATION,
            "authorization needs exactly Access, SignedHeaders and Signature",
        )
    access_key = fields["Access"]
    signed = tuple(fields["SignedHeaders"].split(";"))
    signature = fields["Signature"]
    if not access_key:
        return VerifyResult(VerifyReason.MALFORMED_AUTHORIZATION, "empty access key")
    if any(not name or name != name.lower() for name in signed) or len(set(signed)) != len(signed):
        return VerifyResult(
            VerifyReason.MALFORMED_AUTHORIZATION,
            "SignedHeaders must be distinct, non-empty, lower-case names",
            access_key,
        )
    if not _SIGNATURE_RE.fullmatch(signature):
        return VerifyResult(
            VerifyReason.MALFORMED_AUTHORIZATION,
            "Signature must be 64 lower-case hex digits",
            access_key,
        )
    return _Authorization(access_key, signed, signature)


def authorization_access_key(value: str) -> str | None:
    """The AK named by an ``Authorization: SDK-HMAC-SHA256 Access=...`` value, if well formed."""
    parsed = _parse_authorization(value)
    return parsed.access_key if isinstance(parsed, _Authorization) else None


def _received_headers(headers: Mapping[str, str]) -> dict[str, list[str]]:
    """Every received header value by lower-cased name, repeated names kept in order."""
    received: dict[str, list[str]] = {}
    for name, value in headers.items():
        received.setdefault(name.lower(), []).append(value)
    return received


def _received_authorization(received: Mapping[str, list[str]]) -> _Authorization | VerifyResult:
    """The parsed Authorization header, given exactly once, or why it is unusable."""
    auth_values = received.get(AUTHORIZATION_HEADER.lower(), [])
    if not auth_values:
        return VerifyResult(VerifyReason.MISSING_AUTHORIZATION, "no Authorization header")
    if len(auth_values) > 1:
        return VerifyResult(VerifyReason.DUPLICATE_HEADER, "Authorization is given twice")
    return _parse_authorization(auth_values[0])


def _signed_header_values(
    auth: _Authorization, received: Mapping[str, list[str]], required_signed: Sequence[str]
) -> dict[str, str] | VerifyResult:
    """The stripped value of each signed header, once the required ones are all signed and
    every signed one is in the request exactly once."""
    for required in (*_REQUIRED_SIGNED, *required_signed):
        if required not in auth.signed_headers:
            return VerifyResult(
                VerifyReason.REQUIRED_HEADER_NOT_SIGNED,
                f"header {required!r} must be signed",
                auth.access_key,
            )
    canonical_headers: dict[str, str] = {}
    for name in auth.signed_headers:
        values = received.get(name, [])
        if not values:
            return VerifyResult(
                VerifyReason.SIGNED_HEADER_MISSING,
                f"signed header {name!r} is not in the request",
                auth.access_key,
            )
        if len(values) > 1:
            return VerifyResult(
                VerifyReason.DUPLICATE_HEADER,
                f"signed header {name!r} is given twice",
                auth.access_key,
            )
        canonical_headers[name] = values[0].strip()
    return canonical_headers


def _date_rejection(
    date: str, now: datetime, max_skew: float, access_key: str
) -> VerifyResult | None:
    """Why an ``X-Sdk-Date`` value is unacceptable at ``now``; None when it is fresh."""
    try:
        if not _DATE_RE.fullmatch(date):
            raise ValueError(date)
        signed_at = datetime.strptime(date, _DATE_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return VerifyResult(
            VerifyReason.MALFORMED_DATE,
            f"{DATE_HEADER} must look like 20240131T235959Z",
            access_key,
        )
    age = (now - signed_at).total_seconds()
    if age > max_skew:
        return VerifyResult(
            VerifyReason.DATE_TOO_OLD,
            f"{DATE_HEADER} is {age:.0f}s old, more than {max_skew:.0f}s",
            access_key,
        )
    if -age > max_skew:
        return VerifyResult(
            VerifyReason.DATE_IN_FUTURE,
            f"{DATE_HEADER} is {-age:.0f}s ahead, more than {max_skew:.0f}s",
            access_key,
        )
    return None


def _verified_payload_hash(
    body: bytes,
    received: Mapping[str, list[str]],
    *,
    allow_unsigned_payload: bool,
    access_key: str,
) -> str | VerifyResult:
    """The payload hash to recompute the signature with, once it is known to cover the body."""
    if not body:
        return _EMPTY_HASH
    body_hash = hashlib.sha256(body).hexdigest()
    declared_values = received.get(CONTENT_SHA256_HEADER.lower(), [])
    if len(declared_values) > 1:
        return VerifyResult(
            VerifyReason.DUPLICATE_HEADER,
            f"{CONTENT_SHA256_HEADER} is given twice",
            access_key,
        )
    declared = declared_values[0].strip() if declared_values else ""
    if declared == UNSIGNED_PAYLOAD:
        if not allow_unsigned_payload:
            return VerifyResult(
                VerifyReason.UNSIGNED_PAYLOAD, "the body is not covered", access_key
            )
    elif declared and not (
        _HEX_SHA256_RE.fullmatch(declared) and hmac.compare_digest(declared.lower(), body_hash)
    ):
        return VerifyResult(
            VerifyReason.PAYLOAD_HASH_MISMATCH,
            f"{CONTENT_SHA256_HEADER} does not match the body",
            access_key,
        )
    return declared or body_hash


def verify_request(
    *,
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    lookup_secret: Callable[[str], str | None],
    now: datetime,
    max_skew: float = DEFAULT_MAX_SKEW_SECONDS,
    allow_unsigned_payload: bool = False,
    required_signed: Sequence[str] = (),
) -> VerifyResult:
    """Check an ``SDK-HMAC-SHA256`` signed request as the API gateway would.

    ``url`` is the request target as received, percent-encoding untouched: an origin-form
    ``/path?query`` (aiohttp: ``request.raw_path``) or an absolute URL.  ``headers`` may be
    any mapping (a multi-dict's repeated names are seen through ``items()``); values must be
    the received text decoded as UTF-8.  ``lookup_secret`` maps an access key to its secret
    key, or ``None`` when unknown.  ``now`` (timezone-aware) is compared with ``X-Sdk-Date``;
    more than ``max_skew`` seconds either way is rejected.

    Requires ``host``, ``x-sdk-date`` and the lower-case names in ``required_signed`` (e.g.
    ``x-security-token`` for temporary credentials) among the signed headers, every signed
    header present exactly once, and, for a non-empty body, a payload hash that covers it: an
    ``X-Sdk-Content-Sha256`` value must equal the body's SHA-256, and ``UNSIGNED-PAYLOAD`` is
    only accepted with ``allow_unsigned_payload``.  The signature is compared in constant time.

    Never raises for anything the client sent (only if ``lookup_secret`` raises or ``now`` is
    naive); never puts a secret key into the result.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")
    received = _received_headers(headers)
    auth = _received_authorization(received)
    if isinstance(auth, VerifyResult):
        return auth
    canonical_headers = _signed_header_values(auth, received, required_signed)
    if isinstance(canonical_headers, VerifyResult):
        return canonical_headers
    rejected = _date_rejection(canonical_headers["x-sdk-date"], now, max_skew, auth.access_key)
    if rejected is not None:
        return rejected
    secret_key = lookup_secret(auth.access_key)
    if not secret_key:
        return VerifyResult(VerifyReason.UNKNOWN_ACCESS_KEY, "unknown access key", auth.access_key)
    payload_hash = _verified_payload_hash(
        body, received, allow_unsigned_payload=allow_unsigned_payload, access_key=auth.access_key
    )
    if isinstance(payload_hash, VerifyResult):
        return payload_hash
    return auth.verdict(
        method=method,
        url=url,
        secret_key=secret_key,
        canonical_headers=canonical_headers,
        payload_hash=payload_hash,
    )
