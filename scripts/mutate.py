"""Mutation testing (mutmut) of the rules that guard accounts and tokens.

    python scripts/mutate.py run domain [security redis idempotency] [--max-children 2]
    python scripts/mutate.py run redis --only 'storage.redis_store.x*'   # rerun just those
    python scripts/mutate.py report [TARGET ...]    # the README's section, from the last run

A target mutates some modules and tests each mutant against the tests of its own selection
that reached the mutated function (mutmut records which in a first, clean run; each mutant
runs in a forked child, its tests with -x). It works in .mutmut/TARGET/: links to the
project, a copy of pyproject.toml with the target's [tool.mutmut] section, and mutmut's
mutants/ (its copy of the tree, mutated, and the results). A run starts afresh: mutmut
keeps a survivor's verdict until told to retest it, so a reused tree would miss new tests.

The score measures the tests alone: mutants are not first filtered by mypy, although `make
check` would refuse many of them. Every mutant must be killed by a test (a failure, or a
timeout), or be listed in scripts/mutation_survivors.toml with why it is acceptable
(equivalent, or only a message or log text). The run fails when a module's score (killed, of
all its mutants) is under --min-score.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".mutmut"
SURVIVORS = ROOT / "scripts" / "mutation_survivors.toml"
# What the copied tree needs besides the packages: the README (a test reads its settings
# table), the migrations and their config (integration tests build their databases).
LINKED = ("domain", "storage", "handlers", "web", "warden", "migrations", "tests", "alembic.ini")
LINKED_FILES = ("README.md", "uv.lock")
PACKAGES = ("domain", "storage", "handlers", "web", "warden")


@dataclass(frozen=True)
class Target:
    """Modules to mutate and the tests that exercise them, fastest first."""

    modules: tuple[str, ...]
    tests: tuple[str, ...]
    help: str


TARGETS = {
    "domain": Target(
        ("domain/auth.py", "domain/accounts.py"),
        ("tests/unit",),
        "the use cases, against the unit tests (in-memory fakes): about a minute",
    ),
    "security": Target(
        ("warden/security.py",),
        ("tests/unit/test_security.py",),
        "bcrypt and JWT adapters, against their unit tests",
    ),
    "redis": Target(
        ("storage/redis_store.py",),
        ("tests/integration/test_redis_store.py",),
        "sessions and login throttle, against real Redis",
    ),
    "idempotency": Target(
        ("handlers/idempotency.py",),
        ("tests/integration/test_reply_ledger.py", "tests/e2e/test_idempotency.py"),
        "Idempotency-Key replay, against a real worker, Redis, Postgres and RabbitMQ (slow)",
    ),
}

KILLED = {"killed", "timeout"}


@dataclass
class Survivor:
    name: str
    status: str
    removed: list[str]
    added: list[str]

    @property
    def function(self) -> str:
        """`domain.auth.Auth.login` for `domain.auth.xǁAuthǁlogin__mutmut_21`."""
        module, _, mangled = self.name.rpartition(".")
        mangled = re.sub(r"__mutmut_\d+$", "", mangled)
        if mangled.startswith("xǁ"):
            _, cls, func = mangled.split("ǁ")
            return f"{module}.{cls}.{func}"
        return f"{module}.{mangled.removeprefix('x_')}"


@dataclass
class ModuleResult:
    path: str
    statuses: Counter[str] = field(default_factory=Counter)
    survivors: list[Survivor] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(n for s, n in self.statuses.items() if s != "skipped")

    @property
    def killed(self) -> int:
        return sum(self.statuses[s] for s in KILLED)

    @property
    def score(self) -> float:
        return 100.0 * self.killed / self.total if self.total else 100.0


def mutmut_section(target: Target) -> str:
    return f"""

[tool.mutmut]
source_paths = {json.dumps(list(PACKAGES))}
only_mutate = {json.dumps(list(target.modules))}
also_copy = {json.dumps([*LINKED_FILES, "migrations", "alembic.ini"])}
pytest_add_cli_args_test_selection = {json.dumps(list(target.tests))}
pytest_add_cli_args = ["-p", "no:cacheprovider"]
use_git_change_detection = false
"""


def prepare(name: str, target: Target) -> Path:
    """A fresh work tree for the target: links to the project and its own mutmut settings."""
    work = WORK / name
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    for item in (*LINKED, *LINKED_FILES):
        (work / item).symlink_to(ROOT / item)
    text = (ROOT / "pyproject.toml").read_text() + mutmut_section(target)
    (work / "pyproject.toml").write_text(text)
    return work


def mutmut(work: Path, *args: str, log: Path | None = None) -> subprocess.CompletedProcess[str]:
    """mutmut of this environment, in the target's work tree (never `python -m`: it forks)."""
    command = [str(Path(sys.executable).with_name("mutmut")), *args]
    env = os.environ | {"PYTHONDONTWRITEBYTECODE": "1"}
    if log is None:
        return subprocess.run(command, cwd=work, env=env, capture_output=True, text=True)  # noqa: S603
    with log.open("w") as out:
        return subprocess.run(  # noqa: S603
            command, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT, text=True
        )


