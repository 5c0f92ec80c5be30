"""The configuration reference, rendered from the settings classes so that it cannot drift.

`fedllm config-reference` prints it; `docs/reference/configuration.md` is its output, and a
test fails when the two differ or a setting has no description.
"""

import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from fedllm.settings import NodeSettings, RunSettings
from supernode.site_policy import SitePolicy

# (title, where the values come from, class): the order of the page.
SECTIONS: tuple[tuple[str, str, type[BaseModel]], ...] = (
    (
        "Run settings",
        "One federated run, read by the ServerApp and every ClientApp from the Flower run config"
        " (defaults in `pyproject.toml` under `[tool.flwr.app.config]`). `fedllm up` takes them"
        " from `FEDLLM_<NAME>` environment variables or `.env`, then its flags and"
        " `--set key=value` (highest).",
        RunSettings,
    ),
    (
        "Node settings",
        "One SuperNode's site, from Flower node config (`--node-config key=value`) or"
        " `FEDLLM_NODE_<NAME>` environment variables.",
        NodeSettings,
    ),
    (
        "Site privacy policy",
        "Keys of the TOML file a site names with `privacy-policy`; an unset key does not restrict.",
        SitePolicy,
    ),
)
# pydantic keeps `Field(ge=0)` as `annotated_types.Ge(ge=0)` in the field's metadata.
BOUNDS = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}


def type_name(annotation: Any) -> str:
    """A reader's name for a field type: `int`, `path`, one of `a`, `b`, list of ..."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return " / ".join(f"`{value}`" if value else '`""`' for value in args)
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(arg) for arg in args if arg is not type(None))
    if origin is tuple:
        return f"list of {type_name(args[0])}"
    if annotation is Path:
        return "path"
    return str(getattr(annotation, "__name__", annotation))


def shown(value: Any) -> str:
    """A default as it is written in config: `true`, `""`, unset."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`" if value != "" else '`""`'


def limits(field: FieldInfo) -> str:
    """`≥ 0, < 1` from the field's constraints."""
    found = []
    for constraint in field.metadata:
        for name, sign in BOUNDS.items():
            if isinstance(constraint, annotated_types.BaseMetadata) and hasattr(constraint, name):
                found.append(f"{sign} {getattr(constraint, name)}")
    return ", ".join(found)


def section(title: str, intro: str, cls: type[BaseModel]) -> list[str]:
    """One table: key, environment variable, type, default, limits, description."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    lines = [f"## {title}", "", intro, ""]
    lines += ["| key | environment | type | default | limits | description |"]
    lines += ["|---|---|---|---|---|---|"]
    for name, field in cls.model_fields.items():
        env = f"`{prefix}{name.upper()}`" if prefix else ""
        cells = [f"`{name.replace('_', '-')}`", env, type_name(field.annotation)]
        cells += [shown(field.default), limits(field), field.description or ""]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def reference() -> str:
    """The whole page, Markdown."""
    lines = ["# Configuration reference", ""]
    lines += ["Generated from the settings classes by `fedllm config-reference`; do not edit.", ""]
    for title, intro, cls in SECTIONS:
        lines += section(title, intro, cls)
    return "\n".join(lines)
