"""NetworkPolicies evaluated as the Kubernetes API defines them."""

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

from .manifests import matches
from .project import Obj


@dataclass(frozen=True)
class Peer:
    """A pod (namespace, labels, named ports) or an address outside the cluster."""

    namespace: str | None
    labels: Mapping[str, str] = field(default_factory=dict)
    ports: Mapping[str, int] = field(default_factory=dict)
    ip: str = "10.244.1.10"


def peer_matches(peer: Obj, policy_namespace: str, other: Peer) -> bool:
    """Whether one `from`/`to` entry of a policy in `policy_namespace` holds `other`."""
    if "ipBlock" in peer:
        address, block = ipaddress.ip_address(other.ip), peer["ipBlock"]
        excepted = any(address in ipaddress.ip_network(c) for c in block.get("except", []))
        return address in ipaddress.ip_network(block["cidr"]) and not excepted
    if other.namespace is None:
        return False
    if "namespaceSelector" in peer:
        namespace = {"kubernetes.io/metadata.name": other.namespace}
        in_namespace = matches(peer["namespaceSelector"], namespace)
    else:
        in_namespace = other.namespace == policy_namespace
    return in_namespace and matches(peer.get("podSelector", {}), other.labels)


def port_matches(ports: list[Obj] | None, target: Peer, port: int, protocol: str) -> bool:
    """No list: every port; else an entry of this protocol with no port, or one holding it."""
    if not ports:
        return True
    for entry in ports:
        if entry.get("protocol", "TCP") != protocol:
            continue
        value = entry.get("port")
        if value is None:
            return True
        low = target.ports.get(value) if isinstance(value, str) else int(value)
        if low is not None and low <= port <= int(entry.get("endPort", low)):
            return True
    return False


def side_allows(
    policies: list[Obj], pod: Peer, other: Peer, dst: Peer, port: int, protocol: str, way: str
) -> bool:
    """Whether the policies that isolate `pod` for `way` (Ingress/Egress) let this through."""
    isolating = [
        policy
        for policy in policies
        if policy["metadata"]["namespace"] == pod.namespace
        and way in policy["spec"].get("policyTypes", ["Ingress"])
        and matches(policy["spec"]["podSelector"], pod.labels)
    ]
    rules_key, peers_key = ("ingress", "from") if way == "Ingress" else ("egress", "to")
    return not isolating or any(
        all_or_any(rule.get(peers_key), policy["metadata"]["namespace"], other)
        and port_matches(rule.get("ports"), dst, port, protocol)
        for policy in isolating
        for rule in policy["spec"].get(rules_key, [])
    )


def all_or_any(peers: list[Obj] | None, namespace: str, other: Peer) -> bool:
    """An empty peer list admits everyone; otherwise one peer must match."""
    return not peers or any(peer_matches(peer, namespace, other) for peer in peers)


def allowed(policies: list[Obj], src: Peer, dst: Peer, port: int, protocol: str = "TCP") -> bool:
    """Whether src may open dst:port: its egress and dst's ingress both let it through."""
    out = src.namespace is None or side_allows(policies, src, dst, dst, port, protocol, "Egress")
    into = dst.namespace is None or side_allows(policies, dst, src, dst, port, protocol, "Ingress")
    return out and into
