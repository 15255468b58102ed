"""The composition root: services built from the settings, but for the adapters given."""

from __future__ import annotations

import pytest

from tests.unit.support import unit_settings
from warden.bootstrap import build_services
from warden.security import BcryptPasswordHasher


async def test_closing_the_services_closes_the_hasher_they_built() -> None:
    services = build_services(unit_settings(bcrypt_rounds=4))
    hashed = await services.hasher.hash("correct horse")
    await services.close()
    with pytest.raises(RuntimeError, match="after shutdown"):
        await services.hasher.verify("correct horse", hashed)


async def test_closing_the_services_leaves_a_hasher_they_were_given_working() -> None:
    given = BcryptPasswordHasher(rounds=4, threads=1)
    try:
        services = build_services(unit_settings(), hasher=given)
        await services.close()
        assert await given.verify("correct horse", await given.hash("correct horse"))
    finally:
        given.close()
