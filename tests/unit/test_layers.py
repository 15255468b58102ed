"""The domain imports the standard library only: no framework, no other layer of Warden.

An allow-list, where import-linter's forbidden contracts can only name what to refuse: a new
dependency would slip into a deny-list unnoticed.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

DOMAIN = Path(__file__).resolve().parents[2] / "domain"


def imported_roots(source: str) -> set[str]:
    """The top-level package of every absolute import in `source`, wherever it is written."""
    roots: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots |= {alias.name.partition(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.partition(".")[0])
    return roots


def test_every_module_of_the_domain_imports_only_the_standard_library_and_itself() -> None:
    modules = sorted(DOMAIN.rglob("*.py"))
    assert len(modules) > 5  # the walk found the package

    foreign = {
        f"{path.relative_to(DOMAIN)}: {root}"
        for path in modules
        for root in imported_roots(path.read_text())
        if root not in sys.stdlib_module_names and root not in ("domain", "__future__")
    }
    assert not foreign, sorted(foreign)


def test_the_walk_sees_imports_wherever_they_are_written() -> None:
    source = "import os.path\nfrom . import rules\ndef f():\n    from pydantic import BaseModel\n"

    assert imported_roots(source) == {"os", "pydantic"}
