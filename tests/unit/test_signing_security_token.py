"""Temporary credentials: signing with a security token agrees byte for byte with the SDK.

The oracle is the official SDK's whole credential path, ``BasicCredentials(ak, sk)
.with_security_token(token).sign_request(request)``: it puts ``X-Security-Token`` into the
request's headers and then signs, so the token is a signed header.  The cases are the ones that
prove the plain signer identical (tests/unit/test_signing.py), plus a token.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.sdk_request import SdkRequest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from poller.servicestage.signing import (
    SECURITY_TOKEN_HEADER,
    SigningError,
    VerifyReason,
    authorization_access_key,
    sign_request,
    verify_request,
)
from tests.unit.test_signing import AK, HOST, JOB_PATH, NOW, SK, Case, cases, url_of, wire_headers

# Security tokens are long base64-like strings; any printable ASCII stays within what a header
# carries (the SDK sends header values as Latin-1).
TOKENS = st.one_of(
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=200),
    st.just("gQpjbi1ub3J0aC00" + "A" * 1500 + "=="),
)
SIGNED_TOKEN = (SECURITY_TOKEN_HEADER.lower(),)


def sdk_sign_with_token(case: Case, token: str, date: str) -> SdkRequest:
    """The SDK's credentials sign the request (the date pinned through X-Sdk-Date)."""
    request = SdkRequest(
        method=case.method,
        schema="https",
        host=case.host,
        resource_path=case.path,
        query_params=list(case.query_pairs),
        header_params={**case.headers, "X-Sdk-Date": date},
        body=case.body,
    )
    credentials = BasicCredentials(case.ak, case.sk).with_security_token(token)
    signed: SdkRequest = credentials.sign_request(request)
    return signed


def ours(case: Case, token: str) -> tuple[str, dict[str, str]]:
    signed = sign_request(
        method=case.method,
        url=url_of(case),
        headers=case.headers,
        body=case.body,
        access_key=case.ak,
        secret_key=case.sk,
        now=case.now,
        security_token=token,
    )
    return signed.url, dict(signed.headers)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases(), token=TOKENS)
def test_signing_with_a_security_token_is_byte_identical_to_the_sdk(case: Case, token: str) -> None:
    url, added = ours(case, token)
    sdk = sdk_sign_with_token(case, token, added["X-Sdk-Date"])

    assert added["Authorization"] == sdk.header_params["Authorization"]
    assert "x-security-token" in added["Authorization"].split("SignedHeaders=")[1].split(",")[0]
    sdk_added = {k: v for k, v in sdk.header_params.items() if k not in case.headers}
    assert added == sdk_added  # X-Security-Token included, with the same value
    assert added[SECURITY_TOKEN_HEADER] == token
    assert url == f"https://{case.host}{sdk.uri}"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases(), token=TOKENS)
def test_the_verifier_accepts_what_the_sdk_and_we_sign_with_a_token(case: Case, token: str) -> None:
    url, added = ours(case, token)
    sdk = sdk_sign_with_token(case, token, added["X-Sdk-Date"])
    bogus = bool(case.body) and any(
        name.lower() == "x-sdk-content-sha256" and value == " x "
        for name, value in case.headers.items()
    )
    expected = VerifyReason.PAYLOAD_HASH_MISMATCH if bogus else VerifyReason.OK
    for target, headers in ((url, {**case.headers, **added}), (sdk.uri, wire_headers(sdk))):
        result = verify_request(
            method=case.method,
            url=target,
            headers=headers,
            body=case.body,
            lookup_secret={case.ak: case.sk}.get,
            now=case.now + timedelta(seconds=30),
            allow_unsigned_payload=True,
            required_signed=SIGNED_TOKEN,
        )
        assert result.reason is expected, (target, result)


TOKEN = "gQpjbi1ub3J0aC00EXAMPLE-security-token+/="


