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


# Entries that anyone can cause to be written without credentials, and whose
# loss costs at most a retry: pending logins and refresh locks.
EVICT_FIRST: Final = ("login:", "upstream_session_lock:", "grant_lock:")


class MemoryStore:
    """The embedded default: one process, bounded by entry count.

    When full, the oldest pending login or lock is evicted first, and only
    when none is left the least recently written entry of any kind. Anyone
    can cause those to be written without credentials, so a flood of them
    must not push out registered clients, grants or tokens. Values are kept as JSON text:
    callers never share mutable state with the store, a value that a
    networked backend could not hold fails here too, and decoding is cheaper
    than a deep copy.
    """

    def __init__(self, *, max_entries: int = 100_000, evict_first: tuple[str, ...] = EVICT_FIRST) -> None:
        if max_entries <= 0:
            raise ValueError(f"max_entries={max_entries!r} must be positive")
        self._max_entries = max_entries
        self._evict_first = evict_first
        self._entries: OrderedDict[str, tuple[float, str]] = OrderedDict()
        # Keys with an evict_first prefix, oldest write first.
        self._disposable: OrderedDict[str, None] = OrderedDict()
        self._evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> dict[str, Any] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires_at, value = entry
        if expires_at <= time.monotonic():
            self._remove(key)
            return None
        return json.loads(value)

    async def set(self, key: str, value: dict[str, Any], ttl: float) -> None:
        self._write(key, value, ttl)

    async def add(self, key: str, value: dict[str, Any], ttl: float) -> bool:
        # No await suspends between the check and the write, so this is
        # atomic within the event loop.
        if await self.get(key) is not None:
            return False
        self._write(key, value, ttl)
        return True

    async def take(self, key: str) -> dict[str, Any] | None:
        # No await between the read and the delete, so this is atomic within
        # the event loop.
        entry = self._remove(key)
        if entry is None or entry[0] <= time.monotonic():
            return None
        return json.loads(entry[1])

    async def delete(self, key: str) -> None:
        self._remove(key)

    async def aclose(self) -> None:
        self._entries.clear()
        self._disposable.clear()

    def _remove(self, key: str) -> tuple[float, str] | None:
        self._disposable.pop(key, None)
        return self._entries.pop(key, None)

    def _write(self, key: str, value: dict[str, Any], ttl: float) -> None:
        text = json.dumps(value, separators=(",", ":"))
        self._remove(key)
        self._entries[key] = (time.monotonic() + ttl, text)
        if key.startswith(self._evict_first):
            self._disposable[key] = None
        self._sweep()
        while len(self._entries) > self._max_entries:
            self._evict_one(keep=key)

    def _evict_one(self, *, keep: str) -> None:
        # The entry just written is never the victim: a full store must not
        # turn every new write into a silent no-op.
        victim = next((candidate for candidate in self._disposable if candidate != keep), None)
        if victim is None:
            victim = next(candidate for candidate in self._entries if candidate != keep)
        self._remove(victim)
        self._evictions += 1
        if self._evictions in (1, 100) or self._evictions % 10_000 == 0:
            logger.warning(
                "memory store is full (%d entries): evicted an entry (%d evictions so far); raise max_entries",
                self._max_entries,
                self._evictions,
            )

    def _sweep(self) -> None:
        now = time.monotonic()
        for _ in range(min(SWEEP_BATCH, len(self._entries))):
            key, (expires_at, _value) = next(iter(self._entries.items()))
            if expires_at > now:
                return
            self._remove(key)
