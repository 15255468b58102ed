"""Verify Warden's access tokens with only its published key set.

    verifier = Verifier.discover("https://warden.example")   # or Verifier(jwks_url, issuer=)
    claims = verifier.verify(token)                           # Claims, or a VerificationError

`warden_verifier.middleware` (extra `aiohttp`) puts the claims on each aiohttp request;
`warden_verifier.follower` (extra `broker`) hears `session.revoked` so revoked sessions are
refused before their tokens expire.
"""

from warden_verifier.cache import KeyCache
from warden_verifier.claims import Claims
from warden_verifier.errors import (
    InvalidToken,
    KeySetUnavailable,
    MissingToken,
    TokenExpired,
    TokenRevoked,
    VerificationError,
)
from warden_verifier.keys import VerificationKey, parse_jwks
from warden_verifier.revocations import RevokedSessions
from warden_verifier.verifier import Verifier, bearer_token

__all__ = [
    "Claims",
    "InvalidToken",
    "KeyCache",
    "KeySetUnavailable",
    "MissingToken",
    "RevokedSessions",
    "TokenExpired",
    "TokenRevoked",
    "VerificationError",
    "VerificationKey",
    "Verifier",
    "bearer_token",
    "parse_jwks",
]
