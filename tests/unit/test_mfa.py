"""The second factor: TOTP enrolment, recovery codes, and the login that needs a code."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import pytest

from domain import events
from domain.auth import MFA_TOKEN_TTL, Auth, LogIn
from domain.errors import (
    InactiveUser,
    InternalError,
    InvalidMfaCode,
    InvalidToken,
    MfaAlreadyEnabled,
    MfaNotEnrolled,
    MfaRequired,
    TooManyAttempts,
    WrongPassword,
)
from domain.mfa import (
    DEAD_MFA_TOKEN,
    MFA_TOKEN_MAX_FAILURES,
    RECOVERY_CODE_COUNT,
    WRONG_PASSWORDS,
    MfaLogIn,
    SecondFactor,
    normalized_code,
    sealing_context,
)
from domain.model import MfaChallenge, Origin, TokenPair, User, UserChanges
from tests.unit.fakes import (
    FakeClock,
    FakeLoginThrottle,
    FakeMfaChallenges,
    FakeSessionStore,
    FakeTokenIssuer,
    FakeUnitOfWork,
    FakeUnitOfWorkFactory,
)
from tests.unit.support import People, SignedIn
from warden.bootstrap import Services
from warden.keys import TOTP_SECRET, AesGcmSealer, subkey
from warden.totp import PyotpTotp

PASSWORD = "alice-password"
HOME = Origin(client_ip="198.51.100.7")
TOTP = PyotpTotp()


@pytest.fixture
def throttle(clock: FakeClock) -> FakeLoginThrottle:
    # Room for an mfa_token's five wrong codes below the account's limit.
    return FakeLoginThrottle(clock, max_failures=8, ip_max_failures=100, window=900)


@pytest.fixture
def mfa(services: Services) -> SecondFactor:
    return services.mfa


@pytest.fixture
async def alice(people: People) -> User:
    return await people.add("alice", password=PASSWORD)


@dataclass(frozen=True)
class Enrolled:
    signed_in: SignedIn
    secret: str
    recovery_codes: list[str]


def code(secret: str, clock: FakeClock, steps: int = 0) -> str:
    """The code an authenticator app shows now (or `steps` steps away)."""
    return TOTP.code_at(secret, clock.now() + timedelta(seconds=30 * steps))


@pytest.fixture
async def enrolled(mfa: SecondFactor, people: People, alice: User, clock: FakeClock) -> Enrolled:
    """Alice with TOTP on; the clock moved past the step her confirming code spent."""
    signed_in = await people.sign_in(alice)
    secret = (await mfa.enroll(signed_in.principal)).secret
    codes = await mfa.confirm(signed_in.principal, code(secret, clock))
    clock.advance(30)
    return Enrolled(signed_in, secret, codes)


async def mfa_token(auth: Auth, origin: Origin | None = HOME) -> str:
    with pytest.raises(MfaRequired) as refused:
        await auth.login(LogIn("alice", PASSWORD, origin))
    return refused.value.mfa_token


# --- enrolment -------------------------------------------------------------------------------


async def test_enrolling_gives_a_secret_and_its_uri_with_the_issuer(
    mfa: SecondFactor, people: People, alice: User, clock: FakeClock
) -> None:
    enrollment = await mfa.enroll((await people.sign_in(alice)).principal)

    assert enrollment.otpauth_uri == TOTP.uri(enrollment.secret, "alice", "Warden")
    assert "issuer=Warden" in enrollment.otpauth_uri


async def test_the_secret_is_stored_sealed_for_its_user_only(
    mfa: SecondFactor, people: People, alice: User, uow: FakeUnitOfWorkFactory, services: Services
) -> None:
    secret = (await mfa.enroll((await people.sign_in(alice)).principal)).secret

    sealed = uow.mfa.totp[alice.id].sealed_secret
    assert secret.encode() not in sealed
    master = services.settings.key_encryption_key.get_secret_value().encode()
    sealer = AesGcmSealer(subkey(master, TOTP_SECRET))
    assert sealer.open(sealed, sealing_context(alice.id)) == secret.encode()
    assert sealer.open(sealed, sealing_context(alice.id + 1)) is None


async def test_an_enrolment_is_not_active_until_confirmed(
    mfa: SecondFactor, people: People, alice: User, auth: Auth
) -> None:
    await mfa.enroll((await people.sign_in(alice)).principal)

    pair = await auth.login(LogIn("alice", PASSWORD, HOME))  # no second factor asked
    assert isinstance(pair, TokenPair)


async def test_enrolling_again_before_confirming_replaces_the_pending_secret(
    mfa: SecondFactor, people: People, alice: User, clock: FakeClock
) -> None:
    principal = (await people.sign_in(alice)).principal
    first = (await mfa.enroll(principal)).secret
    second = (await mfa.enroll(principal)).secret

    with pytest.raises(InvalidMfaCode):
        await mfa.confirm(principal, code(first, clock))
    assert len(await mfa.confirm(principal, code(second, clock))) == RECOVERY_CODE_COUNT


async def test_confirming_gives_ten_distinct_recovery_codes_and_announces_it(
    mfa: SecondFactor, people: People, alice: User, clock: FakeClock, uow: FakeUnitOfWorkFactory
) -> None:
    principal = (await people.sign_in(alice)).principal
    secret = (await mfa.enroll(principal)).secret

    codes = await mfa.confirm(principal, " ".join(code(secret, clock)))  # "1 2 3 4 5 6"

    assert len(set(codes)) == RECOVERY_CODE_COUNT
    assert all(len(c) == 19 and c.count("-") == 3 for c in codes)
    groups = [c.split("-") for c in codes]
    # Four groups of four characters each, not overlapping windows of one run.
    assert not all(g[0][1:] == g[1][:3] and g[1][1:] == g[2][:3] for g in groups)
    [event] = uow.events(events.USER_MFA_ENABLED)
    assert event.user == alice.view()
    assert event.extra == {}
    # Only digests are kept.
    stored = uow.mfa.recovery[alice.id]
    assert len(stored) == RECOVERY_CODE_COUNT
    assert not any(c.encode() in digest for c in codes for digest in stored)


@pytest.mark.parametrize("wrong", ["000000", "12345", "abcdef", "1234567", ""])
async def test_a_wrong_code_confirms_nothing(
    mfa: SecondFactor,
    people: People,
    alice: User,
    uow: FakeUnitOfWorkFactory,
    clock: FakeClock,
    wrong: str,
) -> None:
    principal = (await people.sign_in(alice)).principal
    secret = (await mfa.enroll(principal)).secret
    if wrong == "000000" and TOTP.matching_step(secret, wrong, clock.now()) is not None:
        pytest.skip("the random secret's code is 000000")

    with pytest.raises(InvalidMfaCode):
        await mfa.confirm(principal, wrong)
    assert not await uow.mfa.enabled(alice.id)
    assert uow.events(events.USER_MFA_ENABLED) == []


async def test_confirming_without_an_enrolment_is_refused(
    mfa: SecondFactor, people: People, alice: User
) -> None:
    with pytest.raises(MfaNotEnrolled):
        await mfa.confirm((await people.sign_in(alice)).principal, "123456")


async def test_enrolling_or_confirming_again_once_enabled_is_a_conflict(
    mfa: SecondFactor, enrolled: Enrolled, clock: FakeClock
) -> None:
    principal = enrolled.signed_in.principal
    with pytest.raises(MfaAlreadyEnabled):
        await mfa.enroll(principal)
    with pytest.raises(MfaAlreadyEnabled):
        await mfa.confirm(principal, code(enrolled.secret, clock))


async def test_a_confirm_that_loses_a_race_with_a_new_enrolment_is_refused(
    mfa: SecondFactor, people: People, alice: User, clock: FakeClock, uow: FakeUnitOfWorkFactory
) -> None:
    principal = (await people.sign_in(alice)).principal
    secret = (await mfa.enroll(principal)).secret
    original = uow.mfa.confirm

    async def enrolment_replaced_meanwhile(
        user_id: int, sealed_secret: bytes, step: int, recovery_digests: Sequence[bytes]
    ) -> bool:
        await uow.mfa.put_pending(alice.id, b"another secret")
        return await original(user_id, sealed_secret, step, recovery_digests)

    uow.mfa.confirm = enrolment_replaced_meanwhile  # type: ignore[method-assign]
    with pytest.raises(MfaNotEnrolled) as refused:
        await mfa.confirm(principal, code(secret, clock))
    assert refused.value.detail == "The enrolment changed meanwhile: confirm the new one."
    assert uow.events(events.USER_MFA_ENABLED) == []


# --- the login that needs a second factor -------------------------------------------------


async def test_the_right_password_of_an_account_with_totp_asks_for_the_code(
    auth: Auth, enrolled: Enrolled, sessions: FakeSessionStore, alice: User
) -> None:
    before = sessions.of_user(alice.id)

    token = await mfa_token(auth)

    assert len(token) == 43  # 256 bits, URL-safe base64
    assert sessions.of_user(alice.id) == before  # no session yet


async def test_a_current_code_finishes_the_login_with_amr_otp(
    auth: Auth,
    mfa: SecondFactor,
    enrolled: Enrolled,
    clock: FakeClock,
    tokens: FakeTokenIssuer,
    uow: FakeUnitOfWorkFactory,
    alice: User,
) -> None:
    token = await mfa_token(auth)

    pair = await mfa.log_in(MfaLogIn(token, code(enrolled.secret, clock), HOME))

    claims = tokens.read_access(pair.access_token)
    assert (claims.user_id, claims.amr) == (alice.id, ("pwd", "otp"))
    [*_, logged_in] = uow.events(events.USER_LOGGED_IN)
    assert logged_in.extra == {
        "session_id": claims.session_id,
        "amr": ["pwd", "otp"],
        "client_ip": HOME.client_ip,
    }
    refreshed = await auth.refresh(pair.refresh_token)
    assert tokens.read_access(refreshed.access_token).amr == ("pwd", "otp")
    again = await auth.refresh(refreshed.refresh_token)
    assert tokens.read_access(again.access_token).amr == ("pwd", "otp")


async def test_a_password_only_login_is_amr_pwd(
    auth: Auth, alice: User, tokens: FakeTokenIssuer
) -> None:
    pair = await auth.login(LogIn("alice", PASSWORD))

    assert tokens.read_access(pair.access_token).amr == ("pwd",)
    assert tokens.read_access((await auth.refresh(pair.refresh_token)).access_token).amr == ("pwd",)


async def test_a_code_one_step_off_is_accepted_and_two_steps_off_is_not(
    auth: Auth, mfa: SecondFactor, enrolled: Enrolled, clock: FakeClock
) -> None:
    clock.advance(30)  # the step before now is not the one the confirmation spent
    token = await mfa_token(auth)
    far = code(enrolled.secret, clock, -2)
    if TOTP.matching_step(enrolled.secret, far, clock.now()) is None:
        with pytest.raises(InvalidMfaCode):
            await mfa.log_in(MfaLogIn(token, far, HOME))

    await mfa.log_in(MfaLogIn(token, code(enrolled.secret, clock, -1), HOME))


async def test_a_code_is_accepted_once(
    auth: Auth, mfa: SecondFactor, enrolled: Enrolled, clock: FakeClock
) -> None:
    used = code(enrolled.secret, clock)
    await mfa.log_in(MfaLogIn(await mfa_token(auth), used, HOME))
    token = await mfa_token(auth)

    with pytest.raises(InvalidMfaCode):
        await mfa.log_in(MfaLogIn(token, used, HOME))  # the same window: a replay
    with pytest.raises(InvalidMfaCode):
        await mfa.log_in(MfaLogIn(token, code(enrolled.secret, clock, -1), HOME))  # earlier
    clock.advance(30)
    await mfa.log_in(MfaLogIn(token, code(enrolled.secret, clock), HOME))  # the next step's


async def test_the_code_that_confirmed_cannot_log_in(
    auth: Auth, mfa: SecondFactor, people: People, alice: User, clock: FakeClock
) -> None:
    principal = (await people.sign_in(alice)).principal
    secret = (await mfa.enroll(principal)).secret
    confirming = code(secret, clock)
    await mfa.confirm(principal, confirming)

    with pytest.raises(InvalidMfaCode):
        await mfa.log_in(MfaLogIn(await mfa_token(auth), confirming, HOME))


async def test_wrong_codes_count_toward_the_accounts_lockout_like_wrong_passwords(
    auth: Auth,
    mfa: SecondFactor,
    enrolled: Enrolled,
    clock: FakeClock,
    throttle: FakeLoginThrottle,
    uow: FakeUnitOfWorkFactory,
    alice: User,
) -> None:
    wrong = "abcd-abcd-abcd-abcd"  # no recovery code of hers: never a lucky TOTP match
    # The right password asks again, and clears nothing: the count survives new tokens.
    for _ in range(throttle.max_failures):
        with pytest.raises(InvalidMfaCode):
            await mfa.log_in(MfaLogIn(await mfa_token(auth), wrong, HOME))
    assert throttle.failures(f"user:{alice.id}") == throttle.max_failures
    assert throttle.failures_from(HOME.client_ip or "") == throttle.max_failures
    failed = uow.events(events.USER_LOGIN_FAILED)
    assert {e.user for e in failed} == {alice.view()}
    assert [e.extra for e in failed] == [
        {"reason": "invalid_mfa_code", "client_ip": HOME.client_ip}
    ] * throttle.max_failures

    with pytest.raises(TooManyAttempts):
        await auth.login(LogIn("alice", PASSWORD, HOME))


async def test_a_locked_account_cannot_try_codes(
    auth: Auth,
    mfa: SecondFactor,
    enrolled: Enrolled,
    clock: FakeClock,
    throttle: FakeLoginThrottle,
    uow: FakeUnitOfWorkFactory,
    alice: User,
) -> None:
    token = await mfa_token(auth)
    for _ in range(throttle.max_failures):
        await throttle.record_failure("user:1", None)

    with pytest.raises(TooManyAttempts):
        await mfa.log_in(MfaLogIn(token, code(enrolled.secret, clock), HOME))
    [locked] = uow.events(events.USER_LOGIN_FAILED)
    assert locked.user == alice.view()
    assert (locked.extra["reason"], locked.extra["client_ip"]) == (
        "too_many_attempts",
        HOME.client_ip,
    )
    clock.advance(throttle.window)  # the window ends; so did the token, long ago
    with pytest.raises(InvalidToken):
        await mfa.log_in(MfaLogIn(token, code(enrolled.secret, clock), HOME))


async def test_a_locked_address_cannot_try_codes(
    auth: Auth, mfa: SecondFactor, enrolled: Enrolled, clock: FakeClock, throttle: FakeLoginThrottle
) -> None:
    token = await mfa_token(auth)
    for _ in range(throttle.ip_max_failures):
        await throttle.record_failure("login:someone-else", HOME.client_ip)

    with pytest.raises(TooManyAttempts):
        await mfa.log_in(MfaLogIn(token, code(enrolled.secret, clock), HOME))


async def test_a_finished_login_clears_the_accounts_count(
    auth: Auth, mfa: SecondFactor, enrolled: Enrolled, clock: FakeClock, throttle: FakeLoginThrottle
) -> None:
    token = await mfa_token(auth)
    with pytest.raises(InvalidMfaCode):
        await mfa.log_in(MfaLogIn(token, "abcd-abcd-abcd-abcd", HOME))

    await mfa.log_in(MfaLogIn(token, code(enrolled.secret, clock), HOME))

    assert throttle.failures("user:1") == 0


async def test_an_mfa_token_dies_after_five_wrong_codes(
    auth: Auth, mfa: SecondFactor, enrolled: Enrolled, clock: FakeClock
) -> None:
    token = await mfa_token(auth)
    for _ in range(MFA_TOKEN_MAX_FAILURES):
        with pytest.raises(InvalidMfaCode):
            await mfa.log_in(MfaLogIn(token, "abcd-abcd-abcd-abcd", HOME))

    with pytest.raises(InvalidToken):
        await mfa.log_in(MfaLogIn(token, code(enrolled.secret, clock), HOME))


async def test_an_mfa_token_survives_four_wrong_codes(
    auth: Auth, mfa: SecondFactor, enrolled: Enrolled, clock: FakeClock
) -> None:
    token = await mfa_token(auth)
    for _ in range(MFA_TOKEN_MAX_FAILURES - 1):
        with pytest.raises(InvalidMfaCode):
            await mfa.log_in(MfaLogIn(token, "abcd-abcd-abcd-abcd", HOME))

    await mfa.log_in(MfaLogIn(token, code(enrolled.secret, clock), HOME))


async def test_an_mfa_token_is_single_use(
    auth: Auth, mfa: SecondFactor, enrolled: Enrolled, clock: FakeClock
) -> None:
    token = await mfa_token(auth)
    await mfa.log_in(MfaLogIn(token, code(enrolled.secret, clock), HOME))
    clock.advance(30)

    with pytest.raises(InvalidToken):
        await mfa.log_in(MfaLogIn(token, code(enrolled.secret, clock), HOME))


async def test_an_mfa_token_expires_after_five_minutes(
    auth: Auth, mfa: SecondFactor, enrolled: Enrolled, clock: FakeClock
) -> None:
    token = await mfa_token(auth)
    clock.advance(MFA_TOKEN_TTL)

    with pytest.raises(InvalidToken):
        await mfa.log_in(MfaLogIn(token, code(enrolled.secret, clock), HOME))


@pytest.mark.parametrize(
    "elsewhere", [Origin(client_ip="203.0.113.9"), Origin(publisher="billing"), None]
)
async def test_an_mfa_token_is_refused_from_another_address_and_stays_its_owners(
    auth: Auth, mfa: SecondFactor, enrolled: Enrolled, clock: FakeClock, elsewhere: Origin | None
) -> None:
    token = await mfa_token(auth)

    with pytest.raises(InvalidToken):
        await mfa.log_in(MfaLogIn(token, code(enrolled.secret, clock), elsewhere))
    await mfa.log_in(MfaLogIn(token, code(enrolled.secret, clock), HOME))


async def test_a_login_in_this_process_finishes_in_this_process(
    auth: Auth, mfa: SecondFactor, enrolled: Enrolled, clock: FakeClock
) -> None:
    token = await mfa_token(auth, origin=None)

    with pytest.raises(InvalidToken):
        await mfa.log_in(MfaLogIn(token, code(enrolled.secret, clock), HOME))
    await mfa.log_in(MfaLogIn(token, code(enrolled.secret, clock), None))


@pytest.mark.parametrize("token", ["", "nope", "a\x00b", "\ud800"])
async def test_an_unknown_mfa_token_is_invalid(
    mfa: SecondFactor, enrolled: Enrolled, clock: FakeClock, token: str
) -> None:
    with pytest.raises(InvalidToken) as refused:
        await mfa.log_in(MfaLogIn(token, code(enrolled.secret, clock), HOME))
    assert refused.value.detail == DEAD_MFA_TOKEN


@pytest.mark.parametrize("typed", ["١٢٣٤٥٦", "1234567", "12 34 56 7"])
async def test_what_is_no_six_ascii_digits_is_no_totp_code(
    auth: Auth, mfa: SecondFactor, enrolled: Enrolled, typed: str
) -> None:
    with pytest.raises(InvalidMfaCode):
        await mfa.log_in(MfaLogIn(await mfa_token(auth), typed, HOME))


async def test_a_recovery_code_finishes_one_login_with_amr_recovery(
    auth: Auth, mfa: SecondFactor, enrolled: Enrolled, tokens: FakeTokenIssuer
) -> None:
    recovery = enrolled.recovery_codes[3]

    pair = await mfa.log_in(MfaLogIn(await mfa_token(auth), recovery.upper(), HOME))
    assert tokens.read_access(pair.access_token).amr == ("pwd", "recovery")

    with pytest.raises(InvalidMfaCode):
        await mfa.log_in(MfaLogIn(await mfa_token(auth), recovery, HOME))
    other = enrolled.recovery_codes[4].replace("-", " ")
    await mfa.log_in(MfaLogIn(await mfa_token(auth), other, HOME))


async def test_a_code_that_loses_the_token_to_another_request_is_not_spent(
    mfa: SecondFactor, enrolled: Enrolled, challenges: FakeMfaChallenges, alice: User
) -> None:
    """The token was spent by a racing request after this one found it: this one's code
    is rolled back with its transaction, so it can still finish a later login."""
    recovery = enrolled.recovery_codes[0]
    await challenges.open("raced", MfaChallenge(alice.id, HOME.client_ip or ""), 300)
    spend = challenges.spend

    async def lost_the_race(token: str) -> bool:
        await spend(token)
        return False

    challenges.spend = lost_the_race  # type: ignore[method-assign]
    with pytest.raises(InvalidToken) as refused:
        await mfa.log_in(MfaLogIn("raced", recovery, HOME))
    assert refused.value.detail == DEAD_MFA_TOKEN
    challenges.spend = spend  # type: ignore[method-assign]

    await challenges.open("next", MfaChallenge(alice.id, HOME.client_ip or ""), 300)
    await mfa.log_in(MfaLogIn("next", recovery, HOME))


async def test_a_user_deactivated_after_the_password_gets_no_pair(
    auth: Auth,
    mfa: SecondFactor,
    enrolled: Enrolled,
    clock: FakeClock,
    alice: User,
    uow: FakeUnitOfWorkFactory,
) -> None:
    token = await mfa_token(auth)
    async with uow() as unit:
        await unit.users.update(alice, UserChanges(is_active=False))
        await unit.commit()

    with pytest.raises(InactiveUser):
        await mfa.log_in(MfaLogIn(token, code(enrolled.secret, clock), HOME))
    with pytest.raises(InvalidToken):  # spent by the refusal
        await mfa.log_in(MfaLogIn(token, code(enrolled.secret, clock), HOME))


async def test_a_user_deleted_after_the_password_gets_no_pair(
    auth: Auth,
    mfa: SecondFactor,
    enrolled: Enrolled,
    clock: FakeClock,
    alice: User,
    uow: FakeUnitOfWorkFactory,
    challenges: FakeMfaChallenges,
) -> None:
    token = await mfa_token(auth)
    async with uow() as unit:
        await unit.users.delete(alice.id)
        await unit.commit()

    with pytest.raises(InvalidToken) as refused:
        await mfa.log_in(MfaLogIn(token, code(enrolled.secret, clock), HOME))
    assert refused.value.detail == DEAD_MFA_TOKEN
    assert await challenges.find(token) is None


async def test_totp_turned_off_after_the_password_ends_the_token(
    auth: Auth,
    mfa: SecondFactor,
    enrolled: Enrolled,
    clock: FakeClock,
    challenges: FakeMfaChallenges,
) -> None:
    token = await mfa_token(auth)
    await mfa.disable(enrolled.signed_in.principal, PASSWORD)

    with pytest.raises(InvalidToken) as refused:
        await mfa.log_in(MfaLogIn(token, code(enrolled.secret, clock), HOME))
    assert refused.value.detail == DEAD_MFA_TOKEN
    assert await challenges.find(token) is None
    assert isinstance(await auth.login(LogIn("alice", PASSWORD, HOME)), TokenPair)


async def test_a_secret_sealed_under_another_key_is_an_internal_error(
    auth: Auth, mfa: SecondFactor, enrolled: Enrolled, clock: FakeClock, uow: FakeUnitOfWorkFactory
) -> None:
    token = await mfa_token(auth)
    other = AesGcmSealer(b"k" * 32).seal(enrolled.secret.encode(), sealing_context(1))
    stored = uow.mfa.totp[1]
    uow.mfa.totp[1] = type(stored)(other, True, None)

    with pytest.raises(InternalError) as failed:
        await mfa.log_in(MfaLogIn(token, code(enrolled.secret, clock), HOME))
    assert failed.value.detail == "The second factor cannot be checked."


# --- turning it off ----------------------------------------------------------------------


async def test_disabling_with_the_password_turns_it_off_and_announces_it(
    auth: Auth,
    mfa: SecondFactor,
    enrolled: Enrolled,
    uow: FakeUnitOfWorkFactory,
    tokens: FakeTokenIssuer,
    alice: User,
) -> None:
    await mfa.disable(enrolled.signed_in.principal, PASSWORD)

    [event] = uow.events(events.USER_MFA_DISABLED)
    assert event.user == alice.view()
    assert alice.id not in uow.mfa.recovery
    pair = await auth.login(LogIn("alice", PASSWORD, HOME))
    assert tokens.read_access(pair.access_token).amr == ("pwd",)


async def test_disabling_with_a_wrong_password_counts_toward_the_lockout(
    auth: Auth,
    mfa: SecondFactor,
    enrolled: Enrolled,
    throttle: FakeLoginThrottle,
    uow: FakeUnitOfWorkFactory,
    alice: User,
) -> None:
    principal = enrolled.signed_in.principal
    for _ in range(throttle.max_failures):
        with pytest.raises(WrongPassword) as wrong:
            await mfa.disable(principal, "wrong")
        assert wrong.value.detail == "The password is wrong."

    with pytest.raises(TooManyAttempts) as locked:
        await mfa.disable(principal, PASSWORD)  # locked: even the right one
    assert locked.value.detail == WRONG_PASSWORDS
    with pytest.raises(TooManyAttempts):  # the account's count: its logins too
        await auth.login(LogIn("alice", PASSWORD, HOME))
    assert await uow.mfa.enabled(alice.id)
    assert uow.events(events.USER_MFA_DISABLED) == []


async def test_a_successful_disable_clears_the_accounts_count(
    mfa: SecondFactor, enrolled: Enrolled, throttle: FakeLoginThrottle, alice: User
) -> None:
    with pytest.raises(WrongPassword):
        await mfa.disable(enrolled.signed_in.principal, "wrong")

    await mfa.disable(enrolled.signed_in.principal, PASSWORD)

    assert throttle.failures(f"user:{alice.id}") == 0


async def test_disabling_a_pending_enrolment_or_nothing_is_a_quiet_success(
    mfa: SecondFactor, people: People, alice: User, uow: FakeUnitOfWorkFactory
) -> None:
    principal = (await people.sign_in(alice)).principal
    await mfa.disable(principal, PASSWORD)
    await mfa.enroll(principal)
    await mfa.disable(principal, PASSWORD)

    assert await uow.mfa.get(alice.id) is None
    assert uow.events(events.USER_MFA_DISABLED) == []


class CountingUnits:
    """A request's units of work: the same store, counted as they are opened."""

    def __init__(self, uow: FakeUnitOfWorkFactory) -> None:
        self._uow = uow
        self.opened = 0

    def __call__(self) -> FakeUnitOfWork:
        self.opened += 1
        return self._uow()


async def test_a_request_s_units_of_work_carry_the_whole_second_step(
    auth: Auth, mfa: SecondFactor, enrolled: Enrolled, clock: FakeClock, uow: FakeUnitOfWorkFactory
) -> None:
    token = await mfa_token(auth)
    units = CountingUnits(uow)
    bound = mfa.using(units)
    units_before_login = units.opened

    await bound.log_in(MfaLogIn(token, code(enrolled.secret, clock), HOME))

    # The user's read, the code's spending, and the logged_in event (through the bound Auth).
    assert units.opened - units_before_login == 3


def test_a_code_is_read_without_its_spaces_and_hyphens_in_any_case() -> None:
    assert normalized_code(" Xk7q-ZZXX 2x3A ") == "xk7qzzxx2x3a"
    assert normalized_code("492 039") == "492039"
