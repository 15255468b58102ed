"""Deployed as shipped, Warden never signs with the secret printed in its source.

The image defaults to `production` (which refuses to start without secrets of its own);
docker-compose.yml runs `dev` with secrets of its own; the built-in dev secret listens on
loopback only, and every start with it says so in a warning. The `warden` command runs as an
operator runs it, in a subprocess; the Dockerfile cannot be built here (no Docker engine), so
its runtime environment is read from the file.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from tests.support.processes import free_port
from warden.cli import refuse_a_public_dev_secret
from warden.settings import DEV_JWT_SECRET, MIN_PRODUCTION_SECRET_BYTES, Settings, is_loopback

ROOT = Path(__file__).resolve().parents[2]
WARDEN = str(Path(sys.executable).parent / "warden")
CLOSED_PORT_AMQP = "amqp://guest:guest@127.0.0.1:1/"  # the edge starts without its broker
DEV_SECRET_WARNING = "the built-in dev JWT secret is in use"
REFUSAL = "refusing to listen on"
WAIT = 60.0  # generous: a process imports for seconds on a busy machine
WARDEN_SERVICES = ("migrate", "worker", "edge")


def environment(**warden: str) -> dict[str, str]:
    """This process's environment without any WARDEN_* setting, plus `warden`'s."""
    plain = {k: v for k, v in os.environ.items() if not k.startswith("WARDEN_")}
    return plain | {"WARDEN_LOG_FORMAT": "console"} | warden


async def warden_exits(tmp_path: Path, command: str, env: dict[str, str]) -> tuple[int, str]:
    """Run `warden <command>` (in a directory without a .env) to its exit; code and output."""
    process = await asyncio.create_subprocess_exec(
        WARDEN,
        command,
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), WAIT)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, out.decode()


async def edge_until_listening(tmp_path: Path, env: dict[str, str]) -> str:
    """Start `warden edge`, wait for it to listen, stop it with SIGTERM; its output."""
    process = await asyncio.create_subprocess_exec(
        WARDEN,
        "edge",
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(WAIT):
            while not lines or "edge listening" not in lines[-1]:
                line = (await process.stdout.readline()).decode()
                assert line, "the edge exited before listening:\n" + "".join(lines)
                lines.append(line)
        process.send_signal(signal.SIGTERM)
        rest, _ = await asyncio.wait_for(process.communicate(), WAIT)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, "".join(lines)
    return "".join(lines) + rest.decode()


# --- the rule ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("::ffff:127.0.0.1", True),
        ("localhost", True),
        ("LocalHost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        ("10.0.0.5", False),
        ("warden.example.com", False),
        ("localhost.example.com", False),
    ],
)
def test_only_a_loopback_address_or_localhost_counts_as_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("command", "metrics_port", "refused"),
    [("edge", 9100, True), ("run", 0, True), ("worker", 9100, True), ("worker", 0, False)],
)
def test_a_command_that_listens_beyond_loopback_with_the_dev_secret_is_refused(
    command: str, metrics_port: int, refused: bool
) -> None:
    public = Settings(_env_file=None, http_host="0.0.0.0", metrics_port=metrics_port)  # type: ignore[call-arg]
    assert public.dev_secret_in_use
    if refused:
        with pytest.raises(SystemExit) as exited:
            refuse_a_public_dev_secret(command, public)
        assert exited.value.code == 2
    else:
        refuse_a_public_dev_secret(command, public)  # nothing to refuse: it opens no port
    own_secret = public.model_copy(update={"jwt_secret": Settings(jwt_secret="s" * 32).jwt_secret})  # type: ignore[arg-type]
    refuse_a_public_dev_secret(command, own_secret)
    refuse_a_public_dev_secret("migrate", public)


# --- the `warden` command ---------------------------------------------------------------------


@pytest.mark.parametrize("command", ["edge", "worker"])
async def test_warden_with_the_dev_secret_refuses_a_public_host_in_one_line(
    tmp_path: Path, command: str
) -> None:
    env = environment(
        WARDEN_HTTP_HOST="0.0.0.0",
        WARDEN_HTTP_PORT=str(free_port()),
        WARDEN_METRICS_PORT=str(free_port()),
        WARDEN_AMQP_URL=CLOSED_PORT_AMQP,
    )
    code, out = await warden_exits(tmp_path, command, env)
    assert code == 2, out
    lines = out.strip().splitlines()
    assert len(lines) == 1, out
    assert lines[0].startswith(f"warden {command}: {REFUSAL} '0.0.0.0'")
    assert "WARDEN_JWT_SECRET" in lines[0]
    assert DEV_JWT_SECRET not in out


async def test_the_edge_with_the_dev_secret_on_loopback_starts_and_warns(tmp_path: Path) -> None:
    env = environment(
        WARDEN_HTTP_HOST="127.0.0.1",
        WARDEN_HTTP_PORT=str(free_port()),
        WARDEN_AMQP_URL=CLOSED_PORT_AMQP,
    )
    out = await edge_until_listening(tmp_path, env)
    warnings = [line for line in out.splitlines() if DEV_SECRET_WARNING in line]
    assert len(warnings) == 1, out
    assert "warning" in warnings[0]
    assert DEV_JWT_SECRET not in out


async def test_the_edge_with_a_secret_of_its_own_listens_anywhere_without_the_warning(
    tmp_path: Path,
) -> None:
    env = environment(
        WARDEN_HTTP_HOST="0.0.0.0",
        WARDEN_HTTP_PORT=str(free_port()),
        WARDEN_AMQP_URL=CLOSED_PORT_AMQP,
        WARDEN_JWT_SECRET="an operator's own secret, 32 bytes or more",
    )
    out = await edge_until_listening(tmp_path, env)
    assert DEV_SECRET_WARNING not in out
    assert REFUSAL not in out


# --- the image and compose, as shipped --------------------------------------------------------


def image_environment() -> dict[str, str]:
    """The ENV of the Dockerfile's last stage (the image that runs), continuations joined."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    runtime = re.split(r"^FROM\s", text, flags=re.MULTILINE)[-1]
    env: dict[str, str] = {}
    for line in runtime.splitlines():
        if line.startswith("ENV "):
            env |= dict(pair.split("=", 1) for pair in line[4:].split())
    return env


