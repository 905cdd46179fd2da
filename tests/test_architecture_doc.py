"""docs/ARCHITECTURE.md's module table lists every module of the package, and nothing else.

A module added without a line there, or a line left for a module that moved, fails here:
the table is how a newcomer finds where things live.
"""

from __future__ import annotations

import re

from tests.conftest import REPO


def _documented() -> set[str]:
    text = (REPO / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    table = text.split("## Modules", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for line in table.splitlines():
        if line.startswith("| `"):
            names.add(line.split("`")[1])
    return names


def _modules() -> set[str]:
    root = REPO / "jupyter_tfenv"
    found = set()
    for path in root.rglob("*.py"):
        rel = path.relative_to(root).as_posix()
        if rel == "_version.py" or rel.endswith("/__init__.py"):
            continue
        if rel.startswith("server/handlers/"):
            rel = "server/handlers/"  # one line for the thin handlers
        found.add(rel)
    return found


def test_every_module_has_a_line_in_the_module_table() -> None:
    documented = _documented()
    missing = sorted(_modules() - documented)
    assert not missing, f"modules without a line in docs/ARCHITECTURE.md's table: {missing}"


def test_the_module_table_names_only_modules_that_exist() -> None:
    stale = sorted(
        name
        for name in _documented() - _modules()
        if name != "__init__.py" and not re.fullmatch(r"[a-z_/]+/", name)
    )
    assert not stale, f"docs/ARCHITECTURE.md's table names modules that do not exist: {stale}"
