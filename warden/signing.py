"""Signing keys in a process: making them, the ring tokens are signed and verified with,
and the follower that keeps the ring equal to the key store (storage/signing_keys.py).

Every worker holds a KeyRing: the published keys (each verifies tokens of its own
algorithm only) and the active one's private half (it signs). The follower LISTENs for the
store's changes and reloads at once; it also polls every POLL_SECONDS in case a
notification was lost, reloads (at most once a second) when a token names a kid it does
not know, and makes the store advance when the timeline says a key's time has come.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import ECAlgorithm, OKPAlgorithm

from storage.signing_keys import NewKey, PostgresSigningKeyStore, StoredKey
from warden.security import Signer, Verifier

log = structlog.get_logger("warden.keys")

ASYMMETRIC = ("EdDSA", "ES256")
POLL_SECONDS = 10.0  # a lost notification is made good within this
UNKNOWN_KID_INTERVAL = 1.0  # seconds between reloads asked for by unknown kids
# The members of a public JWK its RFC 7638 thumbprint is taken over, by key type.
_THUMBPRINT_MEMBERS = {"OKP": ("crv", "kty", "x"), "EC": ("crv", "kty", "x", "y")}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def thumbprint(jwk: dict[str, Any]) -> str:
    """The RFC 7638 thumbprint of a public JWK (SHA-256): the kid of a key we make."""
    members = {m: jwk[m] for m in _THUMBPRINT_MEMBERS[jwk["kty"]]}
    return _b64url(hashlib.sha256(orjson.dumps(members, option=orjson.OPT_SORT_KEYS)).digest())


def make_key(algorithm: str) -> NewKey:
    """A new key pair of `algorithm` (EdDSA: Ed25519; ES256: P-256), from `cryptography`."""
    if algorithm == "EdDSA":
        private: Any = Ed25519PrivateKey.generate()
        jwk = OKPAlgorithm.to_jwk(private.public_key(), as_dict=True)
    elif algorithm == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
        jwk = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    else:
        raise ValueError(f"no key pair for {algorithm}")
    public = {**jwk, "kid": thumbprint(jwk), "use": "sig", "alg": algorithm}
    der = private.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return NewKey(public["kid"], algorithm, public, der)


class NoSigningKey(RuntimeError):
    """The ring has no active key yet (the follower has not loaded the store)."""


class KeyRing:
    """The published keys of the store as this process last read them, and the signer."""

    def __init__(self) -> None:
        self.keys: list[StoredKey] = []
        self._verifiers: dict[str, Verifier] = {}
        self._signer: Signer | None = None
        self._jwks: dict[str, list[dict[str, Any]]] = {"keys": []}
        self.on_unknown: Callable[[], None] = lambda: None

    def load(self, keys: list[StoredKey]) -> None:
        """Replace the ring by `keys` (published keys, the active one with its private half)."""
        verifiers = {k.kid: Verifier(k.algorithm, _public_key(k)) for k in keys}
        signer = None
        for k in keys:
            if k.state == "active" and k.private_der is not None:
                private = serialization.load_der_private_key(k.private_der, password=None)
                signer = Signer(k.kid, k.algorithm, private)
        self.keys, self._verifiers, self._signer = keys, verifiers, signer
        self._jwks = {"keys": [k.public_jwk for k in keys]}

    def signing(self) -> Signer:
        if self._signer is None:
            raise NoSigningKey("no active signing key loaded")
        return self._signer

    def verifying(self, kid: object) -> Verifier | None:
        """The key of `kid`, or None (and the follower is asked to look again)."""
        verifier = self._verifiers.get(kid) if isinstance(kid, str) else None
        if verifier is None:
            self.on_unknown()
        return verifier

    def jwks(self) -> dict[str, list[dict[str, Any]]]:
        return self._jwks


def _public_key(key: StoredKey) -> Any:
    if key.algorithm == "EdDSA":
        return OKPAlgorithm.from_jwk(key.public_jwk)
    return ECAlgorithm.from_jwk(key.public_jwk)


class KeyRingFollower:
    """Keeps a KeyRing equal to the store, and moves the store along its timeline."""

    def __init__(self, store: PostgresSigningKeyStore, ring: KeyRing) -> None:
        self._store = store
        self._ring = ring
        self._poke = asyncio.Event()
        self._last_unknown = 0.0
        self._task: asyncio.Task[None] | None = None
        ring.on_unknown = self._unknown_kid

    async def start(self) -> None:
        """Make the first key if there is none, load the ring, then follow the store."""
        await self._store.advance()
        self._ring.load(await self._store.published())
        self._task = asyncio.create_task(self._follow(), name="signing-keys")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _unknown_kid(self) -> None:
        now = time.monotonic()
        if now - self._last_unknown >= UNKNOWN_KID_INTERVAL:
            self._last_unknown = now
            self._poke.set()

    async def _follow(self) -> None:
        while True:
            try:
                conn = await self._store.listen(self._poke.set)
                try:
                    while True:
                        if self._due():
                            await self._store.advance()
                        self._ring.load(await self._store.published(conn))
                        await self._wait()
                finally:
                    with contextlib.suppress(Exception):
                        await conn.close(timeout=2)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database went away: reload once it is back
                log.warning("signing keys: cannot follow the store", error=type(exc).__name__)
                await asyncio.sleep(1)

    async def _wait(self) -> None:
        left = (self.deadline() - datetime.now(UTC)).total_seconds()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(min(max(left, 0.2), POLL_SECONDS)):
                await self._poke.wait()
        self._poke.clear()

    def _due(self) -> bool:
        return datetime.now(UTC) >= self.deadline()

    def deadline(self) -> datetime:
        """When the store's timeline next asks for a change (activation, removal, rotation)."""
        policy = self._store.policy
        moments = [datetime.now(UTC) + timedelta(days=1)]
        for key in self._ring.keys:
            if key.state == "next":
                moments.append(key.activates_at)
            elif key.state == "retired" and key.removes_at is not None:
                moments.append(key.removes_at)
            elif key.state == "active":
                moments.append(key.activates_at + policy.rotate_every)
        return min(moments)
