"""The `warden` command: migrate, migrate-queues, worker, edge, run, create-superuser, keys."""

from __future__ import annotations

import argparse
import asyncio
import gc
import getpass
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import structlog
from pydantic import ValidationError

from domain.errors import EmailTaken, UsernameTaken, ValidationFailed
from warden.settings import Settings, is_loopback

if TYPE_CHECKING:
    from aio_pika.abc import AbstractConnection

log = structlog.get_logger("warden")
T = TypeVar("T")
_ALEMBIC = threading.Lock()
ALEMBIC_INI = Path(__file__).resolve().parent.parent / "alembic.ini"


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        # Only the messages: pydantic would echo the inputs, secrets included.
        for error in exc.errors(include_input=False, include_url=False):
            where = ".".join(str(p) for p in error["loc"]) or "settings"
            print(f"warden: invalid setting {where}: {error['msg']}", file=sys.stderr)
        raise SystemExit(2) from None


def listens(command: str, settings: Settings) -> bool:
    """Whether `command` opens a port on WARDEN_HTTP_HOST (the edge, or a worker's metrics)."""
    return command in ("edge", "run") or (command == "worker" and settings.metrics_port != 0)


def refuse_a_public_dev_secret(command: str, settings: Settings) -> None:
    """The built-in dev secret listens on loopback only: beyond it anyone could forge tokens."""
    public = listens(command, settings) and not is_loopback(settings.http_host)
    if public and settings.dev_secret_in_use:
        print(
            f"warden {command}: refusing to listen on {settings.http_host!r} with the"
            " built-in dev JWT secret (anyone who has read the source can forge its"
            " tokens); set WARDEN_JWT_SECRET, or a loopback WARDEN_HTTP_HOST",
            file=sys.stderr,
        )
        raise SystemExit(2)


def warn_of_the_dev_secret(command: str, settings: Settings) -> None:
    if settings.dev_secret_in_use and command in ("worker", "edge", "run"):
        log.warning(
            "the built-in dev JWT secret is in use: anyone who has read the source can forge"
            " tokens; set WARDEN_JWT_SECRET for anything but a laptop"
        )


async def migrate(settings: Settings) -> None:
    """Create the database if needed, then upgrade to head (safe to run twice)."""
    from alembic import command
    from alembic.config import Config

    from storage.db import create_database_if_missing

    url = settings.database_url.get_secret_value()
    if await create_database_if_missing(url):
        log.info("database created")
    config = Config(str(ALEMBIC_INI))
    config.set_main_option("script_location", str(ALEMBIC_INI.parent / "migrations"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))

    def upgrade() -> None:
        with _ALEMBIC:  # Alembic's command API keeps module-level state: one at a time
            command.upgrade(config, "head")

    # Alembic's env runs its own event loop: keep it off ours.
    await asyncio.to_thread(upgrade)
    log.info("migrations at head")


async def migrate_queues(settings: Settings) -> None:
    """Bring the broker's queues to the kind this version declares, keeping their messages.

    For a deployment from before quorum queues (handlers.topology.migrate); safe to run twice,
    and with nothing to move it only declares what is missing.
    """
    from handlers.queues import DLX, EVENTS_EXCHANGE
    from handlers.topology import migrate as move_queues
    from handlers.topology import worker_queues
    from warden.bootstrap import build_broker, build_services

    services = build_services(settings)
    try:
        queues = worker_queues(build_broker(settings, services))  # connects nothing
        connection = await _first_live_node(settings.amqp_urls)
        try:
            channel = await connection.channel()
            for exchange in (EVENTS_EXCHANGE, DLX):
                await channel.declare_exchange(
                    exchange.name, exchange.type.value, durable=exchange.durable
                )
            moved = await move_queues(connection, queues)
        finally:
            await connection.close()
    finally:
        await services.close()
    log.info("queues at this version's kind", migrated=moved, queues=len(queues))


async def _first_live_node(nodes: tuple[str, ...]) -> AbstractConnection:
    from contract.protocol import node_address
    from handlers.nodes import connect

    for index, node in enumerate(nodes):
        try:
            return await connect(node, within=5)
        except Exception as exc:
            if index == len(nodes) - 1:
                raise OSError(f"no broker node reachable (last: {node_address(node)})") from exc
            log.warning("broker node unreachable", node=node_address(node))
    raise OSError("no broker node given")


