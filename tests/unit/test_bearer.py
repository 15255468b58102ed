"""Bearer checks and introspection: a live access token of a live session of an active user."""

from __future__ import annotations

import pytest

from domain.accounts import Accounts
from domain.auth import Auth
from domain.errors import InvalidToken, MissingToken, TokenExpired, TokenRevoked
from domain.model import Introspection, User, UserChanges
from tests.unit.fakes import FakeClock, FakeTokenIssuer, FakeUnitOfWorkFactory
from tests.unit.support import ACCESS_TTL, People


@pytest.fixture
async def alice(people: People) -> User:
    return await people.add("alice", full_name="Alice Liddell")


async def test_a_live_access_token_names_its_user_and_session(
    auth: Auth, people: People, tokens: FakeTokenIssuer, alice: User
) -> None:
    login = await people.sign_in(alice)

    principal = await auth.authenticate(login.bearer)

    assert principal.user == alice
    assert principal.claims == tokens.read_access(login.pair.access_token)


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "Bearer"])
async def test_the_scheme_is_matched_in_any_case(
    auth: Auth, people: People, alice: User, scheme: str
) -> None:
    login = await people.sign_in(alice)

    principal = await auth.authenticate(f"{scheme} {login.pair.access_token}")

    assert principal.user.id == alice.id


async def test_more_than_one_space_may_follow_the_scheme(
    auth: Auth, people: People, alice: User
) -> None:
    """RFC 6750: credentials = "Bearer" 1*SP b64token."""
    login = await people.sign_in(alice)

    principal = await auth.authenticate(f"Bearer   {login.pair.access_token}")

    assert principal.user.id == alice.id


@pytest.mark.parametrize("header", [None, ""])
async def test_no_authorization_header_is_a_missing_token(auth: Auth, header: str | None) -> None:
    with pytest.raises(MissingToken):
        await auth.authenticate(header)


@pytest.mark.parametrize("header", ["Basic YWxpY2U6cHc=", "Bearer", "Bearer   ", "Token abc"])
async def test_another_scheme_or_no_token_is_an_invalid_token(auth: Auth, header: str) -> None:
    with pytest.raises(InvalidToken):
        await auth.authenticate(header)


@pytest.mark.parametrize("scheme", ["Basic", "Token", "MAC"])
async def test_a_live_access_token_under_another_scheme_is_an_invalid_token(
    auth: Auth, people: People, alice: User, scheme: str
) -> None:
    login = await people.sign_in(alice)

    with pytest.raises(InvalidToken):
        await auth.authenticate(f"{scheme} {login.pair.access_token}")


async def test_a_garbled_token_is_an_invalid_token(auth: Auth) -> None:
    with pytest.raises(InvalidToken):
        await auth.authenticate("Bearer not-a-token")


async def test_a_refresh_token_never_works_as_an_access_token(
    auth: Auth, people: People, alice: User
) -> None:
    login = await people.sign_in(alice)

    with pytest.raises(InvalidToken):
        await auth.authenticate(f"Bearer {login.pair.refresh_token}")


async def test_an_expired_access_token_is_expired(
    auth: Auth, people: People, clock: FakeClock, alice: User
) -> None:
    login = await people.sign_in(alice)
    clock.advance(ACCESS_TTL)

    with pytest.raises(TokenExpired):
        await auth.authenticate(login.bearer)


async def test_a_token_of_a_revoked_session_is_revoked(
    auth: Auth, people: People, alice: User
) -> None:
    login = await people.sign_in(alice)
    await auth.logout(login.principal)

    with pytest.raises(TokenRevoked):
        await auth.authenticate(login.bearer)


async def test_a_token_of_a_deleted_user_is_revoked(
    auth: Auth, people: People, uow: FakeUnitOfWorkFactory, alice: User
) -> None:
    login = await people.sign_in(alice)
    await uow.users.delete(alice.id)  # even with the session left open

    with pytest.raises(TokenRevoked):
        await auth.authenticate(login.bearer)


async def test_a_token_of_an_inactive_user_is_revoked(
    auth: Auth, people: People, uow: FakeUnitOfWorkFactory, alice: User
) -> None:
    login = await people.sign_in(alice)
    await uow.users.update(alice, UserChanges(is_active=False))  # even with the session left open

    with pytest.raises(TokenRevoked):
        await auth.authenticate(login.bearer)


async def test_a_token_signed_for_another_user_with_ones_own_session_is_revoked(
    auth: Auth, people: People, tokens: FakeTokenIssuer, clock: FakeClock, alice: User
) -> None:
    mallory = await people.sign_in(await people.add("mallory"))
    # What a holder of the signing key could make: alice's id, mallory's live session.
    forged = tokens.issue_access(alice.id, mallory.session_id, clock.now())

    with pytest.raises(TokenRevoked):
        await auth.authenticate(f"Bearer {forged}")
    assert not (await auth.introspect(forged)).active
    assert (await auth.authenticate(mallory.bearer)).user.username == "mallory"


async def test_the_principal_carries_the_users_current_state_not_the_tokens(
    auth: Auth, accounts: Accounts, people: People
) -> None:
    root = await people.add("root", superuser=True)
    login = await people.sign_in(root)
    await accounts.update_user(login.principal, root.id, UserChanges(full_name="Renamed"))

    principal = await auth.authenticate(login.bearer)

    assert principal.user.full_name == "Renamed"


async def test_introspection_of_a_live_token_is_active_with_claims_and_user(
    auth: Auth, people: People, tokens: FakeTokenIssuer, alice: User
) -> None:
    login = await people.sign_in(alice)

    answer = await auth.introspect(login.pair.access_token)

    assert answer.active
    assert answer.claims == tokens.read_access(login.pair.access_token)
    assert answer.user == alice


async def test_introspection_of_a_garbled_token_is_inactive(auth: Auth) -> None:
    answer = await auth.introspect("garbage")

    assert answer == Introspection(active=False)  # RFC 7662: `active` is a boolean


async def test_introspection_of_a_refresh_token_is_inactive(
    auth: Auth, people: People, alice: User
) -> None:
    login = await people.sign_in(alice)

    assert not (await auth.introspect(login.pair.refresh_token)).active


async def test_introspection_of_a_revoked_token_is_inactive(
    auth: Auth, people: People, alice: User
) -> None:
    login = await people.sign_in(alice)
    await auth.logout(login.principal)

    assert not (await auth.introspect(login.pair.access_token)).active


async def test_introspection_of_an_expired_token_is_inactive(
    auth: Auth, people: People, clock: FakeClock, alice: User
) -> None:
    login = await people.sign_in(alice)
    clock.advance(ACCESS_TTL)

    assert not (await auth.introspect(login.pair.access_token)).active
