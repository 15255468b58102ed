"""Keys derived from WARDEN_KEY_ENCRYPTION_KEY, and the sealing of values kept at rest.

One master key, one subkey per purpose (HKDF-SHA256 with the purpose as `info`): a key
never serves two purposes, and a purpose's key changes with its version label.
"""

from __future__ import annotations

import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

IDEMPOTENCY_FINGERPRINT = "warden idempotency fingerprint v1"
IDEMPOTENCY_REPLY = "warden idempotency reply v1"
SIGNING_KEY = "warden signing key v1"  # seals the private halves of the signing keys
REFRESH_TOKEN = "warden refresh token v1"  # signs refresh tokens (read by Warden alone)
TOTP_SECRET = "warden totp secret v1"  # seals each user's TOTP secret (the user id bound)
RECOVERY_CODES = "warden recovery codes v1"  # keys the HMAC digests of recovery codes
MAIL_TOKEN = "warden mail token v1"  # seals the token a mail job carries to the mailer
NONCE_BYTES = 12  # AES-GCM's standard nonce, random for each value sealed


def subkey(master: bytes, purpose: str) -> bytes:
    """The 256-bit key of one purpose, derived from the master key."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode()).derive(
        master
    )


class AesGcmSealer:
    """AES-256-GCM: a value is readable only with the key and the context it was sealed for."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)
        # Names the key without revealing it, so a value sealed under another one is told apart.
        self.key_id = hashlib.sha256(b"warden key id\x00" + key).hexdigest()[:16]

    def seal(self, plaintext: bytes, context: bytes) -> bytes:
        """nonce || ciphertext || tag; `context` (authenticated, not stored) must match to open."""
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, context)

    def open(self, sealed: bytes, context: bytes) -> bytes | None:
        """The plaintext, or None when it fails authentication (another key or context, or
        tampered with)."""
        try:
            return self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], context)
        except (InvalidTag, ValueError):
            return None
