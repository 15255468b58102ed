"""Mutation testing (mutmut) of the rules that guard accounts and tokens.

    python scripts/mutate.py run domain [security redis idempotency] [--max-children 2]
    python scripts/mutate.py run redis --only 'storage.redis_store.x*'   # retest just those
    python scripts/mutate.py report [TARGET ...]   # the README's tables, from the last runs

A target mutates some modules and tests each mutant against the tests of its own selection
that reached the mutated function (mutmut records which in a first, clean run; each mutant
runs in a forked child, its tests with -x). It works in .mutmut/TARGET/: links to the
project, a copy of pyproject.toml with the target's [tool.mutmut] section, and mutmut's
mutants/ (its copy of the tree, mutated, and the verdicts). A run starts afresh: mutmut
keeps a survivor's verdict until told to retest it, so a reused tree would miss new tests.

Mutants are not first filtered by mypy (although `make check` would refuse many): the score
measures the tests. A mutant is killed when a test fails or times out. Every survivor must be
explained in scripts/mutation_survivors.toml, as equivalent (no caller can tell it from the
original), text (only a message, log or diagnostic text differs) or accepted (a real
difference, with why no test needs to catch it). The score is the share of killed mutants
among those that are not equivalent (the usual definition); the raw kill rate is shown
beside it. A run fails when a module scores under --min-score or has a survivor that is
not explained.
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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".mutmut"
SURVIVORS = ROOT / "scripts" / "mutation_survivors.toml"
# What a target's tree links to. Besides the packages: the tests, the README (a test reads its
# settings table) and the migrations with their config (integration tests build databases).
LINKED = ("domain", "contract", "storage", "handlers", "web", "warden", "migrations", "tests")
LINKED_FILES = ("README.md", "alembic.ini", "uv.lock")
PACKAGES = ("domain", "contract", "storage", "handlers", "web", "warden")
KINDS = ("equivalent", "text", "accepted")
LAYERS_TEST = (
    "tests/unit/test_layers.py::"
    "test_every_module_of_the_domain_imports_only_the_standard_library_and_itself"
)
KILLED = {"killed", "timeout"}


@dataclass(frozen=True)
class Target:
    """Modules to mutate and the tests that exercise them."""

    modules: tuple[str, ...]
    tests: tuple[str, ...]


# In the order `make mutate` runs them: fast ones first.
TARGETS = {
    # The use cases against the unit tests (in-memory fakes): CI runs this one.
    "domain": Target(
        (
            "domain/auth.py",
            "domain/accounts.py",
            "domain/mfa.py",
            "domain/recovery.py",
            "domain/mail.py",
            "domain/sessions.py",
        ),
        ("tests/unit",),
    ),
    # The bcrypt and JWT adapters against their unit tests.
    "security": Target(
        ("warden/security.py",),
        ("tests/unit/test_security.py", "tests/unit/test_security_adapters.py"),
    ),
    # Sessions, login throttle and redelivery counter against real Redis.
    "redis": Target(
        ("storage/redis_store.py",),
        ("tests/integration/test_redis_store.py", "tests/integration/test_redis_limits.py"),
    ),
    # Idempotency-Key replay against a real worker, Redis, Postgres and RabbitMQ: slow.
    "idempotency": Target(
        ("handlers/idempotency.py",),
        (
            "tests/integration/test_idempotency_claims.py",
            "tests/integration/test_idempotency_store.py",
            "tests/integration/test_reply_ledger.py",
            "tests/e2e/test_idempotency.py",
            "tests/e2e/test_idempotency_failures.py",
        ),
    ),
}


@dataclass(frozen=True)
class Reason:
    kind: str
    why: str


@dataclass
class Survivor:
    name: str
    status: str
    removed: str
    added: str
    reason: Reason | None = None

    @property
    def function(self) -> str:
        return function_of(self.name)

    @property
    def key(self) -> tuple[str, str, str]:
        return self.function, self.removed, self.added


def function_of(mutant: str) -> str:
    """`domain.auth.Auth.login` for `domain.auth.xǁAuthǁlogin__mutmut_21`."""
    module, _, mangled = mutant.rpartition(".")
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
        return sum(n for status, n in self.statuses.items() if status != "skipped")

    @property
    def killed(self) -> int:
        return sum(self.statuses[s] for s in KILLED)

    @property
    def equivalent(self) -> int:
        return sum(1 for s in self.survivors if s.reason and s.reason.kind == "equivalent")

    @property
    def unexplained(self) -> list[Survivor]:
        return [s for s in self.survivors if s.reason is None]

    @property
    def score(self) -> float:
        """Killed, of the mutants that are not equivalent."""
        counted = self.total - self.equivalent
        return 100.0 * self.killed / counted if counted else 100.0

    @property
    def kill_rate(self) -> float:
        return 100.0 * self.killed / self.total if self.total else 100.0


def mutmut_section(target: Target) -> str:
    return f"""

