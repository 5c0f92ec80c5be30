"""docker/requirements.lock pins every run-time dependency of pyproject.toml, within its range."""

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def locked() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "docker/requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"not an exact pin: {line}"
            pins[canonicalize_name(name)] = version
    return pins


def test_every_dependency_is_pinned_within_its_range() -> None:
    pins = locked()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for spec in project["dependencies"]:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        if name == "torch":  # each image installs its own build (CPU or CUDA) first
            assert name not in pins
            continue
        assert name in pins, f"{name} missing from docker/requirements.lock (scripts/lock.sh)"
        assert requirement.specifier.contains(pins[name], prereleases=True), (name, pins[name])