async def test_the_image_defaults_to_production_and_will_not_start_without_its_own_secret(
    tmp_path: Path,
) -> None:
    image = image_environment()
    assert image["WARDEN_ENV"] == "production"
    warden = {k: v for k, v in image.items() if k.startswith("WARDEN_")}
    env = environment(**warden | {"WARDEN_HTTP_PORT": str(free_port())})
    code, out = await warden_exits(tmp_path, "edge", env)
    assert code == 2, out
    assert "invalid setting" in out
    assert "edge listening" not in out


def compose_environment(service: str) -> dict[str, str]:
    """A compose service's environment with every `${VAR:-default}` at its default."""
    with (ROOT / "docker-compose.yml").open() as fh:
        compose = YAML(typ="safe", pure=True).load(fh)
    env = compose["services"][service]["environment"]

    def default(value: object) -> str:
        return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(value))

    return {k: default(v) for k, v in env.items() if v is not None}


@pytest.mark.parametrize("service", WARDEN_SERVICES)
def test_compose_runs_dev_with_secrets_of_its_own(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = compose_environment(service)
    assert env.get("WARDEN_ENV") == "dev"
    assert "WARDEN_JWT_SECRET" in env, "left unset, the built-in dev secret would sign"
    assert "WARDEN_KEY_ENCRYPTION_KEY" in env
    assert env["WARDEN_JWT_SECRET"] != DEV_JWT_SECRET
    assert len(env["WARDEN_JWT_SECRET"].encode()) >= MIN_PRODUCTION_SECRET_BYTES
    assert len(env["WARDEN_KEY_ENCRYPTION_KEY"].encode()) >= MIN_PRODUCTION_SECRET_BYTES
    for name in [n for n in os.environ if n.startswith("WARDEN_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert not settings.dev_secret_in_use
    refuse_a_public_dev_secret(service, settings.model_copy(update={"http_host": "0.0.0.0"}))


def test_compose_publishes_the_edge_on_the_hosts_loopback_only() -> None:
    with (ROOT / "docker-compose.yml").open() as fh:
        compose = YAML(typ="safe", pure=True).load(fh)
    published = [str(p) for s in compose["services"].values() for p in s.get("ports", [])]
    assert published
    assert all(p.startswith("127.0.0.1:") for p in published), published
