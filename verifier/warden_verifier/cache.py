"""The key set as last fetched, when to fetch it again, and never more often than allowed.

A fetch happens when the set is older than its response's max-age, or when a token names a
kid the set lacks (a key Warden started signing with at once, `warden keys rotate --now`).
Either way at most one fetch per `min_refetch_interval` seconds, whatever the outcome, and
one at a time: a flood of tokens naming random kids costs Warden one request per interval.
A failed fetch keeps the last good set (and the next attempt waits the interval).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable

from warden_verifier.errors import KeySetUnavailable
from warden_verifier.keys import (
    Fetched,
    KeySetError,
    VerificationKey,
    fetch_async,
    fetch_sync,
    parse_jwks,
)

log = logging.getLogger("warden_verifier")


class KeyCache:
    """Warden's public keys by kid, fetched from `url` and kept as its Cache-Control says."""

    def __init__(
        self,
        url: str,
        *,
        min_refetch_interval: float = 5.0,
        default_max_age: float = 300.0,
        max_max_age: float = 86400.0,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self._interval = min_refetch_interval
        self._default_max_age = default_max_age
        self._max_max_age = max_max_age
        self._timeout = timeout
        self._clock = clock
        self._keys: dict[str, VerificationKey] = {}
        self._loaded = False
        self._fresh_until = float("-inf")
        self._last_attempt = float("-inf")
        self._thread_lock = threading.Lock()
        self._async_lock: asyncio.Lock | None = None
        self.fetches = 0  # attempts made, good or not: what Warden saw of this cache

    @property
    def kids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def get(self, kid: str) -> VerificationKey | None:
        """The key of `kid`, fetching the set first if it is due (blocking)."""
        if self._wants_fetch(kid):
            with self._thread_lock:
                if self._wants_fetch(kid):  # another thread may have fetched meanwhile
                    self._take(self._attempt_sync)
        return self._lookup(kid)

    async def get_async(self, kid: str) -> VerificationKey | None:
        """The key of `kid`, fetching the set first if it is due (on the running loop)."""
        if self._wants_fetch(kid):
            if self._async_lock is None:
                self._async_lock = asyncio.Lock()
            async with self._async_lock:
                if self._wants_fetch(kid):
                    await self._take_async(fetch_async)
        return self._lookup(kid)

    def refresh(self) -> None:
        """Fetch the set now (blocking), within the rate limit; e.g. at a service's start."""
        with self._thread_lock:
            if self._may_fetch():
                self._take(self._attempt_sync)
        if not self._loaded:
            raise KeySetUnavailable

    async def refresh_async(self) -> None:
        """Fetch the set now, within the rate limit; e.g. in a service's startup."""
        if self._async_lock is None:
            self._async_lock = asyncio.Lock()
        async with self._async_lock:
            if self._may_fetch():
                await self._take_async(fetch_async)
        if not self._loaded:
            raise KeySetUnavailable

    def _lookup(self, kid: str) -> VerificationKey | None:
        if not self._loaded:
            raise KeySetUnavailable
        return self._keys.get(kid)

    def _wants_fetch(self, kid: str) -> bool:
        stale = self._clock() >= self._fresh_until
        return (stale or kid not in self._keys) and self._may_fetch()

    def _may_fetch(self) -> bool:
        return self._clock() - self._last_attempt >= self._interval

    def _attempt_sync(self) -> Fetched:
        return fetch_sync(self.url, self._timeout)

    def _take(self, fetch: Callable[[], Fetched]) -> None:
        self._last_attempt = self._clock()
        self.fetches += 1
        try:
            self._apply(fetch())
        except KeySetError as exc:
            self._failed(exc)

    async def _take_async(self, fetch: Callable[[str, float], Awaitable[Fetched]]) -> None:
        self._last_attempt = self._clock()
        self.fetches += 1
        try:
            self._apply(await fetch(self.url, self._timeout))
        except KeySetError as exc:
            self._failed(exc)

    def _apply(self, fetched: Fetched) -> None:
        keys = parse_jwks(fetched.document)
        # A key published as before stays the same object: tokens it verified stay verified.
        for kid, key in keys.items():
            old = self._keys.get(kid)
            if old is not None and old.source == key.source:
                keys[kid] = old
        age = self._default_max_age if fetched.max_age is None else fetched.max_age
        self._keys, self._loaded = keys, True
        self._fresh_until = self._clock() + min(age, self._max_max_age)
        log.info("key set of %s: kids %s", self.url, sorted(keys))

    def _failed(self, exc: KeySetError) -> None:
        kept = "keeping the last good set" if self._loaded else "no key set yet"
        log.warning("key set of %s could not be fetched (%s): %s", self.url, exc, kept)
