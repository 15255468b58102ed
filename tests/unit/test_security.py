"""The crypto adapters with the real libraries: bcrypt off the loop, JWTs pinned and checked."""

from __future__ import annotations

from collections.abc import Awaitable, Iterator
from datetime import UTC, datetime, timedelta

import bcrypt
import jwt
import pytest
from prometheus_client import REGISTRY

from domain.errors import InvalidToken, TokenExpired
from warden.security import STAND_IN, BcryptPasswordHasher, JwtTokenIssuer, candidates

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
    return JwtTokenIssuer.shared(SECRET, "warden", access_ttl=60, refresh_ttl=600, leeway=0)


async def test_a_hash_verifies_its_password_and_no_other(hasher: BcryptPasswordHasher) -> None:
    hashed = await hasher.hash("correct horse")
    assert hashed.startswith("$2b$04$")
    assert await hasher.verify("correct horse", hashed)
    assert not await hasher.verify("wrong horse", hashed)


async def test_a_malformed_stored_hash_never_verifies(hasher: BcryptPasswordHasher) -> None:
    assert not await hasher.verify("correct horse", "not a bcrypt hash")


def bcrypt_calls() -> float:
    """bcrypt hashes and checks the pool worked through (one refused at once is not one)."""
    return REGISTRY.get_sample_value("warden_bcrypt_calls_total") or 0.0


async def spent(work: Awaitable[object]) -> float:
    before = bcrypt_calls()
    await work
    return bcrypt_calls() - before


async def test_burning_for_an_unknown_user_spends_a_real_check(
    hasher: BcryptPasswordHasher,
) -> None:
    assert await spent(hasher.burn("anything")) == 2  # the dummy hash, then the check
    assert await spent(hasher.burn("anything else")) == 1  # the dummy hash is made once
    assert hasher.waiting == 0


# A wrong password costs one check, or two when its NFKC form differs from what was typed:
# an unknown user's login must cost the same, or the time would tell who exists.
ATTEMPTS = [
    "a wrong password",
    "x" * 100,  # over 72 bytes: a stand-in is checked
    "\ud800 lone surrogate",  # no UTF-8 form: a stand-in is checked
    "ｗｒｏｎｇ ｐａｓｓｗｏｒｄ",  # NFKC differs: both forms are tried
    "ｘ" * 30,  # NFKC is 30 bytes, the typed form 90: the NFKC form, then a stand-in
    "with a \x00 NUL",
]


@pytest.mark.parametrize("attempt", ATTEMPTS, ids=ascii)
async def test_a_burn_spends_what_a_wrong_password_of_its_kind_spends(
    hasher: BcryptPasswordHasher, attempt: str
) -> None:
    hashed = await hasher.hash("the real password")
    await hasher.burn("make the dummy hash first")

    wrong = await spent(hasher.verify(attempt, hashed))
    burnt = await spent(hasher.burn(attempt))

    assert burnt == wrong == len(candidates(attempt)) >= 1


@pytest.mark.parametrize("attempt", ["x" * 73, "é" * 37, "x" * 5000, "\udcff" * 3], ids=len)
async def test_input_bcrypt_cannot_take_is_a_wrong_password_never_an_error(
    hasher: BcryptPasswordHasher, attempt: str
) -> None:
    hashed = await hasher.hash("the real password")

    assert await spent(hasher.verify(attempt, hashed)) == 1  # one check, on the stand-in
    assert await spent(hasher.burn(attempt)) >= 1


async def test_the_stand_in_never_passes_even_for_its_own_hash(
    hasher: BcryptPasswordHasher,
) -> None:
    own = bcrypt.hashpw(STAND_IN, bcrypt.gensalt(4)).decode()

    assert not await hasher.verify("x" * 73, own)


async def test_a_password_is_hashed_in_nfkc_form_and_checks_in_any_form_of_it(
    hasher: BcryptPasswordHasher,
) -> None:
    hashed = await hasher.hash("ｆｕｌｌ ｗｉｄｔｈ")

    assert bcrypt.checkpw(b"full width", hashed.encode())
    assert await hasher.verify("full width", hashed)
    assert await hasher.verify("ｆｕｌｌ ｗｉｄｔｈ", hashed)
    assert await hasher.verify("ｆull width", hashed)


async def test_a_user_hashed_before_normalisation_logs_in_with_the_form_typed_then(
    hasher: BcryptPasswordHasher,
) -> None:
    typed = "ｆｕｌｌ ｗｉｄｔｈ"
    legacy = bcrypt.hashpw(typed.encode(), bcrypt.gensalt(4)).decode()  # as it was hashed

    assert await spent(hasher.verify(typed, legacy)) == 2  # the NFKC form fails, then raw
    assert await hasher.verify(typed, legacy)
    assert not await hasher.verify("full width", legacy)  # raw was the password, not NFKC


async def test_a_raw_form_bcrypt_cannot_take_is_not_tried(hasher: BcryptPasswordHasher) -> None:
    typed = "ｘ" * 30  # NFKC: 30 bytes; as typed: 90, which was refused at registration
    hashed = await hasher.hash(typed)

    assert await hasher.verify(typed, hashed)
    assert candidates(typed) == [b"x" * 30, None]


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


def test_an_expired_refresh_token_is_expired(tokens: JwtTokenIssuer) -> None:
    issued = datetime.now(UTC) - timedelta(minutes=20)  # the refresh lifetime is 10 minutes

    with pytest.raises(TokenExpired):
        tokens.read_refresh(tokens.issue_refresh(7, "sid", "rid", issued))


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
        jwt.encode({"iss": "warden", "sub": "7"}, None, algorithm="none"),  # type: ignore[arg-type]
        "garbage",
    ],
)
def test_anything_but_a_well_formed_access_token_of_ours_is_invalid(
    tokens: JwtTokenIssuer, token: str
) -> None:
    with pytest.raises(InvalidToken):
        tokens.read_access(token)


# --- revocation reads the session of either kind, expired or not ----------------------------


def test_the_session_of_a_token_of_either_kind_is_read(tokens: JwtTokenIssuer) -> None:
    now = datetime.now(UTC)
    for token in (tokens.issue_access(7, "sid", now), tokens.issue_refresh(7, "sid", "rid", now)):
        named = tokens.read_session(token)
        assert (named.user_id, named.session_id) == (7, "sid")


def test_the_session_of_an_expired_token_is_read_still(tokens: JwtTokenIssuer) -> None:
    long_ago = datetime.now(UTC) - timedelta(days=30)
    for token in (
        tokens.issue_access(7, "sid", long_ago),
        tokens.issue_refresh(7, "sid", "rid", long_ago),
    ):
        assert tokens.read_session(token).session_id == "sid"


@pytest.mark.parametrize(
    "token",
    [
        forged(type="id"),  # signed, but neither kind
        forged(type="refresh", sub="alice"),
        forged(iss="someone-else"),
        jwt.encode({"iss": "warden", "sub": "7"}, "another secret" * 3, algorithm="HS256"),
        jwt.encode({"iss": "warden", "sub": "7"}, None, algorithm="none"),  # type: ignore[arg-type]
        "garbage",
        "",
    ],
)
def test_no_session_is_read_from_a_token_that_is_not_genuinely_ours(
    tokens: JwtTokenIssuer, token: str
) -> None:
    with pytest.raises(InvalidToken):
        tokens.read_session(token)
