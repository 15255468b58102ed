"""The verifier library against a real key set server of the test's: what it accepts, what it
refuses and with which code, and how often it asks the server for the key set."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import jwt
import pytest
import pytest_asyncio
from warden_verifier import (
    Claims,
    KeySetUnavailable,
    RevokedSessions,
    VerificationError,
    Verifier,
)
from warden_verifier.keys import KeySetError

from tests.support.verifier import (
    ISSUER,
    KeySetServer,
    Kind,
    SigningKey,
    access_claims,
    hs256_with,
    judge_with_library,
    public_key_forms,
    refused,
    unsigned,
)


@pytest_asyncio.fixture
async def ed() -> SigningKey:
    return SigningKey("EdDSA")


@pytest_asyncio.fixture
async def server(ed: SigningKey) -> AsyncIterator[KeySetServer]:
    server = await KeySetServer(ed, SigningKey("ES256")).start()
    yield server
    await server.close()


async def test_a_good_token_of_either_algorithm_verifies_with_only_the_key_set(
    server: KeySetServer,
) -> None:
    for key in server.keys:
        token = key.sign(sub="7", amr=["pwd"])
        claims = await judge_with_library(server.jwks_url, token, refresh_token=None)
        assert (claims.user_id, claims.key_id, claims.amr) == ("7", key.kid, ("pwd",))


async def test_the_sync_verify_fetches_and_verifies_off_the_loop(
    server: KeySetServer, ed: SigningKey
) -> None:
    verifier = Verifier(server.jwks_url, issuer=ISSUER)
    claims = await asyncio.to_thread(verifier.verify, ed.sign(sid="s-1"))
    assert claims.session_id == "s-1"
    assert server.fetches == 1


def from_now(seconds: float, kind: type = int) -> Callable[[], object]:
    """A time `seconds` from when the test runs (not from when it was collected)."""
    return lambda: kind(time.time() + seconds)


@pytest.mark.parametrize(
    ("claims", "code"),
    [
        ({"exp": from_now(-60)}, "token_expired"),
        ({"iss": "someone-else"}, "invalid_token"),
        ({"type": "refresh"}, "invalid_token"),
        ({"type": None}, "invalid_token"),
        ({"sid": None}, "invalid_token"),
        ({"sub": None}, "invalid_token"),
        ({"sid": ""}, "invalid_token"),
        ({"sub": 42}, "invalid_token"),
        ({"iat": from_now(600)}, "invalid_token"),
        ({"exp": from_now(600, float)}, "invalid_token"),
    ],
)
async def test_a_token_whose_claims_are_not_warden_access_claims_is_refused(
    server: KeySetServer, ed: SigningKey, claims: dict[str, object], code: str
) -> None:
    verifier = Verifier(server.jwks_url, issuer=ISSUER)
    made = {name: value() if callable(value) else value for name, value in claims.items()}
    assert await refused(verifier.verify_async, ed.sign(**made)) == code


async def test_an_expired_token_is_accepted_within_the_leeway_only(
    server: KeySetServer, ed: SigningKey
) -> None:
    verifier = Verifier(server.jwks_url, issuer=ISSUER, leeway=10)
    await verifier.verify_async(ed.sign(exp=int(time.time()) - 5))
    assert await refused(verifier.verify_async, ed.sign(exp=int(time.time()) - 15)) == (
        "token_expired"
    )


async def test_the_audience_when_configured_must_be_named(
    server: KeySetServer, ed: SigningKey
) -> None:
    verifier = Verifier(server.jwks_url, issuer=ISSUER, audience="orders")
    assert (await verifier.verify_async(ed.sign(aud="orders"))).audience == ("orders",)
    await verifier.verify_async(ed.sign(aud=["billing", "orders"]))
    for aud in ("billing", None, ["billing"]):
        assert await refused(verifier.verify_async, ed.sign(aud=aud)) == "invalid_token"
    unconfigured = Verifier(server.jwks_url, issuer=ISSUER)
    await unconfigured.verify_async(ed.sign(aud="anything"))


async def test_alg_none_and_hs256_keyed_with_the_public_key_are_refused(
    server: KeySetServer, ed: SigningKey
) -> None:
    # No rate limit: any token naming an unknown kid would make the verifier fetch the set.
    verifier = Verifier(server.jwks_url, issuer=ISSUER, min_refetch_interval=0)
    await verifier.verify_async(ed.sign())
    claims = access_claims()
    for kid in (ed.kid, "unknown"):
        for alg in ("none", "None", "NONE", ""):
            forged = unsigned({"alg": alg, "kid": kid}, claims)
            assert await refused(verifier.verify_async, forged) == "invalid_token"
        for secret in public_key_forms(ed.jwk()):
            for alg in ("HS256", "HS384", "HS512"):
                forged = hs256_with(secret, kid, claims).replace(
                    *(_b64_header("HS256", kid), _b64_header(alg, kid))
                )
                assert await refused(verifier.verify_async, forged) == "invalid_token"
    # Refused on their header alone: no such token made the verifier look for its key.
    assert server.fetches == 1
    # The forgery is a well-made HS256 token: PyJWT alone, keyed as the attacker chose, takes it.
    raw = public_key_forms(ed.jwk())[0]
    assert jwt.decode(hs256_with(raw, ed.kid, claims), raw, algorithms=["HS256"], issuer=ISSUER)


def _b64_header(alg: str, kid: str) -> str:
    from tests.support.verifier import _dumps, b64

    return b64(_dumps({"alg": alg, "typ": "JWT", "kid": kid}))


async def test_a_header_whose_alg_is_not_its_keys_is_refused(server: KeySetServer) -> None:
    verifier = Verifier(server.jwks_url, issuer=ISSUER)
    ed, es = server.keys
    # Signed by a P-256 key under the Ed25519 key's kid, and the reverse.
    pairs: list[tuple[str, Kind]] = [(ed.kid, "ES256"), (es.kid, "EdDSA")]
    for kid, alg in pairs:
        forged = SigningKey(alg, kid=kid).sign()
        assert await refused(verifier.verify_async, forged) == "invalid_token"


@pytest.mark.parametrize(
    "token",
    ["", "x", "a.b", "a.b.c", "a.b.c.d", "é.é.é", "\x00.\x00.\x00", "A" * 9000, "e30.e30.e30"],
)
async def test_garbage_is_refused_with_a_code_never_an_exception(
    server: KeySetServer, token: str
) -> None:
    verifier = Verifier(server.jwks_url, issuer=ISSUER)
    assert await refused(verifier.verify_async, token) in {"invalid_token", "missing_token"}


async def test_a_tampered_signature_is_refused(server: KeySetServer, ed: SigningKey) -> None:
    verifier = Verifier(server.jwks_url, issuer=ISSUER)
    head, _, sig = ed.sign().split(".")
    other = access_claims(sub="1")
    tampered = f"{head}.{_b64_claims(other)}.{sig}"
    assert await refused(verifier.verify_async, tampered) == "invalid_token"


def _b64_claims(claims: dict[str, object]) -> str:
    from tests.support.verifier import _dumps, b64

    return b64(_dumps(dict(claims)))


async def test_unknown_kids_cost_the_server_one_fetch_per_window(
    server: KeySetServer, ed: SigningKey
) -> None:
    verifier = Verifier(server.jwks_url, issuer=ISSUER, min_refetch_interval=2.0)
    await verifier.verify_async(ed.sign())
    strangers = [SigningKey("EdDSA").sign() for _ in range(50)]
    assert await refused(verifier.verify_async, strangers[0]) == "invalid_token"
    assert server.fetches == 1  # the set was fetched just now: no refetch yet
    await asyncio.sleep(2.05)
    started = time.monotonic()
    codes = await asyncio.gather(*(refused(verifier.verify_async, t) for t in strangers))
    codes += [await refused(verifier.verify_async, t) for t in strangers]
    codes += [await refused(threaded(verifier), t) for t in strangers[:5]]
    assert set(codes) == {"invalid_token"}
    # A 2 s window: 105 refusals take well under a millisecond each, on a loaded machine too.
    assert server.fetches == 2
    await asyncio.sleep(max(0.0, started + 2.1 - time.monotonic()))
    for token in strangers[:10]:
        await refused(verifier.verify_async, token)
    assert server.fetches == 3


def threaded(verifier: Verifier) -> Callable[[str], Awaitable[Claims]]:
    """The plain, blocking `verify`, run in a thread as a sync service would call it."""

    async def verify(token: str) -> Claims:
        return await asyncio.to_thread(verifier.verify, token)

    return verify


async def test_a_key_that_appears_in_the_set_verifies_at_once(
    server: KeySetServer, ed: SigningKey
) -> None:
    verifier = Verifier(server.jwks_url, issuer=ISSUER, min_refetch_interval=0.5)
    old_token = ed.sign()
    await verifier.verify_async(old_token)
    new = SigningKey("EdDSA")
    server.keys.append(new)  # `warden keys rotate --now`: signs before our max-age is over
    await asyncio.sleep(0.5)
    assert (await verifier.verify_async(new.sign())).key_id == new.kid
    await verifier.verify_async(old_token)  # the old key still verifies its tokens
    assert server.fetches == 2
    server.keys.remove(ed)  # retired
    await asyncio.sleep(0.5)
    await refused(verifier.verify_async, SigningKey("EdDSA").sign())  # any unknown kid refetches
    assert await refused(verifier.verify_async, old_token) == "invalid_token"
    assert await refused(threaded(verifier), old_token) == "invalid_token"


async def test_the_set_is_kept_for_its_max_age_then_fetched_again(
    server: KeySetServer, ed: SigningKey
) -> None:
    server.max_age = 1
    verifier = Verifier(server.jwks_url, issuer=ISSUER, min_refetch_interval=0.1)
    for _ in range(20):
        await verifier.verify_async(ed.sign())
    assert server.fetches == 1
    await asyncio.sleep(1.1)
    await verifier.verify_async(ed.sign())
    assert server.fetches == 2


async def test_a_failed_refetch_keeps_the_last_good_set(
    server: KeySetServer, ed: SigningKey
) -> None:
    server.max_age = 0
    verifier = Verifier(server.jwks_url, issuer=ISSUER, min_refetch_interval=1.0)
    await verifier.verify_async(ed.sign())
    server.failing = True
    await asyncio.sleep(1.05)
    await verifier.verify_async(ed.sign())  # stale, the refetch answered 500: still verifies
    await asyncio.to_thread(verifier.verify, ed.sign())
    assert server.fetches == 2  # the failed attempt waits the interval before the next one
    await asyncio.sleep(1.05)
    await asyncio.to_thread(verifier.verify, ed.sign())
    assert server.fetches == 3


async def test_without_any_key_set_tokens_are_answered_503_not_refused(ed: SigningKey) -> None:
    server = await KeySetServer(ed).start()
    server.failing = True
    jwks_url = server.jwks_url
    try:
        verifier = Verifier(jwks_url, issuer=ISSUER)
        with pytest.raises(KeySetUnavailable) as caught:
            await verifier.verify_async(ed.sign())
        assert (caught.value.status, caught.value.code) == (503, "service_unavailable")
        with pytest.raises(KeySetUnavailable):
            await asyncio.to_thread(verifier.verify, ed.sign())
        assert server.fetches == 1  # the second waited out the interval, asked nobody
    finally:
        await server.close()
    unreachable = Verifier(jwks_url, issuer=ISSUER, timeout=1)  # the server is gone
    with pytest.raises(KeySetUnavailable):
        await unreachable.verify_async(ed.sign())


async def test_discovery_from_the_issuers_metadata(server: KeySetServer, ed: SigningKey) -> None:
    verifier = await Verifier.discover_async(server.url)
    assert (verifier.keys.url, verifier.issuer) == (server.jwks_url, ISSUER)
    await verifier.verify_async(ed.sign())
    same = await asyncio.to_thread(Verifier.discover, server.url, issuer="pinned")
    assert await refused(same.verify_async, ed.sign()) == "invalid_token"


async def test_a_revoked_session_is_refused_and_others_are_not(
    server: KeySetServer, ed: SigningKey
) -> None:
    revoked = RevokedSessions()
    verifier = Verifier(server.jwks_url, issuer=ISSUER, revoked=revoked)
    sid = uuid.uuid4().hex
    token = ed.sign(sid=sid)
    await verifier.verify_async(token)  # remembered as verified
    revoked.revoke(sid, time.time() + 60)
    assert await refused(verifier.verify_async, token) == "token_revoked"
    assert await refused(threaded(verifier), token) == "token_revoked"
    assert await refused(verifier.verify_async, ed.sign(sid=sid)) == "token_revoked"
    await verifier.verify_async(ed.sign())


async def test_a_remembered_token_is_still_refused_once_it_expires(
    server: KeySetServer, ed: SigningKey
) -> None:
    verifier = Verifier(server.jwks_url, issuer=ISSUER, leeway=0)
    expires = int(time.time()) + 3  # a margin for a loaded machine before the first use
    token = ed.sign(exp=expires)
    await verifier.verify_async(token)  # verified and remembered
    await asyncio.to_thread(verifier.verify, token)
    await asyncio.sleep(expires - time.time() + 0.05)
    assert await refused(verifier.verify_async, token) == "token_expired"
    assert await refused(threaded(verifier), token) == "token_expired"


async def test_the_memory_of_verified_tokens_is_bounded(
    server: KeySetServer, ed: SigningKey
) -> None:
    verifier = Verifier(server.jwks_url, issuer=ISSUER, verified_tokens=3)
    tokens = [ed.sign() for _ in range(5)]
    for token in tokens:
        await verifier.verify_async(token)
    assert list(verifier._verified) == tokens[2:]
    forgetful = Verifier(server.jwks_url, issuer=ISSUER, verified_tokens=0)
    await forgetful.verify_async(tokens[0])
    assert forgetful._verified == {}


async def test_a_key_set_can_be_fetched_at_start_and_its_kids_are_known(
    server: KeySetServer, ed: SigningKey
) -> None:
    verifier = Verifier(server.jwks_url, issuer=ISSUER, min_refetch_interval=0)
    await verifier.keys.refresh_async()
    await asyncio.to_thread(verifier.keys.refresh)
    assert verifier.keys.kids == {k.kid for k in server.keys}
    assert server.fetches == 2
    claims = await asyncio.to_thread(verifier.verify_header, f"Bearer {ed.sign(sid='s-2')}")
    assert claims.session_id == "s-2"
    assert server.fetches == 2  # the set was fresh: verifying asked for nothing
    server.failing = True
    down = Verifier(server.jwks_url, issuer=ISSUER)
    with pytest.raises(KeySetUnavailable):
        await down.keys.refresh_async()
    with pytest.raises(KeySetUnavailable):
        await asyncio.to_thread(down.keys.refresh)


@pytest.mark.parametrize(
    "body",
    [b"not json", b'{"keys": 7}', b"[]", b'{"keys": []}' + b" " * (300 * 1024)],
)
async def test_an_answer_that_is_not_a_key_set_is_not_a_key_set(
    server: KeySetServer, ed: SigningKey, body: bytes
) -> None:
    server.body = body
    for verify in (
        Verifier(server.jwks_url, issuer=ISSUER).verify_async,
        threaded(Verifier(server.jwks_url, issuer=ISSUER)),
    ):
        with pytest.raises(KeySetUnavailable):
            await verify(ed.sign())


async def test_a_key_set_url_that_is_not_http_is_never_fetched(ed: SigningKey) -> None:
    for url in ("file:///etc/passwd", "ftp://example.com/jwks.json", "jwks.json"):
        verifier = Verifier(url, issuer=ISSUER)
        with pytest.raises(KeySetUnavailable):
            await verifier.verify_async(ed.sign())
        with pytest.raises(KeySetUnavailable):
            await asyncio.to_thread(verifier.verify, ed.sign())


@pytest.mark.parametrize(
    "metadata",
    [{"issuer": "warden"}, {"issuer": "warden", "jwks_uri": "file:///x"}, {"jwks_uri": 7}],
)
async def test_metadata_without_an_http_jwks_uri_is_an_error(
    server: KeySetServer, metadata: dict[str, object]
) -> None:
    server.metadata = metadata
    with pytest.raises(KeySetError):
        await Verifier.discover_async(server.url)


async def test_metadata_without_an_issuer_needs_one_given(server: KeySetServer) -> None:
    server.metadata = {"jwks_uri": server.jwks_url}
    with pytest.raises(ValueError, match="issuer"):
        await Verifier.discover_async(server.url)
    verifier = await Verifier.discover_async(server.url, issuer="warden")
    assert verifier.issuer == "warden"


async def test_a_header_without_a_kid_is_refused(server: KeySetServer) -> None:
    verifier = Verifier(server.jwks_url, issuer=ISSUER)
    no_kid = jwt.encode(access_claims(), SigningKey("EdDSA").private, algorithm="EdDSA")
    assert await refused(verifier.verify_async, no_kid) == "invalid_token"
    assert server.fetches == 0


async def test_what_is_not_a_string_is_an_invalid_token_and_nothing_a_missing_one(
    server: KeySetServer,
) -> None:
    verifier = Verifier(server.jwks_url, issuer=ISSUER)
    for token, code in (
        (None, "missing_token"),
        ("", "missing_token"),
        (b"a.b.c", "invalid_token"),
        (7, "invalid_token"),
    ):
        with pytest.raises(VerificationError) as caught:
            await verifier.verify_async(token)
        assert caught.value.code == code