def run(names: Sequence[str], max_children: int, only: Sequence[str], min_score: float) -> int:
    failed = False
    for name in names:
        target = TARGETS[name]
        started = time.monotonic()
        work = WORK / name
        if not only or not (work / "mutants").exists():
            work = prepare(name, target)
        log = work / "mutmut.log"
        done = mutmut(work, "run", "--max-children", str(max_children), *only, log=log)
        took = time.monotonic() - started
        if done.returncode != 0:
            print(f"mutate {name}: mutmut failed (exit {done.returncode}); the end of {log}:")
            print(log.read_text()[-4000:])
            failed = True
            continue
        results = collect(work, target)
        print(f"mutate {name}: {took:.0f} s wall, {max_children} children")
        failed |= not print_summary(results, min_score)
    return 1 if failed else 0


def collect(work: Path, target: Target) -> list[ModuleResult]:
    """Each module's verdicts (mutmut's .meta files) and its survivors' diffs."""
    from mutmut.stats import status_by_exit_code

    results = []
    for path in target.modules:
        meta = json.loads((work / "mutants" / f"{path}.meta").read_text())
        result = ModuleResult(path)
        for mutant, code in sorted(meta["exit_code_by_key"].items(), key=_natural):
            status = status_by_exit_code[code]
            result.statuses[status] += 1
            if status not in KILLED | {"skipped"}:
                result.survivors.append(survivor(work, mutant, status))
        results.append(result)
    return results


def survivor(work: Path, mutant: str, status: str) -> Survivor:
    shown = mutmut(work, "show", mutant).stdout.splitlines()
    removed = [line[1:].strip() for line in shown if line.startswith("-") and line[:3] != "---"]
    added = [line[1:].strip() for line in shown if line.startswith("+") and line[:3] != "+++"]
    return Survivor(mutant, status, removed, added)


def _natural(item: tuple[str, object]) -> tuple[str, int]:
    name, _, number = item[0].rpartition("__mutmut_")
    return name, int(number) if number.isdigit() else 0


def reasons() -> dict[tuple[str, str, str], str]:
    """Why each accepted survivor is acceptable, by (function, line before, line after)."""
    listed = tomllib.loads(SURVIVORS.read_text()).get("survivor", [])
    return {(s["function"], s["was"], s["now"]): s["why"] for s in listed}


def reason_for(s: Survivor, known: dict[tuple[str, str, str], str]) -> str | None:
    return known.get((s.function, " / ".join(s.removed), " / ".join(s.added)))


def print_summary(results: Iterable[ModuleResult], min_score: float) -> bool:
    known = reasons()
    ok = True
    unexplained: list[Survivor] = []
    for r in results:
        verdict = "ok" if r.score >= min_score else f"UNDER {min_score:.0f} %"
        print(f"  {r.path}: {r.score:.1f} % of {r.total} killed ({len(r.survivors)} not) {verdict}")
        ok &= r.score >= min_score
        for s in r.survivors:
            why = reason_for(s, known)
            print(f"    {s.status}: {s.name}\n      - {' / '.join(s.removed)}")
            print(f"      + {' / '.join(s.added)}\n      why: {why or 'NOT EXPLAINED'}")
            if why is None:
                unexplained.append(s)
    if unexplained:
        print(f"  {len(unexplained)} survivor(s) not in {SURVIVORS.relative_to(ROOT)}; to explain:")
        for s in unexplained:
            print(stub(s))
    return ok


def stub(s: Survivor) -> str:
    def quoted(text: str) -> str:
        return json.dumps(text, ensure_ascii=False)  # a JSON string is a TOML basic string

    return (
        f"[[survivor]]\nfunction = {quoted(s.function)}\nwas = {quoted(' / '.join(s.removed))}\n"
        f'now = {quoted(" / ".join(s.added))}\nwhy = ""\n'
    )


def report(names: Sequence[str]) -> int:
    """The README's tables, from the results the last runs left in .mutmut/."""
    known = reasons()
    rows, listed = [], []
    for name in names:
        work = WORK / name
        if not (work / "mutants").exists():
            print(f"(no results for {name}: run `python scripts/mutate.py run {name}` first)")
            continue
        for r in collect(work, TARGETS[name]):
            rows.append(
                f"| `{r.path}` | `{name}` | {r.total} | {r.killed} | {len(r.survivors)} "
                f"| {r.score:.1f} % |"
            )
            for s in r.survivors:
                why = reason_for(s, known) or "**not explained**"
                listed.append(
                    f"- `{s.function}` ({s.status}): `{' / '.join(s.removed)}` → "
                    f"`{' / '.join(s.added)}`: {why}"
                )
    print("| module | target | mutants | killed | survived | score |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    print("\n".join(rows))
    print("\nSurvivors, and why each is acceptable:\n")
    print("\n".join(listed) if listed else "(none)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    running = commands.add_parser("run", help="mutate and test the targets, in the order given")
    running.add_argument("targets", nargs="+", choices=TARGETS)
    running.add_argument("--max-children", type=int, default=2, help="mutants tested at once")
    running.add_argument("--min-score", type=float, default=90.0, help="per module, in percent")
    running.add_argument(
        "--only", nargs="*", default=[], help="mutant names or globs to retest, keeping the rest"
    )
    reporting = commands.add_parser("report", help="print the README's section from .mutmut/")
    reporting.add_argument("targets", nargs="*", choices=TARGETS, default=list(TARGETS))
    args = parser.parse_args()
    if args.command == "run":
        return run(args.targets, args.max_children, args.only, args.min_score)
    return report(args.targets)


if __name__ == "__main__":
    sys.exit(main())
