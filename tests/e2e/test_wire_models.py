"""Every reply and every event against the catalogue's models, over raw AMQP as another service
sees them: each queue of the catalogue is sent a valid request and its reply is validated
against the queue's reply model; every CloudEvent published while every event type is caused
is validated against its data model.

Validation is strict (JSON types as written, no coercion) and refuses unknown fields: a field
added to a reply or an event but not to its model fails here, so the models — from which both
API documents are generated — keep saying what really goes over the wire. Schemathesis
(test_schemathesis.py) does the same for HTTP against the OpenAPI document.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import orjson
import pytest
from pydantic import BaseModel

from contract import wire
from contract.catalog import RPC
from contract.events import EVENT_DATA, CloudEvent
from domain.events import EVENT_TYPES
from domain.mail import RESET_PASSWORD, VERIFY_EMAIL, digest, new_token
from domain.model import EmailToken, NewUser
from tests.conftest import PASSWORD, fresh_ip, unique
from tests.e2e.test_sessions import sid_of
from tests.support.amqp import AmqpCaller
from tests.support.waiting import eventually
from warden.bootstrap import Services, key_store
from warden.settings import Settings
from warden.totp import PyotpTotp

WAIT = 15.0  # generous: only to keep a broken build from hanging
WRONG = "not the password"
FAILED = "user.login_failed"


def conforming(model: type[BaseModel], raw: bytes) -> BaseModel:
    """`raw` as `model`: strict JSON types, and no field the model does not declare."""
    return model.model_validate_json(raw, strict=True, extra="forbid")


def success_of(reply: type[BaseModel] | None) -> type[BaseModel]:
    """The success envelope of a queue whose data is `reply` (None: data is null)."""
    return wire.Success[reply] if reply is not None else wire.Success[None]  # type: ignore[valid-type]


def cloudevent_of(event_type: str) -> type[BaseModel]:
    """The CloudEvent of `event_type`, its data model as the catalogue says."""
    data = EVENT_DATA[event_type]
    return CloudEvent[data]  # type: ignore[valid-type]


# --- callers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Account:
    id: int
    username: str
    pair: dict[str, Any]  # the TokenPair of one login

    @property
    def token(self) -> str:
        return str(self.pair["access_token"])


@dataclass
class Callers:
    """Makes the accounts a request needs: over AMQP, except a superuser (none can register).

    Logins name Warden's broker user and an address of their own (x-client-ip), so their
    events carry a client_ip and no other test's failures count against them.
    """

    amqp: AmqpCaller
    worker: Services
    warden_user: str
    _superuser: Account | None = None

    async def ok(self, queue: str, body: Any, token: str | None = None, **headers: Any) -> Any:
        """The data of a successful reply."""
        reply = await self.amqp.call(queue, body, token, **headers)
        assert reply["ok"] is True, (queue, reply)
        return reply["data"]

    async def log_in(
        self, username: str, password: str = PASSWORD, ip: str | None = None
    ) -> dict[str, Any]:
        """The reply envelope of one login, from an address of its own (or `ip`)."""
        body = {"username": username, "password": password}
        return await self.amqp.call(
            "warden.auth.login", body, user_id=self.warden_user, x_client_ip=ip or fresh_ip()
        )

    async def account(self) -> Account:
        """A new registered user, logged in."""
        name = unique("wm")
        body = {"email": f"{name}@example.com", "username": name, "password": PASSWORD}
        user = await self.ok("warden.users.register", body)
        return Account(user["id"], name, await self.tokens(name))

    async def superuser(self) -> Account:
        if self._superuser is None:
            name = unique("wmroot")
            hashed = await self.worker.hasher.hash(PASSWORD)
            new = NewUser(f"{name}@example.com", name, hashed, is_superuser=True)
            user = await self.worker.accounts.create(new)
            self._superuser = Account(user.id, name, await self.tokens(name))
        return self._superuser

    async def with_totp(self) -> tuple[Account, str]:
        """A new account with TOTP enrolled and confirmed, and its secret."""
        a = await self.account()
        secret = (await self.ok("warden.mfa.enroll", {}, a.token))["secret"]
        await self.ok("warden.mfa.confirm", {"code": totp_code(secret, 0)}, a.token)
        return a, secret

    async def tokens(self, username: str) -> dict[str, Any]:
        """The TokenPair of a new login (a session of its own)."""
        reply = await self.log_in(username)
        assert reply["ok"] is True, reply
        pair: dict[str, Any] = reply["data"]
        return pair


@pytest.fixture
def callers(amqp: AmqpCaller, worker: Services, warden_user: str) -> Callers:
    return Callers(amqp, worker, warden_user)


# --- (a) one valid request per queue ---------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """A valid request of a queue, and the reply fields that must not be empty or null (so the
    reply's nested models are there to be validated)."""

    body: dict[str, Any]
    token: str | None = None
    headers: dict[str, Any] = field(default_factory=dict)
    user_id: str | None = None
    filled: tuple[str, ...] = ()


async def register(c: Callers) -> Request:
    name = unique("wm")
    body = {"email": f"{name}@example.com", "username": name, "password": PASSWORD}
    return Request(body | {"full_name": "Ada Lovelace"}, filled=("full_name",))


async def login(c: Callers) -> Request:
    a = await c.account()
    body = {"username": a.username, "password": PASSWORD}
    return Request(body, headers={"x-client-ip": fresh_ip()}, user_id=c.warden_user)


async def refresh(c: Callers) -> Request:
    return Request({"refresh_token": (await c.account()).pair["refresh_token"]})


async def logout(c: Callers) -> Request:
    return Request({}, (await c.account()).token)


async def revoke(c: Callers) -> Request:
    pair = (await c.account()).pair
    return Request({"token": pair["refresh_token"], "token_type_hint": "refresh_token"})


async def introspect(c: Callers) -> Request:
    token = (await c.account()).token
    return Request({"token": token}, filled=("active", "sub", "sid", "username", "exp", "iat"))


async def me(c: Callers) -> Request:
    return Request({}, (await c.account()).token)


async def update_me(c: Callers) -> Request:
    return Request({"full_name": unique("Ada ")}, (await c.account()).token)


async def change_password(c: Callers) -> Request:
    body = {"current_password": PASSWORD, "new_password": unique("pw-")}
    return Request(body, (await c.account()).token)


async def list_users(c: Callers) -> Request:
    root = await c.superuser()
    await c.account()  # with the superuser, two users: a page of one has a next one
    return Request({"limit": 1, "sort": "username"}, root.token, filled=("items", "next_cursor"))


async def get_user(c: Callers) -> Request:
    return Request({"id": (await c.account()).id}, (await c.superuser()).token)


async def update_user(c: Callers) -> Request:
    name = unique("wm")
    changes = {"email": f"{name}@example.com", "username": name, "full_name": None}
    body = {"id": (await c.account()).id, "is_active": True, "is_superuser": False} | changes
    return Request(body, (await c.superuser()).token)


async def delete_user(c: Callers) -> Request:
    return Request({"id": (await c.account()).id}, (await c.superuser()).token)


async def list_audit(c: Callers) -> Request:
    root = await c.superuser()
    query = {"limit": 5, "user_id": (await c.account()).id}

    async def stored() -> bool:  # the audit consumer stores the registration a moment later
        page = await c.ok("warden.audit.list", query, root.token)
        return bool(page["items"])

    await eventually(stored, WAIT, "the registration never reached the audit log")
    return Request(query, root.token, filled=("items",))


def totp_code(secret: str, steps_ahead: int = 1) -> str:
    """A current code; by default the next step's, later than the one confirming spent."""
    return PyotpTotp().code_at(secret, int(time.time()) + 30 * steps_ahead)


async def mfa_login(c: Callers) -> Request:
    a, secret = await c.with_totp()
    ip = fresh_ip()
    refused = await c.log_in(a.username, ip=ip)
    body = {"mfa_token": refused["error"]["mfa_token"], "code": totp_code(secret)}
    return Request(body, headers={"x-client-ip": ip}, user_id=c.warden_user)


async def mfa_enroll(c: Callers) -> Request:
    return Request({}, (await c.account()).token, filled=("secret", "otpauth_uri"))


async def mfa_confirm(c: Callers) -> Request:
    a = await c.account()
    secret = (await c.ok("warden.mfa.enroll", {}, a.token))["secret"]
    return Request({"code": totp_code(secret, 0)}, a.token, filled=("recovery_codes",))


async def mfa_disable(c: Callers) -> Request:
    a, _ = await c.with_totp()
    return Request({"password": PASSWORD}, a.token)


async def ping(c: Callers) -> Request:
    return Request({})


async def jwks(c: Callers) -> Request:
    return Request({}, filled=("keys",))


async def mail_token(c: Callers, account: Account, kind: str) -> str:
    """A token as a mail would carry it (the session's worker writes mails to its log)."""
    token = new_token()
    expires = datetime.now(UTC) + timedelta(hours=1)
    stored = EmailToken(digest(token), kind, account.id, f"{account.username}@example.com", expires)
    async with c.worker.resources.uow() as uow:
        await uow.tokens.add(stored)
        await uow.commit()
    return token


async def request_verification(c: Callers) -> Request:
    return Request({"email": f"{(await c.account()).username}@example.com"})


async def verify(c: Callers) -> Request:
    return Request({"token": await mail_token(c, await c.account(), VERIFY_EMAIL)})


async def forgot_password(c: Callers) -> Request:
    return Request({"email": f"{(await c.account()).username}@example.com"})


async def reset_password(c: Callers) -> Request:
    token = await mail_token(c, await c.account(), RESET_PASSWORD)
    return Request({"token": token, "new_password": unique("pw-")})


async def list_sessions(c: Callers) -> Request:
    return Request({}, (await c.account()).token, filled=("items",))


async def revoke_session(c: Callers) -> Request:
    a = await c.account()
    other = await c.tokens(a.username)
    return Request({"id": sid_of(str(other["access_token"]))}, a.token)


async def revoke_other_sessions(c: Callers) -> Request:
    return Request({}, (await c.account()).token)


async def revoke_user_sessions(c: Callers) -> Request:
    return Request({"id": (await c.account()).id}, (await c.superuser()).token)


CASES: dict[str, Callable[[Callers], Awaitable[Request]]] = {
    "warden.users.register": register,
    "warden.auth.login": login,
    "warden.auth.refresh": refresh,
    "warden.auth.logout": logout,
    "warden.auth.revoke": revoke,
    "warden.auth.introspect": introspect,
    "warden.users.me": me,
    "warden.users.update_me": update_me,
    "warden.users.change_password": change_password,
    "warden.users.list": list_users,
    "warden.users.get": get_user,
    "warden.users.update": update_user,
    "warden.users.delete": delete_user,
    "warden.audit.list": list_audit,
    "warden.auth.mfa": mfa_login,
    "warden.mfa.enroll": mfa_enroll,
    "warden.mfa.confirm": mfa_confirm,
    "warden.mfa.disable": mfa_disable,
    "warden.ping": ping,
    "warden.auth.jwks": jwks,
    "warden.auth.request_verification": request_verification,
    "warden.auth.verify": verify,
    "warden.auth.forgot_password": forgot_password,
    "warden.auth.reset_password": reset_password,
    "warden.sessions.list": list_sessions,
    "warden.sessions.revoke": revoke_session,
    "warden.sessions.revoke_others": revoke_other_sessions,
    "warden.users.revoke_sessions": revoke_user_sessions,
}


def test_every_queue_of_the_catalogue_has_a_case() -> None:
    assert set(CASES) == set(RPC), "give each new queue a valid request in CASES"


@pytest.mark.parametrize("queue", sorted(RPC))
async def test_a_valid_request_gets_the_reply_model_of_its_queue(
    queue: str, amqp: AmqpCaller, callers: Callers
) -> None:
    assert queue in CASES, f"{queue}: no case in CASES"
    request = await CASES[queue](callers)
    headers = dict(request.headers)
    if request.token:
        headers["authorization"] = f"Bearer {request.token}"

    reply = await amqp.raw(queue, orjson.dumps(request.body), headers, user_id=request.user_id)

    assert reply.content_type == "application/json"
    envelope = orjson.loads(reply.body)
    assert envelope.get("ok") is True, envelope
    assert set(envelope) == {"ok", "data"}
    conforming(success_of(RPC[queue].reply), reply.body)
    empty = [name for name in request.filled if not envelope["data"][name]]
    assert not empty, f"{queue}: the case left {empty} empty: nothing nested was validated"


async def test_refusals_have_the_failure_model(amqp: AmqpCaller, callers: Callers) -> None:
    root = await callers.superuser()
    victim = await callers.account()
    for _ in range(callers.worker.settings.login_max_failures):
        assert (await callers.log_in(victim.username, WRONG))["ok"] is False
    refusals = {
        # (queue, body, token): (status, the optional fields the error must carry)
        ("warden.users.register", b'{"email": 1}', None): (422, {"errors"}),
        ("warden.users.me", b"{}", None): (401, set()),
        ("warden.users.get", b'{"id": 987654321012}', root.token): (404, set()),
        ("warden.auth.login", b"not json", None): (422, set()),
    }
    replies = [
        (status, extra, await amqp.raw(queue, body, {"authorization": f"Bearer {t}"} if t else {}))
        for (queue, body, t), (status, extra) in refusals.items()
    ]
    locked = await amqp.raw(
        "warden.auth.login", orjson.dumps({"username": victim.username, "password": PASSWORD})
    )
    replies.append((429, {"retry_after"}, locked))
    with_totp, _ = await callers.with_totp()
    asked = await amqp.raw(
        "warden.auth.login", orjson.dumps({"username": with_totp.username, "password": PASSWORD})
    )
    replies.append((403, {"mfa_token"}, asked))

    for status, carried, reply in replies:
        envelope = orjson.loads(reply.body)
        assert set(envelope) == {"ok", "error"}, envelope
        failure = conforming(wire.Failure, reply.body)
        assert isinstance(failure, wire.Failure)
        assert failure.error.status == status, envelope
        assert carried <= set(envelope["error"]), envelope


# --- (b) every event type ------------------------------------------------------------------


@dataclass(frozen=True)
class Published:
    routing_key: str
    content_type: str | None
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        event: dict[str, Any] = orjson.loads(self.body)
        return event


@contextlib.asynccontextmanager
async def everything_published(settings: Settings) -> AsyncIterator[list[Published]]:
    """Every message published to warden.events meanwhile, as it came (a queue of our own)."""
    received: list[Published] = []
    connection = await aio_pika.connect(settings.amqp_url.get_secret_value(), timeout=10)
    try:
        channel = await connection.channel()
        exchange = await channel.get_exchange("warden.events", ensure=False)
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, "#")

        async def on_event(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():
                key = message.routing_key or ""
                received.append(Published(key, message.content_type, message.body))

        await queue.consume(on_event)
        yield received
    finally:
        await connection.close()


Kind = tuple[str, str | None, bool]  # type, login_failed reason, whether data.user is null


def kind(event: dict[str, Any]) -> Kind:
    data = event["data"]
    reason = data.get("reason") if event["type"] == FAILED else None
    return event["type"], reason, "user" in data and data["user"] is None


def kinds(received: list[Published], subjects: set[str]) -> set[Kind]:
    """The kinds of the events about `subjects`, or about no user."""
    return {
        kind(p.event) for p in received if p.event.get("subject", "none") in subjects | {"none"}
    }


async def test_every_event_published_has_the_data_model_of_its_type(
    callers: Callers, settings: Settings
) -> None:
    async with everything_published(settings) as received:
        subjects = await cause_every_event(callers)
        expected: set[Kind] = {(t, None, False) for t in EVENT_TYPES if t != FAILED}
        expected |= {
            (FAILED, "invalid_credentials", False),
            (FAILED, "invalid_credentials", True),  # no such user
            (FAILED, "inactive_user", False),
            (FAILED, "too_many_attempts", False),
            (FAILED, "invalid_mfa_code", False),
        }
        await eventually(
            lambda: expected <= kinds(received, subjects),
            WAIT,
            lambda: f"never published: {expected - kinds(received, subjects)}",
        )

    assert set(EVENT_TYPES) == set(EVENT_DATA)
    for published in received:
        event_type = published.event["type"]
        assert published.routing_key == event_type
        assert published.content_type == "application/cloudevents+json"
        conforming(cloudevent_of(event_type), published.body)


async def cause_every_event(c: Callers) -> set[str]:
    """Each event type at least once, login_failed with each reason and for no user; the ids
    (as event subjects) of the users it acted on."""
    root = await c.superuser()
    alice, bob, carol = await c.account(), await c.account(), await c.account()
    await c.ok("warden.users.update_me", {"full_name": "Alice"}, alice.token, x_request_id="wm")
    assert (await c.log_in(alice.username, WRONG))["ok"] is False
    assert (await c.log_in(unique("nobody"), WRONG))["ok"] is False
    spent = {"refresh_token": alice.pair["refresh_token"]}
    await c.ok("warden.auth.refresh", spent)
    assert (await c.amqp.call("warden.auth.refresh", spent))["error"]["code"] == "token_reused"
    later = await c.tokens(alice.username)
    change = {"current_password": PASSWORD, "new_password": unique("pw-")}
    await c.ok("warden.users.change_password", change, str(later["access_token"]))
    await c.ok("warden.auth.logout", {}, str(later["access_token"]))
    await c.ok("warden.users.update", {"id": bob.id, "is_active": False}, root.token)
    assert (await c.log_in(bob.username))["error"]["code"] == "inactive_user"
    for _ in range(c.worker.settings.login_max_failures):
        assert (await c.log_in(carol.username, WRONG))["ok"] is False
    assert (await c.log_in(carol.username))["error"]["code"] == "too_many_attempts"
    await c.ok("warden.users.delete", {"id": bob.id}, root.token)
    await key_store(c.worker.settings).rotate()  # a key published: signing_keys.changed
    dave, secret = await c.with_totp()  # user.mfa_enabled
    ip = fresh_ip()
    token = (await c.log_in(dave.username, ip=ip))["error"]["mfa_token"]
    wrong = {"mfa_token": token, "code": "aaaa-aaaa-aaaa-aaaa"}
    headers = {"x_client_ip": ip, "user_id": c.warden_user}
    assert (await c.amqp.call("warden.auth.mfa", wrong, **headers))["ok"] is False
    right = {"mfa_token": token, "code": totp_code(secret)}
    await c.ok("warden.auth.mfa", right, **headers)  # user.logged_in with amr pwd, otp
    await c.ok("warden.mfa.disable", {"password": PASSWORD}, dave.token)  # user.mfa_disabled
    erin = await c.account()
    await c.ok("warden.auth.verify", {"token": await mail_token(c, erin, VERIFY_EMAIL)})
    await c.ok("warden.auth.forgot_password", {"email": f"{erin.username}@example.com"})
    reset = {"token": await mail_token(c, erin, RESET_PASSWORD), "new_password": unique("pw-")}
    await c.ok("warden.auth.reset_password", reset)
    await c.ok("warden.users.update_me", {"email": f"{unique('wm')}@example.com"}, root.token)
    return {str(a.id) for a in (root, alice, bob, carol, dave, erin)}
