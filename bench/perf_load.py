"""Load: wrk with Lua scripts (a token per request, form logins), and the raw bcrypt ceiling."""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import bcrypt

from bench.perf_seed import BCRYPT_ROUNDS, PASSWORD

# Requests are formatted once per thread in init(); request() only picks the next one.
# done() prints one JSON line: wrk's latencies are in microseconds.
LUA = """
local reqs = {}
local n = 0
function init(args)
  local method, path, kind = args[1], args[2], args[3]
  for line in io.lines(args[4]) do
    if kind == "bearer" then
      table.insert(reqs, wrk.format(method, path, {["Authorization"] = "Bearer " .. line}))
    else
      table.insert(reqs, wrk.format(method, path,
        {["Content-Type"] = "application/x-www-form-urlencoded"}, line))
    end
  end
  n = math.random(#reqs)
end
function request()
  n = n % #reqs + 1
  return reqs[n]
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\nRESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, ' ..
    '"max_us": %d, "connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


@dataclass(frozen=True)
class Load:
    """One wrk run's outcome."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class Target:
    """What one wrk drives: the method and URL, and one request per line of `lines`."""

    method: str
    url: str
    kind: str  # "bearer": lines are tokens; "form": lines are form bodies
    lines: list[str]


def bearer(url: str, tokens: list[str]) -> Target:
    return Target("GET", url, "bearer", tokens)


def form_logins(url: str, logins: list[str]) -> Target:
    bodies = [
        urlencode({"grant_type": "password", "username": u, "password": PASSWORD}) for u in logins
    ]
    return Target("POST", url, "form", bodies)


class Wrk:
    """Runs wrk against targets, with the script and request lists in `workdir`."""

    def __init__(self, workdir: Path) -> None:
        self._dir = workdir
        self._script = workdir / "bench.lua"
        self._script.write_text(LUA)
        self._n = 0

    async def run(self, target: Target, connections: int, seconds: int, threads: int = 1) -> Load:
        self._n += 1
        lines = self._dir / f"lines{self._n}.txt"
        lines.write_text("\n".join(target.lines) + "\n")
        parts = urlsplit(target.url)
        argv = [
            "wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "30s",
            "-s", str(self._script), f"{parts.scheme}://{parts.netloc}", "--",
            target.method, parts.path, target.kind, str(lines),
        ]  # fmt: skip
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        out, _ = await proc.communicate()
        text = out.decode(errors="replace")
        marker = text.rfind("RESULT ")
        if proc.returncode != 0 or marker < 0:
            raise RuntimeError(f"wrk failed ({proc.returncode}):\n{text[-2000:]}")
        r = json.loads(text[marker + len("RESULT ") :].splitlines()[0])
        errors = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]
        return Load(
            requests=r["requests"],
            seconds=r["duration_us"] / 1e6,
            p50_ms=r["p50_us"] / 1000,
            p99_ms=r["p99_us"] / 1000,
            max_ms=r["max_us"] / 1000,
            errors=errors,
        )


def bcrypt_ceiling(seconds: float = 5.0, threads: int = 2) -> float:
    """checkpw calls per second of `threads` threads at cost 12 (bcrypt releases the GIL).

    Each thread runs whole calls until the deadline; the rate is calls over the time until
    the last call ended, so no partial hash is lost at the edges.
    """
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(BCRYPT_ROUNDS))
    counts = [0] * threads
    start = time.perf_counter()
    deadline = start + seconds

    def spin(i: int) -> None:
        while time.perf_counter() < deadline:
            bcrypt.checkpw(PASSWORD.encode(), hashed)
            counts[i] += 1

    workers = [threading.Thread(target=spin, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(counts) / (time.perf_counter() - start)
