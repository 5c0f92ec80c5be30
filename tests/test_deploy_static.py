"""Static checks of what cannot run here: Dockerfiles, compose files, Kubernetes manifests.

Nothing is built, started or applied. hadolint lints every Dockerfile; docker-compose and
kubectl's kustomize render every deployment; rendered objects are validated against the
Kubernetes JSON schemas (kubernetes-validate) and the Prometheus Operator CRD models (cloudcoil);
every `fedllm` command line in them is parsed by the real CLI, and its FEDLLM_* variables,
ports, mounts and certificates are checked against what that command does. NetworkPolicies are
evaluated as the API defines them. scripts/deploy-tools.sh installs the tools; without one a
test skips, or fails when CI is set.
"""

import importlib
import ipaddress
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any

import click
import pytest
import typer
import yaml
from pydantic import BaseModel

from fedllm.cli import app
from fedllm.errors import FedllmError
from fedllm.settings import NodeSettings, RunSettings, build

pytestmark = pytest.mark.deploy

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
OVERLAYS = sorted(p.parent.name for p in (K8S / "overlays").glob("*/kustomization.yaml"))
DOCKERFILE = ROOT / "docker" / "Dockerfile"
DOCKERFILES = sorted(p.relative_to(ROOT).as_posix() for p in ROOT.glob("docker/**/Dockerfile*"))
HADOLINT_CONFIG = ROOT / "docker" / ".hadolint.yaml"
# The oldest and newest Kubernetes the manifests are validated against.
K8S_VERSIONS = ("1.30.0", "1.37.0")
# Every kind the deployment needs; the rendered overlays must hold each.
K8S_KINDS = {
    "Namespace",
    "Deployment",
    "StatefulSet",
    "Job",
    "Service",
    "Secret",
    "ConfigMap",
    "PersistentVolumeClaim",
    "NetworkPolicy",
    "ServiceMonitor",
}
IMAGE, CUDA_IMAGE = "fedllm:0.1.0", "fedllm:0.1.0-cuda"
UID = 10001
# What each role's --certs directory must hold (README, certs/README.md); a SuperNode needs
# ca.crt and its own NAME.crt/NAME.key.
CERTS = {
    "superlink": {"ca.crt", "ca.crl", "superlink.crt", "superlink.key"},
    "submit": {"ca.crt", "operator.crt", "operator.key"},
    "flwr": {"ca.crt", "operator.crt", "operator.key"},
}
# FEDLLM_* variables that are no settings: the PKI scripts' inputs.
PKI_VARIABLES = {
    name
    for script in (ROOT / "certs").glob("*.sh")
    for name in re.findall(r"FEDLLM_[A-Z_]+", script.read_text())
}
SHELLS = {"sh", "/bin/sh", "bash", "/bin/bash"}
CLI = typer.main.get_command(app)
Obj = dict[str, Any]


def image_env(dockerfile: Path) -> dict[str, str]:
    """ENV of the Dockerfile's last stage: what every container starts with."""
    if not dockerfile.is_file():
        return {}
    text = re.sub(r"\\\n", " ", dockerfile.read_text()).split("\nFROM ")[-1]
    lines = (line.split(None, 1)[1] for line in text.splitlines() if line.startswith("ENV "))
    return dict(word.split("=", 1) for line in lines for word in shlex.split(line))


IMAGE_ENV = image_env(DOCKERFILE)


# --- tools -----------------------------------------------------------------------------------


