"""Use cases of the second factor: enrol TOTP, confirm it, disable it, and finish a login.

TOTP is RFC 6238 (the `Totp` port: SHA-1, 6 digits, 30 s, one step of drift). The secret is
sealed (AES-GCM, the user id as associated data) before it reaches the store; a code is
accepted once: the store remembers the last time-step used, and refuses any step not later.
Recovery codes are 80 random bits each, kept only as keyed digests (HMAC-SHA256) and spent by
one atomic delete. A login whose password was right waits for its second factor under an
`mfa_token` (Auth.login): single use, five minutes, bound to the user and to the login's
address, dead after five wrong codes. A wrong code counts toward the account's lockout
exactly as a wrong password does.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

from domain import events
from domain.auth import Auth, account_of, address_of
from domain.errors import (
    InactiveUser,
    InternalError,
    InvalidMfaCode,
    InvalidToken,
    MfaAlreadyEnabled,
    MfaNotEnrolled,
    TooManyAttempts,
    WrongPassword,
)
from domain.model import (
    WITH_RECOVERY_CODE,
    WITH_TOTP,
    MfaChallenge,
    Origin,
    Principal,
    TokenPair,
    TotpState,
    User,
)
from domain.ports import (
    Clock,
    LoginThrottle,
    MfaChallenges,
    MfaRepository,
    PasswordHasher,
    Sealer,
    Totp,
    UnitOfWorkFactory,
)
from domain.rules import is_text

MFA_TOKEN_MAX_FAILURES = 5  # wrong codes an mfa_token survives (the fifth ends it)
RECOVERY_CODE_COUNT = 10
RECOVERY_CODE_GROUPS = 4  # of four characters each: 16 base32 characters, 80 bits
TOTP_DIGITS = 6
CODE_MAX_CHARS = 64  # longer input is no code of ours (the wire model refuses it too)
_BASE32 = "abcdefghijklmnopqrstuvwxyz234567"
DEAD_MFA_TOKEN = "The mfa_token is unknown, expired, used or from another address: log in again."
WRONG_PASSWORDS = "Too many wrong passwords for this account; try again later."


@dataclass(frozen=True)
class MfaLogIn:
    """Finish a login with the mfa_token it answered and a TOTP or recovery code."""

    mfa_token: str = field(repr=False)
    code: str = field(repr=False)
    origin: Origin | None = None  # None: a caller in this process


@dataclass(frozen=True)
class Enrollment:
    """A pending TOTP enrolment, shown once: the secret and its otpauth:// URI."""

    secret: str = field(repr=False)
    otpauth_uri: str = field(repr=False)


def normalized_code(code: str) -> str:
    """A code as typed, without the spaces and hyphens people add, lower-cased."""
    return "".join(c for c in code if c not in " -").lower()


def is_totp_code(code: str) -> bool:
    """Six ASCII digits (a recovery code never is: it has letters)."""
    return len(code) == TOTP_DIGITS and code.isascii() and code.isdigit()


class RecoveryCodes:
    """Single-use codes of 80 random bits, kept as HMAC-SHA256 digests under a secret key.

    Not bcrypt: a slow hash protects guessable secrets, and 80 random bits are not guessable
    offline even from a plain digest; the key makes a stolen table worthless without it, and
    a fast digest can be looked up (and deleted) in one indexed statement.
    """

    def __init__(self, key: bytes) -> None:
        self._key = key

    def new(self) -> list[str]:
        return [self._one() for _ in range(RECOVERY_CODE_COUNT)]

    def digest(self, code: str) -> bytes:
        """The digest of a code as the user typed it (normalised first)."""
        return hmac.new(self._key, normalized_code(code).encode(), hashlib.sha256).digest()

    @staticmethod
    def _one() -> str:
        chars = "".join(secrets.choice(_BASE32) for _ in range(4 * RECOVERY_CODE_GROUPS))
        return "-".join(chars[i : i + 4] for i in range(0, len(chars), 4))


def sealing_context(user_id: int) -> bytes:
    """The associated data a user's secret is sealed with: it opens for that user only."""
    return f"warden totp secret of user {user_id}".encode()


