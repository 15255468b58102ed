"""The benchmark's own resources and processes: database, vhost, Redis db, edge, workers, peer.

Everything made here is undone by `Stack.close()`: processes are stopped by the ids we
started them with, the vhost deleted, the Redis db flushed, the databases dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from bench.perf_seed import BCRYPT_ROUNDS
from storage.db import drop_database
from tests.support.infra import Urls, own_redis_db, own_vhost, with_database
from tests.support.processes import WARDEN, Process, warden_env

ROOT = Path(__file__).resolve().parent.parent
PEER_DIR = Path(os.environ.get("PEER_DIR", ROOT.parent / "shared" / "peer-fastapi-users"))
PEER_VENV = Path(os.environ.get("PEER_VENV", "/tmp/peer-venv"))

BENCH_DB = "warden_bench_perf"
PEER_DB = "peer_bench_perf"
# Warden as measured; any other WARDEN_* of our environment (not a URL) reaches it too.
SETTINGS = {
    "WARDEN_ENV": "dev",
    "WARDEN_BCRYPT_ROUNDS": str(BCRYPT_ROUNDS),
    "WARDEN_LOG_LEVEL": "warning",
    "WARDEN_LOG_FORMAT": "json",
    "WARDEN_METRICS_PORT": "0",
}
URL_SETTINGS = ("WARDEN_DATABASE_URL", "WARDEN_AMQP_URL", "WARDEN_REDIS_URL")


@dataclass
class Stack:
    """What the benchmark made; `close()` undoes all of it."""

    base: Urls
    workdir: Path
    procs: list[Process] = field(default_factory=list)
    urls: Urls | None = None  # the benchmark's own database, vhost and Redis db
    databases: list[str] = field(default_factory=list)
    _made: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    _lock: IO[bytes] | None = None

    @property
    def peer_database_url(self) -> str:
        return with_database(self.base.database, PEER_DB)

    # -- resources -------------------------------------------------------------------------

    async def prepare(self) -> None:
        self._lock = _exclusive(self.workdir.parent / "warden-bench-perf.lock")
        for name in (BENCH_DB, PEER_DB):
            url = with_database(self.base.database, name)
            await drop_database(url)
            self.databases.append(url)
        amqp = self._made.enter_context(own_vhost(self.base.amqp, "warden_bench_perf"))
        redis = self._made.enter_context(own_redis_db(self.base.redis))
        self.urls = Urls(with_database(self.base.database, BENCH_DB), amqp, redis)

    def warden_env(self, **extra: str) -> dict[str, str]:
        assert self.urls is not None
        tuning = {
            k: v for k, v in os.environ.items() if k.startswith("WARDEN_") and k not in URL_SETTINGS
        }
        return warden_env(self.urls, **SETTINGS | tuning | extra)

    def spawn(self, name: str, argv: list[str], env: dict[str, str], cwd: Path = ROOT) -> Process:
        proc = Process.spawn(name, argv, env, self.workdir / f"{name}.log", cwd)
        self.procs.append(proc)
        return proc

    def migrate(self) -> None:
        result = subprocess.run(
            [str(WARDEN), "migrate"], env=self.warden_env(), cwd=ROOT,
            capture_output=True, timeout=120, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"warden migrate failed:\n{result.stderr.decode()[-2000:]}")

    def start_warden(self, port: int, workers: int) -> list[Process]:
        env = self.warden_env(WARDEN_HTTP_PORT=str(port))
        procs = [self.spawn(f"worker{i}", [str(WARDEN), "worker"], env) for i in range(workers)]
        procs.append(self.spawn("edge", [str(WARDEN), "edge"], env))
        return procs

    def start_inprocess(self, port: int) -> Process:
        env = self.warden_env(WARDEN_HTTP_PORT=str(port))
        return self.spawn("inprocess", [sys.executable, "-m", "bench.perf_inproc"], env)

    def start_peer(self, port: int, workers: int) -> Process:
        if not (PEER_VENV / "bin" / "uvicorn").exists():
            print(f"setting up the peer's venv in {PEER_VENV} ...", file=sys.stderr)
            subprocess.run(
                [str(PEER_DIR / "setup.sh")], env=os.environ | {"PEER_VENV": str(PEER_VENV)},
                check=True, capture_output=True, timeout=600,
            )  # fmt: skip
        env = os.environ | {
            "PEER_VENV": str(PEER_VENV),
            "PEER_DATABASE_URL": self.peer_database_url,
            "PEER_TRUNCATE": "1",
        }
        return self.spawn(
            "peer", [str(PEER_DIR / "serve.sh"), str(port), str(workers)], env, cwd=PEER_DIR
        )

    async def close(self) -> None:
        if self._lock is None:
            return  # never prepared (another run holds the lock): nothing of ours to undo
        for proc in reversed(self.procs):
            await asyncio.to_thread(proc.stop)
        self.procs.clear()
        self._made.close()  # the Redis db flushed, the vhost deleted
        self.urls = None
        for url in self.databases:
            with contextlib.suppress(Exception):
                await drop_database(url)
        self.databases.clear()
        self._lock.close()
        self._lock = None


def _exclusive(path: Path) -> IO[bytes]:
    """A lock held for the whole run: two runs would drop each other's databases."""
    handle = path.open("ab")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise SystemExit(f"another bench.perf run holds {path}; wait for it to finish") from None
    return handle


def require_tools() -> None:
    missing = [t for t in ("wrk", "rabbitmqctl") if shutil.which(t) is None]
    if "wrk" in missing:
        raise SystemExit(
            "bench.perf needs wrk (the HTTP load generator): "
            "`sudo apt-get install -y wrk` (Debian/Ubuntu) or `brew install wrk` (macOS)"
        )
    if missing:
        raise SystemExit("bench.perf needs rabbitmqctl on this machine (a local RabbitMQ)")
    if not WARDEN.exists():
        raise SystemExit(f"no {WARDEN}: run `uv sync` first")
