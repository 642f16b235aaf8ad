"""AK/SK signing: byte-for-byte agreement with the official SDK's signer, and verification."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import quote

import pytest
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.signer import Signer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from poller.servicestage.signing import (
    SignedRequest,
    SigningError,
    VerifyReason,
    VerifyResult,
    canonical_uri,
    sign_request,
    verify_request,
)

AK = "HPUAEXAMPLEAK0000001"
SK = "exampleSecretKey/+=0123456789abcdef"
HOST = "servicestage.cn-north-4.myhuaweicloud.com"
NOW = datetime(2024, 1, 31, 23, 59, 59, tzinfo=UTC)
JOB_PATH = "/v3/0a1b2c3d4e5f/cas/jobs/JOB17cb1778-07b1-4c8f-a183-c86cffbe8f9e"


# ------------------------------------------------------------------------------ the oracle


def sdk_sign(
    *,
    method: str,
    host: str,
    resource_path: str,
    query_params: list[tuple[str, str]],
    headers: Mapping[str, str],
    body: bytes,
    ak: str,
    sk: str,
    date: str,
) -> SdkRequest:
    """Sign with the official SDK; the date is pinned through the X-Sdk-Date header it reads."""
    request = SdkRequest(
        method=method,
        schema="https",
        host=host,
        resource_path=resource_path,
        query_params=list(query_params),
        header_params={**headers, "X-Sdk-Date": date},
        body=body,
    )
    return Signer(BasicCredentials(ak, sk)).sign(request)


# ------------------------------------------------------------------------------ strategies

ID = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z")
# Any text the SDK can encode (lone surrogates are not UTF-8 encodable, there or here).
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
PCHAR_RAW = st.text(
    st.sampled_from("abcXYZ019-._~!$&'()*+,;=:@"), min_size=1, max_size=8
)  # legal unencoded in a path segment
SEGMENT = st.one_of(
    ID,
    TEXT.map(lambda s: quote(s, safe="")),  # how the SDK fills path parameters
    PCHAR_RAW,
    st.just("%E2%82%AC"),
    st.just("%zz"),  # not a valid escape: left alone by unquote
)


@st.composite
def paths(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        path = f"/v3/{draw(ID)}/cas/jobs/{quote(draw(ID), safe='')}"
    else:
        path = "/" + "/".join(draw(st.lists(SEGMENT, min_size=0, max_size=5)))
    if draw(st.booleans()):
        path += "/"
    return path


QUERY_KEY = st.one_of(st.sampled_from(["limit", "offset", "desc", "instance_id"]), TEXT)
QUERY_VALUE = st.one_of(
    st.integers(0, 10_000).map(str), st.sampled_from(["true", "false", ""]), ID, TEXT
)
# Characters a client may leave unencoded in a query component; never & = # % (structural).
OPTIONAL_SAFE = "!$'()*,;:@/?~+"


@st.composite
def query_encodings(draw: st.DrawFn, pairs: list[tuple[str, str]]) -> str:
    """Some valid raw query string for ``pairs`` (order shuffled, encoding choices varied)."""
    order = draw(st.permutations(range(len(pairs)))) if pairs else []
    pieces = []
    for index in order:
        key, value = pairs[index]
        safe = "".join(c for c in OPTIONAL_SAFE if draw(st.booleans()))
        encoded_key = quote(key, safe=safe)
        if key and not value and draw(st.booleans()):
            pieces.append(encoded_key)  # "?flag" is the same as "?flag="
        else:
            value_safe = safe + ("=" if draw(st.booleans()) else "")
            pieces.append(f"{encoded_key}={quote(value, safe=value_safe)}")
    raw = "&".join(pieces)
    if raw and draw(st.booleans()):
        raw += "&"  # an empty trailing piece is ignored
    return raw


TCHAR = st.sampled_from(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$&'*+-.^_`|~"
)
RESERVED = {"authorization", "x-sdk-date", "host", "content-type", "x-sdk-content-sha256"}
HEADER_VALUE = st.one_of(
    st.text(st.characters(exclude_categories=("Cs", "Cc")), max_size=16),
    st.sampled_from(["  padded\t", "\u3000wide space\u00a0", "", "application/json", "ümlaut"]),
)


@dataclass(frozen=True)
class Case:
    method: str
    host: str
    path: str
    query_pairs: list[tuple[str, str]]
    raw_query: str
    headers: dict[str, str]
    body: bytes
    ak: str
    sk: str
    now: datetime


@st.composite
def cases(draw: st.DrawFn) -> Case:
    host = draw(st.sampled_from([HOST, "example.com:8443", "127.0.0.1:9000", "Sim.Local"]))
    query_pairs = draw(st.lists(st.tuples(QUERY_KEY, QUERY_VALUE), max_size=6))
    if query_pairs and draw(st.booleans()):  # repeated key
        query_pairs.append((query_pairs[0][0], draw(QUERY_VALUE)))
    raw_query = draw(query_encodings(query_pairs))

    headers: dict[str, str] = {}
    for name in draw(st.lists(st.text(TCHAR, min_size=1, max_size=10), max_size=5)):
        if name.lower() not in {h.lower() for h in headers} | RESERVED:
            headers[name] = draw(HEADER_VALUE)
    host_variant = draw(st.sampled_from(["none", "Host", "host", "HOST"]))
    if host_variant != "none":
        headers[host_variant] = draw(st.sampled_from([host, "other.example", " padded.host "]))
    content_type = draw(
        st.sampled_from(
            [
                None,
                ("Content-Type", "application/json"),
                ("Content-Type", "application/json;charset=UTF-8"),
                ("Content-Type", "application/bson"),
                ("Content-Type", "text/plain"),
                ("Content-Type", "application/octet-stream"),
                ("Content-Type", ""),
                ("content-type", "text/plain"),  # the SDK's check is case-sensitive
                ("CONTENT-TYPE", "multipart/form-data"),
            ]
        )
    )
    if content_type is not None:
        headers[content_type[0]] = content_type[1]

    body = draw(
        st.one_of(
            st.just(b""),
            st.binary(max_size=64),
            st.dictionaries(st.text(max_size=5), st.integers(), max_size=3).map(
                lambda d: json.dumps(d).encode()
            ),
        )
    )
    unsigned_rule = (
        content_type is not None
        and content_type[0] == "Content-Type"
        and content_type[1] != ""
        and not content_type[1].startswith(("application/json", "application/bson"))
    )
    if not unsigned_rule:
        declared = draw(
            st.sampled_from([None, hashlib.sha256(body).hexdigest(), "UNSIGNED-PAYLOAD", " x "])
        )
        if declared is not None:
            headers[draw(st.sampled_from(["X-Sdk-Content-Sha256", "x-sdk-content-sha256"]))] = (
                declared
            )

    # Shuffle header insertion order: the signature must not depend on it.
    items = list(headers.items())
    headers = dict(draw(st.permutations(items))) if items else {}
    return Case(
        method=draw(
            st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "get", "post"])
        ),
        host=host,
        path=draw(paths()),
        query_pairs=query_pairs,
        raw_query=raw_query,
        headers=headers,
        body=body,
        ak=draw(st.text(st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"), min_size=1)),
        sk=draw(st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=40)),
        now=draw(
            st.datetimes(
                min_value=datetime(2000, 1, 1),
                max_value=datetime(2099, 12, 31),
                timezones=st.just(UTC),
            )
        ),
    )


def url_of(case: Case) -> str:
    return f"https://{case.host}{case.path}" + (f"?{case.raw_query}" if case.raw_query else "")


def wire_headers(sdk_request: SdkRequest) -> dict[str, str]:
    """The SDK's headers as a UTF-8-decoding server sees them (the SDK sends them as Latin-1)."""
    return {
        name: value.encode("iso-8859-1").decode("utf-8")
        for name, value in sdk_request.header_params.items()
    }


