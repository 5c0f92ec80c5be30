"""Every Dockerfile exists where expected and passes hadolint."""

import pytest

from .project import DOCKERFILES, HADOLINT_CONFIG, ROOT
from .tools import run, tool

pytestmark = pytest.mark.deploy


def test_dockerfiles_exist() -> None:
    """The image's Dockerfile is among those linted."""
    assert "docker/Dockerfile" in DOCKERFILES


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_hadolint(dockerfile: str) -> None:
    """hadolint, with the project's config where there is one."""
    config = ["--config", str(HADOLINT_CONFIG)] if HADOLINT_CONFIG.is_file() else []
    run(tool("hadolint"), "--no-color", *config, str(ROOT / dockerfile))
