"""Tokens signed as Warden signs them, by PyJWT directly: what a holder of its keys could make."""

from __future__ import annotations

import base64
from typing import Any

import jwt

from warden.bootstrap import Services
from warden.keys import REFRESH_TOKEN, subkey
from warden.settings import Settings


def sign_as_warden(settings: Settings, worker: Services, claims: dict[str, Any]) -> str:
    """`claims` signed with the key Warden would use for a token of their `type`: the ring's
    active key (its kid in the header) for an access token, Warden's own refresh key for a
    refresh token; with HS* both are WARDEN_JWT_SECRET."""
    if not settings.asymmetric:
        secret = settings.jwt_secret.get_secret_value()
        return jwt.encode(claims, secret, algorithm=settings.jwt_algorithm)
    if claims.get("type") == "refresh":
        master = settings.key_encryption_key.get_secret_value().encode()
        return jwt.encode(claims, subkey(master, REFRESH_TOKEN), algorithm="HS256")
    signer = worker.resources.key_ring.signing()
    return jwt.encode(claims, signer.key, algorithm=signer.algorithm, headers={"kid": signer.kid})


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
