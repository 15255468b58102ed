"""Input rules: usernames, bcrypt-safe passwords, normalised emails and logins."""

from __future__ import annotations

import pytest

from domain.rules import (
    PASSWORD_MAX_BYTES,
    PASSWORD_MIN_CHARS,
    check_password,
    check_username,
    normalize_email,
    normalize_login,
)


@pytest.mark.parametrize("name", ["abc", "a" * 32, "Alice_B.C-9", "___", "1.2"])
def test_a_username_of_3_to_32_allowed_characters_is_accepted(name: str) -> None:
    assert check_username(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "ab", "a" * 33, "al ice", "alice!", "alice@example.com", "ålice", "alice\n", "\nalice"],
)
def test_any_other_username_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="username must be 3-32 characters"):
        check_username(name)


@pytest.mark.parametrize(
    "password",
    [
        "12345678",  # the minimum
        "x" * 72,  # the maximum, in ASCII
        "é" * 36,  # 72 bytes in UTF-8
        "😀" * 18,  # 72 bytes in UTF-8, 18 characters
        "é" * 8,  # 8 characters though 16 bytes
    ],
)
def test_a_password_bcrypt_can_take_whole_is_accepted(password: str) -> None:
    assert check_password(password) == password


@pytest.mark.parametrize("password", ["", "1234567", "😀" * 7])
def test_a_password_under_8_characters_is_refused(password: str) -> None:
    with pytest.raises(ValueError, match=f"at least {PASSWORD_MIN_CHARS} characters"):
        check_password(password)


@pytest.mark.parametrize(
    "password",
    [
        "x" * 73,
        "é" * 37,  # only 37 characters, but 74 bytes
        "😀" * 19,  # only 19 characters, but 76 bytes
        "x" * 71 + "é",  # 72 characters, 73 bytes: would be cut mid-character
    ],
)
def test_a_password_over_72_bytes_is_refused_never_cut(password: str) -> None:
    assert len(password.encode("utf-8")) > PASSWORD_MAX_BYTES

    with pytest.raises(ValueError, match=f"at most {PASSWORD_MAX_BYTES} bytes"):
        check_password(password)


def test_an_email_is_trimmed_and_lower_cased() -> None:
    assert normalize_email("  Alice@Example.COM ") == "alice@example.com"


def test_a_login_is_trimmed_and_lower_cased() -> None:
    assert normalize_login(" ALICE ") == "alice"
    assert normalize_login("Alice@Example.com") == "alice@example.com"
