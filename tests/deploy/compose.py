"""Compose files: the setups, docker-compose on them, and the `fedllm` roles they run."""

import os
import re
import shlex
from pathlib import Path

import yaml

from .commands import Mount, Role, fedllm_argv
from .project import IMAGE_ENV, ROOT, Obj
from .tools import missing, run, tool

COMPOSE_SETUPS = [["compose.yaml"], ["compose.site.yaml"]] + [
    ["compose.yaml", name] for name in ["docker/compose.ci.yaml"] if (ROOT / name).is_file()
]
SETUP_IDS = ["+".join(files) for files in COMPOSE_SETUPS]
# The variables the files demand (${NAME:?...}); every other one keeps its default.
COMPOSE_ENV = {"FEDLLM_SITE_NAME": "site-a", "FEDLLM_SUPERLINK": "fl.example.org:9443"}
# Users run Compose v2 (scripts/deploy-tools.sh puts it in the venv); Debian ships v1.29.
# v1's `config` lists services of every profile, so the resolved configurations come from it.
COMPOSE_VERSIONS = {"v1": "/usr/bin/docker-compose", "v2": "docker-compose"}


def compose(files: list[str], scratch: Path, *args: str, version: str = "v1") -> str:
    """docker-compose on these files with a clean environment and no .env file."""
    for name in files:
        assert (ROOT / name).is_file(), f"{name} is missing"
    empty = scratch / "empty.env"
    empty.touch()
    flags = [arg for name in files for arg in ("-f", str(ROOT / name))]
    env = {"PATH": os.environ.get("PATH", ""), **COMPOSE_ENV}
    binary = COMPOSE_VERSIONS[version]
    if not Path(binary).is_absolute():
        binary = tool(binary)
    elif not Path(binary).is_file():
        missing(binary)
    return run(binary, *flags, "--env-file", str(empty), *args, env=env)


def words_of(value: str | list[str] | None) -> list[str]:
    """A compose command, entrypoint or tmpfs as words, in either of its forms."""
    return shlex.split(value) if isinstance(value, str) else list(value or [])


def compose_mounts(service: Obj) -> dict[str, Mount]:
    """A service's mount paths and the volumes, binds or tmpfs behind them."""
    mounts = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target, *mode = volume.split(":")
            volume = {"source": source, "target": target, "read_only": mode == ["ro"]}
        source = str(volume.get("source", ""))
        kind = "bind" if source.startswith(("/", ".")) else "volume"
        mounts[volume["target"]] = Mount(f"{kind}:{source}", not volume.get("read_only", False))
    for path in words_of(service.get("tmpfs")):
        mounts[path] = Mount("tmpfs", True)
    return mounts


def compose_roles(config: Obj, setup: str, profiles: set[str] | None = None) -> list[Role]:
    """Services that run fedllm (the image's entrypoint, or an explicit one).

    profiles None: every service; else those without a profile plus those in `profiles`.
    """
    roles = []
    for name, service in config["services"].items():
        own = set(service.get("profiles", []))
        if profiles is not None and own and not own & profiles:
            continue
        image = service.get("image", "").rsplit("/", 1)[-1]
        entrypoint = service.get("entrypoint") or (["fedllm"] if image.startswith("fedllm") else [])
        env = IMAGE_ENV | {k: str(v) for k, v in (service.get("environment") or {}).items()}
        where = f"{setup} service {name}"
        argv = fedllm_argv([*words_of(entrypoint), *words_of(service.get("command"))], env, where)
        if argv is not None:
            roles.append(Role(where, argv, env, compose_mounts(service)))
    return roles


def container_port(spec: str | int | Obj) -> int | None:
    """The container side of a `ports`/`expose` entry (None for a range)."""
    if isinstance(spec, dict):
        return int(spec["target"])
    text = str(spec).split("/")[0].rsplit(":", 1)[-1]
    return int(text) if text.isdigit() else None


def health_ports(test: list[str] | str) -> set[int] | None:
    """Ports a health check probes: `fedllm.telemetry.health PORT...`, or HOST:PORT on loopback."""
    words = words_of(test)
    if not words or words[0] == "NONE":
        return None
    if "fedllm.telemetry.health" in words:
        return {int(word) for word in words[words.index("fedllm.telemetry.health") + 1 :]}
    return {int(p) for p in re.findall(r"(?:localhost|127\.0\.0\.1):(\d+)", " ".join(words))}


def scrape_targets(config: Obj) -> list[tuple[str, int]] | None:
    """(host, port) of every target in a Prometheus config that a service mounts."""
    files = [
        Path(mount.volume.split(":", 1)[1])
        for service in config["services"].values()
        for path, mount in compose_mounts(service).items()
        if path.endswith("/prometheus.yml") and mount.volume.startswith("bind:")
    ]
    if not files:
        return None
    targets = []
    for file in files:
        for job in yaml.safe_load(file.read_text())["scrape_configs"]:
            for static in job.get("static_configs", []):
                targets += [
                    (t.rsplit(":", 1)[0], int(t.rsplit(":", 1)[1])) for t in static["targets"]
                ]
            for dns in job.get("dns_sd_configs", []):
                targets += [(name, int(dns["port"])) for name in dns["names"]]
    return targets
