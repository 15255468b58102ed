"""The library stands alone: it imports nothing of Warden's server, its extras only where
they are needed, and its dependency floors are past every known advisory."""

from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

from tests.unit.test_dependency_floors import FIRST_SAFE

ROOT = Path(__file__).resolve().parents[2] / "verifier"
PACKAGE = ROOT / "warden_verifier"
# What each module may import besides the standard library and the package itself.
EXTRAS = {"middleware.py": {"aiohttp"}, "follower.py": {"aio_pika"}}


def _top_level_imports(path: Path) -> set[str]:
    """Modules imported at module level (an import inside a function is not counted)."""
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_each_module_imports_only_the_stdlib_pyjwt_and_its_own_extra() -> None:
    modules = sorted(PACKAGE.glob("*.py"))
    assert {m.name for m in modules} >= {"verifier.py", *EXTRAS}
    for module in modules:
        allowed = {"jwt", "warden_verifier", "__future__"} | EXTRAS.get(module.name, set())
        foreign = _top_level_imports(module) - allowed - sys.stdlib_module_names
        assert foreign == set(), f"{module.name} imports {foreign}"


def test_the_dependencies_are_pyjwt_and_the_extras_and_past_every_advisory() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    lines = project["dependencies"] + [r for group in extras.values() for r in group]
    requirements = {(r := Requirement(line)).name.lower(): r for line in lines}
    assert set(requirements) == {"pyjwt", "cryptography", "aiohttp", "aio-pika"}
    assert "crypto" in requirements["pyjwt"].extras
    assert set(extras) == {"aiohttp", "broker"}
    for name, requirement in requirements.items():
        floors = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
        assert floors, f"{name} has no floor"
        if name in FIRST_SAFE:
            assert max(floors) >= Version(FIRST_SAFE[name][0]), FIRST_SAFE[name][1]
    assert (PACKAGE / "py.typed").exists()
