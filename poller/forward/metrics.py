"""What a forwarder reports: its Prometheus metrics, in a registry of their own."""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, generate_latest

from poller.telemetry import MetricFactory

DELIVERY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class ForwardMetrics:
    """Prometheus metrics of one forwarder, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        make = MetricFactory(self.registry)
        self.delivered = make.counter(
            "poller_forward_delivered_total", "Events acknowledged by the webhook (2xx)."
        )
        self.retried = make.counter(
            "poller_forward_retried_total",
            "Failed delivery attempts that were retried, by cause (HTTP status, timeout, error).",
            "cause",
        )
        self.parked = make.counter(
            "poller_forward_parked_total",
            "Events parked in {prefix}:forward:dead after max attempts (or malformed).",
        )
        self.filtered = make.counter(
            "poller_forward_filtered_total", "Events acknowledged without delivery (filters)."
        )
        self.claimed = make.counter(
            "poller_forward_claimed_total",
            "Pending entries taken over from other (presumed dead) consumers.",
        )
        self.latency = make.histogram(
            "poller_forward_delivery_seconds",
            "Time from taking an event to its acknowledged delivery, retries included.",
            DELIVERY_BUCKETS,
        )
        self.held = make.gauge(
            "poller_forward_events_held", "Events this forwarder holds, unacknowledged."
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