def declared_hash_is_bogus(case: Case) -> bool:
    return bool(case.body) and any(
        name.lower() == "x-sdk-content-sha256" and value == " x "
        for name, value in case.headers.items()
    )


# ------------------------------------------------------------------------- the core proof


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases())
def test_authorization_is_byte_identical_to_the_sdk(case: Case) -> None:
    ours = sign_request(
        method=case.method,
        url=url_of(case),
        headers=case.headers,
        body=case.body,
        access_key=case.ak,
        secret_key=case.sk,
        now=case.now,
    )
    date = ours.headers["X-Sdk-Date"]
    assert date == case.now.strftime("%Y%m%dT%H%M%SZ")
    sdk = sdk_sign(
        method=case.method,
        host=case.host,
        resource_path=case.path,
        query_params=case.query_pairs,
        headers=case.headers,
        body=case.body,
        ak=case.ak,
        sk=case.sk,
        date=date,
    )

    assert ours.headers["Authorization"] == sdk.header_params["Authorization"]
    # The same headers added (Host when absent, X-Sdk-Content-Sha256 by the Content-Type rule).
    sdk_added = {k: v for k, v in sdk.header_params.items() if k not in case.headers}
    assert dict(ours.headers) == sdk_added
    # The same request line: path as given, query in the SDK's canonical form.
    assert ours.url == f"https://{case.host}{sdk.uri}"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases())
