"""The real services the tests run against, each isolated for this test session.

By default the services at the WARDEN_* URLs (the local ones). Where one is unreachable and
a Docker engine exists, testcontainers supplies it. Each session makes its own Postgres
database, its own RabbitMQ vhost and takes an empty Redis db, so tests can run beside a
Warden that is already running.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import redis

from warden.settings import DEFAULT_URLS


@dataclass(frozen=True)
class Urls:
    database: str
    amqp: str
    redis: str


def reachable(url: str) -> bool:
    parts = urlsplit(url)
    default_port = {"amqp": 5672, "redis": 6379}.get(parts.scheme, 5432)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), 2
        ):
            return True
    except OSError:
        return False


def docker_available() -> bool:
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0


@contextlib.contextmanager
def base_urls() -> Iterator[Urls]:
    """The configured services, with a testcontainer in place of any unreachable one."""
    urls = {k: os.environ.get(k, v) for k, v in DEFAULT_URLS.items()}
    with contextlib.ExitStack() as stack:
        missing = [k for k, url in urls.items() if not reachable(url)]
        if missing and not docker_available():
            raise RuntimeError(
                f"unreachable: {', '.join(missing)} and no Docker engine for testcontainers; "
                "start the services (see README) or point the WARDEN_* URLs at them"
            )
        for key in missing:
            urls[key] = stack.enter_context(_container(key))
        yield Urls(urls["WARDEN_DATABASE_URL"], urls["WARDEN_AMQP_URL"], urls["WARDEN_REDIS_URL"])


@contextlib.contextmanager
def _container(key: str) -> Iterator[str]:  # pragma: no cover - only where Docker exists
    if key == "WARDEN_DATABASE_URL":
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16", driver="asyncpg") as pg:
            yield pg.get_connection_url()
    elif key == "WARDEN_AMQP_URL":
        from testcontainers.rabbitmq import RabbitMqContainer

        with RabbitMqContainer("rabbitmq:3.13") as mq:
            host, port = mq.get_container_host_ip(), mq.get_exposed_port(5672)
            yield f"amqp://guest:guest@{host}:{port}/"
    else:
        from testcontainers.redis import RedisContainer

        with RedisContainer("redis:7") as rd:
            yield f"redis://{rd.get_container_host_ip()}:{rd.get_exposed_port(6379)}/0"


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


@contextlib.contextmanager
def own_vhost(amqp_url: str, prefix: str = "warden_test") -> Iterator[str]:
    """A RabbitMQ vhost of this session's (rabbitmqctl on a local broker), else the URL as is."""
    parts = urlsplit(amqp_url)
    local = parts.hostname in ("127.0.0.1", "localhost", "::1")
    if not (local and shutil.which("rabbitmqctl")):
        yield amqp_url
        return
    vhost = f"{prefix}_{uuid.uuid4().hex[:8]}"
    user = parts.username or "guest"
    _ctl("add_vhost", vhost)
    try:
        _ctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        yield urlunsplit(parts._replace(path="/" + quote(vhost, safe="")))
    finally:
        _ctl("delete_vhost", vhost)


def can_manage_users(amqp_url: str) -> bool:
    """Whether this machine's rabbitmqctl manages the broker of `amqp_url` (a local one)."""
    local = urlsplit(amqp_url).hostname in ("127.0.0.1", "localhost", "::1")
    return local and shutil.which("rabbitmqctl") is not None


@contextlib.contextmanager
def another_broker_user(amqp_url: str) -> Iterator[str]:
    """The URL of a new RabbitMQ user, free to do anything on the URL's vhost; deleted after.

    Another service on Warden's broker: it may publish to every queue and exchange, and is
    not Warden's user. Needs can_manage_users(amqp_url).
    """
    parts = urlsplit(amqp_url)
    vhost = unquote(parts.path[1:]) or "/"
    user, password = f"stranger_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    _ctl("add_user", user, password)
    try:
        _ctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        host = parts.netloc.rpartition("@")[2]
        yield urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))
    finally:
        _ctl("delete_user", user)


def _ctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@contextlib.contextmanager
def own_redis_db(redis_url: str) -> Iterator[str]:
    """An empty Redis db of this session's (1-15), flushed again at the end.

    The claim names this host and process and expires after an hour: a db whose claimant was
    killed (a process of this host that no longer runs) is flushed and taken at once.
    """
    parts = urlsplit(redis_url)
    claim = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
    for db in range(15, 0, -1):
        url = urlunsplit(parts._replace(path=f"/{db}"))
        client = redis.Redis.from_url(url)
        try:
            if _abandoned(client.get(CLAIM)):
                client.flushdb()
            if client.dbsize() == 0 and client.set(CLAIM, claim, nx=True, ex=3600):
                try:
                    yield url
                finally:
                    client.flushdb()
                return
        finally:
            client.close()
    raise RuntimeError("no empty Redis database (1-15) for the tests")


CLAIM = "warden-test-session"


def _abandoned(claim: bytes | str | None) -> bool:
    """Whether a db's claim was made by a process of this host that has since died."""
    if claim is None:
        return False
    text = claim.decode(errors="replace") if isinstance(claim, bytes) else claim
    host, _, rest = text.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False
