"""Accounts the unit tests need, made and signed in through the use cases themselves."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from domain.accounts import Accounts
from domain.auth import Auth, LogIn
from domain.model import NewUser, Origin, Principal, TokenPair, User
from tests.unit.fakes import FakeClock, FakePasswordHasher
from warden.settings import Settings

ACCESS_TTL = 1800
REFRESH_TTL = 604800


# Port 1 has no listener: an adapter built from these settings where a fake was meant
# fails at once, instead of reaching a Postgres or Redis that runs on this machine.
NOWHERE: dict[str, Any] = {
    "database_url": "postgresql+asyncpg://nobody@127.0.0.1:1/nowhere",
    "redis_url": "redis://127.0.0.1:1/0",
    "amqp_url": "amqp://nobody:nobody@127.0.0.1:1/",
}


def unit_settings(**values: Any) -> Settings:
    """The settings the unit tests build their services from: the token lifetimes they know,
    servers nowhere, whatever the environment says (and no .env file)."""
    known: dict[str, Any] = {
        "env": "test",
        "access_token_ttl": ACCESS_TTL,
        "refresh_token_ttl": REFRESH_TTL,
    }
    return Settings(**(NOWHERE | known | values), _env_file=None)  # type: ignore[call-arg]


@dataclass(frozen=True)
class SignedIn:
    """One login: its token pair and the principal its access token stands for."""

    pair: TokenPair
    principal: Principal

    @property
    def bearer(self) -> str:
        return f"Bearer {self.pair.access_token}"

    @property
    def session_id(self) -> str:
        return self.principal.claims.session_id


class People:
    """Creates users with known passwords and signs them in."""

    def __init__(
        self, accounts: Accounts, auth: Auth, hasher: FakePasswordHasher, clock: FakeClock
    ) -> None:
        self._accounts = accounts
        self._auth = auth
        self._hasher = hasher
        self._clock = clock
        self._passwords: dict[int, str] = {}

    async def add(
        self,
        username: str,
        *,
        password: str | None = None,
        email: str | None = None,
        full_name: str | None = None,
        superuser: bool = False,
        active: bool = True,
    ) -> User:
        password = password or f"{username}-password"
        hashed = await self._hasher.hash(password)
        email = email or f"{username}@example.com"
        new = NewUser(email, username, hashed, full_name, is_active=active, is_superuser=superuser)
        user = await self._accounts.create(new)
        self._passwords[user.id] = password
        self._clock.advance(1)  # distinct created_at values, so listing order is defined
        return user

    def password_of(self, user: User) -> str:
        return self._passwords[user.id]

    async def sign_in(self, user: User, origin: Origin | None = None) -> SignedIn:
        pair = await self._auth.login(LogIn(user.username, self._passwords[user.id], origin))
        principal = await self._auth.authenticate(f"Bearer {pair.access_token}")
        return SignedIn(pair, principal)


async def holder(auth: Auth, pair: TokenPair) -> int:
    """The id of the user a pair's access token stands for: a pair that works, not just one."""
    return (await auth.authenticate(f"Bearer {pair.access_token}")).user.id