def test_verifier_accepts_what_the_sdk_and_we_sign(case: Case) -> None:
    ours = sign_request(
        method=case.method,
        url=url_of(case),
        headers=case.headers,
        body=case.body,
        access_key=case.ak,
        secret_key=case.sk,
        now=case.now,
    )
    sdk = sdk_sign(
        method=case.method,
        host=case.host,
        resource_path=case.path,
        query_params=case.query_pairs,
        headers=case.headers,
        body=case.body,
        ak=case.ak,
        sk=case.sk,
        date=ours.headers["X-Sdk-Date"],
    )
    secrets = {case.ak: case.sk}
    expected = (
        VerifyReason.PAYLOAD_HASH_MISMATCH if declared_hash_is_bogus(case) else VerifyReason.OK
    )
    for url, headers in (
        (ours.url, {**case.headers, **ours.headers}),  # what our client sends
        (url_of(case), {**case.headers, **ours.headers}),  # the URL before canonicalising
        (sdk.uri, wire_headers(sdk)),  # what the SDK sends, origin-form target
    ):
        result = verify_request(
            method=case.method,
            url=url,
            headers=headers,
            body=case.body,
            lookup_secret=secrets.get,
            now=case.now + timedelta(seconds=30),
            allow_unsigned_payload=True,
        )
        assert result.reason is expected, (url, result)
        assert result.access_key == case.ak


# --------------------------------------------------------------------------- known answers


def test_known_answer_get_job() -> None:
    signed = sign_request(
        method="GET",
        url=f"https://{HOST}{JOB_PATH}?offset=0&limit=100&instance_id=ins-1",
        headers={"Content-Type": "application/json"},
        body=b"",
        access_key=AK,
        secret_key=SK,
        now=NOW,
    )
    # Computed once with huaweicloudsdkcore 3.1.219 Signer for the same inputs.
    assert dict(signed.headers) == {
        "X-Sdk-Date": "20240131T235959Z",
        "Host": HOST,
        "Authorization": "SDK-HMAC-SHA256 Access=HPUAEXAMPLEAK0000001, "
        "SignedHeaders=content-type;host;x-sdk-date, "
        "Signature=9a02429cb61672f6dbb54a67bb07b03bea9b4c53614ab79d8f40597f6bb1ff11",
    }
    assert signed.url == f"https://{HOST}{JOB_PATH}?instance_id=ins-1&limit=100&offset=0"


