"""Compose files: valid, their `fedllm` command lines and ports consistent with the CLI."""

from pathlib import Path

import pytest

from .checks import check_partitions, check_roles
from .commands import superlink_target
from .compose import (
    COMPOSE_SETUPS,
    COMPOSE_VERSIONS,
    SETUP_IDS,
    compose,
    compose_roles,
    container_port,
    health_ports,
    scrape_targets,
)
from .project import Obj

pytestmark = pytest.mark.deploy


@pytest.mark.parametrize("version", sorted(COMPOSE_VERSIONS))
@pytest.mark.parametrize("files", COMPOSE_SETUPS, ids=SETUP_IDS)
def test_compose_config(files: list[str], version: str, tmp_path: Path) -> None:
    """Compose v1.29 and v2 both accept each setup."""
    compose(files, tmp_path, "config", "-q", version=version)


@pytest.mark.parametrize("setup", SETUP_IDS)
def test_compose_commands_match_cli_and_settings(composed: dict[str, Obj], setup: str) -> None:
    """Flags, FEDLLM_* variables, paths and the run volume; partitions in every profile."""
    config = composed[setup]
    roles = compose_roles(config, setup)
    assert roles, f"{setup}: no service runs fedllm"
    check_roles(roles, setup)
    default = [r for r in compose_roles(config, setup, set()) if r.command == "supernode"]
    check_partitions(default, f"{setup} (no profile)")
    profiles = {p for service in config["services"].values() for p in service.get("profiles", [])}
    for profile in sorted(profiles):
        nodes = [r for r in compose_roles(config, setup, {profile}) if r.command == "supernode"]
        check_partitions(nodes, f"{setup} --profile {profile}", strict=False)


@pytest.mark.parametrize("setup", SETUP_IDS)
def test_compose_ports_match_commands(composed: dict[str, Obj], setup: str) -> None:
    """Published ports, health checks, --superlink and Prometheus targets: the served ports."""
    config = composed[setup]
    roles = {role.where.rsplit(" ", 1)[-1]: role for role in compose_roles(config, setup)}
    for name, role in roles.items():
        service, served = config["services"][name], role.listening()
        for spec in [*service.get("ports", []), *service.get("expose", [])]:
            port = container_port(spec)
            assert port is None or port in served, f"{role.where}: port {spec}, serves {served}"
        probed = health_ports(service.get("healthcheck", {}).get("test", []))
        if probed is not None:
            every = role.command in {"superlink", "supernode"}
            assert probed == served if every else probed <= served, (
                f"{role.where}: health check on {probed}, serves {served}"
            )
        if role.command in {"supernode", "submit"}:
            host, port = superlink_target(role)
            if host in config["services"]:  # a remote SuperLink is the site's to name
                link = roles.get(host)
                assert link is not None and link.command == "superlink", f"{role.where}: {host}"
                assert port == link.param("port"), f"{role.where}: {host}:{port} is no gateway"
    targets = scrape_targets(config)
    if targets is None:
        return
    for host, port in targets:
        assert host in roles, f"{setup}: Prometheus scrapes {host}, which runs no fedllm"
        assert port == roles[host].metrics_port(), f"{setup}: Prometheus scrapes {host}:{port}"
    unscraped = {name for name, role in roles.items() if role.metrics_port()}
    unscraped -= {host for host, _ in targets}
    assert not unscraped, f"{setup}: Prometheus scrapes no {sorted(unscraped)}"
