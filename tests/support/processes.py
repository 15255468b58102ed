"""Warden as separate processes: a free port, their environment, starting, stopping, serving.

For a test or a benchmark that runs `warden worker` / `warden edge` (or any other server) as
an operator does, in processes of their own. Each is started in a session of its own, with
its output in a log file, and stopped by the id it was started with: first SIGTERM (a
graceful stop), then SIGKILL to its whole group if it outlives the grace.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from tests.support.infra import Urls
from tests.support.waiting import came_true

# The `warden` command of the environment this process runs in (uv's .venv).
WARDEN = Path(sys.executable).with_name("warden")
SERVING_WITHIN = 60.0  # seconds; a process imports for seconds on a busy machine


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def warden_env(urls: Urls, **settings: str) -> dict[str, str]:
    """This process's environment, pointed at the services in `urls`, then `settings`.

    `settings` are WARDEN_* names and win over both.
    """
    return (
        dict(os.environ)
        | {
            "WARDEN_DATABASE_URL": urls.database,
            "WARDEN_AMQP_URL": urls.amqp,
            "WARDEN_REDIS_URL": urls.redis,
        }
        | settings
    )


@dataclass
class Process:
    """A subprocess of ours: its name, its id, and the log its output goes to."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @classmethod
    def spawn(
        cls, name: str, argv: list[str], env: dict[str, str], log: Path, cwd: Path | None = None
    ) -> Process:
        """Start `argv` in a session of its own, stdout and stderr appended to `log`."""
        with log.open("ab") as out:
            popen = subprocess.Popen(
                argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        return cls(name, popen, log)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def exited(self) -> bool:
        return self.popen.poll() is not None

    def stop(self, grace: float = 20) -> None:
        """SIGTERM, then SIGKILL to its group if it is still running after `grace` seconds."""
        if self.exited:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(grace)
        except subprocess.TimeoutExpired:
            # It started a session of its own, so its group id is its own pid.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            self.popen.wait(5)

    def tail(self, lines: int = 20) -> str:
        """The last lines of its log (all processes sharing the log, if several do)."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


async def until_serving(
    url: str, process: Process | None = None, within: float = SERVING_WITHIN
) -> None:
    """Until GET `url` answers 200; RuntimeError at once if `process` exits, or after `within` s."""
    timeout = aiohttp.ClientTimeout(total=within)
    async with aiohttp.ClientSession(timeout=timeout) as http:

        async def answers() -> bool:
            if process is not None and process.exited:
                raise RuntimeError(f"{process.name} exited:\n{process.tail()}")
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                async with http.get(url) as response:
                    return response.status == 200
            return False

        if not await came_true(answers, within, interval=0.2):
            tail = f":\n{process.tail()}" if process is not None else ""
            raise RuntimeError(f"{url} not ready within {within} s{tail}")
