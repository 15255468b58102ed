"""The figures of one sitting and the one table they print as."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.perf_load import Load

# Issue 19's targets (v2) for this benchmark.
VS_PEER = 2.0  # a. /users/me throughput at 32 connections, Warden / peer, at least
ME_P99_MS = 50  # a. ... with p99 at most
CPU_VS_PEER = 0.5  # CPU per /users/me in all, Warden / peer, at most
CPU_VS_INPROCESS = 1.5  # CPU per /users/me in all, Warden / the in-process route, at most
LOGINS = 0.97  # c. logins at 8 connections, solo, of the bcrypt ceiling, at least
FLOOD_ME = 0.60  # d. /users/me under the login flood, of solo, at least
FLOOD_P99_MS = 150  # d. ... with p99 at most
FLOOD_SUM = 0.95  # d. /users/me's share of solo + the logins' share of the ceiling, at least
RSS_MIB = 200  # e. (v1, kept) peak RSS of edge + workers, at most
NOT_COUNTED = ("wrk",)  # the load generator: shown apart, never part of a side's CPU


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
    inprocess_cpu_us: dict[str, float] = field(default_factory=dict)  # as Side.cpu_us

    @property
    def ceiling(self) -> float:
        return (self.ceiling_before + self.ceiling_after) / 2


def cpu_in_all(cpu_us: dict[str, float]) -> float | None:
    """CPU µs per request over every counted process (wrk apart); None if not measured."""
    counted = [v for k, v in cpu_us.items() if k not in NOT_COUNTED]
    return sum(counted) if counted else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _share(x: Load | None, of: float) -> float | None:
    return x.rps / of if x is not None and of else None


def figures(r: Results) -> dict[str, Any]:
    """The v2 figures and verdicts, as the table shows them and --json writes them.

    A verdict is None when its figures were not measured (--no-peer, --only-me).
    """
    w = r.warden
    cpu = {
        "warden": cpu_in_all(w.cpu_us),
        "peer": cpu_in_all(r.peer.cpu_us) if r.peer else None,
        "inprocess": cpu_in_all(r.inprocess_cpu_us),
    }
    vs_peer = _ratio(w.me.rps, r.peer.me.rps if r.peer else None)
    cpu_vs_peer = _ratio(cpu["warden"], cpu["peer"])
    cpu_vs_inproc = _ratio(cpu["warden"], cpu["inprocess"])
    login = _share(w.login, r.ceiling)
    flood_me, flood_login = _share(w.flood_me, w.me.rps), _share(w.flood_login, r.ceiling)
    shares = None if flood_me is None or flood_login is None else flood_me + flood_login

    def at_least(x: float | None, bound: float) -> bool | None:
        return None if x is None else x >= bound

    def at_most(x: float | None, bound: float) -> bool | None:
        return None if x is None else x <= bound

    return {
        "cpu_us_per_me_in_all": cpu,
        "me_vs_peer": vs_peer,
        "cpu_warden_vs_peer": cpu_vs_peer,
        "cpu_warden_vs_inprocess": cpu_vs_inproc,
        "logins_of_ceiling": login,
        "flood_me_of_solo": flood_me,
        "flood_logins_of_ceiling": flood_login,
        "flood_shares_sum": shares,
        "met": {
            "a_throughput_vs_peer": at_least(vs_peer, VS_PEER),
            "a_p99": at_most(w.me.p99_ms, ME_P99_MS),
            "cpu_warden_vs_peer": at_most(cpu_vs_peer, CPU_VS_PEER),
            "cpu_warden_vs_inprocess": at_most(cpu_vs_inproc, CPU_VS_INPROCESS),
            "c_logins": at_least(login, LOGINS),
            "d_flood_me": at_least(flood_me, FLOOD_ME),
            "d_flood_p99": at_most(w.flood_me.p99_ms if w.flood_me else None, FLOOD_P99_MS),
            "d_shares_sum": at_least(shares, FLOOD_SUM),
            "e_rss": at_most(w.rss_mib, RSS_MIB),
        },
    }


def _ok(*met: bool | None) -> str:
    return " / ".join("-" if m is None else "met" if m else "NOT met" for m in met)


def _x(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}x"


def _load(x: Load) -> str:
    errors = f", {x.errors} errors" if x.errors else ""
    return f"{x.rps:,.0f} req/s, p50 {x.p50_ms:.1f} ms, p99 {x.p99_ms:.1f} ms{errors}"


def _logins(x: Load | None, ceiling: float) -> str:
    if x is None:
        return "-"
    errors = f", {x.errors} errors" if x.errors else ""
    return f"{x.rps:.2f} logins/s = {x.rps / ceiling:.3f}x ceiling{errors}"


def _cpu(cpu_us: dict[str, float]) -> str:
    total = cpu_in_all(cpu_us)
    if total is None:
        return "-"
    apart = ", ".join(f"{k} {cpu_us[k]:,.0f}" for k in NOT_COUNTED if k in cpu_us)
    return f"{total:,.0f} µs" + (f" ({apart} not counted)" if apart else "")


def _side(s: Side, ceiling: float) -> dict[str, str]:
    flood, shares = "-", "-"
    if s.flood_me is not None:
        flood = f"{_load(s.flood_me)} = {100 * s.flood_me.rps / s.me.rps:.0f} % of solo"
    if s.flood_me is not None and s.flood_login is not None:
        me, logins = s.flood_me.rps / s.me.rps, s.flood_login.rps / ceiling
        shares = f"{me:.3f} + {logins:.3f} = {me + logins:.3f}"
    return {
        "a": _load(s.me),
        "a1": f"p50 {s.me_1.p50_ms:.2f} ms ({s.me_1.rps:,.0f} req/s)",
        "cpu": _cpu(s.cpu_us),
        "c": _logins(s.login, ceiling),
        "d": flood,
        "d2": _logins(s.flood_login, ceiling),
        "d3": shares,
        "e": f"{s.rss_mib:.0f} MiB ({s.processes} processes)",
    }


def table(r: Results) -> str:
    w, c, f = r.warden, r.ceiling, figures(r)
    met = f["met"]
    cols = _side(w, c)
    peer = _side(r.peer, c) if r.peer else dict.fromkeys(cols, "-")
    hop_p50 = w.me.p50_ms - r.inprocess.p50_ms
    hop_p50_1 = w.me_1.p50_ms - r.inprocess_1.p50_ms
    rows = [
        ("a. GET /users/me, 32 connections", cols["a"], peer["a"],
         f">= {VS_PEER}x peer: {_x(f['me_vs_peer'])}; p99 <= {ME_P99_MS} ms",
         _ok(met["a_throughput_vs_peer"], met["a_p99"])),
        ("a. the same, 1 connection", cols["a1"], peer["a1"], "", ""),
        ("CPU per /users/me at 32 connections, in all", cols["cpu"], peer["cpu"], "", ""),
        ("CPU per /users/me, in-process route, in all", _cpu(r.inprocess_cpu_us), "", "", ""),
        ("CPU per /users/me, Warden / peer", _x(f["cpu_warden_vs_peer"]), "",
         f"<= {CPU_VS_PEER}", _ok(met["cpu_warden_vs_peer"])),
        ("CPU per /users/me, Warden / in-process route", _x(f["cpu_warden_vs_inprocess"]), "",
         f"<= {CPU_VS_INPROCESS}", _ok(met["cpu_warden_vs_inprocess"])),
        ("b. in-process route (no broker), 32 connections", _load(r.inprocess), "", "", ""),
        ("b. in-process route, 1 connection", f"p50 {r.inprocess_1.p50_ms:.2f} ms", "", "", ""),
        ("b. broker hop: throughput via broker / in-process",
         f"{w.me.rps / r.inprocess.rps:.2f}x", "", "", ""),
        ("b. broker hop: p50 added at 32 connections / at 1",
         f"{hop_p50:+.2f} ms / {hop_p50_1:+.2f} ms", "", "", ""),
        ("c. bcrypt ceiling: 2 threads of checkpw, cost 12",
         f"{c:.2f}/s (before {r.ceiling_before:.2f}, after {r.ceiling_after:.2f})",
         "(the same)", "", ""),
        ("c. logins, 8 connections, solo", cols["c"], peer["c"], f">= {LOGINS}x ceiling",
         _ok(met["c_logins"])),
        ("d. /users/me while 8 connections flood logins", cols["d"], peer["d"],
         f">= {100 * FLOOD_ME:.0f} % of solo, p99 <= {FLOOD_P99_MS} ms",
         _ok(met["d_flood_me"], met["d_flood_p99"])),
        ("d. logins during that flood", cols["d2"], peer["d2"], "", ""),
        ("d. sum of the shares: /users/me of solo + logins of ceiling", cols["d3"], peer["d3"],
         f">= {FLOOD_SUM}", _ok(met["d_shares_sum"])),
        ("e. peak RSS (VmHWM), all processes", cols["e"], peer["e"],
         f"edge + workers <= {RSS_MIB} MiB", _ok(met["e_rss"])),
    ]  # fmt: skip
    head = ("measure", "Warden", "peer (fastapi-users)", "target", "Warden")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def cpu_lines(r: Results) -> str:
    """CPU time per solo /users/me request, by process: where the cycles go.

    "In all" in the table is the sum of these, wrk apart: Warden's edge, workers, RabbitMQ,
    Postgres and Redis; the peer's processes and Postgres (it uses no Redis); the in-process
    route's process, Postgres and Redis.
    """
    out = []
    sides = [("Warden", r.warden.cpu_us), ("in-process route", r.inprocess_cpu_us)]
    if r.peer is not None:
        sides.append(("peer", r.peer.cpu_us))
    for name, cpu_us in sides:
        if cpu_us:
            parts = ", ".join(f"{k} {v:,.0f}" for k, v in cpu_us.items())
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
