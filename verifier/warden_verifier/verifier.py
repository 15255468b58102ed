"""Verifying one of Warden's access tokens with only its published key set.

The checks, in order: a compact JWS of bounded size; a header naming a `kid` and an asymmetric
`alg` (never `none`, never HS*: a token "signed" with the public key as an HMAC secret is
refused before any key is touched); the kid's key, whose own algorithm must be the header's;
the signature; `iss`, `aud` (when configured), `exp` and `iat` with a small leeway; every claim
Warden puts in an access token, `type` "access"; last, the session not revoked.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

import jwt

from warden_verifier.cache import KeyCache
from warden_verifier.claims import Claims
from warden_verifier.errors import InvalidToken, MissingToken, TokenExpired, TokenRevoked
from warden_verifier.keys import ASYMMETRIC, VerificationKey, fetch_async, fetch_sync, jwks_uri_of
from warden_verifier.keys import metadata_url as _metadata_url
from warden_verifier.revocations import RevokedSessions

MAX_TOKEN_LENGTH = 8192  # characters; Warden's tokens are a few hundred
VERIFIED_TOKENS = 4096  # tokens whose verification each verifier remembers
_REQUIRED = ["iss", "sub", "sid", "jti", "type", "iat", "exp"]


class Verifier:
    """Checks Warden's access tokens against the key set at `jwks_url`.

    `issuer`: the `iss` Warden writes (its WARDEN_JWT_ISSUER). `audience`: when given, a token
    must name it in `aud` (set it when Warden has WARDEN_JWT_AUDIENCE); when not, `aud` is not
    looked at. `revoked`: the sessions a `SessionRevokedFollower` heard of, refused with
    `token_revoked`. The other keyword arguments tune the key cache (see `KeyCache`).

    A token's signature and claims never change, so the last `verified_tokens` tokens that
    passed are remembered with the key that verified them: at their next use only what can
    change is checked again — the key still published as it was, `exp`, the revocation.
    """

    def __init__(
        self,
        jwks_url: str,
        *,
        issuer: str,
        audience: str | None = None,
        leeway: float = 10.0,
        revoked: RevokedSessions | None = None,
        verified_tokens: int = VERIFIED_TOKENS,
        **cache_options: Any,
    ) -> None:
        self.keys = KeyCache(jwks_url, **cache_options)
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway
        self.revoked = revoked
        self._options: dict[str, Any] = {"require": _REQUIRED, "verify_aud": audience is not None}
        self._verified: dict[str, tuple[Claims, VerificationKey]] = {}
        self._verified_max = verified_tokens
        self._lock = threading.Lock()

    @classmethod
    def discover(cls, warden_url: str, *, issuer: str | None = None, **options: Any) -> Verifier:
        """A verifier for the Warden at `warden_url`, from its RFC 8414 metadata (blocking).

        The metadata's `jwks_uri` is where the keys are; its `issuer` the expected `iss`
        unless `issuer` is given."""
        metadata = fetch_sync(_metadata_url(warden_url), options.get("timeout", 5.0)).document
        return cls._from_metadata(metadata, warden_url, issuer, options)

    @classmethod
    async def discover_async(
        cls, warden_url: str, *, issuer: str | None = None, **options: Any
    ) -> Verifier:
        """As `discover`, without blocking the loop."""
        fetched = await fetch_async(_metadata_url(warden_url), options.get("timeout", 5.0))
        return cls._from_metadata(fetched.document, warden_url, issuer, options)

    @classmethod
    def _from_metadata(
        cls, metadata: object, url: str, issuer: str | None, options: dict[str, Any]
    ) -> Verifier:
        jwks_uri, published_issuer = jwks_uri_of(metadata, url)
        expected = issuer or published_issuer
        if expected is None:
            raise ValueError(f"the metadata of {url} names no issuer: pass issuer=")
        return cls(jwks_uri, issuer=expected, **options)

    def verify(self, token: object) -> Claims:
        """The claims of `token`, or a VerificationError saying why not. May block on a fetch
        of the key set (when due); in async code use `verify_async`."""
        known = self._verified.get(token) if isinstance(token, str) else None
        if known is not None and self.keys.get(known[0].key_id) is known[1]:
            return self._still_valid(known[0])
        kid, alg = _header(token)
        return self._check(token, self.keys.get(kid), alg)

    async def verify_async(self, token: object) -> Claims:
        """As `verify`, fetching the key set (when due) without blocking the loop."""
        known = self._verified.get(token) if isinstance(token, str) else None
        if known is not None and await self.keys.get_async(known[0].key_id) is known[1]:
            return self._still_valid(known[0])
        kid, alg = _header(token)
        return self._check(token, await self.keys.get_async(kid), alg)

    def _still_valid(self, claims: Claims) -> Claims:
        if time.time() >= claims.expires_at + self.leeway:  # as PyJWT judges `exp`
            raise TokenExpired
        if self.revoked is not None and self.revoked.is_revoked(claims.session_id):
            raise TokenRevoked
        return claims

    def _remember(self, token: str, claims: Claims, key: VerificationKey) -> None:
        if self._verified_max <= 0:
            return
        with self._lock:
            while len(self._verified) >= self._verified_max:
                del self._verified[next(iter(self._verified))]  # the oldest first
            self._verified[token] = (claims, key)

    def _check(self, token: object, key: VerificationKey | None, alg: str) -> Claims:
        assert isinstance(token, str)  # _header refused anything else
        if key is None:
            raise InvalidToken("The token's signing key is not one of Warden's published keys.")
        if key.algorithm != alg:
            raise InvalidToken
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm],
                issuer=self.issuer,
                audience=self.audience,
                leeway=self.leeway,
                options=self._options,  # type: ignore[arg-type]
            )
        except jwt.ExpiredSignatureError:
            raise TokenExpired from None
        except jwt.PyJWTError:
            raise InvalidToken from None
        result = _claims(claims, key.kid)
        self._remember(token, result, key)
        return self._still_valid(result)

    def verify_header(self, authorization: str | None) -> Claims:
        """The claims of an `Authorization: Bearer <token>` header's token."""
        return self.verify(bearer_token(authorization))


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header, read as Warden reads it:
    MissingToken without a header, InvalidToken for another scheme or no token after it."""
    if not authorization:
        raise MissingToken
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidToken("The Authorization header must be 'Bearer <access token>'.")
    return token.strip()


def _header(token: object) -> tuple[str, str]:
    """The header's kid and alg, once they could name one of the keys at all."""
    if token is None or token == "":
        raise MissingToken
    if not isinstance(token, str):
        raise InvalidToken
    if len(token) > MAX_TOKEN_LENGTH or token.count(".") != 2:
        raise InvalidToken
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise InvalidToken from None
    kid, alg = header.get("kid"), header.get("alg")
    if not isinstance(alg, str) or alg not in ASYMMETRIC:
        raise InvalidToken("The token's algorithm is not one Warden's keys verify.")
    if not isinstance(kid, str) or not kid:
        raise InvalidToken("The token names no key.")
    return kid, alg


def _claims(claims: Mapping[str, Any], kid: str) -> Claims:
    if claims.get("type") != "access":
        raise InvalidToken("This is not an access token.")
    sub, sid, jti = claims.get("sub"), claims.get("sid"), claims.get("jti")
    iat, exp = claims.get("iat"), claims.get("exp")
    if not all(isinstance(v, str) and v for v in (sub, sid, jti)):
        raise InvalidToken
    if not (type(iat) is int and type(exp) is int):
        raise InvalidToken
    return Claims(
        user_id=str(sub),
        session_id=str(sid),
        token_id=str(jti),
        issuer=str(claims["iss"]),
        issued_at=iat,
        expires_at=exp,
        key_id=kid,
        audience=_strings(claims.get("aud")),
        amr=_strings(claims.get("amr")),
        raw=MappingProxyType(claims),  # read-only: the same Claims answer the token's next use
    )


def _strings(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, Iterable) and not isinstance(value, Mapping):
        return tuple(v for v in value if isinstance(v, str))
    return ()
