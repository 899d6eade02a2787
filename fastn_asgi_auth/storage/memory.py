"""Bounded, TTL-expiring in-memory store for a single process."""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from typing import Any, Final

logger = logging.getLogger("fastn_asgi_auth.storage")

# Expired entries are swept in slices, so that no single write pays for a full scan.
SWEEP_BATCH: Final = 64


class MemoryStore:
    """The embedded default: one process, bounded by entry count.

    When full, the least recently written entry is evicted, so an attacker who
    registers clients or starts logins in bulk pushes out stale state rather
    than growing memory. Values are kept as JSON text: callers never share
    mutable state with the store, and a value that a networked backend could
    not hold fails here too. Decoding is also cheaper than a deep copy.
    """

    def __init__(self, *, max_entries: int = 100_000) -> None:
        if max_entries <= 0:
            raise ValueError(f"max_entries={max_entries!r} must be positive")
        self._max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> dict[str, Any] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires_at, value = entry
        if expires_at <= time.monotonic():
            del self._entries[key]
            return None
        return json.loads(value)

    async def set(self, key: str, value: dict[str, Any], ttl: float) -> None:
        self._write(key, value, ttl)

    async def add(self, key: str, value: dict[str, Any], ttl: float) -> bool:
        if await self.get(key) is not None:
            return False
        self._write(key, value, ttl)
        return True

    async def take(self, key: str) -> dict[str, Any] | None:
        # No await between the read and the delete, so this is atomic within
        # the event loop.
        entry = self._entries.pop(key, None)
        if entry is None or entry[0] <= time.monotonic():
            return None
        return json.loads(entry[1])

    async def delete(self, key: str) -> None:
        self._entries.pop(key, None)

    async def aclose(self) -> None:
        self._entries.clear()

    def _write(self, key: str, value: dict[str, Any], ttl: float) -> None:
        self._entries.pop(key, None)
        self._entries[key] = (time.monotonic() + ttl, json.dumps(value, separators=(",", ":")))
        self._sweep()
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)
            self._evictions += 1
            if self._evictions in (1, 100) or self._evictions % 10_000 == 0:
                logger.warning(
                    "memory store is full (%d entries): evicted the oldest entry (%d evictions so far);"
                    " raise max_entries or use the Redis store",
                    self._max_entries,
                    self._evictions,
                )

    def _sweep(self) -> None:
        now = time.monotonic()
        for _ in range(min(SWEEP_BATCH, len(self._entries))):
            key, (expires_at, _value) = next(iter(self._entries.items()))
            if expires_at > now:
                return
            del self._entries[key]
