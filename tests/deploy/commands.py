"""`fedllm` command lines, wherever they are deployed, parsed by the real click CLI."""

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import click
import pytest
import typer

from fedllm.cli.main import app

from .project import Obj

if TYPE_CHECKING:
    from .manifests import Workload

SHELLS = {"sh", "/bin/sh", "bash", "/bin/bash"}
CLI = typer.main.get_command(app)


@dataclass(frozen=True)
class Mount:
    """The storage behind a path in a container ("persistentVolumeClaim:runs", ...)."""

    volume: str
    writable: bool


@dataclass
class Role:
    """One container that runs `fedllm` (one per pod of a StatefulSet), parsed by the CLI."""

    where: str
    argv: list[str]
    env: dict[str, str]
    mounts: dict[str, Mount]
    ports: dict[str, int] = field(default_factory=dict)  # declared container ports
    workload: "Workload | None" = None
    container: Obj = field(default_factory=dict)
    ctx: click.Context = field(init=False)

    def __post_init__(self) -> None:
        command = CLI.commands.get(self.argv[0])  # type: ignore[attr-defined]
        assert command is not None, f"{self.where}: fedllm has no subcommand {self.argv[0]!r}"
        try:  # parses and converts every option, and fails on unknown or missing ones
            self.ctx = command.make_context(self.argv[0], list(self.argv[1:]))
        except click.ClickException as err:
            pytest.fail(f"{self.where}: `fedllm {shlex.join(self.argv)}`: {err.format_message()}")

    @property
    def command(self) -> str:
        """The subcommand: superlink, supernode, submit, ..."""
        return self.argv[0]

    def param(self, name: str) -> Any:
        """An option or argument as the CLI converted it (or its default)."""
        return self.ctx.params[name]

    def metrics_port(self) -> int:
        """--metrics-port, 0 where the command has none."""
        return int(self.ctx.params.get("metrics_port") or 0)

    def listening(self) -> set[int]:
        """The ports this command serves: the gateway (superlink) and the exporter."""
        ports = {self.metrics_port()}
        if self.command == "superlink":
            ports.add(self.param("port"))
        return ports - {0}

    def mount_of(self, path: str | Path) -> Mount | None:
        """The mount that holds `path` (the deepest mount path above it)."""
        target = PurePosixPath(path)
        above = [m for m in self.mounts if target.is_relative_to(m)]
        return self.mounts[max(above, key=len)] if above else None


def shell_expand(script: str, env: Mapping[str, str], where: str) -> str:
    """The few POSIX expansions the manifests use: $VAR, ${VAR}, ${VAR##*-}."""

    def value(match: re.Match[str]) -> str:
        name = match.group("name") or match.group("plain")
        assert name in env, f"{where}: ${name} is not set in the container"
        if match.group("op") == "##*-":
            return env[name].rsplit("-", 1)[-1]
        assert match.group("op") is None, f"{where}: unsupported expansion {match.group(0)}"
        return env[name]

    pattern = r"\$(?:\{(?P<name>\w+)(?P<op>[^}]+)?\}|(?P<plain>[A-Za-z_]\w*))"
    return re.sub(pattern, value, script)


def fedllm_argv(words: list[str], env: Mapping[str, str], where: str) -> list[str] | None:
    """The arguments after `fedllm` in entrypoint + command, through `sh -c` if used."""
    if len(words) >= 3 and words[0] in SHELLS and words[1] == "-c":
        words = shlex.split(shell_expand(words[2], env, where))
    names = [PurePosixPath(word).name for word in words]
    if "fedllm" not in names:
        return None
    argv = words[names.index("fedllm") + 1 :]
    for operator in ("&&", "||", ";", "|"):
        if operator in argv:
            argv = argv[: argv.index(operator)]
    assert argv, f"{where}: `fedllm` without a subcommand"
    return argv


def superlink_target(role: Role) -> tuple[str, int]:
    """HOST, PORT of a role's --superlink."""
    host, _, port = role.param("superlink").rpartition(":")
    assert host and port.isdigit(), f"{role.where}: --superlink {role.param('superlink')}"
    return host, int(port)


def of(roles: list[Role], command: str) -> list[Role]:
    """The roles that run `fedllm COMMAND`; there must be one at least."""
    found = [role for role in roles if role.command == command]
    assert found, f"no container runs `fedllm {command}`"
    return found
