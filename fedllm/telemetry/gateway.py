"""Requests the mutual-TLS gateway refused, counted from its audit lines for Prometheus.

The gateway (nginx) writes every refusal to the SuperLink's audit log; this collector reads
the lines appended since the last scrape and exports `fedllm_gateway_refusals_total` by
reason: `certificate` (missing, invalid or revoked), `node-key` (a SuperNode whose Flower key
is not the one registered for its certificate), `role` (a certificate used for another role's
API) and `other`. Every reason is exported from the start, at 0 until it happens.
"""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from fedllm.identity.audit import Tail

REASONS = ("certificate", "node-key", "role", "other")


def refusal_reason(entry: dict[str, Any]) -> str | None:
    """Why the gateway refused the request of an audit entry; None if it did not."""
    if entry.get("source") != "gateway" or not str(entry.get("status", "")).startswith("4"):
        return None
    if entry.get("verify") != "SUCCESS":
        return "certificate"
    fleet = str(entry.get("uri", "")).startswith("/v1/fleet/")
    if fleet and entry.get("role") == "supernode" and entry.get("key_bound") != "1":
        return "node-key"
    return "role" if entry.get("status") == "403" else "other"


class GatewayRefusals(Collector):
    """`fedllm_gateway_refusals_total{reason}` from the audit log at `path`."""

    def __init__(self, path: Path) -> None:
        self.tail = Tail(path)
        self.counts = dict.fromkeys(REASONS, 0)

    def collect(self) -> Iterator[CounterMetricFamily]:
        for line in self.tail.lines():
            try:
                reason = refusal_reason(json.loads(line))
            except (ValueError, AttributeError):
                continue  # not an entry of ours
            if reason is not None:
                self.counts[reason] += 1
        family = CounterMetricFamily(
            "fedllm_gateway_refusals", "Requests the mutual-TLS gateway refused.", labels=["reason"]
        )
        for reason, count in self.counts.items():
            family.add_metric([reason], count)
        yield family