def missing(what: str) -> None:
    """Skip, or fail under CI, for a tool that scripts/deploy-tools.sh installs."""
    message = f"{what} is not installed: run scripts/deploy-tools.sh"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def tool(name: str) -> str:
    """A pinned tool from this virtual environment first, then from PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:
        missing(name)
    assert found is not None
    return found


def library(name: str) -> ModuleType:
    """A Python package that scripts/deploy-tools.sh installs."""
    try:
        return importlib.import_module(name)
    except ImportError:
        missing(name)
        raise


def run(*command: str, env: Mapping[str, str] | None = None) -> str:
    """Run a tool; fail with its output when it exits non-zero."""
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=60, env=env, check=False
    )
    assert result.returncode == 0, f"{shlex.join(command)}:\n{result.stdout}{result.stderr}"
    return result.stdout


# --- fedllm command lines, wherever they are deployed ----------------------------------------


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
        return self.argv[0]

    def param(self, name: str) -> Any:
        return self.ctx.params[name]

    def metrics_port(self) -> int:
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


def superlink_target(role: Role) -> tuple[str, int]:
    """HOST, PORT of a role's --superlink."""
    host, _, port = role.param("superlink").rpartition(":")
    assert host and port.isdigit(), f"{role.where}: --superlink {role.param('superlink')}"
    return host, int(port)


def of(roles: list[Role], command: str) -> list[Role]:
    found = [role for role in roles if role.command == command]
    assert found, f"no container runs `fedllm {command}`"
    return found


# --- Dockerfiles -----------------------------------------------------------------------------


def test_dockerfiles_exist() -> None:
    assert "docker/Dockerfile" in DOCKERFILES


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_hadolint(dockerfile: str) -> None:
    config = ["--config", str(HADOLINT_CONFIG)] if HADOLINT_CONFIG.is_file() else []
    run(tool("hadolint"), "--no-color", *config, str(ROOT / dockerfile))


# --- Kubernetes: rendering -------------------------------------------------------------------


def fill_pki(pki: Path, scratch: Path) -> None:
    """A throwaway PKI from certs/generate.sh with the files the secretGenerator reads."""
    spec = yaml.safe_load((pki / "kustomization.yaml").read_text())
    files = {name for secret in spec["secretGenerator"] for name in secret["files"]}
    nodes = sorted({Path(name).stem for name in files} - {"ca", "superlink", "operator"})
    run(str(ROOT / "certs" / "generate.sh"), str(scratch), *nodes)
    for name in files:
        assert (scratch / name).is_file(), f"certs/generate.sh writes no {name}"
        shutil.copy(scratch / name, pki / name)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Obj]]:
    """`kubectl kustomize` of every overlay, on a copy of k8s/ with a generated PKI."""
    kubectl = tool("kubectl")
    tree = tmp_path_factory.mktemp("deploy") / "k8s"
    shutil.copytree(K8S, tree, ignore=shutil.ignore_patterns("*.key", "*.crt", "*.crl"))
    fill_pki(tree / "pki", tmp_path_factory.mktemp("ca") / "pki")
    documents = {o: run(kubectl, "kustomize", str(tree / "overlays" / o)) for o in OVERLAYS}
    return {o: [d for d in yaml.safe_load_all(text) if d] for o, text in documents.items()}


def by_kind(objects: list[Obj], kind: str) -> list[Obj]:
    return [obj for obj in objects if obj["kind"] == kind]


def named(objects: list[Obj], kind: str, name: str) -> Obj:
    found = [obj for obj in by_kind(objects, kind) if obj["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A label selector (matchLabels, matchExpressions) against labels."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, values = expression["key"], expression.get("values") or []
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[expression["operator"]]
        if not ok:
            return False
    return True


def selects(service: Obj, labels: Mapping[str, str]) -> bool:
    """A Service's selector (plain labels, never empty here) against pod labels."""
    selector = service["spec"].get("selector")
    return bool(selector) and matches({"matchLabels": selector}, labels)


@dataclass
class Workload:
    """A Deployment, StatefulSet or Job and its pod template."""

    obj: Obj

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])

    @property
    def pod(self) -> Obj:
        return dict(self.obj["spec"]["template"]["spec"])

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.obj["spec"]["template"]["metadata"].get("labels", {}))

    def pod_names(self) -> list[str]:
        if self.obj["kind"] == "StatefulSet":
            return [f"{self.name}-{k}" for k in range(self.obj["spec"].get("replicas", 1))]
        return [f"{self.name}-pod"]

    def containers(self) -> list[Obj]:
        return [*self.pod.get("initContainers", []), *self.pod["containers"]]

    def mounts(self, container: Obj) -> dict[str, Mount]:
        volumes = {volume["name"]: volume for volume in self.pod.get("volumes", [])}
        templates = self.obj["spec"].get("volumeClaimTemplates", [])
        mounts = {}
        for mount in container.get("volumeMounts", []):
            name = mount["name"]
            if name in {template["metadata"]["name"] for template in templates}:
                source = f"claimTemplate:{self.name}/{name}"
            else:
                kind = next(key for key in volumes[name] if key != "name")
                ref = volumes[name][kind]
                source = f"{kind}:{ref.get('claimName') or ref.get('secretName') or name}"
            mounts[mount["mountPath"]] = Mount(source, not mount.get("readOnly", False))
        return mounts


