"""NetworkPolicies of every overlay open exactly the paths the federation needs."""

import pytest

from .commands import Role
from .manifests import by_kind
from .netpol import Peer, allowed
from .project import OVERLAYS, Obj

pytestmark = pytest.mark.deploy


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policy(
    rendered: dict[str, list[Obj]], k8s: dict[str, list[Role]], overlay: str
) -> None:
    """Nodes and the Job reach the gateway, monitoring scrapes, DNS resolves; nothing else."""
    policies = by_kind(rendered[overlay], "NetworkPolicy")
    roles = {role.command: role for role in k8s[overlay]}
    pods = {c: Peer("fedllm", r.workload.labels, r.ports) for c, r in roles.items() if r.workload}
    link, node, submit = pods["superlink"], pods["supernode"], pods["submit"]
    gateway = roles["superlink"].param("port")
    link_metrics, node_metrics = (
        roles["superlink"].metrics_port(),
        roles["supernode"].metrics_port(),
    )
    prometheus = Peer("monitoring", {"app.kubernetes.io/name": "prometheus"})
    stranger = Peer("default", {"app": "other"})
    newcomer = Peer("fedllm", {"app": "new"}, {"http": 8080})  # default deny covers it too
    dns = Peer("kube-system", {"k8s-app": "kube-dns"})
    hub, private = Peer(None, ip="18.160.10.1"), Peer(None, ip="10.0.3.7")
    cloud_metadata = Peer(None, ip="169.254.169.254")
    opened = [
        (node, link, gateway),
        (submit, link, gateway),
        (prometheus, link, link_metrics),
        (prometheus, node, node_metrics),
    ]
    closed = [
        (stranger, link, gateway),
        (stranger, link, link_metrics),
        (stranger, node, node_metrics),
        (prometheus, link, gateway),
        (node, link, link_metrics),
        (node, node, node_metrics),
        (submit, node, node_metrics),
        (link, node, node_metrics),
        (link, stranger, 8080),
        (submit, hub, 443),
        (stranger, newcomer, 8080),
        (node, newcomer, 8080),
        (newcomer, hub, 443),
        (newcomer, stranger, 8080),
    ]
    for src, dst, port in opened:
        assert allowed(policies, src, dst, port), f"{src} -> {dst}:{port} is blocked"
    for src, dst, port in closed:
        assert not allowed(policies, src, dst, port), f"{src} -> {dst}:{port} is open"
    hub_access = any(policy["metadata"]["name"] == "hub-egress" for policy in policies)
    for pod in (link, node, submit):
        assert allowed(policies, pod, dns, 53, "UDP") and allowed(policies, pod, dns, 53)
        assert not allowed(policies, pod, private, 443)
        assert not allowed(policies, pod, cloud_metadata, 80)
        if pod is not submit:  # it loads neither model nor data
            assert allowed(policies, pod, hub, 443) == hub_access
