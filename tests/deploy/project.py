"""Where the deployment lives, and what the image every container starts from holds."""

import re
import shlex
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
OVERLAYS = sorted(p.parent.name for p in (K8S / "overlays").glob("*/kustomization.yaml"))
DOCKERFILE = ROOT / "docker" / "Dockerfile"
DOCKERFILES = sorted(p.relative_to(ROOT).as_posix() for p in ROOT.glob("docker/**/Dockerfile*"))
HADOLINT_CONFIG = ROOT / "docker" / ".hadolint.yaml"
IMAGE, CUDA_IMAGE = "fedllm:0.1.0", "fedllm:0.1.0-cuda"
Obj = dict[str, Any]


def image_env(dockerfile: Path) -> dict[str, str]:
    """ENV of the Dockerfile's last stage: what every container starts with."""
    if not dockerfile.is_file():
        return {}
    text = re.sub(r"\\\n", " ", dockerfile.read_text()).split("\nFROM ")[-1]
    lines = (line.split(None, 1)[1] for line in text.splitlines() if line.startswith("ENV "))
    return dict(word.split("=", 1) for line in lines for word in shlex.split(line))


IMAGE_ENV = image_env(DOCKERFILE)
