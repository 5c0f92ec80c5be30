"""The house rules for imports: the roles use the shared package, never each other.

`fedllm/` is shared by both roles and imports neither, except `fedllm.cli`, the command line
that starts them. `superlink/` and `supernode/` never import each other. Flower's version is
checked in one place, `fedllm.flower_internals`.
"""

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROLES = ("superlink", "supernode")
# What each package may not import (by top-level name); `fedllm.cli` is above the roles.
FORBIDDEN = {"fedllm": set(ROLES), "superlink": {"supernode"}, "supernode": {"superlink"}}


def imported(path: Path) -> Iterator[tuple[int, str]]:
    """Every module `path` imports, anywhere in it (functions included), with its line."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module


def violations(root: Path) -> list[str]:
    """`file:line imports module` for each import that runs against the layers."""
    found = []
    for package, forbidden in FORBIDDEN.items():
        for path in sorted((root / package).rglob("*.py")):
            relative = path.relative_to(root)
            if relative.parts[:2] == ("fedllm", "cli"):
                continue
            for line, module in imported(path):
                if module.split(".")[0] in forbidden:
                    found.append(f"{relative}:{line} imports {module}")
    return found


def test_imports_run_one_way() -> None:
    assert violations(ROOT) == []


def test_an_upward_import_is_found(tmp_path: Path) -> None:
    for package in FORBIDDEN:
        (tmp_path / package).mkdir()
    (tmp_path / "fedllm" / "history.py").write_text("def f():\n    from superlink import audit\n")
    (tmp_path / "supernode" / "app.py").write_text("import superlink.site_dp\n")
    (tmp_path / "superlink" / "ok.py").write_text("from fedllm.errors import FedllmError\n")
    assert violations(tmp_path) == [
        "fedllm/history.py:2 imports superlink",
        "supernode/app.py:1 imports superlink.site_dp",
    ]


def test_flower_version_is_checked_in_one_place() -> None:
    checking = [
        str(path.relative_to(ROOT))
        for package in ("fedllm", *ROLES)
        for path in (ROOT / package).rglob("*.py")
        if "flwr.__version__" in path.read_text()
    ]
    assert checking == ["fedllm/flower_internals/__init__.py"]
