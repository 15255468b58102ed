"""Which published keys are believed, how long a key set may be kept, and revoked sessions'
memory: each a pure function or object of the library, no network."""

from __future__ import annotations

import pytest
from warden_verifier import RevokedSessions, parse_jwks
from warden_verifier.keys import KeySetError, max_age

from tests.support.verifier import SigningKey


def test_okp_and_ec_keys_are_kept_with_their_one_algorithm() -> None:
    ed, es = SigningKey("EdDSA"), SigningKey("ES256")
    no_alg = SigningKey("EdDSA")
    keys = parse_jwks({"keys": [ed.jwk(), es.jwk(), no_alg.jwk() | {"alg": None}]})
    assert {k: v.algorithm for k, v in keys.items()} == {
        ed.kid: "EdDSA",
        es.kid: "ES256",
        no_alg.kid: "EdDSA",
    }


@pytest.mark.parametrize(
    "change",
    [
        {"kty": "oct", "k": "c2VjcmV0"},  # a shared secret is never a verification key
        {"alg": "HS256"},
        {"alg": "none"},
        {"alg": "ES256"},  # an Ed25519 key cannot be an ES256 key
        {"use": "enc"},
        {"kid": None},
        {"kid": 7},
        {"kid": ""},
        {"kty": "RSA"},
        {"kty": None},
        {"x": "not base64 of a key!"},
        {"crv": "X25519"},
        {"d": "cHJpdmF0ZQ"},  # a private key published by mistake
    ],
)
def test_a_key_that_is_not_an_asymmetric_signature_key_is_left_out(
    change: dict[str, object],
) -> None:
    good, bad = SigningKey("EdDSA"), SigningKey("EdDSA")
    jwk = {k: v for k, v in (bad.jwk() | change).items() if v is not None}
    assert set(parse_jwks({"keys": [good.jwk(), jwk, "not a key"]})) == {good.kid}


def test_two_keys_of_one_kid_are_both_left_out() -> None:
    a, b, c = SigningKey("EdDSA"), SigningKey("EdDSA"), SigningKey("ES256")
    same = b.jwk() | {"kid": a.kid}
    assert set(parse_jwks({"keys": [a.jwk(), same, c.jwk(), a.jwk()]})) == {c.kid}


@pytest.mark.parametrize("document", [[], {}, {"keys": {}}, None, "keys", {"keys": "x"}])
def test_a_document_that_is_not_a_key_set_is_an_error(document: object) -> None:
    with pytest.raises(KeySetError):
        parse_jwks(document)


def test_an_empty_key_set_is_a_key_set() -> None:
    """What Warden publishes while it signs with HS*: no token can verify here."""
    assert parse_jwks({"keys": []}) == {}


@pytest.mark.parametrize(
    ("cache_control", "age", "seconds"),
    [
        ("public, max-age=300", None, 300.0),
        ("max-age=300, public", "100", 200.0),
        ("max-age=300", "400", 0.0),
        ('public, max-age="60"', None, 60.0),
        ("public, s-maxage=10, max-age=60", None, 60.0),
        ("Public, Max-Age=60", None, 60.0),
        ("no-store", None, 0.0),
        ("no-cache, max-age=60", None, 0.0),
        ("public", None, None),
        ("max-age=abc", None, None),
        ("max-age=-5", None, None),
        ("", None, None),
        (None, None, None),
        ("max-age=60", "soon", 60.0),
    ],
)
def test_how_long_a_response_may_be_kept(
    cache_control: str | None, age: str | None, seconds: float | None
) -> None:
    assert max_age(cache_control, age) == seconds


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_revocation_lasts_until_its_expiry_and_the_grace_then_is_forgotten() -> None:
    clock = Clock()
    revoked = RevokedSessions(grace=10, clock=clock)
    assert revoked.revoke("s1", clock.now + 60)
    assert "s1" in revoked
    assert revoked.is_revoked("s1")
    assert len(revoked) == 1
    clock.now += 70
    assert revoked.is_revoked("s1")  # a token of exp = expires_at passes the leeway till now
    clock.now += 0.5
    assert not revoked.is_revoked("s1")
    assert len(revoked) == 0


def test_a_revocation_that_is_already_over_is_not_kept() -> None:
    clock = Clock()
    revoked = RevokedSessions(grace=10, clock=clock)
    assert not revoked.revoke("old", clock.now - 11)
    assert len(revoked) == 0


def test_a_session_revoked_again_keeps_the_later_end() -> None:
    clock = Clock()
    revoked = RevokedSessions(grace=0, clock=clock)
    revoked.revoke("s", clock.now + 100)
    revoked.revoke("s", clock.now + 10)  # a duplicate delivery, an older event: no shorter
    clock.now += 50
    assert revoked.is_revoked("s")
    revoked.revoke("s", clock.now + 100)
    clock.now += 60
    assert revoked.purge() == 0
    assert revoked.is_revoked("s")


def test_memory_is_bounded_by_the_longest_token_life_and_a_count() -> None:
    clock = Clock()
    revoked = RevokedSessions(grace=0, max_lifetime=3600, max_entries=3, clock=clock)
    revoked.revoke("far", clock.now + 10**9)  # no access token lives that long: cut to an hour
    for sid in ("a", "b", "c"):
        revoked.revoke(sid, clock.now + 1800)
    assert len(revoked) == 3
    assert "far" in revoked
    clock.now += 3601
    assert len(revoked) == 0


def test_a_revoked_session_is_only_a_string() -> None:
    revoked = RevokedSessions()
    assert 7 not in revoked
