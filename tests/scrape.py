"""Read a metric the way Prometheus does: from the text exposition, parsed by
prometheus-client's own parser, not from the client's internals."""

from __future__ import annotations

from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families


def scraped(metrics: Any, name: str, **labels: str) -> float:
    """The sample ``name{labels}`` of ``metrics.registry`` as a scrape shows it (0 if absent)."""
    text = generate_latest(metrics.registry).decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0
