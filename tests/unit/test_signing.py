"""Asymmetric tokens with the real libraries: a ring of EdDSA/ES256 keys, each pinned to its
algorithm; tokens verifiable by anyone with the published key set, and nothing else."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from datetime import UTC, datetime
from typing import Any

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization

from domain.errors import InvalidToken, TokenExpired
from storage.signing_keys import StoredKey
from warden.security import JwtTokenIssuer, SharedSecret
from warden.signing import KeyRing, NoSigningKey, make_key, thumbprint

REFRESH = SharedSecret(b"r" * 32, "HS256")
NOW = datetime.now(UTC)


def stored(algorithm: str, state: str = "active") -> StoredKey:
    new = make_key(algorithm)
    return StoredKey(
        new.kid, algorithm, state, new.public_jwk, NOW, NOW, None, None, new.private_der
    )


def ring_of(*keys: StoredKey) -> KeyRing:
    ring = KeyRing()
    ring.load(list(keys))
    return ring


def issuer(ring: KeyRing, audience: str = "", ttl: int = 60) -> JwtTokenIssuer:
    return JwtTokenIssuer(ring, REFRESH, "warden", ttl, 600, audience=audience, leeway=0)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def with_header(token: str, **header: Any) -> str:
    """The token's claims and signature under another header."""
    _, claims, signature = token.split(".")
    return f"{b64url(orjson.dumps(header))}.{claims}.{signature}"


@pytest.mark.parametrize("algorithm", ["EdDSA", "ES256"])
def test_an_access_token_names_its_kid_and_verifies_with_the_published_set_alone(
    algorithm: str,
) -> None:
    key = stored(algorithm)
    tokens = issuer(ring_of(key))
    token = tokens.issue_access(7, "sid", datetime.now(UTC))

    assert jwt.get_unverified_header(token) == {"alg": algorithm, "kid": key.kid, "typ": "JWT"}
    published = jwt.PyJWKSet.from_dict(ring_of(key).jwks())  # what a consumer fetches
    claims = jwt.decode(
        token, published[key.kid].key, algorithms=[algorithm], issuer="warden"
    )  # plain PyJWT, no Warden code
    assert (claims["sub"], claims["sid"], claims["type"]) == ("7", "sid", "access")
    assert tokens.read_access(token).user_id == 7


def test_the_key_set_publishes_public_halves_only() -> None:
    ring = ring_of(stored("EdDSA"), stored("ES256", "next"))
    for jwk in ring.jwks()["keys"]:
        assert "d" not in jwk
        assert jwk["use"] == "sig"
        assert jwk["kid"] == thumbprint(jwk)


def test_alg_none_is_refused() -> None:
    key = stored("EdDSA")
    tokens = issuer(ring_of(key))
    token = tokens.issue_access(7, "sid", datetime.now(UTC))
    unsigned = with_header(token, alg="none", kid=key.kid).rsplit(".", 1)[0] + "."
    with pytest.raises(InvalidToken):
        tokens.read_access(unsigned)


@pytest.mark.parametrize("algorithm", ["EdDSA", "ES256"])
def test_an_hs256_token_signed_with_the_public_key_is_refused(algorithm: str) -> None:
    key = stored(algorithm)
    tokens = issuer(ring_of(key))
    claims = jwt.decode(
        tokens.issue_access(7, "sid", datetime.now(UTC)), options={"verify_signature": False}
    )
    public = jwt.PyJWK(key.public_jwk).key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for secret in (public, orjson.dumps(key.public_jwk), key.public_jwk["x"].encode()):
        # PyJWT refuses a PEM as an HMAC key: sign it by hand, as an attacker would.
        signing_input = (
            f"{b64url(orjson.dumps({'alg': 'HS256', 'kid': key.kid}))}."
            f"{b64url(orjson.dumps(claims))}"
        )
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        with pytest.raises(InvalidToken):
            tokens.read_access(f"{signing_input}.{b64url(mac)}")


def test_a_token_naming_another_keys_algorithm_is_refused() -> None:
    ed, es = stored("EdDSA"), stored("ES256", "next")
    tokens = issuer(ring_of(ed, es))
    token = tokens.issue_access(7, "sid", datetime.now(UTC))
    with pytest.raises(InvalidToken):  # EdDSA-signed, but naming the ES256 key
        tokens.read_access(with_header(token, alg="EdDSA", kid=es.kid))
    with pytest.raises(InvalidToken):  # the EdDSA key, its header saying ES256
        tokens.read_access(with_header(token, alg="ES256", kid=ed.kid))