def workloads(objects: list[Obj]) -> list[Workload]:
    found = [Workload(o) for o in objects if o["kind"] in {"Deployment", "StatefulSet", "Job"}]
    others = {"DaemonSet", "CronJob", "Pod", "ReplicaSet"} & {o["kind"] for o in objects}
    assert not others, f"pods of {others} escape these checks"
    return found


def container_env(container: Obj, objects: list[Obj], pod_name: str) -> dict[str, str]:
    """What a container sees: the image's ENV, envFrom ConfigMaps, then env."""
    env = dict(IMAGE_ENV)
    for source in container.get("envFrom", []):
        assert "configMapRef" in source, f"envFrom {source} is not a ConfigMap"
        data = named(objects, "ConfigMap", source["configMapRef"]["name"]).get("data", {})
        env |= {source.get("prefix", "") + k: str(v) for k, v in data.items()}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
        elif item.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[item["name"]] = pod_name
        else:
            env[item["name"]] = f"<{item['valueFrom']}>"
    return env


def expand_references(words: list[str], env: Mapping[str, str]) -> list[str]:
    """Kubernetes' own $(VAR) expansion in command and args."""
    return [re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), w) for w in words]


def k8s_roles(objects: list[Obj], overlay: str) -> list[Role]:
    """Every container that runs fedllm, one Role per pod of a StatefulSet."""
    roles = []
    for workload in workloads(objects):
        for container in workload.containers():
            for pod_name in workload.pod_names():
                env = container_env(container, objects, pod_name)
                where = f"k8s/{overlay} {workload.obj['kind']}/{workload.name} {pod_name}"
                words = [*container.get("command", ["fedllm"]), *container.get("args", [])]
                argv = fedllm_argv(expand_references(words, env), env, where)
                if argv is not None:
                    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
                    mounts = workload.mounts(container)
                    roles.append(Role(where, argv, env, mounts, ports, workload, container))
    return roles


@pytest.fixture(scope="module")
def k8s(rendered: dict[str, list[Obj]]) -> dict[str, list[Role]]:
    return {overlay: k8s_roles(objects, overlay) for overlay, objects in rendered.items()}


def port_number(port: int | str, role: Role) -> int:
    """A port by number or by the container's port name."""
    if isinstance(port, int):
        return port
    assert port in role.ports, f"{role.where}: no container port named {port}"
    return role.ports[port]


def backends(roles: list[Role], service: Obj) -> list[Role]:
    """The roles whose pods a Service selects."""
    return [role for role in roles if role.workload and selects(service, role.workload.labels)]


# --- Kubernetes: tests -----------------------------------------------------------------------


