"""The sessions Warden said were revoked, each kept until its tokens would have expired anyway."""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("warden_verifier")


class RevokedSessions:
    """Revoked session ids, each until its `expires_at` plus `grace` seconds; then forgotten.

    `grace` covers the verifier's leeway: a token whose `exp` is `expires_at` is still accepted
    for `leeway` seconds after it, so the revocation has to last that long too. Memory stays
    bounded: an `expires_at` further away than `max_lifetime` seconds (no access token lives
    that long) is cut to it, and beyond `max_entries` the revocation nearest its end is dropped.
    Safe to read from any thread while the follower writes.
    """

    def __init__(
        self,
        grace: float = 10.0,
        max_lifetime: float = 86400.0,
        max_entries: int = 1_000_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._grace = grace
        self._max_lifetime = max_lifetime
        self._max_entries = max_entries
        self._clock = clock
        self._until: dict[str, float] = {}
        self._ends: list[tuple[float, str]] = []  # a heap of (until, session id)
        self._lock = threading.Lock()

    def revoke(self, session_id: str, expires_at: float) -> bool:
        """Refuse `session_id`'s tokens until `expires_at` (epoch seconds); False: already over."""
        now = self._clock()
        until = min(expires_at, now + self._max_lifetime) + self._grace
        if until < now:
            return False
        with self._lock:
            self._purge(now)
            if until <= self._until.get(session_id, -1.0):
                return True
            self._until[session_id] = until
            heapq.heappush(self._ends, (until, session_id))
            while len(self._until) > self._max_entries:
                self._drop_first()
        return True

    def is_revoked(self, session_id: str) -> bool:
        until = self._until.get(session_id)
        return until is not None and self._clock() <= until

    def purge(self) -> int:
        """Forget every revocation that is over; how many were forgotten."""
        with self._lock:
            return self._purge(self._clock())

    def __len__(self) -> int:
        self.purge()
        return len(self._until)

    def __contains__(self, session_id: object) -> bool:
        return isinstance(session_id, str) and self.is_revoked(session_id)

    def _purge(self, now: float) -> int:
        forgotten = 0
        while self._ends and self._ends[0][0] < now:
            until, sid = heapq.heappop(self._ends)
            if self._until.get(sid) == until:  # not one revoked again for longer since
                del self._until[sid]
                forgotten += 1
        return forgotten

    def _drop_first(self) -> None:
        until, sid = heapq.heappop(self._ends)
        if self._until.get(sid) == until:
            del self._until[sid]
            log.warning("revoked sessions: over %d entries, one dropped early", self._max_entries)
