"""What a deployed `fedllm` role must satisfy: its settings, its paths, its partition."""

import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from fedllm.errors import FedllmError
from fedllm.settings import NodeSettings, RunSettings, build

from .commands import Role
from .project import ROOT

# FEDLLM_* variables that are no settings: the PKI scripts' inputs.
PKI_VARIABLES = {
    name
    for script in (ROOT / "certs").glob("*.sh")
    for name in re.findall(r"FEDLLM_[A-Z_]+", script.read_text())
}


def path_params(role: Role) -> Iterator[tuple[str, Path]]:
    """Every path option or argument the command was given (or defaults to)."""
    for param in role.ctx.command.params:
        value = role.ctx.params.get(param.name or "")
        if isinstance(param.type, click.Path) and value is not None:
            for item in value if isinstance(value, list | tuple) else [value]:
                yield param.name or "", Path(item)


def node_config(role: Role) -> dict[str, str]:
    """A SuperNode's --node-config as settings fields (each key must be one)."""
    if role.command != "supernode":
        return {}
    pairs = dict(item.split("=", 1) for item in shlex.split(role.param("node_config")))
    fields = {key.replace("-", "_"): value for key, value in pairs.items()}
    unknown = set(fields) - set(NodeSettings.model_fields)
    assert not unknown, f"{role.where}: --node-config keys {unknown} are no node settings"
    return fields


def check_settings_env(role: Role) -> None:
    """FEDLLM_* variables name settings fields and hold values those fields accept."""
    run_values: dict[str, str] = {}
    node_values: dict[str, str] = {}
    for name, value in role.env.items():
        if not name.startswith("FEDLLM_") or name in PKI_VARIABLES:
            continue
        if name.startswith("FEDLLM_NODE_"):
            key = name.removeprefix("FEDLLM_NODE_").lower()
            assert key in NodeSettings.model_fields, f"{role.where}: {name} is no node setting"
            node_values[key] = value
        else:
            key = name.removeprefix("FEDLLM_").lower()
            assert key in RunSettings.model_fields, f"{role.where}: {name} is no run setting"
            run_values[key] = value
    try:
        build(RunSettings, _env_file=None, **run_values)
        build(NodeSettings, _env_file=None, **node_values, **node_config(role))
    except FedllmError as err:
        pytest.fail(f"{role.where}: {err}")


def check_paths(role: Role) -> None:
    """Path options, HF_HOME and the node's data file lie on mounts, writable where written."""
    for name, path in path_params(role):
        assert path.is_absolute(), f"{role.where}: --{name} {path} is relative"
        mount = role.mount_of(path)
        assert mount is not None, f"{role.where}: --{name} {path} is on no volume"
        if name in {"state", "run_dir", "metrics_dir"}:
            assert mount.writable, f"{role.where}: --{name} {path} is on a read-only mount"
        if name == "certs":
            assert not mount.writable, f"{role.where}: certificates are mounted writable"
    if role.command in {"superlink", "supernode"}:  # they load models and data from the hub
        cache = role.env.get("HF_HOME", "")
        mount = role.mount_of(cache) if cache else None
        assert mount and mount.writable, f"{role.where}: HF_HOME={cache} is on no writable volume"
    if "FEDLLM_NODE_DATA_PATH" in role.env:
        data = role.env["FEDLLM_NODE_DATA_PATH"]
        assert role.mount_of(data), f"{role.where}: FEDLLM_NODE_DATA_PATH={data} is on no volume"


def check_roles(roles: list[Role], where: str) -> None:
    """Each role's settings and paths; submit and the SuperLink share the run directory."""
    for role in roles:
        check_settings_env(role)
        check_paths(role)
    links = [role for role in roles if role.command == "superlink"]
    for submit in (role for role in roles if role.command == "submit"):
        run_dir = submit.param("run_dir")
        for link in links:  # the ServerApp in the SuperLink writes where submit reads
            theirs, ours = link.mount_of(run_dir), submit.mount_of(run_dir)
            assert theirs is not None, f"{link.where}: the run directory {run_dir} is on no volume"
            assert theirs.writable, f"{link.where}: {run_dir} is read-only"
            assert ours is not None and theirs.volume == ours.volume, (
                f"{where}: {submit.where} and {link.where} see {run_dir} on different volumes"
            )


def check_partitions(nodes: list[Role], where: str, strict: bool = True) -> None:
    """Distinct names and partitions, one partition count; strict: every id below that count.

    Not strict (a profile that adds nodes): the count is a variable the operator raises.
    """
    names = [role.param("name") for role in nodes]
    assert len(set(names)) == len(names), f"{where}: SuperNode names repeat: {names}"
    configs = [node_config(role) for role in nodes]
    counts = {int(config.get("num_partitions", 1)) for config in configs}
    ids = [int(config.get("partition_id", 0)) for config in configs]
    assert len(counts) <= 1, f"{where}: SuperNodes disagree on num-partitions: {counts}"
    assert len(set(ids)) == len(ids), f"{where}: SuperNodes share a partition: {ids}"
    limit = max(counts, default=0) if strict else float("inf")
    assert all(0 <= k < limit for k in ids), f"{where}: partition ids {ids}, {limit} partitions"
