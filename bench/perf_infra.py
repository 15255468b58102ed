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
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import quote, urlsplit, urlunsplit

import aiohttp
import asyncpg
import bcrypt
import redis

ROOT = Path(__file__).resolve().parent.parent
WARDEN = ROOT / ".venv" / "bin" / "warden"
PYTHON = ROOT / ".venv" / "bin" / "python"
PEER_DIR = Path(os.environ.get("PEER_DIR", ROOT.parent / "shared" / "peer-fastapi-users"))
PEER_VENV = Path(os.environ.get("PEER_VENV", "/tmp/peer-venv"))

BENCH_DB = "warden_bench_perf"
PEER_DB = "peer_bench_perf"
VHOST = "warden_bench_perf"
PASSWORD = "correct horse battery"
BCRYPT_ROUNDS = 12


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


def admin_dsn(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme="postgresql", path="/postgres"))


def asyncpg_dsn(url: str) -> str:
    return urlunsplit(urlsplit(url)._replace(scheme="postgresql"))


async def drop_database(base_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn(base_url), timeout=10)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def rabbitmqctl(*args: str, check: bool = True) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=check, capture_output=True, timeout=60)


def claim_redis_db(redis_url: str) -> str:
    """An empty Redis db (15 down to 1), claimed with a key so a test session skips it."""
    parts = urlsplit(redis_url)
    for db in range(15, 0, -1):
        url = urlunsplit(parts._replace(path=f"/{db}"))
        client = redis.Redis.from_url(url)
        try:
            if client.dbsize() == 0 and client.set("warden-bench-claim", uuid.uuid4().hex, nx=True):
                return url
        finally:
            client.close()
    raise RuntimeError("no empty Redis database (1-15) for the benchmark")


def flush_redis_db(url: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


@dataclass
class Proc:
    """A subprocess of ours: its id, and where its output goes."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self, grace: float = 20) -> None:
        if self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(grace)
        except subprocess.TimeoutExpired:
            # Our process started its own session, so its group id is its own pid.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            self.popen.wait(5)

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


def peak_rss_mib(pids: list[int]) -> float:
    """Sum of VmHWM (peak resident set) of `pids`, in MiB."""
    total_kib = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total_kib += int(line.split()[1])
    return total_kib / 1024


@dataclass
class Stack:
    """What the benchmark made; `close()` undoes all of it."""

    base_database: str
    base_amqp: str
    base_redis: str
    workdir: Path
    procs: list[Proc] = field(default_factory=list)
    redis_url: str | None = None
    vhost_made: bool = False
    databases: list[str] = field(default_factory=list)
    _lock: IO[bytes] | None = None

    @property
    def database_url(self) -> str:
        return with_database(self.base_database, BENCH_DB)

    @property
    def peer_database_url(self) -> str:
        return with_database(self.base_database, PEER_DB)

    @property
    def amqp_url(self) -> str:
        parts = urlsplit(self.base_amqp)
        return urlunsplit(parts._replace(path="/" + quote(VHOST, safe="")))

    # -- resources -------------------------------------------------------------------------

    async def prepare(self) -> None:
        self._lock = _exclusive(self.workdir.parent / "warden-bench-perf.lock")
        for name in (BENCH_DB, PEER_DB):
            await drop_database(self.base_database, name)
            self.databases.append(name)
        rabbitmqctl("delete_vhost", VHOST, check=False)
        rabbitmqctl("add_vhost", VHOST)
        self.vhost_made = True
        user = urlsplit(self.base_amqp).username or "guest"
        rabbitmqctl("set_permissions", "-p", VHOST, user, ".*", ".*", ".*")
        self.redis_url = claim_redis_db(self.base_redis)

    def warden_env(self, **extra: str) -> dict[str, str]:
        assert self.redis_url is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith("WARDEN_")}
        env |= {
            "WARDEN_DATABASE_URL": self.database_url,
            "WARDEN_AMQP_URL": self.amqp_url,
            "WARDEN_REDIS_URL": self.redis_url,
            "WARDEN_ENV": "dev",
            "WARDEN_BCRYPT_ROUNDS": str(BCRYPT_ROUNDS),
            "WARDEN_LOG_LEVEL": "warning",
            "WARDEN_LOG_FORMAT": "json",
            "WARDEN_METRICS_PORT": "0",
        }
        return env | extra

    def spawn(self, name: str, argv: list[str], env: dict[str, str], cwd: Path = ROOT) -> Proc:
        log = self.workdir / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def migrate(self) -> None:
        result = subprocess.run(
            [str(WARDEN), "migrate"], env=self.warden_env(), cwd=ROOT,
            capture_output=True, timeout=120, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"warden migrate failed:\n{result.stderr.decode()[-2000:]}")

    def start_warden(self, port: int, workers: int, extra: dict[str, str]) -> list[Proc]:
        env = self.warden_env(WARDEN_HTTP_PORT=str(port), **extra)
        procs = [self.spawn(f"worker{i}", [str(WARDEN), "worker"], env) for i in range(workers)]
        procs.append(self.spawn("edge", [str(WARDEN), "edge"], env))
        return procs

    def start_inprocess(self, port: int, extra: dict[str, str]) -> Proc:
        env = self.warden_env(WARDEN_HTTP_PORT=str(port), **extra)
        return self.spawn("inprocess", [str(PYTHON), "-m", "bench.perf_inproc"], env)

    def start_peer(self, port: int, workers: int) -> Proc:
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
        if self.vhost_made:
            rabbitmqctl("delete_vhost", VHOST, check=False)
            self.vhost_made = False
        if self.redis_url is not None:
            flush_redis_db(self.redis_url)
            self.redis_url = None
        for name in self.databases:
            with contextlib.suppress(Exception):
                await drop_database(self.base_database, name)
        self.databases.clear()
        self._lock.close()
        self._lock = None


def _exclusive(path: Path) -> IO[bytes]:
    """A lock held for the whole run: two runs would drop each other's database and vhost."""
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


async def wait_http(url: str, proc: Proc, within: float = 60) -> None:
    """Until `url` answers 200; fails early if the process died."""
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if proc.popen.poll() is not None:
                raise RuntimeError(f"{proc.name} exited:\n{proc.tail()}")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with http.get(url) as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} not ready within {within} s:\n{proc.tail()}")


