"""Password hashing (bcrypt) and tokens (JWT): the crypto adapters of the domain's ports."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import bcrypt
import jwt
from prometheus_client import Counter, Histogram

from domain.auth import new_id
from domain.errors import InvalidToken, TokenExpired
from domain.model import PASSWORD_ONLY, AccessClaims, RefreshClaims, TokenSession
from domain.rules import PASSWORD_MAX_BYTES, normalize_password

_REQUIRED_CLAIMS = ["iss", "sub", "sid", "jti", "type", "iat", "exp"]
VERIFIED_TOKENS = 4096  # access tokens whose verification each process remembers
BCRYPT_WAIT = Histogram(
    "warden_bcrypt_pool_wait_seconds",
    "Time a bcrypt call waited for a thread of the pool",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
BCRYPT_DONE = Counter(
    "warden_bcrypt_calls", "bcrypt hashes and checks the pool worked through to the end"
)


# What bcrypt checks in place of input it cannot take (over 72 bytes, or no UTF-8 form), so
# such a login costs the time of any wrong password; its result is never believed.
STAND_IN = b"not a password: the input was over 72 bytes or not UTF-8"


def candidates(password: str) -> list[bytes | None]:
    """What bcrypt is asked, in order: the NFKC form, then the raw form where it differs (the
    password of a user registered before passwords were normalised). None: bcrypt cannot
    take that form, and it can match nothing."""
    normal = normalize_password(password)
    return [_bcrypt_input(form) for form in dict.fromkeys((normal, password))]


def _bcrypt_input(form: str) -> bytes | None:
    try:
        data = form.encode()
    except UnicodeEncodeError:  # a lone surrogate
        return None
    return data if len(data) <= PASSWORD_MAX_BYTES else None


def _lower_priority(nice: int) -> None:
    # Linux threads have their own nice value: hashing yields the cores to the event loops.
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)


class BcryptPasswordHasher:
    """PasswordHasher on a bounded thread pool; bcrypt releases the GIL while it works."""

    def __init__(self, rounds: int, threads: int, nice: int = 5) -> None:
        self._rounds = rounds
        self._pool = ThreadPoolExecutor(
            max_workers=threads,
            thread_name_prefix="bcrypt",
            initializer=_lower_priority,
            initargs=(nice,),
        )
        self._dummy: bytes | None = None
        self.waiting = 0  # calls queued or running, for metrics

    async def hash(self, password: str) -> str:
        salt = bcrypt.gensalt(self._rounds)
        hashed: bytes = await self._run(bcrypt.hashpw, normalize_password(password).encode(), salt)
        return hashed.decode()

    async def verify(self, password: str, hashed: str) -> bool:
        """Any input gets an answer, never an error, in the time of as many checks as a
        wrong password of its kind takes (which `burn` spends too)."""
        for candidate in candidates(password):
            try:
                ok: bool = await self._run(bcrypt.checkpw, candidate or STAND_IN, hashed.encode())
            except ValueError:  # a malformed stored hash never verifies
                return False
            if ok and candidate is not None:
                return True
        return False

    async def burn(self, password: str) -> None:
        if self._dummy is None:
            self._dummy = (await self.hash(new_id())).encode()
        for candidate in candidates(password):
            await self._run(bcrypt.checkpw, candidate or STAND_IN, self._dummy)

    async def _run(self, fn: Any, *args: Any) -> Any:
        queued = time.perf_counter()

        def timed() -> Any:
            BCRYPT_WAIT.observe(time.perf_counter() - queued)  # time spent waiting for a thread
            result = fn(*args)
            BCRYPT_DONE.inc()  # the work was done: bcrypt did not refuse its input at once
            return result

        self.waiting += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, timed)
        finally:
            self.waiting -= 1

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


@dataclass(frozen=True)
class Verifier:
    """A key that verifies tokens of exactly one algorithm (the header's `alg` must be it)."""

    algorithm: str
    key: Any


@dataclass(frozen=True)
class Signer:
    """The key that signs: its kid (None for a shared secret), algorithm and private half."""

    kid: str | None
    algorithm: str
    key: Any


class TokenKeys(Protocol):
    """The keys access tokens are signed and verified with (warden.signing.KeyRing)."""

    def signing(self) -> Signer: ...

    def verifying(self, kid: object) -> Verifier | None:
        """The key a token naming `kid` must verify with; None: refuse the token."""


class SharedSecret:
    """HS256/384/512 with one secret: no kid, nothing to publish."""

    def __init__(self, secret: str | bytes, algorithm: str) -> None:
        self._signer = Signer(None, algorithm, secret)
        self._verifier = Verifier(algorithm, secret)

    def signing(self) -> Signer:
        return self._signer

    def verifying(self, kid: object) -> Verifier:
        return self._verifier

    def jwks(self) -> dict[str, list[dict[str, Any]]]:
        return {"keys": []}


class JwtTokenIssuer:
    """TokenIssuer with the algorithm pinned per key, required claims, issuer (and audience)
    checks and a small leeway.

    Access tokens are signed by `keys` (the active key of the ring, its kid in the header;
    or a shared secret). Refresh tokens are read by Warden alone: they are signed with
    `refresh`, a secret no other service has, so a key published for others to verify
    access tokens never vouches for one, and a key rotation never ends a session.
    """

    def __init__(
        self,
        keys: TokenKeys,
        refresh: SharedSecret,
        issuer: str,
        access_ttl: int,
        refresh_ttl: int,
        audience: str = "",
        leeway: int = 10,
    ) -> None:
        self._keys = keys
        self._refresh = refresh
        self._issuer = issuer
        self._audience = audience or None
        self._access_ttl = timedelta(seconds=access_ttl)
        self._refresh_ttl = timedelta(seconds=refresh_ttl)
        self._leeway = leeway
        # A token's signature and claims never change, so an access token is verified once
        # (for the most recently seen few thousand) and only its expiry, a matter of time,
        # and that its key is still in the ring, are checked at every use. Revocation and
        # the user's state are not claims: the use cases look them up on every request.
        self._verified_access = functools.lru_cache(maxsize=VERIFIED_TOKENS)(self._verify_access)

    @classmethod
    def shared(
        cls,
        secret: str,
        issuer: str,
        access_ttl: int,
        refresh_ttl: int,
        algorithm: str = "HS256",
        leeway: int = 10,
        audience: str = "",
    ) -> JwtTokenIssuer:
        """Both kinds of token signed with one secret (WARDEN_JWT_ALGORITHM=HS*)."""
        keys = SharedSecret(secret, algorithm)
        return cls(keys, keys, issuer, access_ttl, refresh_ttl, audience, leeway)

    def issue_access(
        self, user_id: int, session_id: str, now: datetime, amr: Sequence[str] = PASSWORD_ONLY
    ) -> str:
        claims = self._claims("access", user_id, session_id, new_id(), now, self._access_ttl, amr)
        return self._sign(claims, self._keys.signing())

    def issue_refresh(
        self,
        user_id: int,
        session_id: str,
        token_id: str,
        now: datetime,
        amr: Sequence[str] = PASSWORD_ONLY,
    ) -> str:
        claims = self._claims("refresh", user_id, session_id, token_id, now, self._refresh_ttl, amr)
        return self._sign(claims, self._refresh.signing())

    def read_access(self, token: str) -> AccessClaims:
        claims, kid = self._verified_access(token)
        if kid is not None and self._keys.verifying(kid) is None:  # its key left the ring
            raise InvalidToken
        if time.time() >= claims.expires_at + self._leeway:  # as PyJWT judges `exp`
            raise TokenExpired
        return claims

    def _verify_access(self, token: str) -> tuple[AccessClaims, str | None]:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError:
            raise InvalidToken from None
        verifier = self._keys.verifying(kid)
        if verifier is None:
            raise InvalidToken
        claims = self._read(token, "access", verifier, verify_exp=False)
        access = AccessClaims(
            user_id=int(claims["sub"]),
            session_id=claims["sid"],
            token_id=claims["jti"],
            issued_at=int(claims["iat"]),
            expires_at=int(claims["exp"]),
            amr=_amr(claims),
        )
        return access, kid if isinstance(kid, str) else None

    def read_refresh(self, token: str) -> RefreshClaims:
        claims = self._read(token, "refresh", self._refresh.verifying(None))
        return RefreshClaims(int(claims["sub"]), claims["sid"], claims["jti"], _amr(claims))

    def read_session(self, token: str) -> TokenSession:
        """The user and session a genuine token of either kind names, expired or not."""
        with contextlib.suppress(InvalidToken):
            claims = self._read(token, "refresh", self._refresh.verifying(None), verify_exp=False)
            return TokenSession(int(claims["sub"]), claims["sid"])
        access, _ = self._verified_access(token)
        return TokenSession(access.user_id, access.session_id)

    def _claims(
        self,
        kind: str,
        user_id: int,
        sid: str,
        jti: str,
        now: datetime,
        ttl: timedelta,
        amr: Sequence[str],
    ) -> dict[str, Any]:
        """Every claim of a token, made here only."""
        claims: dict[str, Any] = {
            "iss": self._issuer,
            "sub": str(user_id),
            "sid": sid,
            "jti": jti,
            "type": kind,
            "iat": int(now.timestamp()),
            "exp": int((now + ttl).timestamp()),
            "amr": list(amr),
        }
        if kind == "access" and self._audience is not None:
            claims["aud"] = self._audience
        return claims

    @staticmethod
    def _sign(claims: dict[str, Any], signer: Signer) -> str:
        headers = None if signer.kid is None else {"kid": signer.kid}
        return jwt.encode(claims, signer.key, algorithm=signer.algorithm, headers=headers)

    def _read(
        self, token: str, kind: str, verifier: Verifier, verify_exp: bool = True
    ) -> dict[str, Any]:
        audience = self._audience if kind == "access" else None
        required = [*_REQUIRED_CLAIMS, "aud"] if audience is not None else _REQUIRED_CLAIMS
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                verifier.key,
                algorithms=[verifier.algorithm],  # the key's own, whatever the header says
                issuer=self._issuer,
                audience=audience,
                leeway=self._leeway,
                options={"require": required, "verify_exp": verify_exp},
            )
        except jwt.ExpiredSignatureError:
            raise TokenExpired from None
        except jwt.PyJWTError:
            raise InvalidToken from None
        if claims.get("type") != kind:
            raise InvalidToken(f"This is not an {kind} token." if kind == "access" else None)
        sub, sid, jti = claims.get("sub"), claims.get("sid"), claims.get("jti")
        if not (isinstance(sub, str) and sub.isdigit()):
            raise InvalidToken
        if not (isinstance(sid, str) and isinstance(jti, str) and type(claims["exp"]) is int):
            raise InvalidToken
        amr = claims.get("amr", list(PASSWORD_ONLY))
        if not (isinstance(amr, list) and amr and all(isinstance(m, str) for m in amr)):
            raise InvalidToken
        return claims


def _amr(claims: dict[str, Any]) -> tuple[str, ...]:
    """RFC 8176 `amr` of a checked token; a token issued before it existed was a password's."""
    return tuple(claims.get("amr", PASSWORD_ONLY))
