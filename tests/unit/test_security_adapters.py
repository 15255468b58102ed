"""What callers rely on from the crypto adapters beyond the basics of test_security.py.

Tokens: every claim read back as issued, the configured algorithm and leeway honoured, the
refresh token's expiry checked, no required claim optional. Hashing: bcrypt in the bounded
pool of lower-priority threads, the pool's gauges telling the truth, and a close that drops
the queued checks instead of running them first.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from prometheus_client import REGISTRY

from domain.errors import InvalidToken, TokenExpired
from domain.model import AccessClaims, RefreshClaims
from warden.security import BcryptPasswordHasher, JwtTokenIssuer

SECRET = "s" * 64
ACCESS_TTL, REFRESH_TTL, LEEWAY = 60, 600, 10
REQUIRED = ("iss", "sub", "sid", "jti", "type", "iat", "exp")


@pytest.fixture
def tokens() -> JwtTokenIssuer:
    return JwtTokenIssuer.shared(SECRET, "warden", ACCESS_TTL, REFRESH_TTL, leeway=LEEWAY)


def test_an_access_token_reads_back_every_claim_it_was_issued_with(
    tokens: JwtTokenIssuer,
) -> None:
    now = datetime.now(UTC)
    token = tokens.issue_access(7, "sid-1", now)
    sent = jwt.decode(token, options={"verify_signature": False})

    assert tokens.read_access(token) == AccessClaims(
        user_id=7,
        session_id="sid-1",
        token_id=sent["jti"],
        issued_at=int(now.timestamp()),
        expires_at=int(now.timestamp()) + ACCESS_TTL,
    )


def test_a_refresh_token_reads_back_its_user_session_and_id(tokens: JwtTokenIssuer) -> None:
    token = tokens.issue_refresh(7, "sid-1", "rid-1", datetime.now(UTC))

    assert tokens.read_refresh(token) == RefreshClaims(7, "sid-1", "rid-1")


def test_an_expired_refresh_token_is_expired(tokens: JwtTokenIssuer) -> None:
    issued = datetime.now(UTC) - timedelta(seconds=REFRESH_TTL + LEEWAY + 5)

    with pytest.raises(TokenExpired):
        tokens.read_refresh(tokens.issue_refresh(7, "sid", "rid", issued))


def test_a_token_expired_within_the_leeway_still_reads(tokens: JwtTokenIssuer) -> None:
    now = datetime.now(UTC)
    access = tokens.issue_access(7, "sid", now - timedelta(seconds=ACCESS_TTL + LEEWAY - 5))
    refresh = tokens.issue_refresh(7, "sid", "rid", now - timedelta(seconds=REFRESH_TTL + 5))

    assert tokens.read_access(access).user_id == 7
    assert tokens.read_refresh(refresh).user_id == 7


def test_an_access_token_expires_exactly_when_pyjwt_would_say_so(
    tokens: JwtTokenIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PyJWT refuses at exp + leeway and after; a remembered token must not live a second more."""
    issued = datetime.now(UTC)
    token = tokens.issue_access(7, "sid", issued)
    expiry = int(issued.timestamp()) + ACCESS_TTL + LEEWAY

    monkeypatch.setattr("warden.security.time.time", lambda: expiry - 1)
    assert tokens.read_access(token).user_id == 7
    monkeypatch.setattr("warden.security.time.time", lambda: expiry)
    with pytest.raises(TokenExpired):
        tokens.read_access(token)


def test_the_configured_algorithm_signs_the_tokens() -> None:
    tokens = JwtTokenIssuer.shared(SECRET, "warden", ACCESS_TTL, REFRESH_TTL, algorithm="HS512")
    token = tokens.issue_access(7, "sid", datetime.now(UTC))

    assert jwt.get_unverified_header(token)["alg"] == "HS512"
    assert tokens.read_access(token).user_id == 7