async def until_signalled(*parts: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run `parts` side by side until SIGTERM or SIGINT sets their shared stop event."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await asyncio.gather(*(part(stop) for part in parts))


def freeze_startup_objects() -> None:
    """Keep what start-up built (modules, models, routes) out of the collector's full passes.

    A full collection walks every tracked object: about 100 ms in a worker after its
    imports, a pause every request in flight then waits out (the p99). Frozen objects are
    never scanned; everything made after this is collected as usual.
    """
    gc.collect()
    gc.freeze()


def worker_part(settings: Settings) -> Callable[[asyncio.Event], Awaitable[None]]:
    from warden.bootstrap import running_worker
    from warden.metrics_server import serve_worker_metrics

    async def part(stop: asyncio.Event) -> None:
        async with running_worker(settings) as services, serve_worker_metrics(settings, services):
            log.info("worker started")
            freeze_startup_objects()
            await stop.wait()
            log.info("worker stopping")
        log.info("worker stopped")

    return part


def edge_part(settings: Settings) -> Callable[[asyncio.Event], Awaitable[None]]:
    from aiohttp import web

    from warden.bootstrap import build_edge

    async def part(stop: asyncio.Event) -> None:
        runner = web.AppRunner(build_edge(settings), access_log=None, shutdown_timeout=15)
        await runner.setup()
        site = web.TCPSite(runner, settings.http_host, settings.http_port, backlog=1024)
        await site.start()
        log.info("edge listening", host=settings.http_host, port=settings.http_port)
        freeze_startup_objects()
        try:
            await stop.wait()
        finally:
            log.info("edge stopping")
            await runner.cleanup()
        log.info("edge stopped")

    return part


async def worker(settings: Settings) -> None:
    await until_signalled(worker_part(settings))


async def edge(settings: Settings) -> None:
    await until_signalled(edge_part(settings))


async def run(settings: Settings) -> None:
    """Laptop mode: migrate, then one worker and the edge in this process."""
    await migrate(settings)
    await migrate_queues(settings)
    await until_signalled(worker_part(settings), edge_part(settings))


async def create_superuser(settings: Settings, email: str, username: str, password: str) -> int:
    from contract.wire import RegisterRequest
    from domain.model import NewUser
    from handlers.decoding import parse
    from warden.bootstrap import build_services

    try:
        valid = parse(
            RegisterRequest, _json({"email": email, "username": username, "password": password})
        )
    except ValidationFailed as exc:
        for e in exc.errors:
            print(f"warden: {e.loc[-1]}: {e.msg}", file=sys.stderr)
        return 2
    services = build_services(settings)
    try:
        hashed = await services.hasher.hash(valid.password)
        # Verified: the operator vouches for the address (no verification mail is sent).
        new = NewUser(
            str(valid.email).lower(), valid.username, hashed, is_superuser=True, is_verified=True
        )
        user = await services.accounts.create(new)
    except (EmailTaken, UsernameTaken) as exc:
        print(f"warden: {exc.detail}", file=sys.stderr)
        return 1
    finally:
        await services.close()
    print(f"superuser {user.username} created with id {user.id}")
    return 0


async def keys_rotate(settings: Settings, now: bool) -> int:
    """Make a new signing key: published at once, signing after the JWKS max-age (or now)."""
    from warden.bootstrap import key_store

    if not settings.asymmetric:
        print(f"warden: {settings.jwt_algorithm} signs with WARDEN_JWT_SECRET: no keys to rotate")
        return 2
    store = key_store(settings)
    kid = await store.rotate(now=now)
    if now:
        print(f"signing key {kid} signs now; the previous active key is revoked")
    else:
        key = next(k for k in await store.every_key() if k.kid == kid)
        print(f"signing key {kid} published; it signs from {key.activates_at.isoformat()}")
    return 0


async def keys_list(settings: Settings) -> int:
    """Every signing key, newest first, with its state and timeline."""
    from warden.bootstrap import key_store

    keys = await key_store(settings).every_key()
    print(f"{'kid':<44} {'alg':<6} {'state':<8} {'created':<26} {'activates':<26} removed")
    for k in keys:
        removes = k.removes_at.isoformat() if k.removes_at else "-"
        print(
            f"{k.kid:<44} {k.algorithm:<6} {k.state:<8} {k.created_at.isoformat():<26}"
            f" {k.activates_at.isoformat():<26} {removes}"
        )
    return 0


def _run_loop(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        return asyncio.run(coro)
    return uvloop.run(coro)


def _json(data: dict[str, str]) -> bytes:
    import orjson

    return orjson.dumps(data)


def _superuser_password(args: argparse.Namespace, settings: Settings) -> str:
    if settings.superuser_password is not None:
        return settings.superuser_password.get_secret_value()
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Password (again): ") != first:
        raise SystemExit("warden: the passwords differ")
    return first


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="warden", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="create the database if missing and apply the migrations")
    sub.add_parser(
        "migrate-queues",
        help="move the broker's queues to this version's kind (quorum), keeping their messages",
    )
    sub.add_parser("worker", help="run the message handlers and the outbox relay")
    sub.add_parser("edge", help="run the HTTP edge")
    sub.add_parser("run", help="migrate, then one worker and the edge in one process")
    su = sub.add_parser("create-superuser", help="create an active superuser")
    su.add_argument("--email", required=True)
    su.add_argument("--username", required=True)
    su.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    keys = sub.add_parser("keys", help="the signing keys").add_subparsers(
        dest="keys_command", required=True
    )
    keys.add_parser("list", help="print every signing key with its state")
    rotate = keys.add_parser("rotate", help="publish a new key; it signs after the JWKS max-age")
    rotate.add_argument(
        "--now",
        action="store_true",
        help="a leaked key: the new key signs at once, the active one is refused at once",
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    settings = load_settings()
    refuse_a_public_dev_secret(args.command, settings)
    from warden import logs

    logs.configure(settings.log_format, settings.log_level)
    warn_of_the_dev_secret(args.command, settings)
    if args.command == "create-superuser":
        password = _superuser_password(args, settings)
        code = _run_loop(create_superuser(settings, args.email, args.username, password))
        raise SystemExit(code)
    if args.command == "keys":
        if args.keys_command == "list":
            raise SystemExit(_run_loop(keys_list(settings)))
        raise SystemExit(_run_loop(keys_rotate(settings, args.now)))
    commands = {
        "migrate": migrate,
        "migrate-queues": migrate_queues,
        "worker": worker,
        "edge": edge,
        "run": run,
    }
    try:
        _run_loop(commands[args.command](settings))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"warden {args.command}: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except RuntimeError as exc:
        from storage.signing_keys import UnreadableKey

        if not isinstance(exc, UnreadableKey):
            raise
        print(f"warden {args.command}: {exc} (see `warden keys rotate --now`)", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":  # python -m warden.cli
    main()