# -- seeding --------------------------------------------------------------------------------


def one_hash() -> str:
    """One cost-12 hash of the common password: every seeded user shares it."""
    return bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(BCRYPT_ROUNDS)).decode()


async def seed_warden(database_url: str, hashed: str, count: int) -> list[str]:
    conn = await asyncpg.connect(asyncpg_dsn(database_url), timeout=10)
    try:
        names = [f"bench_u{i}" for i in range(count)]
        await conn.executemany(
            "INSERT INTO users (email, username, hashed_password) VALUES ($1, $2, $3)",
            [(f"{n}@example.com", n, hashed) for n in names],
        )
    finally:
        await conn.close()
    return names


async def seed_peer(database_url: str, hashed: str, count: int) -> list[str]:
    conn = await asyncpg.connect(asyncpg_dsn(database_url), timeout=10)
    try:
        emails = [f"bench_u{i}@example.com" for i in range(count)]
        await conn.executemany(
            'INSERT INTO "user" (id, email, hashed_password, is_active, is_superuser, is_verified)'
            " VALUES ($1, $2, $3, true, false, false)",
            [(uuid.uuid4(), e, hashed) for e in emails],
        )
    finally:
        await conn.close()
    return emails


async def log_in_all(url: str, logins: list[str]) -> list[str]:
    """An access token per login, through the service's own login route (form body)."""
    sem = asyncio.Semaphore(8)

    async def one(http: aiohttp.ClientSession, login: str) -> str:
        async with sem:
            form = {"grant_type": "password", "username": login, "password": PASSWORD}
            async with http.post(url, data=form) as response:
                if response.status != 200:
                    raise RuntimeError(f"login {login} at {url}: {response.status}")
                return str((await response.json())["access_token"])

    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        return list(await asyncio.gather(*(one(http, login) for login in logins)))


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time consumed so far by `pids` (those still alive)."""
    ticks = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def pids_of(command: str) -> list[int]:
    """Processes whose command line contains `command` (the shared services: broker, stores)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if command in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode():
                    found.append(int(entry.name))
    return found
