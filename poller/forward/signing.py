"""Standard Webhooks 1.0: message body, id and signature (pure functions, no I/O).

``webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`` where the key
is the base64-decoded part of a ``whsec_<base64>`` secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret


@dataclass(frozen=True, slots=True)
class WebhookSecret:
    """A ``whsec_<base64>`` secret.  ``repr`` never shows it."""

    text: str = field(repr=False)
    key: bytes = field(repr=False)

    @classmethod
    def parse(cls, text: str) -> WebhookSecret:
        """Parse ``whsec_<base64>``; :class:`ValueError` (naming no secret) when it is not."""
        text = text.strip()
        if not text.startswith(SECRET_PREFIX):
            raise ValueError(f"expected a secret of the form {SECRET_PREFIX}<base64>")
        encoded = text[len(SECRET_PREFIX) :]
        try:
            key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"the part after {SECRET_PREFIX} is not base64") from None
        if len(key) < 1:
            raise ValueError("the secret is empty")
        return cls(text=text, key=key)

    def __repr__(self) -> str:
        return "WebhookSecret(**********)"


def webhook_id(job_id: str, seq: int | str) -> str:
    """The idempotency key of one event: ``{job_id}:{seq}``, the same on every retry."""
    return f"{job_id}:{seq}"


def webhook_body(fields: Mapping[str, str]) -> bytes:
    """``{"type": <event kind>, "timestamp": <observed_at>, "data": <every field>}``."""
    payload = {
        "type": fields.get("event", ""),
        "timestamp": fields.get("observed_at", ""),
        "data": dict(fields),
    }
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def sign(secret: WebhookSecret, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for one attempt."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret.key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secret: WebhookSecret, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Every header of one attempt."""
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
    }
