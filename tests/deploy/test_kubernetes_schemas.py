"""Rendered overlays: every kind needed, valid for old and new Kubernetes and their CRDs."""

import pytest
from pydantic import BaseModel

from .project import OVERLAYS, Obj
from .tools import library

pytestmark = pytest.mark.deploy

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


def test_overlays_exist() -> None:
    """A CPU and a GPU overlay at least."""
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