[tool.mutmut]
source_paths = {json.dumps(list(PACKAGES))}
only_mutate = {json.dumps(list(target.modules))}
also_copy = {json.dumps(["migrations", *LINKED_FILES])}
pytest_add_cli_args_test_selection = {json.dumps(list(target.tests))}
# A mutated module imports mutmut's trampoline: the check that the domain imports only the
# standard library is about the tree, not about behaviour, and would refuse every mutant.
pytest_add_cli_args = ["-p", "no:cacheprovider", "--deselect", "{LAYERS_TEST}"]
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
    """mutmut of this environment, in the target's tree (not `python -m mutmut`: it forks)."""
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
        if not only:  # the time of a whole run, for the README's table
            (work / "wall-seconds").write_text(f"{took:.0f}\n")
        print(f"mutate {name}: {took:.0f} s wall, {max_children} children")
        failed |= not summarize(collect(work, target), min_score)
    return 1 if failed else 0


def collect(work: Path, target: Target) -> list[ModuleResult]:
    """Each module's verdicts (mutmut's .meta files), its survivors' diffs and reasons."""
    from mutmut.stats import status_by_exit_code

    reasons = load_reasons()
    results = []
    for path in target.modules:
        meta = json.loads((work / "mutants" / f"{path}.meta").read_text())
        result = ModuleResult(path)
        for mutant, code in sorted(meta["exit_code_by_key"].items(), key=_natural):
            status = status_by_exit_code[code]
            result.statuses[status] += 1
            if status not in KILLED | {"skipped"}:
                found = survivor(work, mutant, status)
                found.reason = reasons.get(found.key)
                result.survivors.append(found)
        results.append(result)
    return results


def survivor(work: Path, mutant: str, status: str) -> Survivor:
    shown = mutmut(work, "show", mutant).stdout.splitlines()
    removed = [line[1:].strip() for line in shown if line.startswith("-") and line[:3] != "---"]
    added = [line[1:].strip() for line in shown if line.startswith("+") and line[:3] != "+++"]
    return Survivor(mutant, status, " / ".join(removed), " / ".join(added))


def _natural(item: tuple[str, object]) -> tuple[str, int]:
    name, _, number = item[0].rpartition("__mutmut_")
    return name, int(number) if number.isdigit() else 0


def load_reasons() -> dict[tuple[str, str, str], Reason]:
    """The explained survivors, by (function, line before, line after)."""
    reasons = {}
    for entry in tomllib.loads(SURVIVORS.read_text()).get("survivor", []):
        if entry["kind"] not in KINDS or not entry["why"].strip():
            raise SystemExit(f"{SURVIVORS.name}: kind must be one of {KINDS}, with a why: {entry}")
        reasons[entry["function"], entry["was"], entry["now"]] = Reason(entry["kind"], entry["why"])
    return reasons


def stale(results: Sequence[ModuleResult]) -> list[tuple[str, str, str]]:
    """Explanations for these modules that no survivor matches (killed now, or line changed)."""
    modules = tuple(r.path.removesuffix(".py").replace("/", ".") + "." for r in results)
    matched = {s.key for r in results for s in r.survivors}
    return [k for k in load_reasons() if k[0].startswith(modules) and k not in matched]


