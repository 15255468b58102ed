"""The domain's use cases wired to in-memory fakes: the unit tests' composition root."""

from __future__ import annotations

import pytest

from domain.accounts import Accounts
from domain.auth import Auth, TokenLifetimes
from tests.unit.fakes import (
    FakeClock,
    FakeLoginThrottle,
    FakePasswordHasher,
    FakeRegistrationThrottle,
    FakeSessionStore,
    FakeTokenIssuer,
    FakeUnitOfWorkFactory,
)
from tests.unit.support import ACCESS_TTL, REFRESH_TTL, People


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def uow(clock: FakeClock) -> FakeUnitOfWorkFactory:
    return FakeUnitOfWorkFactory(clock)


@pytest.fixture
def hasher() -> FakePasswordHasher:
    return FakePasswordHasher()


@pytest.fixture
def tokens(clock: FakeClock) -> FakeTokenIssuer:
    return FakeTokenIssuer(clock, access_ttl=ACCESS_TTL, refresh_ttl=REFRESH_TTL)


@pytest.fixture
def sessions() -> FakeSessionStore:
    return FakeSessionStore()


@pytest.fixture
def throttle(clock: FakeClock) -> FakeLoginThrottle:
    # Small limits so a test can reach them in a few attempts.
    return FakeLoginThrottle(clock, max_failures=3, ip_max_failures=5, window=900)


@pytest.fixture
def registrations(clock: FakeClock) -> FakeRegistrationThrottle:
    return FakeRegistrationThrottle(clock, max_per_address=3, window=3600)


@pytest.fixture
def auth(
    uow: FakeUnitOfWorkFactory,
    hasher: FakePasswordHasher,
    tokens: FakeTokenIssuer,
    sessions: FakeSessionStore,
    throttle: FakeLoginThrottle,
    clock: FakeClock,
) -> Auth:
    lifetimes = TokenLifetimes(access=ACCESS_TTL, refresh=REFRESH_TTL)
    return Auth(uow, hasher, tokens, sessions, throttle, clock, lifetimes)


@pytest.fixture
def accounts(
    uow: FakeUnitOfWorkFactory,
    hasher: FakePasswordHasher,
    sessions: FakeSessionStore,
    throttle: FakeLoginThrottle,
    registrations: FakeRegistrationThrottle,
    clock: FakeClock,
) -> Accounts:
    return Accounts(uow, hasher, sessions, throttle, registrations, clock)


@pytest.fixture
def people(accounts: Accounts, auth: Auth, hasher: FakePasswordHasher, clock: FakeClock) -> People:
    return People(accounts, auth, hasher, clock)
