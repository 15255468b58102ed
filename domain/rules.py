"""Input rules of the contract, written once and used by every wire model."""

from __future__ import annotations

import re

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


def check_password(value: str) -> str:
    """Return the password if bcrypt can take it whole, else raise ValueError."""
    if len(value) < PASSWORD_MIN_CHARS:
        raise ValueError(f"password must have at least {PASSWORD_MIN_CHARS} characters")
    if len(value.encode("utf-8")) > PASSWORD_MAX_BYTES:
        raise ValueError(f"password must be at most {PASSWORD_MAX_BYTES} bytes in UTF-8")
    return value


def normalize_email(value: str) -> str:
    """Emails are stored and compared lower-cased."""
    return value.strip().lower()


def normalize_login(value: str) -> str:
    """A login name (username or email) is matched case-insensitively."""
    return value.strip().lower()
