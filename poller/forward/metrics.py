"""What a forwarder reports: its Prometheus metrics, in a registry of their own."""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, generate_latest

from poller.telemetry import MetricFactory

DELIVERY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class ForwardMetrics:
    """Prometheus metrics of one forwarder, in their own registry: each is named
    ``poller_forward_`` and the name given here (a counter's then ends in ``_total``), e.g.
    ``poller_forward_delivered_total``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        make = MetricFactory(self.registry, "poller", "forward")
        self.delivered = make.counter("delivered", "Events acknowledged by the webhook (2xx).")
        self.retried = make.counter("retried", "Failed attempts retried, by cause.", "cause")
        self.parked = make.counter("parked", "Events parked in {prefix}:forward:dead.")
        self.filtered = make.counter("filtered", "Events acknowledged without delivery (filters).")
        self.claimed = make.counter("claimed", "Entries taken over from presumed-dead consumers.")
        self.latency = make.histogram(
            "delivery_seconds",
            "Time from taking an event to its acknowledged delivery, retries included.",
            DELIVERY_BUCKETS,
        )
        self.held = make.gauge("events_held", "Events this forwarder holds, unacknowledged.")

    def render(self) -> bytes:
        return generate_latest(self.registry)
