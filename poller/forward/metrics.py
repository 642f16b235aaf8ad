"""What a forwarder reports: its Prometheus metrics, in a registry of their own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class ForwardMetrics:
    """Prometheus metrics of one forwarder, in their own registry."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.delivered = Counter(
            "poller_forward_delivered_total", "Events acknowledged by the webhook (2xx).",
            registry=r,
        )  # fmt: skip
        self.retried = Counter(
            "poller_forward_retried_total",
            "Failed delivery attempts that were retried, by cause (HTTP status, timeout, error).",
            ["cause"],
            registry=r,
        )
        self.parked = Counter(
            "poller_forward_parked_total",
            "Events parked in {prefix}:forward:dead after max attempts (or malformed).",
            registry=r,
        )
        self.filtered = Counter(
            "poller_forward_filtered_total", "Events acknowledged without delivery (filters).",
            registry=r,
        )  # fmt: skip
        self.claimed = Counter(
            "poller_forward_claimed_total",
            "Pending entries taken over from other (presumed dead) consumers.",
            registry=r,
        )
        self.latency = Histogram(
            "poller_forward_delivery_seconds",
            "Time from taking an event to its acknowledged delivery, retries included.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=r,
        )
        self.held = Gauge(
            "poller_forward_events_held", "Events this forwarder holds, unacknowledged.",
            registry=r,
        )  # fmt: skip

    def render(self) -> bytes:
        return generate_latest(self.registry)
