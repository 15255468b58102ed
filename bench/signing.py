"""EdDSA against HS256 access tokens, in one sitting: `uv run python -m bench.signing`.

a. GET /api/v1/users/me through the edge (edge -> RabbitMQ -> worker -> Redis + Postgres),
   32 connections, with tokens signed by the key store's Ed25519 key (the default) and, in
   alternating rounds (EdDSA first in odd rounds, HS256 first in even ones, so a host whose
   speed drifts favours neither) on the same database, vhost and Redis db, by
   WARDEN_JWT_SECRET (WARDEN_JWT_ALGORITHM=HS256): a fresh `warden worker` and `warden edge`
   per round, the users logged in again (their hashes at bcrypt cost 4: the logins only make
   the tokens), 2 s of warm-up, then the measurement.
b. The price of one token in-process (no I/O): sign, and verify a token never seen before
   (the worker remembers the last 4,096 it verified, so a) mostly pays only the expiry and
   kid checks), for EdDSA, ES256 and HS256.

Prints one table. Everything started is stopped, everything made is dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import bcrypt

from bench.perf_load import Load, Wrk, bearer
from bench.perf_seed import PASSWORD, log_in_all, seed_warden
from bench.perf_stack import Stack, require_tools
from bench.perf_table import machine
from storage.signing_keys import StoredKey
from tests.support.infra import base_urls
from tests.support.processes import WARDEN, free_port, until_serving
from warden.security import JwtTokenIssuer, SharedSecret
from warden.signing import KeyRing, make_key

ME = "/api/v1/users/me"
ALGORITHMS = ("EdDSA", "HS256")


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.signing", description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=4, help="rounds of each algorithm (4)")
    p.add_argument("--seconds", type=int, default=10, help="duration of each measurement (10)")
    p.add_argument("--connections", type=int, default=32, help="/users/me connections (32)")
    p.add_argument("--users", type=int, default=32, help="users seeded (32)")
    return p.parse_args()


async def through_the_edge(args: argparse.Namespace) -> dict[str, list[Load]]:
    require_tools()
    workdir = Path(tempfile.mkdtemp(prefix="warden-bench-signing-"))
    loads: dict[str, list[Load]] = {a: [] for a in ALGORITHMS}
    with base_urls() as base:
        stack = Stack(base, workdir)
        try:
            await stack.prepare()
            stack.migrate()
            assert stack.urls is not None
            # Cost 4: the logins only make the tokens; what is measured is /users/me.
            cheap = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
            names = await seed_warden(stack.urls.database, cheap, args.users)
            wrk = Wrk(workdir)
            for n in range(args.rounds):
                # ABBA: a host whose speed drifts during the sitting favours neither.
                for algorithm in ALGORITHMS if n % 2 == 0 else ALGORITHMS[::-1]:
                    _say(f"round {n + 1}: {algorithm}")
                    loads[algorithm].append(await _round(stack, wrk, names, algorithm, args))
        finally:
            await asyncio.shield(stack.close())
    return loads


async def _round(
    stack: Stack, wrk: Wrk, names: list[str], algorithm: str, args: argparse.Namespace
) -> Load:
    port = free_port()
    env = stack.warden_env(WARDEN_HTTP_PORT=str(port), WARDEN_JWT_ALGORITHM=algorithm)
    worker = stack.spawn(f"worker-{algorithm}", [str(WARDEN), "worker"], env)
    edge = stack.spawn(f"edge-{algorithm}", [str(WARDEN), "edge"], env)
    try:
        url = f"http://127.0.0.1:{port}"
        await until_serving(f"{url}/health/ready", edge)
        tokens = await log_in_all(f"{url}/api/v1/auth/login", names)
        me = bearer(url + ME, tokens)
        await wrk.run(me, args.connections, 2, threads=2)
        return await wrk.run(me, args.connections, args.seconds, threads=2)
    finally:
        for proc in (edge, worker):
            await asyncio.to_thread(proc.stop)
            stack.procs.remove(proc)


def per_token(algorithm: str, count: int = 2000) -> tuple[float, float]:
    """Microseconds to sign one access token, and to verify one never verified before."""
    if algorithm.startswith("HS"):
        tokens = JwtTokenIssuer.shared("s" * 32, "warden", 1800, 604800, algorithm)
    else:
        new, now = make_key(algorithm), datetime.now(UTC)
        ring = KeyRing()
        ring.load(
            [StoredKey(new.kid, algorithm, "active", new.public_jwk, now, now, None, None,
                       new.private_der)]
        )  # fmt: skip
        tokens = JwtTokenIssuer(ring, SharedSecret("r" * 32, "HS256"), "warden", 1800, 604800)
    now = datetime.now(UTC)
    started = time.perf_counter()
    made = [tokens.issue_access(i + 1, "sid", now) for i in range(count)]
    signed = time.perf_counter() - started
    started = time.perf_counter()
    for token in made:
        tokens.read_access(token)
    verified = time.perf_counter() - started
    return signed / count * 1e6, verified / count * 1e6


def table(loads: dict[str, list[Load]], costs: dict[str, tuple[float, float]]) -> str:
    ed, hs = loads["EdDSA"], loads["HS256"]
    ed_rps, hs_rps = statistics.mean(x.rps for x in ed), statistics.mean(x.rps for x in hs)
    ratio = ed_rps / hs_rps if hs_rps else 0.0
    lines = [
        "| measure | EdDSA | HS256 | EdDSA / HS256 |",
        "|---|---|---|---|",
    ]
    for i, (e, h) in enumerate(zip(ed, hs, strict=True), 1):
        lines.append(
            f"| a. round {i}: GET /users/me through the edge | {_load(e)} | {_load(h)} |"
            f" {e.rps / h.rps:.3f} |"
        )
    verdict = "met" if ratio >= 0.95 else "NOT met"
    lines.append(
        f"| a. mean of the rounds | {ed_rps:,.0f} req/s | {hs_rps:,.0f} req/s |"
        f" **{ratio:.3f}** (target >= 0.95: **{verdict}**) |"
    )
    for algorithm, (sign, verify) in costs.items():
        lines.append(
            f"| b. {algorithm}: sign / verify one new token, in-process |"
            f" {sign:.1f} µs / {verify:.1f} µs | | |"
        )
    return "\n".join(lines)


def _load(load: Load) -> str:
    errors = f", {load.errors} errors" if load.errors else ""
    return f"{load.rps:,.0f} req/s, p50 {load.p50_ms:.1f} ms, p99 {load.p99_ms:.1f} ms{errors}"


def _say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def main() -> None:
    args = _args()
    about = machine()
    costs = {a: per_token(a) for a in ("EdDSA", "ES256", "HS256")}
    try:
        loads = asyncio.run(through_the_edge(args))
    except KeyboardInterrupt:
        return
    print(f"\n{about}\n")
    print(table(loads, costs))


if __name__ == "__main__":
    main()