def test_known_answer_quirks() -> None:
    signed = sign_request(
        method="POST",
        url="https://example.com:8443/v3/p%20q/x?sp%20ace=%C3%BC%2B%26%3D&k=b&k=a",
        headers={"Content-Type": "text/plain", "X-Trace_Id": "u", "X-Custom": "  v  "},
        body=b'{"a": 1}',
        access_key=AK,
        secret_key=SK,
        now=datetime(
            2024, 2, 1, 7, 59, 59, tzinfo=timezone(timedelta(hours=8))
        ),  # same instant in UTC+8
    )
    # Computed once with huaweicloudsdkcore 3.1.219: text/plain adds UNSIGNED-PAYLOAD, the
    # header with "_" is not signed, values are trimmed, repeated keys sorted by value.
    assert dict(signed.headers) == {
        "X-Sdk-Content-Sha256": "UNSIGNED-PAYLOAD",
        "X-Sdk-Date": "20240131T235959Z",
        "Host": "example.com:8443",
        "Authorization": "SDK-HMAC-SHA256 Access=HPUAEXAMPLEAK0000001, "
        "SignedHeaders=content-type;host;x-custom;x-sdk-content-sha256;x-sdk-date, "
        "Signature=70f309c8a13da94a767c06a65cdc99d359eaf01657c0ddda0800e9634a87c29c",
    }
    assert signed.url == "https://example.com:8443/v3/p%20q/x?k=a&k=b&sp%20ace=%C3%BC%2B%26%3D"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v3/p/cas/jobs/JOB1", "/v3/p/cas/jobs/JOB1/"),
        ("/v3/p/cas/jobs/JOB1/", "/v3/p/cas/jobs/JOB1/"),  # trailing slash: signs alike
        ("/a%2Fb", "/a/b/"),  # an encoded slash becomes a separator
        ("/a b/~x/%7e", "/a%20b/~x/~/"),
        ("/%zz/%FF", "/%25zz/%EF%BF%BD/"),
        ("/", "/"),
    ],
)
def test_canonical_uri_matches_the_sdk(path: str, expected: str) -> None:
    assert canonical_uri(path) == expected
    assert (
        Signer(BasicCredentials(AK, SK))._process_canonical_uri(SdkRequest(resource_path=path))
        == expected
    )


# ----------------------------------------------------------------------------- verification


def signed_get(
    *, url: str = f"https://{HOST}{JOB_PATH}?limit=100&offset=0", body: bytes = b"", **kw: object
) -> tuple[SignedRequest, dict[str, str]]:
    headers: dict[str, str] = {"Content-Type": "application/json", **kw}  # type: ignore[dict-item]
    signed = sign_request(
        method="POST" if body else "GET",
        url=url,
        headers=headers,
        body=body,
        access_key=AK,
        secret_key=SK,
        now=NOW,
    )
    return signed, {**headers, **signed.headers}


def verify(
    *,
    method: str = "GET",
    url: str = f"{JOB_PATH}?limit=100&offset=0",
    headers: Mapping[str, str],
    body: bytes = b"",
    now: datetime = NOW,
    secrets: Mapping[str, str] | None = None,
) -> VerifyResult:
    table = {AK: SK} if secrets is None else secrets
    result = verify_request(
        method=method,
        url=url,
        headers=headers,
        body=body,
        lookup_secret=table.get,
        now=now,
    )
    assert SK not in result.detail
    assert SK not in repr(result)
    return result


def replace_auth(headers: Mapping[str, str], old: str, new: str) -> dict[str, str]:
    return {**headers, "Authorization": headers["Authorization"].replace(old, new)}


def test_round_trip() -> None:
    _, headers = signed_get()
    result = verify(headers=headers)
    assert result.ok
    assert result.access_key == AK
    assert verify(url=f"https://{HOST}{JOB_PATH}?offset=0&limit=100", headers=headers).ok
    assert verify(headers=headers, now=NOW + timedelta(minutes=15)).ok
    assert verify(headers=headers, now=NOW - timedelta(minutes=15)).ok


