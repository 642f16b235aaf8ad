"""``poller forward``: deliver every event of ``{prefix}:events`` to a webhook, signed per
Standard Webhooks 1.0, at least once, in per-job order."""

from __future__ import annotations

from poller.forward.forwarder import (
    Forwarder,
    ForwardMetrics,
    ForwardOptions,
    Retries,
    event_filter,
)
from poller.forward.signing import WebhookSecret, sign, webhook_body, webhook_id

__all__ = [
    "ForwardMetrics",
    "ForwardOptions",
    "Forwarder",
    "Retries",
    "WebhookSecret",
    "event_filter",
    "sign",
    "webhook_body",
    "webhook_id",
]
