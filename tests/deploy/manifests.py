"""Rendered Kubernetes objects: finding them, their pods, and the `fedllm` roles they run."""

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .commands import Mount, Role, fedllm_argv
from .project import IMAGE_ENV, Obj


def by_kind(objects: list[Obj], kind: str) -> list[Obj]:
    """Every object of this kind."""
    return [obj for obj in objects if obj["kind"] == kind]


def named(objects: list[Obj], kind: str, name: str) -> Obj:
    """The one object of this kind and name."""
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
        """metadata.name."""
        return str(self.obj["metadata"]["name"])

    @property
    def pod(self) -> Obj:
        """The pod template's spec."""
        return dict(self.obj["spec"]["template"]["spec"])

    @property
    def labels(self) -> dict[str, str]:
        """The pod template's labels."""
        return dict(self.obj["spec"]["template"]["metadata"].get("labels", {}))

    def pod_names(self) -> list[str]:
        """One name per pod of a StatefulSet; a stand-in name otherwise."""
        if self.obj["kind"] == "StatefulSet":
            return [f"{self.name}-{k}" for k in range(self.obj["spec"].get("replicas", 1))]
        return [f"{self.name}-pod"]

    def containers(self) -> list[Obj]:
        """Init containers, then containers."""
        return [*self.pod.get("initContainers", []), *self.pod["containers"]]

    def mounts(self, container: Obj) -> dict[str, Mount]:
        """A container's mount paths and the volumes behind them."""
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
    """Every workload; no other kind of object may start pods."""
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


def port_number(port: int | str, role: Role) -> int:
    """A port by number or by the container's port name."""
    if isinstance(port, int):
        return port
    assert port in role.ports, f"{role.where}: no container port named {port}"
    return role.ports[port]


def backends(roles: list[Role], service: Obj) -> list[Role]:
    """The roles whose pods a Service selects."""
    return [role for role in roles if role.workload and selects(service, role.workload.labels)]