def test_overlays_exist() -> None:
    assert {"cpu", "gpu"} <= set(OVERLAYS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kubernetes_schemas(rendered: dict[str, list[Obj]], overlay: str) -> None:
    """Strict JSON schemas of the oldest and newest Kubernetes; CRDs by their models."""
    validate = library("kubernetes_validate")
    kinds = {obj["kind"] for obj in rendered[overlay]}
    assert not K8S_KINDS - kinds, f"{overlay} lacks {K8S_KINDS - kinds}"
    for obj in rendered[overlay]:
        what = f"{overlay}: {obj['kind']}/{obj['metadata']['name']}"
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            check_prometheus_operator(obj, what)
            continue
        for version in K8S_VERSIONS:
            try:
                validate.validate(obj, version, strict=True)
            except validate.ValidationError as err:
                path = ".".join(str(part) for part in err.path)
                pytest.fail(f"{what} against Kubernetes {version}: {path}: {err.message}")


def check_prometheus_operator(obj: Obj, what: str) -> None:
    """Validate with pydantic models generated from the operator's CRDs; no unknown fields."""
    models = library("cloudcoil.models.prometheus_operator.v1")
    assert obj["apiVersion"] == "monitoring.coreos.com/v1", what
    model: type[BaseModel] = getattr(models, obj["kind"])
    try:
        parsed = model.model_validate(obj)
    except ValueError as err:
        pytest.fail(f"{what}: {err}")
    # The models drop unknown keys silently: a round trip that loses one shows it.
    dumped = parsed.model_dump(mode="json", by_alias=True, exclude_unset=True)
    assert dumped == obj, f"{what} holds fields its CRD does not define"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_are_locked_down(rendered: dict[str, list[Obj]], overlay: str) -> None:
    """Non-root uid 10001, no privilege, read-only root, resources set, writable /tmp."""
    for workload in workloads(rendered[overlay]):
        pod, where = workload.pod, f"{overlay} {workload.obj['kind']}/{workload.name}"
        context = pod.get("securityContext", {})
        assert context.get("runAsNonRoot") is True, where
        assert context.get("runAsUser") == context.get("runAsGroup") == UID, where
        assert context.get("fsGroup") == UID, where
        assert context.get("seccompProfile") == {"type": "RuntimeDefault"}, where
        assert pod.get("automountServiceAccountToken") is False, where
        assert not any(pod.get(key) for key in ("hostNetwork", "hostPID", "hostIPC")), where
        assert not any("hostPath" in volume for volume in pod.get("volumes", [])), where
        for container in workload.containers():
            own = container.get("securityContext", {})
            assert own.get("allowPrivilegeEscalation") is False, where
            assert own.get("readOnlyRootFilesystem") is True, where
            assert own.get("privileged") in (None, False), where
            assert own.get("capabilities") == {"drop": ["ALL"]}, where
            for bound in ("requests", "limits"):
                given = set(container.get("resources", {}).get(bound, {}))
                assert {"cpu", "memory"} <= given, f"{where}: no cpu/memory {bound}"
            assert container["image"] in {IMAGE, CUDA_IMAGE}, f"{where}: {container['image']}"
            mounts = workload.mounts(container)
            home = container_env(container, rendered[overlay], "pod").get("HOME", "/tmp")
            for path in ("/tmp", home):  # the root filesystem is read-only
                above = [m for m in mounts if PurePosixPath(path).is_relative_to(m)]
                assert above and mounts[max(above, key=len)].writable, f"{where}: {path}"


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


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_run_job_shares_the_runs_volume(
    rendered: dict[str, list[Obj]], k8s: dict[str, list[Role]], overlay: str
) -> None:
    """The Job mounts the SuperLink's run volume; a ReadWriteOnce one pins it to that node."""
    [link], [submit] = of(k8s[overlay], "superlink"), of(k8s[overlay], "submit")
    assert link.workload and submit.workload
    mount = submit.mount_of(submit.param("run_dir"))
    assert mount is not None and mount.volume.startswith("persistentVolumeClaim:")
    claim = named(rendered[overlay], "PersistentVolumeClaim", mount.volume.split(":", 1)[1])
    if "ReadWriteMany" not in claim["spec"]["accessModes"]:
        affinity = submit.workload.pod.get("affinity", {}).get("podAffinity", {})
        terms = affinity.get("requiredDuringSchedulingIgnoredDuringExecution", [])
        assert any(
            term["topologyKey"] == "kubernetes.io/hostname"
            and matches(term["labelSelector"], link.workload.labels)
            for term in terms
        ), "the Job may land on another node than its ReadWriteOnce run volume"
    assert link.workload.obj["spec"]["replicas"] == 1
    assert link.workload.obj["spec"]["strategy"]["type"] == "Recreate"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gpu_only_where_asked(k8s: dict[str, list[Role]], overlay: str) -> None:
    """gpu: CUDA image, one GPU, GPU nodes for SuperNodes only; elsewhere no GPU at all."""
    for role in k8s[overlay]:
        assert role.workload
        pod, container = role.workload.pod, role.container
        gpus = container["resources"]["limits"].get("nvidia.com/gpu")
        if overlay == "gpu" and role.command == "supernode":
            assert container["image"] == CUDA_IMAGE and int(gpus) == 1, role.where
            assert role.env.get("FEDLLM_NODE_DEVICE") == "cuda", role.where
            assert pod.get("nodeSelector"), role.where
            assert any(t.get("key") == "nvidia.com/gpu" for t in pod.get("tolerations", []))
        else:
            assert container["image"] == IMAGE and gpus is None, role.where
            assert role.env.get("FEDLLM_NODE_DEVICE") != "cuda", role.where


# --- Kubernetes: NetworkPolicy, evaluated as the API defines it ------------------------------


@dataclass(frozen=True)
class Peer:
    """A pod (namespace, labels, named ports) or an address outside the cluster."""

    namespace: str | None
    labels: Mapping[str, str] = field(default_factory=dict)
    ports: Mapping[str, int] = field(default_factory=dict)
    ip: str = "10.244.1.10"


def peer_matches(peer: Obj, policy_namespace: str, other: Peer) -> bool:
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
    out = src.namespace is None or side_allows(policies, src, dst, dst, port, protocol, "Egress")
    into = dst.namespace is None or side_allows(policies, dst, src, dst, port, protocol, "Ingress")
    return out and into


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


# --- compose files ---------------------------------------------------------------------------

COMPOSE_SETUPS = [["compose.yaml"], ["compose.site.yaml"]] + [
    ["compose.yaml", name] for name in ["docker/compose.ci.yaml"] if (ROOT / name).is_file()
]
SETUP_IDS = ["+".join(files) for files in COMPOSE_SETUPS]
# The variables the files demand (${NAME:?...}); every other one keeps its default.
COMPOSE_ENV = {"FEDLLM_SITE_NAME": "site-a", "FEDLLM_SUPERLINK": "fl.example.org:9443"}


def compose(files: list[str], scratch: Path, *args: str) -> str:
    """docker-compose on these files with a clean environment and no .env file."""
    for name in files:
        assert (ROOT / name).is_file(), f"{name} is missing"
    empty = scratch / "empty.env"
    empty.touch()
    flags = [arg for name in files for arg in ("-f", str(ROOT / name))]
    env = {"PATH": os.environ.get("PATH", ""), **COMPOSE_ENV}
    return run(tool("docker-compose"), *flags, "--env-file", str(empty), *args, env=env)


@pytest.mark.parametrize("files", COMPOSE_SETUPS, ids=SETUP_IDS)
def test_compose_config(files: list[str], tmp_path: Path) -> None:
    compose(files, tmp_path, "config", "-q")


@pytest.fixture(scope="module")
def composed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Obj]:
    """The resolved configuration (`docker-compose config`) of every setup."""
    scratch = tmp_path_factory.mktemp("compose")
    return {
        setup: yaml.safe_load(compose(files, scratch, "config"))
        for setup, files in zip(SETUP_IDS, COMPOSE_SETUPS, strict=True)
    }


def words_of(value: str | list[str] | None) -> list[str]:
    return shlex.split(value) if isinstance(value, str) else list(value or [])


def compose_mounts(service: Obj) -> dict[str, Mount]:
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


def container_port(spec: str | int | Obj) -> int | None:
    """The container side of a `ports`/`expose` entry (None for a range)."""
    if isinstance(spec, dict):
        return int(spec["target"])
    text = str(spec).split("/")[0].rsplit(":", 1)[-1]
    return int(text) if text.isdigit() else None


def health_ports(test: list[str] | str) -> set[int] | None:
    """Ports a health check probes: `fedllm.health PORT...`, or HOST:PORT on loopback."""
    words = words_of(test)
    if not words or words[0] == "NONE":
        return None
    if "fedllm.health" in words:
        return {int(word) for word in words[words.index("fedllm.health") + 1 :]}
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
