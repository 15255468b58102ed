"""Fixtures the integration tests share."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio
import redis.asyncio as aioredis

from storage.redis_store import make_redis
from tests.support.infra import Urls


@pytest_asyncio.fixture
async def client(urls: Urls) -> AsyncIterator[aioredis.Redis]:
    """A client of this session's Redis db, as the worker builds one."""
    redis = make_redis(urls.redis)
    yield redis
    await redis.aclose()
