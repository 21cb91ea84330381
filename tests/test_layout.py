"""The package's layout: each part imports only what its `__init__` docstring allows (issue 20)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import animal_sync

PACKAGE = Path(animal_sync.__file__).parent
PARTS = ("cli", "client", "engine", "journal", "reports", "simulator", "web")
SHARED = ("config", "errors", "examine", "logs", "shards", "transform", "urls")

# What each part must never import, of the package's own parts (the words of each subpackage's docstring).
NEVER: dict[str, frozenset[str]] = {
    "journal": frozenset({"cli", "client", "engine", "reports", "simulator", "web"}),  # storage knows no HTTP
    "client": frozenset({"cli", "engine", "journal", "reports", "simulator", "web"}),  # HTTP knows no storage
    "engine": frozenset({"cli", "reports", "simulator", "web"}),  # decides from journal queries, never reports
    "reports": frozenset({"cli", "client", "engine", "simulator", "web"}),  # read the journal, send nothing
    "web": frozenset({"cli", "client", "engine", "simulator"}),  # reads journals and reports, starts the CLI
    "simulator": frozenset({"cli", "client", "engine", "journal", "reports", "web", "examine", "transform"}),  # judges with its own code
    "cli": frozenset(),  # the edge: it may use every part, and no part uses it
    "shared": frozenset(PARTS),  # what every part shares leans on none of them
}


def _part(path: Path) -> str:
    first = path.relative_to(PACKAGE).parts[0]
    if first == "__main__.py":  # `python -m animal_sync` is the CLI
        return "cli"
    return first if first in PARTS else "shared"


def _imported_parts(path: Path) -> set[str]:
    """The package's own top-level parts a module imports, relative or absolute, at any depth of the file."""
    module = list(path.relative_to(PACKAGE).with_suffix("").parts)
    package = module[:-1] if module[-1] != "__init__" else module[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[list[str]] = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                target = base + (node.module.split(".") if node.module else [])
                names = [target + [alias.name] for alias in node.names] if not node.module else [target]
            elif node.module and node.module.split(".")[0] == "animal_sync":
                names = [node.module.split(".")[1:]]
        elif isinstance(node, ast.Import):
            names = [a.name.split(".")[1:] for a in node.names if a.name.split(".")[0] == "animal_sync"]
        for name in names:
            if name:
                found.add(name[0] if name[0] in PARTS else ("shared:" + name[0]))
    return found


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_each_module_imports_only_what_its_part_allows(path: Path) -> None:
    part = _part(path)
    imported = {name for name in _imported_parts(path) if not name.startswith("shared:")}
    shared = {name.split(":", 1)[1] for name in _imported_parts(path) if name.startswith("shared:")}
    assert not (imported - {part}) & NEVER[part], f"{part} imports {sorted((imported - {part}) & NEVER[part])}"
    assert not shared & NEVER[part], f"{part} imports {sorted(shared & NEVER[part])}"


def test_the_top_of_the_package_stays_small_and_each_part_says_what_it_owns() -> None:
    top = sorted(p.name for p in PACKAGE.iterdir() if not p.name.startswith(("_", ".")) or p.name in ("__init__.py", "__main__.py"))
    top = [name for name in top if name != "__pycache__"]
    assert len(top) <= 16, top
    for part in PARTS:
        doc = ast.get_docstring(ast.parse((PACKAGE / part / "__init__.py").read_text())) or ""
        assert "never import" in doc.lower() or "never be imported" in doc.lower(), f"{part}/__init__.py must say what it owns and what it must never import"
