"""The configuration reference: complete, described, and the docs page is its output."""

from pathlib import Path

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from fedllm.cli.config import SECTIONS, reference, type_name
from fedllm.cli.main import app
from fedllm.settings import DpMode

PAGE = Path(__file__).resolve().parents[1] / "docs" / "reference" / "configuration.md"


@pytest.mark.parametrize("cls", [cls for _, _, cls in SECTIONS], ids=lambda cls: cls.__name__)
def test_every_setting_says_what_it_does(cls: type[BaseModel]) -> None:
    assert [name for name, field in cls.model_fields.items() if not field.description] == []


def test_every_setting_is_in_the_reference() -> None:
    text = reference()
    for _, _, cls in SECTIONS:
        for name in cls.model_fields:
            assert f"| `{name.replace('_', '-')}` |" in text


def test_the_docs_page_is_the_generated_reference() -> None:
    assert PAGE.read_text() == reference() + "\n", "run: fedllm config-reference > " + str(PAGE)


def test_the_command_prints_it() -> None:
    result = CliRunner().invoke(app, ["config-reference"])
    assert result.exit_code == 0
    assert "| `dp-epsilon` | `FEDLLM_DP_EPSILON` | float | `0.0` | ≥ 0 |" in result.output


def test_types_read_as_config() -> None:
    assert type_name(DpMode) == "`none` / `sgd` / `server` / `client`"
    assert type_name(Path | None) == "path"
