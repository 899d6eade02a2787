"""A store wrapper that turns backend failures into "could not check" (503)."""

from __future__ import annotations

import logging
import time
from typing import Any, Final

from fastn_asgi_auth.errors import UpstreamUnavailable
from fastn_asgi_auth.storage.base import Store

logger = logging.getLogger("fastn_asgi_auth.storage")

# One log line per this many seconds while the backend keeps failing.
LOG_INTERVAL_SECONDS: Final = 10.0


# Connection and timeout failures: the store could not be reached. Other
# exceptions are bugs, and pass through as 500 with their traceback.
IO_ERRORS: Final = (OSError, TimeoutError, ConnectionError)


class GuardedStore:
    """Wraps a Store so that a backend outage becomes UpstreamUnavailable.

    Callers then respond 503 with Retry-After, never 401 or 500, and clients
    keep their credentials through a store outage. Other exceptions are bugs
    and pass through as 500 with their traceback.
    """

    def __init__(self, store: Store) -> None:
        self.inner = store
        # A backend names its client library's connection errors in an
        # unavailable_errors attribute; without it, the standard ones count.
        self._unavailable_errors: tuple[type[BaseException], ...] = IO_ERRORS + tuple(
            getattr(store, "unavailable_errors", ())
        )
        self._last_log = 0.0
        self._failures = 0

    async def get(self, key: str) -> dict[str, Any] | None:
        try:
            return await self.inner.get(key)
        except self._unavailable_errors as exc:  # type: ignore[misc]
            raise self._unavailable("get", exc) from exc

    async def set(self, key: str, value: dict[str, Any], ttl: float) -> None:
        try:
            await self.inner.set(key, value, ttl)
        except self._unavailable_errors as exc:  # type: ignore[misc]
            raise self._unavailable("set", exc) from exc

    async def add(self, key: str, value: dict[str, Any], ttl: float) -> bool:
        try:
            return await self.inner.add(key, value, ttl)
        except self._unavailable_errors as exc:  # type: ignore[misc]
            raise self._unavailable("add", exc) from exc

    async def take(self, key: str) -> dict[str, Any] | None:
        try:
            return await self.inner.take(key)
        except self._unavailable_errors as exc:  # type: ignore[misc]
            raise self._unavailable("take", exc) from exc

    async def delete(self, key: str) -> None:
        try:
            await self.inner.delete(key)
        except self._unavailable_errors as exc:  # type: ignore[misc]
            raise self._unavailable("delete", exc) from exc

    async def aclose(self) -> None:
        await self.inner.aclose()

    def _unavailable(self, operation: str, exc: BaseException) -> UpstreamUnavailable:
        self._failures += 1
        now = time.monotonic()
        if now - self._last_log >= LOG_INTERVAL_SECONDS:
            # The key is left out: it contains a token hash, harmless but noisy.
            logger.error(
                "store %s failed: %s: %s (%d failures so far)",
                operation,
                type(exc).__name__,
                exc,
                self._failures,
                exc_info=exc,
            )
            self._last_log = now
        return UpstreamUnavailable("token store unavailable")