def test_round_trip_with_body() -> None:
    _, headers = signed_get(body=b'{"x": 1}')
    assert verify(method="POST", headers=headers, body=b'{"x": 1}').ok


def rejections() -> dict[str, VerifyResult]:
    _, headers = signed_get()
    _, body_headers = signed_get(body=b'{"x": 1}')
    no_host = dict(headers)
    del no_host["Host"]
    signed_without_host = replace_auth(
        headers, "content-type;host;x-sdk-date", "content-type;x-sdk-date"
    )
    return {
        "wrong secret": verify(headers=headers, secrets={AK: SK + "x"}),
        "unknown access key": verify(headers=headers, secrets={"OTHER": SK}),
        "stale date": verify(headers=headers, now=NOW + timedelta(minutes=15, seconds=1)),
        "future date": verify(headers=headers, now=NOW - timedelta(minutes=15, seconds=1)),
        "tampered path": verify(url=f"{JOB_PATH}x?limit=100&offset=0", headers=headers),
        "tampered query": verify(url=f"{JOB_PATH}?limit=100&offset=1", headers=headers),
        "extra query": verify(url=f"{JOB_PATH}?limit=100&offset=0&a=b", headers=headers),
        "tampered method": verify(method="DELETE", headers=headers),
        "tampered header": verify(headers={**headers, "Content-Type": "application/jsonx"}),
        "tampered body": verify(method="POST", headers=body_headers, body=b'{"x": 2}'),
        "missing authorization": verify(
            headers={k: v for k, v in headers.items() if k != "Authorization"}
        ),
        "malformed authorization": verify(
            headers={**headers, "Authorization": "SDK-HMAC-SHA256 garbage"}
        ),
        "truncated signature": verify(headers=replace_auth(headers, "Signature=", "Signature=0")),
        "other algorithm": verify(headers=replace_auth(headers, "SDK-HMAC-SHA256", "SDK-HMAC-SM3")),
        "host not signed": verify(headers=signed_without_host),
        "signed header absent": verify(headers=no_host),
        "malformed date": verify(headers={**headers, "X-Sdk-Date": "2024-01-31T23:59:59Z"}),
        "duplicate header": verify(headers={**headers, "host": HOST}),
        "bogus declared hash": verify(
            method="POST",
            headers={**body_headers, "X-Sdk-Content-Sha256": "0" * 64},
            body=b'{"x": 1}',
        ),
    }


def test_rejections_have_the_right_reasons() -> None:
    # HMAC cannot tell a wrong secret from a changed method/path/query/header/body: those are
    # all SIGNATURE_MISMATCH; every other failure has its own reason.
    got = {case: result.reason for case, result in rejections().items()}
    assert got == {
        "wrong secret": VerifyReason.SIGNATURE_MISMATCH,
        "unknown access key": VerifyReason.UNKNOWN_ACCESS_KEY,
        "stale date": VerifyReason.DATE_TOO_OLD,
        "future date": VerifyReason.DATE_IN_FUTURE,
        "tampered path": VerifyReason.SIGNATURE_MISMATCH,
        "tampered query": VerifyReason.SIGNATURE_MISMATCH,
        "extra query": VerifyReason.SIGNATURE_MISMATCH,
        "tampered method": VerifyReason.SIGNATURE_MISMATCH,
        "tampered header": VerifyReason.SIGNATURE_MISMATCH,
        "tampered body": VerifyReason.SIGNATURE_MISMATCH,
        "missing authorization": VerifyReason.MISSING_AUTHORIZATION,
        "malformed authorization": VerifyReason.MALFORMED_AUTHORIZATION,
        "truncated signature": VerifyReason.MALFORMED_AUTHORIZATION,
        "other algorithm": VerifyReason.UNSUPPORTED_ALGORITHM,
        "host not signed": VerifyReason.REQUIRED_HEADER_NOT_SIGNED,
        "signed header absent": VerifyReason.SIGNED_HEADER_MISSING,
        "malformed date": VerifyReason.MALFORMED_DATE,
        "duplicate header": VerifyReason.DUPLICATE_HEADER,
        "bogus declared hash": VerifyReason.PAYLOAD_HASH_MISMATCH,
    }


