"""Gateway refusals counted from the audit lines nginx writes, by reason."""

import json
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from fedllm.telemetry.gateway import GatewayRefusals


def gateway_line(status: str, uri: str, verify: str = "SUCCESS", role: str = "supernode",
                 key_bound: str = "1") -> str:  # fmt: skip
    """One audit line in the gateway's log format (superlink/nginx.conf.template)."""
    return json.dumps({
        "time": "2026-12-05T06:20:48+00:00", "source": "gateway",
        "subject": "CN=node-4,OU=supernode,O=fedllm", "fingerprint_sha1": "65981230",
        "verify": verify, "role": role, "key_bound": key_bound, "remote": "127.0.0.1",
        "method": "POST", "uri": uri, "status": status,
    }, separators=(",", ":"))  # fmt: skip


def scrape(registry: CollectorRegistry) -> dict[str, float]:
    found = {}
    for line in generate_latest(registry).decode().splitlines():
        if line.startswith("fedllm_gateway_refusals_total{"):
            labels, value = line.rsplit(" ", 1)
            found[labels.split('"')[1]] = float(value)
    return found


def test_refusals_are_counted_by_reason_from_new_lines(tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    registry = CollectorRegistry()
    registry.register(GatewayRefusals(audit))  # before the gateway wrote anything
    assert scrape(registry) == {"certificate": 0, "node-key": 0, "role": 0, "other": 0}
    lines = [
        gateway_line("200", "/v1/fleet/activate-node"),  # admitted: not a refusal
        gateway_line("400", "/v1/fleet/pull-messages", verify="FAILED:certificate revoked"),
        gateway_line("403", "/v1/fleet/push-messages", key_bound="0"),
        gateway_line("403", "/v1/control/start-run"),  # a SuperNode certificate on Control
        gateway_line("403", "/v1/runtime/pull-messages", role="operator", key_bound="0"),
        gateway_line("413", "/v1/fleet/push-object"),
        '{"source": "fedllm", "event": "node-registered"}',
        "not json",
    ]
    audit.write_text("\n".join(lines) + "\n")
    assert scrape(registry) == {"certificate": 1, "node-key": 1, "role": 2, "other": 1}
    with audit.open("a") as log:
        log.write(gateway_line("400", "/v1/control/list-runs", verify="NONE") + "\n")
    assert scrape(registry)["certificate"] == 2  # counts grow; lines are read once
