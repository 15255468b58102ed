"""The TOTP code generator Warden uses (warden.totp), against RFC 6238 itself."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from warden.totp import PyotpTotp

# RFC 6238 Appendix B: the SHA-1 seed is the ASCII string "12345678901234567890".
RFC_SEED = base64.b32encode(b"12345678901234567890").decode()
RFC_SHA1_VECTORS = [
    (59, "94287082"),
    (1111111109, "07081804"),
    (1111111111, "14050471"),
    (1234567890, "89005924"),
    (2000000000, "69279037"),
    (20000000000, "65353130"),
]


@pytest.mark.parametrize(("unix_time", "code"), RFC_SHA1_VECTORS)
def test_the_generator_gives_the_rfc_6238_sha1_codes(unix_time: int, code: str) -> None:
    eight_digits = PyotpTotp(digits=8)

    assert eight_digits.code_at(RFC_SEED, unix_time) == code
    moment = datetime.fromtimestamp(unix_time, UTC)
    assert eight_digits.matching_step(RFC_SEED, code, moment) == unix_time // 30


@pytest.mark.parametrize(("unix_time", "code"), RFC_SHA1_VECTORS)
def test_warden_s_six_digit_codes_are_the_last_six_of_the_rfc_s(unix_time: int, code: str) -> None:
    assert PyotpTotp().code_at(RFC_SEED, unix_time) == code[-6:]


def test_one_step_either_side_matches_and_two_do_not() -> None:
    totp, secret = PyotpTotp(), PyotpTotp().new_secret()
    now = datetime(2026, 1, 1, 12, 0, 10, tzinfo=UTC)
    here = totp.step_of(now)

    for offset in (-1, 0, 1):
        code = totp.code_at(secret, now + timedelta(seconds=30 * offset))
        assert totp.matching_step(secret, code, now) == here + offset
    for offset in (-2, 2):
        code = totp.code_at(secret, now + timedelta(seconds=30 * offset))
        # Another step's code may collide by chance (1 in a million): only then equal.
        assert totp.matching_step(secret, code, now) in (None, here - 1, here, here + 1)
        assert totp.matching_step(secret, code, now) != here + offset


def test_a_new_secret_is_160_random_bits_of_base32() -> None:
    secrets = {PyotpTotp().new_secret() for _ in range(100)}

    assert len(secrets) == 100
    assert all(len(base64.b32decode(s)) == 20 for s in secrets)


def test_the_otpauth_uri_names_the_issuer_and_the_account() -> None:
    uri = PyotpTotp().uri("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP", "alice", "Warden Test")
    parts = urlsplit(uri)

    assert (parts.scheme, parts.netloc) == ("otpauth", "totp")
    assert parts.path == "/Warden%20Test:alice"
    query = parse_qs(parts.query)
    assert query["secret"] == ["JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"]
    assert query["issuer"] == ["Warden Test"]
