"""The second factor's adapters on the real services: mfa_tokens in Redis, TOTP in Postgres."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from sqlalchemy import text

from domain.model import MfaChallenge, NewUser
from storage.redis_mfa import MFA_TOKEN, RedisMfaChallenges
from storage.uow import SqlAlchemyUnitOfWorkFactory
from warden.bootstrap import Services

CHALLENGE = MfaChallenge(7, "198.51.100.7")


@pytest.fixture
def challenges(client: aioredis.Redis) -> RedisMfaChallenges:
    return RedisMfaChallenges(client)


def token() -> str:
    return uuid.uuid4().hex


async def test_a_token_is_kept_only_as_its_digest_with_its_ttl(
    challenges: RedisMfaChallenges, client: aioredis.Redis
) -> None:
    t = token()
    await challenges.open(t, CHALLENGE, 300)

    key = MFA_TOKEN + hashlib.sha256(t.encode()).hexdigest()
    assert 0 < await client.ttl(key) <= 300
    assert t not in str(await client.hgetall(key))
    assert await challenges.find(t) == CHALLENGE
    assert await challenges.find(token()) is None


async def test_of_racing_spends_exactly_one_wins(challenges: RedisMfaChallenges) -> None:
    t = token()
    await challenges.open(t, CHALLENGE, 300)

    won = await asyncio.gather(*(challenges.spend(t) for _ in range(10)))

    assert sorted(won) == [False] * 9 + [True]
    assert await challenges.find(t) is None


async def test_a_token_dies_at_its_failure_limit_and_stays_dead(
    challenges: RedisMfaChallenges, client: aioredis.Redis
) -> None:
    t = token()
    await challenges.open(t, CHALLENGE, 300)
    await asyncio.gather(*(challenges.fail(t, 5) for _ in range(4)))
    assert await challenges.find(t) == CHALLENGE

    await challenges.fail(t, 5)
    assert await challenges.find(t) is None
    await challenges.fail(t, 5)  # a failure of a dead token does not bring it back
    assert await client.exists(MFA_TOKEN + hashlib.sha256(t.encode()).hexdigest()) == 0


@pytest_asyncio.fixture
async def user_id(worker: Services) -> AsyncIterator[int]:
    name = f"m{uuid.uuid4().hex[:12]}"
    user = await worker.accounts.create(NewUser(f"{name}@example.com", name, "x"))
    yield user.id


async def test_of_racing_spends_of_a_time_step_exactly_one_wins(
    worker: Services, user_id: int
) -> None:
    units: SqlAlchemyUnitOfWorkFactory = worker.resources.uow
    async with units() as uow:
        assert await uow.mfa.put_pending(user_id, b"sealed")
        assert await uow.mfa.confirm(user_id, b"sealed", 100, [b"d1", b"d2"])
        await uow.commit()

    async def spend(step: int) -> bool:
        async with units() as uow:
            spent = await uow.mfa.spend_step(user_id, step)
            await uow.commit()
        return spent

    assert sorted(await asyncio.gather(*(spend(101) for _ in range(5)))) == [False] * 4 + [True]
    assert not await spend(100)  # earlier than the last one used

    async def use(digest: bytes) -> bool:
        async with units() as uow:
            spent = await uow.mfa.spend_recovery_code(user_id, digest)
            await uow.commit()
        return spent

    assert sorted(await asyncio.gather(*(use(b"d1") for _ in range(5)))) == [False] * 4 + [True]


async def test_a_confirmed_enrolment_is_not_replaced_and_goes_with_its_user(
    worker: Services, user_id: int
) -> None:
    units: SqlAlchemyUnitOfWorkFactory = worker.resources.uow
    async with units() as uow:
        await uow.mfa.put_pending(user_id, b"first")
        assert not await uow.mfa.confirm(user_id, b"another", 1, [])  # not the pending one
        assert await uow.mfa.confirm(user_id, b"first", 1, [b"d"])
        assert not await uow.mfa.put_pending(user_id, b"second")
        await uow.commit()
    async with units() as uow:
        assert await uow.mfa.enabled(user_id)
        await uow.users.delete(user_id)
        await uow.commit()
    async with worker.engine.connect() as conn:
        left = await conn.execute(
            text("SELECT count(*) FROM mfa_recovery_codes WHERE user_id = :id"), {"id": user_id}
        )
        assert left.scalar_one() == 0
    async with units() as uow:
        assert await uow.mfa.get(user_id) is None
