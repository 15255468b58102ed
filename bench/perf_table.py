"""The figures of one sitting and the one table they print as."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.perf_load import Load


@dataclass
class Side:
    """One service's figures; the login ones are None when only /users/me was measured."""

    me: Load
    me_1: Load
    login: Load | None = None
    flood_me: Load | None = None
    flood_login: Load | None = None
    rss_mib: float = 0.0
    processes: int = 0
    cpu_us: dict[str, float] = field(default_factory=dict)  # CPU per /users/me, by process


@dataclass
class Results:
    warden: Side
    peer: Side | None
    inprocess: Load
    inprocess_1: Load
    ceiling_before: float
    ceiling_after: float

    @property
    def ceiling(self) -> float:
        return (self.ceiling_before + self.ceiling_after) / 2


def _ok(met: bool) -> str:
    return "met" if met else "NOT met"


def _load(x: Load) -> str:
    errors = f", {x.errors} errors" if x.errors else ""
    return f"{x.rps:,.0f} req/s, p50 {x.p50_ms:.1f} ms, p99 {x.p99_ms:.1f} ms{errors}"


def _logins(x: Load | None, ceiling: float) -> str:
    if x is None:
        return "-"
    errors = f", {x.errors} errors" if x.errors else ""
    return f"{x.rps:.2f} logins/s = {x.rps / ceiling:.2f}x ceiling{errors}"


def _side(s: Side, ceiling: float) -> dict[str, str]:
    flood = "-"
    if s.flood_me is not None:
        flood = f"{_load(s.flood_me)} = {100 * s.flood_me.rps / s.me.rps:.0f} % of solo"
    return {
        "a": _load(s.me),
        "a1": f"p50 {s.me_1.p50_ms:.2f} ms ({s.me_1.rps:,.0f} req/s)",
        "c": _logins(s.login, ceiling),
        "d": flood,
        "d2": _logins(s.flood_login, ceiling),
        "e": f"{s.rss_mib:.0f} MiB ({s.processes} processes)",
    }


def _flood_verdict(s: Side, ceiling: float) -> str:
    if s.flood_me is None or s.flood_login is None:
        return "-"
    kept = s.flood_me.rps >= 0.5 * s.me.rps and s.flood_me.p99_ms <= 250
    return f"{_ok(kept)} / {_ok(s.flood_login.rps >= 0.5 * ceiling)}"


def table(r: Results) -> str:
    w, c = r.warden, r.ceiling
    cols = _side(w, c)
    peer = _side(r.peer, c) if r.peer else dict.fromkeys(cols, "-")
    vs_peer = w.me.rps / r.peer.me.rps if r.peer else float("nan")
    hop_p50 = w.me.p50_ms - r.inprocess.p50_ms
    hop_p50_1 = w.me_1.p50_ms - r.inprocess_1.p50_ms
    login = "-" if w.login is None else _ok(w.login.rps >= 0.95 * c)
    rows = [
        ("a. GET /users/me, 32 connections", cols["a"], peer["a"],
         f">= 1.0x peer: {vs_peer:.2f}x; p99 <= 100 ms",
         f"{_ok(vs_peer >= 1.0)} / {_ok(w.me.p99_ms <= 100)}"),
        ("a. the same, 1 connection", cols["a1"], peer["a1"], "", ""),
        ("b. in-process route (no broker), 32 connections", _load(r.inprocess), "", "", ""),
        ("b. in-process route, 1 connection", f"p50 {r.inprocess_1.p50_ms:.2f} ms", "", "", ""),
        ("b. broker hop: throughput via broker / in-process",
         f"{w.me.rps / r.inprocess.rps:.2f}x", "", "", ""),
        ("b. broker hop: p50 added at 32 connections / at 1",
         f"+{hop_p50:.2f} ms / +{hop_p50_1:.2f} ms", "", "<= 1 ms",
         f"{_ok(hop_p50 <= 1.0)} / {_ok(hop_p50_1 <= 1.0)}"),
        ("c. bcrypt ceiling: 2 threads of checkpw, cost 12",
         f"{c:.2f}/s (before {r.ceiling_before:.2f}, after {r.ceiling_after:.2f})",
         "(the same)", "", ""),
        ("c. logins, 8 connections", cols["c"], peer["c"], ">= 0.95x ceiling", login),
        ("d. /users/me while 8 connections flood logins", cols["d"], peer["d"],
         ">= 50 % of solo, p99 <= 250 ms / logins >= 0.5x ceiling", _flood_verdict(w, c)),
        ("d. logins during that flood", cols["d2"], peer["d2"], "", ""),
        ("e. peak RSS (VmHWM), all processes", cols["e"], peer["e"],
         "edge + workers <= 200 MiB", _ok(w.rss_mib <= 200)),
    ]  # fmt: skip
    head = ("measure", "Warden", "peer (fastapi-users)", "target", "Warden")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def cpu_lines(r: Results) -> str:
    """CPU time per solo /users/me request, by process: where the cycles go."""
    out = []
    for name, side in (("Warden", r.warden), ("peer", r.peer)):
        if side is not None and side.cpu_us:
            parts = ", ".join(f"{k} {v:,.0f}" for k, v in side.cpu_us.items())
            out.append(f"CPU µs per /users/me at 32 connections, {name}: {parts}")
    return "\n".join(out)


def python_speed() -> float:
    """CPU seconds for 10 million iterations of a pure-Python loop: how fast this sitting is."""
    started = time.process_time()
    total = 0
    for i in range(10_000_000):
        total += i
    return time.process_time() - started


def machine() -> str:
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
         if ln.startswith("model name")), platform.processor(),
    )  # fmt: skip
    mem_kib = int(Path("/proc/meminfo").read_text().splitlines()[0].split()[1])
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    versions = []
    for cmd in (
        ["psql", "--version"],
        ["redis-server", "--version"],
        ["rabbitmqctl", "-q", "version"],
        ["wrk", "--version"],
    ):
        out = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=60)
        text = (out.stdout or out.stderr).strip().splitlines()
        versions.append(text[0] if text else "?")
    return (
        f"{os.cpu_count()} CPUs ({cpu}), {mem_kib / 1024 / 1024:.1f} GiB RAM, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}; "
        f"{'; '.join(versions)}; load average before the run: {load}; "
        f"pure-Python speed: {python_speed():.2f} CPU s per 10M-iteration loop"
    )