@pytest.mark.parametrize("kid", ["unknown", None, 7, ["x"]])
def test_a_token_of_an_unknown_kid_is_refused_and_asks_for_a_reload(kid: object) -> None:
    key = stored("EdDSA")
    ring = ring_of(key)
    asked: list[bool] = []
    ring.on_unknown = lambda: asked.append(True)
    tokens = issuer(ring)
    token = tokens.issue_access(7, "sid", datetime.now(UTC))
    header: dict[str, Any] = {"alg": "EdDSA"} | ({} if kid is None else {"kid": kid})
    with pytest.raises(InvalidToken):
        tokens.read_access(with_header(token, **header))
    # A kid that is no string is refused before any look (PyJWT refuses the header).
    assert asked == ([True] if kid in ("unknown", None) else [])


def test_a_header_that_is_not_json_is_an_invalid_token() -> None:
    tokens = issuer(ring_of(stored("EdDSA")))
    with pytest.raises(InvalidToken):
        tokens.read_access("bm90IGpzb24.e30.c2ln")


def test_a_remembered_token_is_refused_once_its_key_left_the_ring() -> None:
    old, new = stored("EdDSA"), stored("EdDSA")
    ring = ring_of(old)
    tokens = issuer(ring)
    token = tokens.issue_access(7, "sid", datetime.now(UTC))
    assert tokens.read_access(token).user_id == 7  # verified, remembered
    ring.load([new])  # `warden keys rotate --now`
    with pytest.raises(InvalidToken):
        tokens.read_access(token)


def test_a_remembered_token_of_a_retired_key_still_expires() -> None:
    tokens = issuer(ring_of(stored("EdDSA")), ttl=1)
    token = tokens.issue_access(7, "sid", datetime.fromtimestamp(time.time() - 5, UTC))
    with pytest.raises(TokenExpired):
        tokens.read_access(token)


def test_the_audience_is_carried_and_required_when_set() -> None:
    ring = ring_of(stored("EdDSA"))
    with_aud, without = issuer(ring, audience="orders"), issuer(ring)
    token = with_aud.issue_access(7, "sid", datetime.now(UTC))
    assert jwt.decode(token, options={"verify_signature": False})["aud"] == "orders"
    assert with_aud.read_access(token).user_id == 7
    with pytest.raises(InvalidToken):  # no aud where one is required
        with_aud.read_access(without.issue_access(7, "sid", datetime.now(UTC)))
    with pytest.raises(InvalidToken):  # another audience
        JwtTokenIssuer(ring, REFRESH, "warden", 60, 600, audience="billing").read_access(token)
    refresh = with_aud.issue_refresh(7, "sid", "jti", datetime.now(UTC))
    assert "aud" not in jwt.decode(refresh, options={"verify_signature": False})
    assert with_aud.read_refresh(refresh).session_id == "sid"


def test_a_refresh_token_is_warden_s_own_and_no_published_key_verifies_it() -> None:
    key = stored("EdDSA")
    tokens = issuer(ring_of(key))
    refresh = tokens.issue_refresh(7, "sid", "jti", datetime.now(UTC))
    assert tokens.read_refresh(refresh).token_id == "jti"
    assert "kid" not in jwt.get_unverified_header(refresh)
    with pytest.raises(InvalidToken):  # as an access token it names no published key
        tokens.read_access(refresh)
    with pytest.raises(jwt.PyJWTError):
        jwt.decode(refresh, jwt.PyJWK(key.public_jwk).key, algorithms=["EdDSA"])


def test_an_empty_ring_cannot_sign() -> None:
    with pytest.raises(NoSigningKey):
        issuer(KeyRing()).issue_access(7, "sid", datetime.now(UTC))


def test_a_shared_secret_publishes_nothing_and_names_no_kid() -> None:
    secret = SharedSecret("s" * 32, "HS256")
    assert secret.jwks() == {"keys": []}
    tokens = JwtTokenIssuer.shared("s" * 32, "warden", 60, 600)
    assert "kid" not in jwt.get_unverified_header(tokens.issue_access(7, "sid", NOW))


def test_no_key_pair_is_made_for_a_shared_secret_algorithm() -> None:
    with pytest.raises(ValueError):
        make_key("HS256")
