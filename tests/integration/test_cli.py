"""The `warden` command as an operator runs it."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from tests.conftest import PASSWORD, unique
from tests.support.amqp import AmqpCaller
from warden.settings import Settings

WARDEN = str(Path(sys.executable).parent / "warden")


async def warden(settings: Settings, *args: str, stdin: str = "", **env: str) -> tuple[int, str]:
    environment = (
        os.environ
        | {
            "WARDEN_DATABASE_URL": settings.database_url.get_secret_value(),
            "WARDEN_AMQP_URL": settings.amqp_url.get_secret_value(),
            "WARDEN_REDIS_URL": settings.redis_url.get_secret_value(),
            "WARDEN_BCRYPT_ROUNDS": "4",
            "WARDEN_LOG_FORMAT": "console",
        }
        | env
    )
    environment.pop("WARDEN_SUPERUSER_PASSWORD", None)
    environment |= env
    proc = await asyncio.create_subprocess_exec(
        WARDEN,
        *args,
        env=environment,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(stdin.encode()), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_create_superuser_makes_an_active_superuser_who_can_log_in(
    settings: Settings, database: str, amqp: AmqpCaller
) -> None:
    name = unique("root")
    code, out = await warden(
        settings,
        "create-superuser",
        "--email",
        f"{name}@example.com",
        "--username",
        name,
        WARDEN_SUPERUSER_PASSWORD=PASSWORD,
    )
    assert code == 0, out
    assert PASSWORD not in out
    login = await amqp.call("warden.auth.login", {"username": name, "password": PASSWORD})
    me = await amqp.call("warden.users.me", {}, token=login["data"]["access_token"])
    assert me["data"]["is_superuser"] is True
    assert me["data"]["is_active"] is True


async def test_create_superuser_reads_the_password_from_stdin(
    settings: Settings, database: str
) -> None:
    name = unique("root")
    code, out = await warden(
        settings,
        "create-superuser",
        "--email",
        f"{name}@example.com",
        "--username",
        name,
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert code == 0, out


async def test_create_superuser_with_a_taken_email_or_username_fails_clearly(
    settings: Settings, database: str
) -> None:
    name = unique("root")
    args = ("create-superuser", "--email", f"{name}@example.com", "--username", name)
    assert (await warden(settings, *args, WARDEN_SUPERUSER_PASSWORD=PASSWORD))[0] == 0
    code, out = await warden(settings, *args, WARDEN_SUPERUSER_PASSWORD=PASSWORD)
    assert code != 0
    assert "already exists" in out
    code, out = await warden(
        settings,
        "create-superuser",
        "--email",
        f"{unique()}@example.com",
        "--username",
        name.upper(),
        WARDEN_SUPERUSER_PASSWORD=PASSWORD,
    )
    assert code != 0
    assert "username already exists" in out


async def test_create_superuser_refuses_a_password_the_rules_refuse(
    settings: Settings, database: str
) -> None:
    code, out = await warden(
        settings,
        "create-superuser",
        "--email",
        f"{unique()}@example.com",
        "--username",
        unique(),
        WARDEN_SUPERUSER_PASSWORD="short",
    )
    assert code != 0
    assert "password" in out


async def test_production_without_a_long_secret_refuses_to_start_and_names_no_secret(
    settings: Settings,
) -> None:
    code, out = await warden(
        settings, "migrate", WARDEN_ENV="production", WARDEN_JWT_SECRET="too-short-secret"
    )
    assert code != 0
    assert "WARDEN_JWT_SECRET must be set to at least 32 bytes" in out
    assert "too-short-secret" not in out
