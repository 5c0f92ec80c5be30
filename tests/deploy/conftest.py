"""Shared fixtures: every kustomize overlay and compose setup, rendered once per session."""

import shutil
from pathlib import Path

import pytest
import yaml

from .commands import Role
from .compose import COMPOSE_SETUPS, SETUP_IDS, compose
from .manifests import k8s_roles
from .project import K8S, OVERLAYS, ROOT, Obj
from .tools import run, tool


def fill_pki(pki: Path, scratch: Path) -> None:
    """A throwaway PKI from certs/generate.sh with the files the secretGenerator reads."""
    spec = yaml.safe_load((pki / "kustomization.yaml").read_text())
    files = {name for secret in spec["secretGenerator"] for name in secret["files"]}
    nodes = sorted({Path(name).stem for name in files} - {"ca", "superlink", "operator"})
    run(str(ROOT / "certs" / "generate.sh"), str(scratch), *nodes)
    for name in files:
        assert (scratch / name).is_file(), f"certs/generate.sh writes no {name}"
        shutil.copy(scratch / name, pki / name)


@pytest.fixture(scope="session")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Obj]]:
    """`kubectl kustomize` of every overlay, on a copy of k8s/ with a generated PKI."""
    kubectl = tool("kubectl")
    tree = tmp_path_factory.mktemp("deploy") / "k8s"
    shutil.copytree(K8S, tree, ignore=shutil.ignore_patterns("*.key", "*.crt", "*.crl"))
    fill_pki(tree / "pki", tmp_path_factory.mktemp("ca") / "pki")
    documents = {o: run(kubectl, "kustomize", str(tree / "overlays" / o)) for o in OVERLAYS}
    return {o: [d for d in yaml.safe_load_all(text) if d] for o, text in documents.items()}


@pytest.fixture(scope="session")
def k8s(rendered: dict[str, list[Obj]]) -> dict[str, list[Role]]:
    """The `fedllm` roles of every overlay."""
    return {overlay: k8s_roles(objects, overlay) for overlay, objects in rendered.items()}


@pytest.fixture(scope="session")
def composed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Obj]:
    """The resolved configuration (`docker-compose config`) of every setup."""
    scratch = tmp_path_factory.mktemp("compose")
    return {
        setup: yaml.safe_load(compose(files, scratch, "config"))
        for setup, files in zip(SETUP_IDS, COMPOSE_SETUPS, strict=True)
    }
