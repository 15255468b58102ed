"""Keys derived per purpose, sealing at rest, and the keyed fingerprint of request bodies."""

from __future__ import annotations

import hashlib

from handlers.idempotency import fingerprint
from warden.keys import IDEMPOTENCY_FINGERPRINT, IDEMPOTENCY_REPLY, AesGcmSealer, subkey

MASTER = b"a master key of at least thirty-two bytes"


def test_each_purpose_has_its_own_key_and_each_master_its_own_keys() -> None:
    fingerprints, replies = (
        subkey(MASTER, IDEMPOTENCY_FINGERPRINT),
        subkey(MASTER, IDEMPOTENCY_REPLY),
    )
    assert len(fingerprints) == len(replies) == 32
    assert fingerprints != replies
    assert subkey(MASTER, IDEMPOTENCY_REPLY) == replies  # derived, so every worker agrees
    assert subkey(MASTER + b"!", IDEMPOTENCY_REPLY) != replies


def test_a_sealed_value_opens_only_with_its_key_and_its_context() -> None:
    sealer = AesGcmSealer(subkey(MASTER, IDEMPOTENCY_REPLY))
    sealed = sealer.seal(b'{"access_token": "t"}', b"slot-a")
    assert b"access_token" not in sealed
    assert sealer.seal(b'{"access_token": "t"}', b"slot-a") != sealed  # a fresh nonce each time
    assert sealer.open(sealed, b"slot-a") == b'{"access_token": "t"}'
    assert sealer.open(sealed, b"slot-b") is None  # moved to another slot
    assert AesGcmSealer(subkey(MASTER + b"!", IDEMPOTENCY_REPLY)).open(sealed, b"slot-a") is None
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    assert sealer.open(tampered, b"slot-a") is None
    assert sealer.open(b"short", b"slot-a") is None
    assert sealer.key_id != AesGcmSealer(subkey(MASTER + b"!", IDEMPOTENCY_REPLY)).key_id


def test_the_fingerprint_is_keyed_and_equal_for_equal_json() -> None:
    key = subkey(MASTER, IDEMPOTENCY_FINGERPRINT)
    body = b'{"username": "alice", "password": "correct horse battery"}'
    reordered = b'{ "password":"correct horse battery","username":"alice" }'
    assert fingerprint(key, body) == fingerprint(key, reordered)
    assert fingerprint(key, body) != fingerprint(
        subkey(MASTER + b"!", IDEMPOTENCY_FINGERPRINT), body
    )
    canonical = b'{"password":"correct horse battery","username":"alice"}'
    assert fingerprint(key, body) != hashlib.sha256(canonical).hexdigest()
    assert fingerprint(key, b"not json") != fingerprint(key, b"not json!")
