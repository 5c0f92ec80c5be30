"""Pods of every overlay: locked down, on GPUs only where asked, beside their run volume."""

from pathlib import PurePosixPath

import pytest

from .commands import Role, of
from .manifests import container_env, matches, named, workloads
from .project import CUDA_IMAGE, IMAGE, OVERLAYS, Obj

pytestmark = pytest.mark.deploy

UID = 10001


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
