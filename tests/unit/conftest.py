"""The domain's use cases from the composition root, on in-memory fakes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from domain.accounts import Accounts
from domain.auth import Auth
from domain.sessions import Sessions
from tests.unit.fakes import (
    FakeClock,
    FakeLoginThrottle,
    FakeMfaChallenges,
    FakePasswordHasher,
    FakeRegistrationThrottle,
    FakeSessionStore,
    FakeTokenIssuer,
    FakeUnitOfWorkFactory,
)
from tests.unit.support import ACCESS_TTL, REFRESH_TTL, People, unit_settings
from warden.bootstrap import Services, build_services


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
def sessions(clock: FakeClock) -> FakeSessionStore:
    return FakeSessionStore(clock, ttl=REFRESH_TTL)


@pytest.fixture
def throttle(clock: FakeClock) -> FakeLoginThrottle:
    # Small limits so a test can reach them in a few attempts.
    return FakeLoginThrottle(clock, max_failures=3, ip_max_failures=5, window=900)


@pytest.fixture
def registrations(clock: FakeClock) -> FakeRegistrationThrottle:
    return FakeRegistrationThrottle(clock, max_per_address=3, window=3600)


@pytest.fixture
def challenges(clock: FakeClock) -> FakeMfaChallenges:
    return FakeMfaChallenges(clock)


@pytest.fixture
async def services(
    uow: FakeUnitOfWorkFactory,
    hasher: FakePasswordHasher,
    tokens: FakeTokenIssuer,
    sessions: FakeSessionStore,
    throttle: FakeLoginThrottle,
    registrations: FakeRegistrationThrottle,
    challenges: FakeMfaChallenges,
    clock: FakeClock,
) -> AsyncIterator[Services]:
    """What the worker runs, built by its own composition root with the fakes in place."""
    services = build_services(
        unit_settings(),
        uow=uow,
        hasher=hasher,
        tokens=tokens,
        sessions=sessions,
        throttle=throttle,
        registrations=registrations,
        challenges=challenges,
        clock=clock,
    )
    yield services
    await services.close()


@pytest.fixture
def auth(services: Services) -> Auth:
    return services.auth


@pytest.fixture
def accounts(services: Services) -> Accounts:
    return services.accounts


@pytest.fixture
def sessions_of_users(services: Services) -> Sessions:
    return services.sessions


@pytest.fixture
def people(accounts: Accounts, auth: Auth, hasher: FakePasswordHasher, clock: FakeClock) -> People:
    return People(accounts, auth, hasher, clock)