def summarize(results: Sequence[ModuleResult], min_score: float) -> bool:
    ok = True
    for r in results:
        good = r.score >= min_score and not r.unexplained
        ok &= good
        print(
            f"  {r.path}: score {r.score:.1f} % ({r.killed} of {r.total - r.equivalent} killed;"
            f" {r.equivalent} equivalent left out; raw kill rate {r.kill_rate:.1f} %)"
            f" {'ok' if good else 'FAILED'}"
        )
        for s in r.survivors:
            label = f"{s.reason.kind}: {s.reason.why}" if s.reason else "NOT EXPLAINED"
            print(f"    {s.status}: {s.name}\n      - {s.removed}\n      + {s.added}")
            print(f"      {label}")
    unexplained = [s for r in results for s in r.unexplained]
    if unexplained:
        print(f"  explain these in {SURVIVORS.relative_to(ROOT)} (or kill them with a test):")
        print("\n".join(stub(s) for s in unexplained))
    for function, was, now in stale(results):
        print(f"  no longer survives (drop it from {SURVIVORS.name}): {function}: {was} -> {now}")
    return ok


def stub(s: Survivor) -> str:
    def quoted(text: str) -> str:
        return json.dumps(text, ensure_ascii=False)  # a JSON string is a TOML basic string

    return (
        f"[[survivor]]\nfunction = {quoted(s.function)}\nwas = {quoted(s.removed)}\n"
        f'now = {quoted(s.added)}\nkind = ""\nwhy = ""\n'
    )


def report(names: Sequence[str]) -> int:
    """The README's tables, from the verdicts the last runs left in .mutmut/."""
    rows: list[str] = []
    groups: dict[tuple[str, str, str, str], list[str]] = {}  # one line per line and reason
    for name in names:
        work = WORK / name
        if not (work / "mutants").exists():
            print(f"(no results for {name}: run `python scripts/mutate.py run {name}` first)")
            continue
        wall = work / "wall-seconds"
        took = f"{wall.read_text().strip()} s" if wall.exists() else "?"
        for r in collect(work, TARGETS[name]):
            rows.append(
                f"| `{r.path}` | `{name}`, {took} | {r.total} | {r.killed} | {r.equivalent} "
                f"| {len(r.survivors) - r.equivalent} | **{r.score:.1f} %** "
                f"| {r.kill_rate:.1f} % |"
            )
            for s in r.survivors:
                kind, why = (s.reason.kind, s.reason.why) if s.reason else ("NOT EXPLAINED", "")
                mutant = f"`{s.added}`" if s.added else "(the argument dropped)"
                if s.status != "survived":
                    mutant += f" ({s.status})"
                groups.setdefault((s.function, s.removed, kind, why), []).append(mutant)
    listed = [
        f"- `{function}`: `{was}` → {'; '.join(mutants)}. *{kind}*: {why}"
        for (function, was, kind, why), mutants in groups.items()
    ]
    print(
        "| module | target, wall time | mutants | killed | equivalent | other survivors"
        " | score | raw kill rate |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    print("\n".join(rows))
    print("\nEvery survivor, and why it is acceptable:\n")
    print("\n".join(listed) if listed else "(none)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    running = commands.add_parser("run", help="mutate and test the targets, in the order given")
    running.add_argument("targets", nargs="+", choices=TARGETS)
    running.add_argument("--max-children", type=int, default=2, help="mutants tested at once")
    running.add_argument("--min-score", type=float, default=90.0, help="per module, in percent")
    running.add_argument(
        "--only", nargs="*", default=[], help="mutant names or globs to retest, keeping the rest"
    )
    reporting = commands.add_parser("report", help="print the README's tables from .mutmut/")
    reporting.add_argument("targets", nargs="*", help=f"of {', '.join(TARGETS)}; all by default")
    args = parser.parse_args()
    if args.command == "run":
        return run(args.targets, args.max_children, args.only, args.min_score)
    if unknown := set(args.targets) - set(TARGETS):
        parser.error(f"no such target: {', '.join(sorted(unknown))}")
    return report(args.targets or list(TARGETS))


if __name__ == "__main__":
    sys.exit(main())
