"""The `fedllm` command lines of every overlay: CLI, settings, certificates, partitions."""

import pytest

from fedllm.settings import RunSettings

from .checks import check_partitions, check_roles, node_config
from .commands import Role, of
from .manifests import by_kind, named
from .project import OVERLAYS, Obj

pytestmark = pytest.mark.deploy

# What each role's --certs directory must hold (README, certs/README.md); a SuperNode needs
# ca.crt and its own NAME.crt/NAME.key.
CERTS = {
    "superlink": {"ca.crt", "ca.crl", "superlink.crt", "superlink.key"},
    "submit": {"ca.crt", "operator.crt", "operator.key"},
    "flwr": {"ca.crt", "operator.crt", "operator.key"},
}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_commands_match_cli_and_settings(k8s: dict[str, list[Role]], overlay: str) -> None:
    """Subcommands, flags, FEDLLM_* variables and paths as the CLI and settings define them."""
    roles = k8s[overlay]
    assert {role.command for role in roles} == {"superlink", "supernode", "submit"}
    check_roles(roles, f"k8s/{overlay}")
    check_partitions(of(roles, "supernode"), f"k8s/{overlay}")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_certificates_reach_each_role(
    rendered: dict[str, list[Obj]], k8s: dict[str, list[Role]], overlay: str
) -> None:
    """--certs is a Secret with what the role presents and checks, and no other role's key."""
    for role in k8s[overlay]:
        mount = role.mount_of(role.param("certs"))
        assert mount is not None and mount.volume.startswith("secret:"), role.where
        secret = named(rendered[overlay], "Secret", mount.volume.removeprefix("secret:"))
        keys = set(secret["data"])
        name = role.ctx.params.get("name")
        need = CERTS.get(role.command) or {"ca.crt", f"{name}.crt", f"{name}.key"}
        assert need <= keys, f"{role.where}: its Secret lacks {need - keys}"
        if role.command != "supernode":  # the StatefulSet's pods share one Secret
            assert {k for k in keys if k.endswith(".key")} <= need, role.where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_supernode_is_registered_by_the_superlink(
    rendered: dict[str, list[Obj]], k8s: dict[str, list[Role]], overlay: str
) -> None:
    """Node authentication is always on: the SuperLink registers each node's certificate."""
    [superlink] = of(k8s[overlay], "superlink")
    assert superlink.ctx.params.get("register_certs") is True, superlink.where
    mount = superlink.mount_of(superlink.param("certs"))
    assert mount is not None
    keys = set(named(rendered[overlay], "Secret", mount.volume.removeprefix("secret:"))["data"])
    names = {role.param("name") for role in of(k8s[overlay], "supernode")}
    assert {f"{name}.crt" for name in names} <= keys, f"{superlink.where}: {sorted(keys)}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_supernodes_follow_ordinals(
    rendered: dict[str, list[Obj]], k8s: dict[str, list[Role]], overlay: str
) -> None:
    """Pod supernode-K: certificate supernode-K, partition K of replicas; enough nodes."""
    [statefulset] = by_kind(rendered[overlay], "StatefulSet")
    replicas = statefulset["spec"]["replicas"]
    nodes = of(k8s[overlay], "supernode")
    assert len(nodes) == replicas
    for ordinal, role in enumerate(nodes):
        assert role.param("name") == f"{statefulset['metadata']['name']}-{ordinal}"
        config = node_config(role)
        assert int(config["partition_id"]) == ordinal, role.where
        assert int(config["num_partitions"]) == replicas, role.where
        threads = int(role.env.get("FEDLLM_NODE_THREADS", 0))
        cpus = float(role.container["resources"]["limits"]["cpu"])
        assert threads <= cpus, f"{role.where}: {threads} torch threads for {cpus} CPUs"
    [submit] = of(k8s[overlay], "submit")
    needed = submit.env.get("FEDLLM_MIN_NODES", RunSettings.model_fields["min_nodes"].default)
    assert int(needed) <= replicas, f"rounds wait for {needed} of {replicas} SuperNodes"
