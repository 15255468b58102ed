"""What a verified access token says."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Claims:
    """The claims of an access token that passed every check."""

    user_id: str  # `sub`: Warden's user id, as a string
    session_id: str  # `sid`
    token_id: str  # `jti`
    issuer: str  # `iss`
    issued_at: int  # `iat`, epoch seconds
    expires_at: int  # `exp`, epoch seconds
    key_id: str  # the `kid` of the key that signed it
    audience: tuple[str, ...] = ()  # `aud`, when the token has one
    amr: tuple[str, ...] = ()  # how the user authenticated (`amr`), when the token says
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)  # every claim as decoded
