"""RFC 6238 TOTP with pyotp: the code generator and checker behind the Totp port."""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime

import pyotp

DIGITS = 6
INTERVAL = 30  # seconds per time-step
DRIFT = 1  # steps either side of now that are accepted (a clock a little off, a slow typist)


class PyotpTotp:
    """Totp: SHA-1, `digits` digits, `interval`-second steps, `drift` steps either side."""

    def __init__(self, digits: int = DIGITS, interval: int = INTERVAL, drift: int = DRIFT) -> None:
        self._digits = digits
        self._interval = interval
        self._drift = drift

    def new_secret(self) -> str:
        return pyotp.random_base32()  # 32 base32 characters: 160 bits, RFC 4226's advice

    def uri(self, secret: str, account: str, issuer: str) -> str:
        return self._totp(secret).provisioning_uri(name=account, issuer_name=issuer)

    def code_at(self, secret: str, moment: datetime | int) -> str:
        """The code of the time-step `moment` (a datetime, or Unix seconds) falls in."""
        return self._totp(secret).at(moment)

    def step_of(self, moment: datetime) -> int:
        return int(moment.timestamp()) // self._interval

    def matching_step(self, secret: str, code: str, now: datetime) -> int | None:
        totp = self._totp(secret)
        here = self.step_of(now)
        found = None
        # Every candidate is compared, in constant time, whichever matches.
        for step in range(here - self._drift, here + self._drift + 1):
            if hmac.compare_digest(totp.generate_otp(step), code):
                found = step
        return found

    def _totp(self, secret: str) -> pyotp.TOTP:
        return pyotp.TOTP(secret, digits=self._digits, digest=hashlib.sha1, interval=self._interval)
