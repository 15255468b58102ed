"""Warden's published key set: parsing it (RFC 7517), how long it may be kept, fetching it.

Only asymmetric signature keys are ever believed. A key of type `oct` (a shared secret), a
key whose use is not `sig`, a key without a `kid` or whose `alg` its type cannot carry is
left out of the set (and logged), so no token can name it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt

log = logging.getLogger("warden_verifier")

# The algorithms a published key may verify: public-key signatures only. HS* (a shared
# secret) and `none` are never among them, whatever a key set or a token's header says.
ASYMMETRIC = frozenset(
    {"EdDSA", "ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
)
# What a key type may be used with: an OKP key is never an ES256 key, and so on.
_KEY_TYPES = {
    "OKP": frozenset({"EdDSA"}),
    "EC": frozenset({"ES256", "ES384", "ES512"}),
    "RSA": frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}),
}
MAX_DOCUMENT_BYTES = 256 * 1024  # a key set or metadata document larger than this is refused
_MAX_AGE = re.compile(r"(?:^|,)\s*(s-maxage|max-age)\s*=\s*\"?(\d{1,10})\"?\s*(?=,|$)", re.I)


@dataclass(frozen=True)
class VerificationKey:
    """One published key and the one algorithm it verifies."""

    kid: str
    algorithm: str
    key: Any  # the `cryptography` public key PyJWT verifies with
    source: str = ""  # the JWK as published (canonical JSON): the same key when it is equal


class KeySetError(Exception):
    """A key set or metadata document could not be had or read."""


def parse_jwks(document: object) -> dict[str, VerificationKey]:
    """The usable keys of a JWKS document, by kid; the unusable ones logged and left out."""
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise KeySetError('not a key set: expected {"keys": [...]}')
    keys: dict[str, VerificationKey] = {}
    for jwk in document["keys"]:
        try:
            key = _parse_key(jwk)
        except (KeySetError, jwt.PyJWTError, ValueError, TypeError) as exc:
            kid = jwk.get("kid") if isinstance(jwk, Mapping) else None
            log.warning("key set: key %r left out: %s", kid, exc)
            continue
        if key.kid in keys:
            # Two keys of one kid: a token naming it could mean either. Neither is believed.
            log.warning("key set: kid %r appears twice; neither key is used", key.kid)
            keys[key.kid] = VerificationKey(key.kid, "", None)
            continue
        keys[key.kid] = key
    return {kid: key for kid, key in keys.items() if key.key is not None}


def _parse_key(jwk: object) -> VerificationKey:
    if not isinstance(jwk, Mapping):
        raise KeySetError("not a JSON object")
    kid, kty, alg, use = (jwk.get(f) for f in ("kid", "kty", "alg", "use"))
    if not isinstance(kid, str) or not kid:
        raise KeySetError("no kid")
    if use not in (None, "sig"):
        raise KeySetError(f"use {use!r} is not sig")
    if "d" in jwk or kty == "oct":
        raise KeySetError("not a public key")
    allowed = _KEY_TYPES.get(kty) if isinstance(kty, str) else None
    if allowed is None:
        raise KeySetError(f"key type {kty!r} is not an asymmetric signature key")
    if alg is None:
        # PyJWK's choice for the type and curve (Ed25519: EdDSA, P-256: ES256, ...).
        alg = jwt.PyJWK(dict(jwk)).algorithm_name
    if not isinstance(alg, str) or alg not in allowed:
        raise KeySetError(f"alg {alg!r} does not fit key type {kty}")
    key = jwt.PyJWK(dict(jwk), algorithm=alg).key
    return VerificationKey(kid, alg, key, json.dumps(jwk, sort_keys=True))


def max_age(cache_control: str | None, age: str | None = None) -> float | None:
    """How long a response may be kept, from its Cache-Control (and Age); None: not said."""
    if not cache_control:
        return None
    directives = cache_control.lower()
    if "no-store" in directives or "no-cache" in directives:
        return 0.0
    found = {name.lower(): int(value) for name, value in _MAX_AGE.findall(cache_control)}
    seconds = found.get("max-age")
    if seconds is None:
        return None
    already = int(age) if age and age.strip().isdigit() else 0
    return float(max(0, seconds - already))


@dataclass(frozen=True)
class Fetched:
    """A document as fetched, and how long its response said it may be kept."""

    document: object
    max_age: float | None


def _decode(body: bytes) -> object:
    if len(body) > MAX_DOCUMENT_BYTES:
        raise KeySetError("document too large")
    try:
        return json.loads(body)
    except ValueError as exc:
        raise KeySetError(f"not JSON: {exc}") from None


def fetch_sync(url: str, timeout: float) -> Fetched:
    """GET a JSON document with the standard library (used by the plain `verify`)."""
    if not url.lower().startswith(("https://", "http://")):
        raise KeySetError(f"not an http(s) URL: {url!r}")
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            body = response.read(MAX_DOCUMENT_BYTES + 1)
            headers = response.headers
    except OSError as exc:  # URLError and HTTPError are OSErrors, so is a timeout
        raise KeySetError(f"GET {url}: {exc}") from None
    return Fetched(_decode(body), max_age(headers.get("Cache-Control"), headers.get("Age")))


async def fetch_async(url: str, time_limit: float) -> Fetched:
    """GET a JSON document without blocking the loop: aiohttp when installed, else a thread."""
    try:
        import aiohttp
    except ImportError:  # pragma: no cover - the tests run with aiohttp installed
        return await asyncio.to_thread(fetch_sync, url, time_limit)
    if not url.lower().startswith(("https://", "http://")):
        raise KeySetError(f"not an http(s) URL: {url!r}")
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=time_limit)) as session,
            session.get(url, headers={"Accept": "application/json"}) as response,
        ):
            response.raise_for_status()
            body = b""
            async for chunk in response.content.iter_chunked(64 * 1024):
                body += chunk  # read(n) would stop at the first chunk: a document cut short
                if len(body) > MAX_DOCUMENT_BYTES:
                    break
            headers = response.headers
    except aiohttp.ClientResponseError as exc:
        raise KeySetError(f"GET {url}: HTTP {exc.status}") from None
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise KeySetError(f"GET {url}: {type(exc).__name__} {exc}") from None
    return Fetched(_decode(body), max_age(headers.get("Cache-Control"), headers.get("Age")))


def jwks_uri_of(metadata: object, base_url: str) -> tuple[str, str | None]:
    """The `jwks_uri` and `issuer` of RFC 8414 authorization server metadata."""
    if not isinstance(metadata, Mapping):
        raise KeySetError(f"metadata of {base_url} is not a JSON object")
    uri, issuer = metadata.get("jwks_uri"), metadata.get("issuer")
    if not isinstance(uri, str) or not uri.lower().startswith(("https://", "http://")):
        raise KeySetError(f"metadata of {base_url} names no http(s) jwks_uri")
    return uri, issuer if isinstance(issuer, str) and issuer else None


def metadata_url(base_url: str) -> str:
    """Where RFC 8414 puts the metadata of an authorization server at `base_url`."""
    return base_url.rstrip("/") + "/.well-known/oauth-authorization-server"