class SecondFactor:
    """TOTP enrolment and the second step of a login."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        auth: Auth,
        hasher: PasswordHasher,
        throttle: LoginThrottle,
        challenges: MfaChallenges,
        totp: Totp,
        sealer: Sealer,
        recovery: RecoveryCodes,
        clock: Clock,
        issuer: str,
    ) -> None:
        self._uow = uow
        self._auth = auth
        self._hasher = hasher
        self._throttle = throttle
        self._challenges = challenges
        self._totp = totp
        self._sealer = sealer
        self._recovery = recovery
        self._clock = clock
        self._issuer = issuer

    def using(self, uow: UnitOfWorkFactory) -> SecondFactor:
        """These use cases with their units of work opened by `uow` (one request's, say)."""
        bound = copy.copy(self)
        bound._uow = uow
        bound._auth = self._auth.using(uow)
        return bound

    async def enroll(self, principal: Principal) -> Enrollment:
        """A new secret, pending until confirmed; enrolling again before that replaces it."""
        user = principal.user
        secret = self._totp.new_secret()
        sealed = self._sealer.seal(secret.encode(), sealing_context(user.id))
        async with self._uow() as uow:
            if not await uow.mfa.put_pending(user.id, sealed):
                raise MfaAlreadyEnabled
            await uow.commit()
        return Enrollment(secret, self._totp.uri(secret, user.username, self._issuer))

    async def confirm(self, principal: Principal, code: str) -> list[str]:
        """Turn the pending TOTP on with a current code; answer the recovery codes, once."""
        user = principal.user
        async with self._uow() as uow:
            state = await uow.mfa.get(user.id)
            if state is None:
                raise MfaNotEnrolled
            if state.confirmed:
                raise MfaAlreadyEnabled
            step = self._step(self._secret(state), code)
            if step is None:
                raise InvalidMfaCode
            codes = self._recovery.new()
            digests = [self._recovery.digest(c) for c in codes]
            if not await uow.mfa.confirm(user.id, state.sealed_secret, step, digests):
                raise MfaNotEnrolled("The enrolment changed meanwhile: confirm the new one.")
            uow.outbox.add(events.Event(events.USER_MFA_ENABLED, self._clock.now(), user.view()))
            await uow.commit()
        return codes

    async def disable(self, principal: Principal, password: str) -> None:
        """Turn TOTP off (or drop a pending enrolment) with the account's password.

        A wrong password counts toward the account's lockout as at login (a stolen access
        token must not buy password guesses), and a locked account is refused before bcrypt.
        Done, or nothing to do, it is a success; only removing a confirmed TOTP is an event.
        """
        user = principal.user
        account = account_of(user.id)
        lockout = await self._throttle.lockout(account, None)
        if lockout is not None:
            raise TooManyAttempts(lockout.retry_after, WRONG_PASSWORDS)
        if not await self._hasher.verify(password, user.hashed_password):
            await self._throttle.record_failure(account, None)
            raise WrongPassword("The password is wrong.")
        await self._throttle.clear(account)
        async with self._uow() as uow:
            if await uow.mfa.remove(user.id):
                now = self._clock.now()
                uow.outbox.add(events.Event(events.USER_MFA_DISABLED, now, user.view()))
            await uow.commit()

    async def log_in(self, cmd: MfaLogIn) -> TokenPair:
        """Finish a login with its mfa_token and a TOTP or recovery code: the session's pair,
        its access token's `amr` saying which second factor was given."""
        address = address_of(cmd.origin)
        client_ip = cmd.origin.client_ip if cmd.origin else None
        challenge = await self._live_challenge(cmd.mfa_token, address)
        user = await self._user(challenge)
        account = account_of(challenge.user_id)
        await self._auth.refuse_if_locked(user, account, address, client_ip)
        if user is None:
            await self._challenges.spend(cmd.mfa_token)
            raise InvalidToken(DEAD_MFA_TOKEN)
        if not user.is_active:
            await self._challenges.spend(cmd.mfa_token)
            raise InactiveUser
        amr = await self._spend_code(user, cmd.mfa_token, cmd.code)
        if amr is None:
            await self._throttle.record_failure(account, address)
            await self._challenges.fail(cmd.mfa_token, MFA_TOKEN_MAX_FAILURES)
            await self._auth.record_failure(user, client_ip, InvalidMfaCode.code)
            raise InvalidMfaCode
        await self._throttle.clear(account)
        return await self._auth.open_session(user, amr, cmd.origin)

    async def _live_challenge(self, token: str, address: str | None) -> MfaChallenge:
        challenge = await self._challenges.find(token) if is_text(token) else None
        # Another address's token is refused as a dead one is, and left as it is: whoever
        # stole it learns nothing and cannot spend it for its owner.
        if challenge is None or challenge.address != (address or ""):
            raise InvalidToken(DEAD_MFA_TOKEN)
        return challenge

    async def _user(self, challenge: MfaChallenge) -> User | None:
        async with self._uow() as uow:
            return await uow.users.get(challenge.user_id)

    async def _spend_code(self, user: User, token: str, code: str) -> tuple[str, ...] | None:
        """Spend the code and the token together: the code's spending commits only if this
        request is the one that spent the token. None: the code is wrong or used."""
        async with self._uow() as uow:
            state = await uow.mfa.get(user.id)
            if state is None or not state.confirmed:
                # TOTP was turned off since the password step: a new login needs none.
                await self._challenges.spend(token)
                raise InvalidToken(DEAD_MFA_TOKEN)
            amr = await self._spend(uow.mfa, user.id, self._secret(state), code)
            if amr is None:
                return None
            if not await self._challenges.spend(token):
                raise InvalidToken(DEAD_MFA_TOKEN)  # another request spent it first
            await uow.commit()
        return amr

    async def _spend(
        self, mfa: MfaRepository, user_id: int, secret: str, code: str
    ) -> tuple[str, ...] | None:
        normal = normalized_code(code[:CODE_MAX_CHARS])
        if is_totp_code(normal):
            step = self._step(secret, normal)
            if step is not None and await mfa.spend_step(user_id, step):
                return WITH_TOTP
            return None
        if await mfa.spend_recovery_code(user_id, self._recovery.digest(normal)):
            return WITH_RECOVERY_CODE
        return None

    def _step(self, secret: str, code: str) -> int | None:
        normal = normalized_code(code[:CODE_MAX_CHARS])
        if not is_totp_code(normal):
            return None
        return self._totp.matching_step(secret, normal, self._clock.now())

    def _secret(self, state: TotpState) -> str:
        opened = self._sealer.open(state.sealed_secret, sealing_context(state.user_id))
        if opened is None:
            # Sealed under another WARDEN_KEY_ENCRYPTION_KEY, or tampered with.
            raise InternalError("The second factor cannot be checked.")
        return opened.decode()
