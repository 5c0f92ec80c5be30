"""Ports of every overlay: probes, Services, --superlink and the ServiceMonitor reach them."""

import pytest

from .commands import Role, superlink_target
from .manifests import backends, by_kind, matches, named, port_number
from .project import OVERLAYS, Obj

pytestmark = pytest.mark.deploy


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_and_container_ports(k8s: dict[str, list[Role]], overlay: str) -> None:
    """Declared ports are the served ones; readiness on the gateway, liveness on /metrics."""
    for role in k8s[overlay]:
        served, where = role.listening(), role.where
        assert set(role.ports.values()) == served, (
            f"{where}: declares {role.ports}, serves {served}"
        )
        if role.command == "submit":
            continue
        readiness, liveness = role.container["readinessProbe"], role.container["livenessProbe"]
        if role.command == "superlink":
            port = port_number(readiness["tcpSocket"]["port"], role)
            assert port == role.param("port"), f"{where}: readiness is not on the gateway"
        probes = [liveness] if role.command == "superlink" else [liveness, readiness]
        for probe in probes:
            assert probe["httpGet"]["path"] == "/metrics", where
            assert port_number(probe["httpGet"]["port"], role) == role.metrics_port(), where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_reach_served_ports(
    rendered: dict[str, list[Obj]], k8s: dict[str, list[Role]], overlay: str
) -> None:
    """Every Service selects fedllm pods, and every port of it lands on a served port."""
    for service in by_kind(rendered[overlay], "Service"):
        selected = backends(k8s[overlay], service)
        assert selected, f"Service {service['metadata']['name']} selects no fedllm pod"
        for port in service["spec"]["ports"]:
            for role in selected:
                target = port_number(port.get("targetPort", port["port"]), role)
                assert target in role.listening(), f"{service['metadata']['name']} {port}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_superlink_address_is_the_gateway(
    rendered: dict[str, list[Obj]], k8s: dict[str, list[Role]], overlay: str
) -> None:
    """--superlink HOST:PORT of nodes and the Job is a Service port onto the gateway."""
    roles = k8s[overlay]
    for role in roles:
        if role.command not in {"supernode", "submit"}:
            continue
        host, port = superlink_target(role)
        service = named(rendered[overlay], "Service", host.split(".")[0])
        entries = [entry for entry in service["spec"]["ports"] if entry["port"] == port]
        assert entries, f"{role.where}: Service {host} has no port {port}"
        links = backends(roles, service)
        assert links and all(link.command == "superlink" for link in links), role.where
        for link in links:
            target = port_number(entries[0].get("targetPort", port), link)
            assert target == link.param("port"), f"{role.where}: {host}:{port} is no gateway"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_monitor_scrapes_every_exporter(
    rendered: dict[str, list[Obj]], k8s: dict[str, list[Role]], overlay: str
) -> None:
    """The ServiceMonitor's Services and port name lead to each role's --metrics-port."""
    objects, roles = rendered[overlay], k8s[overlay]
    [monitor] = by_kind(objects, "ServiceMonitor")
    services = [
        service
        for service in by_kind(objects, "Service")
        if matches(monitor["spec"]["selector"], service["metadata"].get("labels", {}))
    ]
    scraped: set[str] = set()
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint.get("path", "/metrics") == "/metrics"
        for service in services:
            [entry] = [p for p in service["spec"]["ports"] if p.get("name") == endpoint["port"]]
            for role in backends(roles, service):
                assert port_number(entry["targetPort"], role) == role.metrics_port(), role.where
                scraped.add(role.where)
    exporters = {role.where for role in roles if role.metrics_port()}
    assert exporters == scraped, f"not scraped: {exporters - scraped}"
