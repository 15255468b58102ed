"""Input rules: usernames, bcrypt-safe passwords, normalised emails and logins."""

from __future__ import annotations

import pytest

from domain.rules import (
    PASSWORD_MAX_BYTES,
    PASSWORD_MIN_CHARS,
    check_password,
    check_text,
    check_username,
    is_text,
    normalize_email,
    normalize_login,
    normalize_password,
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


@pytest.mark.parametrize(
    "text", ["", "alice", "tab\there", "new\nline", "\x7f\x1b", "😀", "\ufffd", "\U0010ffff"]
)
def test_text_without_nul_or_lone_surrogates_is_kept(text: str) -> None:
    assert check_text(text) == text
    assert is_text(text)


@pytest.mark.parametrize(
    "text", ["\x00", "alice\x00", "\ud800", "a\udfffb", "x\udcff", "\ud83d!"], ids=ascii
)
def test_a_nul_or_a_lone_surrogate_is_text_no_store_can_keep(text: str) -> None:
    with pytest.raises(ValueError, match="NUL characters or lone surrogates"):
        check_text(text)
    assert not is_text(text)


@pytest.mark.parametrize(
    ("typed", "normal"),
    [
        ("e\u0301te\u0301", "été"),  # decomposed accents compose
        ("ｐａｓｓｗｏｒｄ", "password"),  # full-width letters
        ("ﬁnal", "final"),  # a ligature
        ("x²", "x2"),
        ("plain ascii", "plain ascii"),
    ],
    ids=ascii,
)
def test_a_password_is_normalised_to_nfkc(typed: str, normal: str) -> None:
    assert normalize_password(typed) == normal
    assert normalize_password(normal) == normal  # a normal form stays as it is


def test_the_72_byte_limit_applies_to_the_nfkc_form_that_bcrypt_sees() -> None:
    expands = "\ufdfa" * 3  # 9 bytes typed; NFKC spells each out in 18 Arabic characters
    assert len(expands.encode()) <= PASSWORD_MAX_BYTES < len(normalize_password(expands).encode())
    with pytest.raises(ValueError, match=f"at most {PASSWORD_MAX_BYTES} bytes"):
        check_password(expands)

    composes = "e\u0301" * 25  # 75 bytes typed, 50 once each pair composes into one é
    assert len(composes.encode()) > PASSWORD_MAX_BYTES
    assert check_password(composes) == composes  # checked in NFKC, kept as typed


def test_the_8_character_minimum_applies_to_the_nfkc_form() -> None:
    with pytest.raises(ValueError, match=f"at least {PASSWORD_MIN_CHARS} characters"):
        check_password("e\u0301" * 4)  # 8 code points typed, 4 characters once composed