@pytest.mark.parametrize("missing", REQUIRED)
def test_a_token_without_a_required_claim_is_invalid(tokens: JwtTokenIssuer, missing: str) -> None:
    now = int(time.time())
    claims = {"iss": "warden", "sub": "7", "sid": "s", "jti": "j", "type": "access", "iat": now}
    claims["exp"] = now + ACCESS_TTL
    del claims[missing]

    with pytest.raises(InvalidToken):
        tokens.read_access(jwt.encode(claims, SECRET, algorithm="HS256"))


def new_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t not in before]


async def until(condition: Callable[[], bool]) -> None:
    """Let the loop run until `condition` holds, within 5 seconds."""
    async with asyncio.timeout(5):
        while True:
            if condition():
                return
            await asyncio.sleep(0)


async def test_bcrypt_runs_in_its_own_threads_at_the_lower_priority() -> None:
    before = set(threading.enumerate())
    hasher = BcryptPasswordHasher(rounds=8, threads=1, nice=7)
    try:
        await asyncio.gather(*(hasher.hash(f"password {n}") for n in range(3)))
        workers = new_threads(before)
        assert len(workers) == 1, "one thread, as configured"
        assert os.getpriority(os.PRIO_PROCESS, workers[0].native_id or 0) == 7
    finally:
        hasher.close()


def pool_wait_total() -> float:
    return REGISTRY.get_sample_value("warden_bcrypt_pool_wait_seconds_sum") or 0.0


async def test_the_pool_wait_observed_lies_within_the_call() -> None:
    hasher = BcryptPasswordHasher(rounds=4, threads=1)
    try:
        before, started = pool_wait_total(), time.perf_counter()
        await hasher.hash("password")
        took = time.perf_counter() - started
        assert 0 <= pool_wait_total() - before <= took
    finally:
        hasher.close()


async def test_close_drops_the_queued_checks_and_waits_for_the_running_one() -> None:
    before = set(threading.enumerate())
    hasher = BcryptPasswordHasher(rounds=12, threads=1)  # a check long enough to queue others
    calls = [asyncio.create_task(hasher.hash(f"password {n}")) for n in range(3)]
    await until(lambda: hasher.waiting == 3)  # the gauge counts queued and running calls

    hasher.close()

    assert not any(t.is_alive() for t in new_threads(before)), "close waits for the pool"
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert [type(o) for o in outcomes] == [str, asyncio.CancelledError, asyncio.CancelledError]
    assert hasher.waiting == 0


# --- amr (RFC 8176): how the session authenticated -------------------------------------------


def test_both_tokens_carry_the_sessions_amr(tokens: JwtTokenIssuer) -> None:
    now = datetime.now(UTC)
    access = tokens.issue_access(7, "sid", now, ("pwd", "otp"))
    refresh = tokens.issue_refresh(7, "sid", "rid", now, ("pwd", "recovery"))

    assert jwt.decode(access, options={"verify_signature": False})["amr"] == ["pwd", "otp"]
    assert tokens.read_access(access).amr == ("pwd", "otp")
    assert tokens.read_refresh(refresh).amr == ("pwd", "recovery")


def test_a_password_login_is_amr_pwd(tokens: JwtTokenIssuer) -> None:
    now = datetime.now(UTC)
    access = tokens.issue_access(7, "sid", now)

    assert jwt.decode(access, options={"verify_signature": False})["amr"] == ["pwd"]
    assert tokens.read_refresh(tokens.issue_refresh(7, "sid", "rid", now)).amr == ("pwd",)


def signed(**claims: object) -> str:
    now = int(time.time())
    base = {"iss": "warden", "sub": "7", "sid": "s", "jti": "j", "type": "access", "iat": now}
    return jwt.encode(base | {"exp": now + ACCESS_TTL} | claims, SECRET, algorithm="HS256")


def test_a_token_signed_before_amr_existed_reads_as_a_passwords(tokens: JwtTokenIssuer) -> None:
    assert tokens.read_access(signed()).amr == ("pwd",)


@pytest.mark.parametrize("amr", ["pwd", [], [1], None, {"pwd": 1}])
def test_a_token_with_a_malformed_amr_is_invalid(tokens: JwtTokenIssuer, amr: object) -> None:
    with pytest.raises(InvalidToken):
        tokens.read_access(signed(amr=amr))