def test_known_answer_with_a_security_token() -> None:
    signed = sign_request(
        method="GET",
        url=f"https://{HOST}{JOB_PATH}?offset=0&limit=100",
        headers={"Content-Type": "application/json"},
        body=b"",
        access_key=AK,
        secret_key=SK,
        now=NOW,
        security_token=TOKEN,
    )
    # Computed once with huaweicloudsdkcore 3.1.219 BasicCredentials(...).with_security_token.
    assert dict(signed.headers) == {
        "X-Security-Token": TOKEN,
        "X-Sdk-Date": "20240131T235959Z",
        "Host": HOST,
        "Authorization": "SDK-HMAC-SHA256 Access=HPUAEXAMPLEAK0000001, "
        "SignedHeaders=content-type;host;x-sdk-date;x-security-token, "
        "Signature=8a440eec212c033613b3c3b578fec94d650be3895b50873031ad48481875494e",
    }


def _signed(token: str = TOKEN) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    signed = sign_request(
        method="GET",
        url=f"https://{HOST}{JOB_PATH}",
        headers=headers,
        body=b"",
        access_key=AK,
        secret_key=SK,
        now=NOW,
        security_token=token,
    )
    return {**headers, **signed.headers}


def _verify(headers: dict[str, str], required: tuple[str, ...] = SIGNED_TOKEN) -> VerifyReason:
    return verify_request(
        method="GET",
        url=JOB_PATH,
        headers=headers,
        body=b"",
        lookup_secret={AK: SK}.get,
        now=NOW,
        required_signed=required,
    ).reason


def test_a_changed_or_unsigned_token_is_caught() -> None:
    assert _verify(_signed()) is VerifyReason.OK
    changed = {**_signed(), SECURITY_TOKEN_HEADER: TOKEN + "x"}
    assert _verify(changed) is VerifyReason.SIGNATURE_MISMATCH
    # Signed without a token, the token added afterwards: the signature holds, the rule not.
    plain = sign_request(method="GET", url=f"https://{HOST}{JOB_PATH}", headers={}, body=b"",
                         access_key=AK, secret_key=SK, now=NOW)  # fmt: skip
    appended = {**plain.headers, SECURITY_TOKEN_HEADER: TOKEN}
    assert _verify(appended, required=()) is VerifyReason.OK
    assert _verify(appended) is VerifyReason.REQUIRED_HEADER_NOT_SIGNED
    missing = _signed()
    del missing[SECURITY_TOKEN_HEADER]
    assert _verify(missing) is VerifyReason.SIGNED_HEADER_MISSING


@pytest.mark.parametrize("token", ["", "a\nb", "a\r\nX-Injected: 1", "nul\x00"])
def test_unusable_tokens_are_refused_without_echoing_them(token: str) -> None:
    with pytest.raises(SigningError) as err:
        _signed(token)
    assert "security token" in str(err.value)
    assert SK not in str(err.value)


def test_the_signer_owns_the_token_header() -> None:
    with pytest.raises(SigningError, match="X-Security-Token"):
        sign_request(method="GET", url=f"https://{HOST}/", body=b"", access_key=AK,
                     secret_key=SK, now=NOW, security_token=TOKEN,
                     headers={"x-security-token": "other"})  # fmt: skip
    # Without a token argument such a header is the caller's, signed like any other.
    signed = sign_request(method="GET", url=f"https://{HOST}/", body=b"", access_key=AK,
                          secret_key=SK, now=NOW, headers={"X-Security-Token": TOKEN})  # fmt: skip
    assert "x-security-token" in signed.headers["Authorization"]


def test_the_access_key_of_an_authorization_header() -> None:
    headers = _signed()
    assert authorization_access_key(headers["Authorization"]) == AK
    assert authorization_access_key("Bearer x") is None
    assert authorization_access_key("SDK-HMAC-SHA256 Access=, SignedHeaders=a, Signature=b") is None
