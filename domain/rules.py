"""Input rules of the contract, written once and used by every wire model."""

from __future__ import annotations

import re
import unicodedata

USERNAME_PATTERN = r"^[A-Za-z0-9_.-]{3,32}$"
_USERNAME = re.compile(USERNAME_PATTERN)
PASSWORD_MIN_CHARS = 8
PASSWORD_MAX_BYTES = 72  # bcrypt reads no further; longer is refused, never cut
FULL_NAME_MAX_CHARS = 255
EMAIL_MAX_CHARS = 254


def check_username(value: str) -> str:
    """Return the username if it is 3-32 characters of [A-Za-z0-9_.-], else raise ValueError."""
    if not _USERNAME.fullmatch(value):
        raise ValueError("username must be 3-32 characters of letters, digits, '_', '.' or '-'")
    return value


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def check_text(value: str) -> str:
    """Return the text if every store can keep it, else raise ValueError.

    A NUL ends a string in Postgres and a lone UTF-16 surrogate has no UTF-8 form: no field
    of any request may hold either.
    """
    if _UNSTORABLE.search(value):
        raise ValueError("text may not contain NUL characters or lone surrogates")
    return value


def is_text(value: str) -> bool:
    """Whether `check_text` takes the value: a name that is not can belong to no one."""
    return _UNSTORABLE.search(value) is None


def normalize_password(value: str) -> str:
    """Passwords are hashed and checked in NFKC form: the same characters typed on another
    keyboard or platform (composed or not, full-width or not) are the same password."""
    return unicodedata.normalize("NFKC", value)


def check_password(value: str) -> str:
    """Return the password if bcrypt can take its NFKC form whole, else raise ValueError."""
    normal = normalize_password(value)
    if len(normal) < PASSWORD_MIN_CHARS:
        raise ValueError(f"password must have at least {PASSWORD_MIN_CHARS} characters")
    if len(normal.encode("utf-8")) > PASSWORD_MAX_BYTES:
        raise ValueError(f"password must be at most {PASSWORD_MAX_BYTES} bytes in UTF-8")
    return value


def normalize_email(value: str) -> str:
    """Emails are stored and compared lower-cased."""
    return value.strip().lower()


def normalize_login(value: str) -> str:
    """A login name (username or email) is matched case-insensitively."""
    return value.strip().lower()
