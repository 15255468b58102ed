"""Keys a test signs with, a key set server, and the library's verdict on forged tokens.

`judge_with_library(jwks_url, ...)` is what an end-to-end test against a real Warden needs: a
real token verifies with only the published key set, and every forgery one can make from that
set alone (alg none, HS256 keyed with the public key, a key Warden never published, the header
of another algorithm, a refresh token) is refused with `invalid_token`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import jwt
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt.algorithms import ECAlgorithm, OKPAlgorithm
from warden_verifier import Claims, InvalidToken, VerificationError, Verifier
from warden_verifier.keys import fetch_async

Kind = Literal["EdDSA", "ES256"]
ISSUER = "warden"


@dataclass
class SigningKey:
    """A private key of the test's, named `kid`, for the one algorithm it signs with."""

    alg: Kind
    kid: str = field(default_factory=lambda: uuid.uuid4().hex)
    private: Any = None

    def __post_init__(self) -> None:
        if self.private is None:
            self.private = (
                ed25519.Ed25519PrivateKey.generate()
                if self.alg == "EdDSA"
                else ec.generate_private_key(ec.SECP256R1())
            )

    def jwk(self) -> dict[str, Any]:
        """The public half as Warden publishes it."""
        algorithm = OKPAlgorithm if self.alg == "EdDSA" else ECAlgorithm
        public: dict[str, Any] = algorithm.to_jwk(self.private.public_key(), as_dict=True)
        return public | {"kid": self.kid, "use": "sig", "alg": self.alg}

    def sign(self, **overrides: Any) -> str:
        """An access token as Warden writes one; `overrides` replace or (None) drop claims."""
        return jwt.encode(
            access_claims(**overrides), self.private, algorithm=self.alg, headers={"kid": self.kid}
        )


def access_claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "42",
        "sid": uuid.uuid4().hex,
        "jti": uuid.uuid4().hex,
        "type": "access",
        "iat": now,
        "exp": now + 300,
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    """A token with `header` as is and no signature (`alg: none` style)."""
    return f"{b64(_dumps(header))}.{b64(_dumps(claims))}."


def _dumps(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def hs256_with(secret: bytes, kid: str, claims: dict[str, Any]) -> str:
    """An HS256 token keyed with `secret`, e.g. a public key's bytes (key confusion)."""
    header = {"alg": "HS256", "typ": "JWT", "kid": kid}
    signing_input = f"{b64(_dumps(header))}.{b64(_dumps(claims))}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def public_key_forms(jwk: dict[str, Any]) -> list[bytes]:
    """Every form of a published key an attacker might try as an HMAC secret."""
    key = jwt.PyJWK(jwk).key
    raw = (
        key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        if jwk["kty"] == "OKP"
        else key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
    )
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return [raw, pem, jwk["x"].encode(), _dumps(jwk)]


class KeySetServer:
    """A real HTTP server of the test's serving a JWKS (and RFC 8414 metadata), counting GETs."""

    def __init__(self, *keys: SigningKey, max_age: int | None = 300) -> None:
        self.keys = list(keys)
        self.max_age = max_age
        self.failing = False  # answer 500 instead of the set
        self.body: bytes | None = None  # answer this instead of the set
        self.metadata: dict[str, Any] | None = None  # serve this as the RFC 8414 metadata
        self.fetches = 0
        self.issuer = ISSUER
        app = web.Application()
        app.router.add_get("/.well-known/jwks.json", self._jwks)
        app.router.add_get("/.well-known/oauth-authorization-server", self._metadata)
        self._server = TestServer(app, host="127.0.0.1")

    async def start(self) -> KeySetServer:
        await self._server.start_server()
        return self

    async def close(self) -> None:
        await self._server.close()

    @property
    def url(self) -> str:
        return str(self._server.make_url("")).rstrip("/")

    @property
    def jwks_url(self) -> str:
        return self.url + "/.well-known/jwks.json"

    async def _jwks(self, request: web.Request) -> web.Response:
        self.fetches += 1
        if self.failing:
            return web.Response(status=500, text="down")
        if self.body is not None:
            return web.Response(body=self.body, content_type="application/json")
        headers = (
            {} if self.max_age is None else {"Cache-Control": f"public, max-age={self.max_age}"}
        )
        return web.json_response({"keys": [k.jwk() for k in self.keys]}, headers=headers)

    async def _metadata(self, request: web.Request) -> web.Response:
        if self.metadata is not None:
            return web.json_response(self.metadata)
        return web.json_response(
            {"issuer": self.issuer, "jwks_uri": self.jwks_url, "token_endpoint": self.url + "/t"}
        )


async def refused(verify: Callable[[str], Awaitable[Claims]], token: str) -> str:
    """The code the verifier refused `token` with (AssertionError if it accepted it)."""
    try:
        claims = await verify(token)
    except VerificationError as error:
        return error.code
    raise AssertionError(f"accepted a token it must refuse: {claims}")


async def judge_with_library(
    jwks_url: str,
    access_token: str,
    *,
    issuer: str = ISSUER,
    audience: str | None = None,
    refresh_token: str | None = None,
) -> Claims:
    """The library verifies `access_token` with only the key set at `jwks_url`, and refuses
    every forgery made from that key set; the claims of the real token."""
    verifier = Verifier(jwks_url, issuer=issuer, audience=audience)
    claims = await verifier.verify_async(access_token)
    assert (await asyncio.to_thread(verifier.verify, access_token)) == claims  # the sync path
    published = await _published(jwks_url)
    assert any(k["kid"] == claims.key_id for k in published)
    payload = dict(claims.raw)
    forgeries = [unsigned({"alg": "none", "typ": "JWT", "kid": claims.key_id}, payload)]
    for jwk in published:
        forgeries += [hs256_with(secret, jwk["kid"], payload) for secret in public_key_forms(jwk)]
        other: Kind = "ES256" if jwk["alg"] == "EdDSA" else "EdDSA"
        forgeries.append(SigningKey(other, kid=jwk["kid"]).sign(**payload))  # header's alg lies
    forgeries.append(SigningKey("EdDSA").sign(**payload))  # a kid Warden never published
    forgeries.append(SigningKey("EdDSA", kid=claims.key_id).sign(**payload))  # not its key
    if refresh_token is not None:
        forgeries.append(refresh_token)
    for forged in forgeries:
        code = await refused(verifier.verify_async, forged)
        assert code == InvalidToken.code, (code, forged)
    return claims


async def _published(jwks_url: str) -> list[dict[str, Any]]:
    document = (await fetch_async(jwks_url, 5.0)).document
    assert isinstance(document, dict)
    keys: list[dict[str, Any]] = document["keys"]
    return keys
