"""No floor in pyproject.toml, and no version in uv.lock, admits a release with a known advisory.

A floor is the oldest release an installer may pick: every known advisory of a direct
dependency must be fixed at or below it. When a new advisory is published, raise the floor
(`scripts/uv add 'pkg>=x'`) and add its row here.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
# The first release with every advisory below fixed, and why.
FIRST_SAFE = {
    "aiohttp": (
        "3.14.5",
        "request smuggling CVE-2025-53643 (3.12.14); CVE-2025-69223..69230 (3.13.3); "
        "CVE-2026-34513..34525, CVE-2026-22815 (3.13.4); CVE-2026-34993, CVE-2026-47265 "
        "(3.14.0); CVE-2026-54273..54280 (3.14.1); CVE-2026-69244 (3.14.3); "
        "GHSA-2g87-pp6c-29x5, GHSA-5wr8-gcqf-gqf3, GHSA-494j-54xm-rwp3 (3.14.5)",
    ),
    "pyjwt": (
        "2.13.0",
        "issuer partial match CVE-2024-53861 (2.10.1); CVE-2026-32597 (2.12.0); "
        "CVE-2026-48522..48526 (2.13.0)",
    ),
    "pydantic-settings": ("2.14.2", "GHSA-4xgf-cpjx-pc3j (affects 2.12.0 to 2.14.1)"),
    "orjson": ("3.11.7", "unbounded recursion on deep JSON CVE-2025-67221"),
    "pytest": ("9.0.3", "predictable /tmp/pytest-of-{user} CVE-2025-71176"),
    "check-jsonschema": ("0.30.0", "cache-name collision CVE-2024-53848"),
    "redis": ("4.5.4", "cancelled async command leaks a reply CVE-2023-28858/28859"),
    "pydantic": ("2.4.0", "email regex ReDoS CVE-2024-3772"),
}


def _requirements() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    lines = project["project"]["dependencies"] + project["dependency-groups"]["dev"]
    return {(r := Requirement(line)).name.lower(): r for line in lines}


def _floor(requirement: Requirement) -> Version:
    floors = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
    assert floors, f"{requirement.name} has no floor (>=) in pyproject.toml"
    return max(floors)


def _locked() -> dict[str, Version]:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    return {p["name"]: Version(p["version"]) for p in lock["package"] if "version" in p}


@pytest.mark.parametrize("name", sorted(FIRST_SAFE))
def test_the_floor_and_the_lock_are_past_every_known_advisory(name: str) -> None:
    safe, why = FIRST_SAFE[name]
    requirement = _requirements()[name]
    assert _floor(requirement) >= Version(safe), f"{name} floor below {safe}: {why}"
    assert _locked()[name] >= Version(safe), f"{name} locked below {safe}: {why}"


def test_every_direct_dependency_has_a_floor() -> None:
    unbounded = [
        name
        for name, requirement in _requirements().items()
        if not any(s.operator == ">=" for s in requirement.specifier)
    ]
    assert unbounded == []
