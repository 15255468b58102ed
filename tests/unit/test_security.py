"""The crypto adapters with the real libraries: bcrypt off the loop, JWTs pinned and checked."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from domain.errors import InvalidToken, TokenExpired
from warden.security import BcryptPasswordHasher, JwtTokenIssuer

SECRET = "s" * 32
# Parametrised tokens are made at collection, minutes before they are read: a day of life.
COLLECTED = datetime.now(UTC)


@pytest.fixture
def hasher() -> Iterator[BcryptPasswordHasher]:
    h = BcryptPasswordHasher(rounds=4, threads=1)
    yield h
    h.close()


@pytest.fixture
def tokens() -> JwtTokenIssuer:
    return JwtTokenIssuer(SECRET, "warden", access_ttl=60, refresh_ttl=600, leeway=0)


async def test_a_hash_verifies_its_password_and_no_other(hasher: BcryptPasswordHasher) -> None:
    hashed = await hasher.hash("correct horse")
    assert hashed.startswith("$2b$04$")
    assert await hasher.verify("correct horse", hashed)
    assert not await hasher.verify("wrong horse", hashed)


async def test_a_malformed_stored_hash_never_verifies(hasher: BcryptPasswordHasher) -> None:
    assert not await hasher.verify("correct horse", "not a bcrypt hash")


async def test_burning_for_an_unknown_user_spends_a_real_check(
    hasher: BcryptPasswordHasher,
) -> None:
    await hasher.burn("anything")
    await hasher.burn("anything else")  # the dummy hash is made once
    assert hasher.waiting == 0


def test_an_access_token_carries_the_contract_claims(tokens: JwtTokenIssuer) -> None:
    token = tokens.issue_access(7, "sid-1", datetime.now(UTC))
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], issuer="warden")
    assert {k: claims[k] for k in ("iss", "sub", "sid", "type")} == {
        "iss": "warden",
        "sub": "7",
        "sid": "sid-1",
        "type": "access",
    }
    assert claims["exp"] - claims["iat"] == 60
    read = tokens.read_access(token)
    assert (read.user_id, read.session_id) == (7, "sid-1")


def test_tokens_of_one_type_are_refused_as_the_other(tokens: JwtTokenIssuer) -> None:
    with pytest.raises(InvalidToken):
        tokens.read_access(tokens.issue_refresh(7, "sid", "rid", datetime.now(UTC)))
    with pytest.raises(InvalidToken):
        tokens.read_refresh(tokens.issue_access(7, "sid", datetime.now(UTC)))
    assert (
        tokens.read_refresh(tokens.issue_refresh(7, "sid", "rid", datetime.now(UTC))).token_id
        == "rid"
    )


def test_an_expired_token_is_expired(tokens: JwtTokenIssuer) -> None:
    with pytest.raises(TokenExpired):
        tokens.read_access(tokens.issue_access(7, "sid", datetime.now(UTC) - timedelta(minutes=5)))


def test_a_remembered_token_still_expires(
    tokens: JwtTokenIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    issued = datetime.now(UTC)
    token = tokens.issue_access(7, "sid", issued)
    assert tokens.read_access(token).user_id == 7  # verified, and remembered
    monkeypatch.setattr("warden.security.time.time", lambda: issued.timestamp() + 61)
    with pytest.raises(TokenExpired):
        tokens.read_access(token)


def forged(**changes: object) -> str:
    claims = {
        "iss": "warden",
        "sub": "7",
        "sid": "s",
        "jti": "j",
        "type": "access",
        "iat": int(COLLECTED.timestamp()),
        "exp": int(COLLECTED.timestamp()) + 86400,
    } | changes
    return jwt.encode(claims, SECRET, algorithm="HS256")


@pytest.mark.parametrize(
    "token",
    [
        forged(sub="alice"),
        forged(sub=7),
        forged(sid=["s"]),
        forged(jti=None),
        forged(iss="someone-else"),
        forged(type="id"),
        forged(exp="tomorrow"),
        forged(exp=float(COLLECTED.timestamp()) + 86400.5),
        jwt.encode({"sub": "7"}, SECRET, algorithm="HS256"),
        jwt.encode({"iss": "warden", "sub": "7"}, "another secret" * 3, algorithm="HS256"),
        jwt.encode({"iss": "warden", "sub": "7"}, None, algorithm="none"),
        "garbage",
    ],
)
def test_anything_but_a_well_formed_access_token_of_ours_is_invalid(
    tokens: JwtTokenIssuer, token: str
) -> None:
    with pytest.raises(InvalidToken):
        tokens.read_access(token)
