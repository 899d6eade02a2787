"""Refresh under a store lock, so that workers sharing a store refresh once.

Upstream refresh tokens rotate: of two workers that refresh with the same
one, the second presents a used token, and a realm that detects reuse ends
the whole session. One worker therefore takes a lock in the store and
refreshes; the others wait, re-read, and use its result.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

from fastn_asgi_auth.errors import UpstreamUnavailable
from fastn_asgi_auth.settings import FastnAuthSettings
from fastn_asgi_auth.storage.base import Store

logger = logging.getLogger("fastn_asgi_auth.locks")

T = TypeVar("T")

# The lock outlives the bounded refresh by this much, so it never expires
# while its holder still works, and a worker that dies holding it blocks the
# refresh only briefly.
LOCK_EXTRA_SECONDS: Final = 5
POLL_SECONDS: Final = 0.1


def refresh_time_bound(settings: FastnAuthSettings) -> float:
    """Seconds one refresh may take: discovery plus the token request, each
    under httpx's own timeout, so the bound never cuts a call that httpx
    would still finish."""
    return 2 * settings.http_timeout + 1


class StoreLock:
    """A lock entry owned by one holder; only that holder releases it."""

    def __init__(self, store: Store, name: str, ttl: float) -> None:
        self._store = store
        self._name = name
        self._ttl = ttl
        self._owner = secrets.token_urlsafe(12)

    async def acquire(self) -> bool:
        return await self._store.add(self._name, {"owner": self._owner}, self._ttl)

    async def release(self) -> None:
        # NOTE: get and delete are two calls, so with a networked store a lock
        # that expired in between could be deleted. The refresh time bound
        # keeps the holder well inside the lock's lifetime.
        current = await self._store.get(self._name)
        if current is not None and current.get("owner") == self._owner:
            await self._store.delete(self._name)


async def refresh_once(
    store: Store,
    lock_name: str,
    *,
    timeout: float,
    current: Callable[[], Awaitable[T | None]],
    refresh: Callable[[], Awaitable[T]],
    usable: Callable[[], Awaitable[T | None]] | None = None,
) -> T:
    """Return current() when it has a fresh value, or refresh() under the lock.

    current() re-reads the shared state and returns None while it still needs
    a refresh. refresh() runs at most once at a time across workers, within
    timeout seconds. When that fails for time, usable() may return a value
    that is due for refresh but not yet expired, which is served instead.
    Raises UpstreamUnavailable when nothing can be served.
    """
    deadline = time.monotonic() + timeout
    while True:
        lock = StoreLock(store, lock_name, timeout + LOCK_EXTRA_SECONDS)
        if await lock.acquire():
            try:
                # Re-read under the lock: another worker may have refreshed
                # already, and its rotated refresh token is the one that works.
                fresh = await current()
                if fresh is not None:
                    return fresh
                async with asyncio.timeout(timeout):
                    return await refresh()
            except TimeoutError:
                logger.warning("refresh under %s timed out after %.0fs", lock_name.split(":", 1)[0], timeout)
                return await _usable_or_unavailable(usable, "upstream refresh timed out")
            finally:
                await lock.release()

        fresh = await current()
        if fresh is not None:
            return fresh
        if time.monotonic() >= deadline:
            logger.warning("another worker's refresh under %s did not finish in time", lock_name.split(":", 1)[0])
            return await _usable_or_unavailable(usable, "upstream refresh in progress elsewhere timed out")
        await asyncio.sleep(POLL_SECONDS)


async def _usable_or_unavailable(usable: Callable[[], Awaitable[T | None]] | None, reason: str) -> T:
    if usable is not None:
        value = await usable()
        if value is not None:
            return value
    raise UpstreamUnavailable(reason)