def test_verify_reasons_read_as_their_names_in_lower_case() -> None:
    # The values are what logs and the emulator show; ``auto()`` must keep them as spelled.
    assert VerifyReason.OK == "ok"
    assert VerifyReason.REQUIRED_HEADER_NOT_SIGNED == "required_header_not_signed"
    assert VerifyReason.SIGNATURE_MISMATCH == "signature_mismatch"
    assert all(reason.value == reason.name.lower() for reason in VerifyReason)


def test_unsigned_payload_is_opt_in() -> None:
    _, headers = signed_get(body=b"raw", **{"Content-Type": "text/plain"})
    assert headers["X-Sdk-Content-Sha256"] == "UNSIGNED-PAYLOAD"
    assert verify(method="POST", headers=headers, body=b"raw").reason is (
        VerifyReason.UNSIGNED_PAYLOAD
    )
    lenient = verify_request(
        method="POST",
        url=f"{JOB_PATH}?limit=100&offset=0",
        headers=headers,
        body=b"other",
        lookup_secret={AK: SK}.get,
        now=NOW,
        allow_unsigned_payload=True,
    )
    assert lenient.ok  # the body is not covered: that is what UNSIGNED-PAYLOAD means


# --------------------------------------------------------------------------- input errors


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"headers": {"Authorization": "x"}}, "Authorization"),
        ({"headers": {"x-sdk-date": "20240101T000000Z"}}, "X-Sdk-Date"),
        ({"headers": {"X-A": "1", "x-a": "2"}}, "more than once"),
        ({"url": "/relative"}, "absolute"),
        ({"url": "ftp://h/x"}, "absolute"),
        ({"url": "https://user:pw@h/x"}, "user information"),
        ({"now": datetime(2024, 1, 1)}, "timezone-aware"),
        ({"access_key": ""}, "access key"),
        ({"access_key": "A K"}, "access key"),
        ({"secret_key": ""}, "secret key"),
        (
            {"headers": {"Content-Type": "text/plain", "X-Sdk-Content-Sha256": "abc"}},
            "unsigned-payload",
        ),
    ],
)
def test_sign_rejects_unusable_input(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {
        "method": "GET",
        "url": f"https://{HOST}/x",
        "headers": {},
        "body": b"",
        "access_key": AK,
        "secret_key": SK,
        "now": NOW,
    }
    args.update(kwargs)
    with pytest.raises(SigningError, match=match) as caught:
        sign_request(**args)  # type: ignore[arg-type]
    assert SK not in str(caught.value)


def test_secret_never_leaks() -> None:
    secret = "s3cr3t-\ud800-tail"  # a lone surrogate: not UTF-8 encodable
    with pytest.raises(SigningError) as caught:
        sign_request(
            method="GET",
            url=f"https://{HOST}/x",
            headers={},
            body=b"",
            access_key=AK,
            secret_key=secret,
            now=NOW,
        )
    assert "s3cr3t" not in str(caught.value)
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__
    signed, headers = signed_get()
    assert SK not in repr(signed)
    for result in rejections().values():
        assert SK not in result.detail
        assert SK not in repr(result)
    unusable = verify_request(
        method="GET",
        url=f"{JOB_PATH}?limit=100&offset=0",
        headers=headers,
        body=b"",
        lookup_secret=lambda _ak: secret,
        now=NOW,
    )
    assert unusable.reason is VerifyReason.UNKNOWN_ACCESS_KEY
    assert "s3cr3t" not in repr(unusable)
