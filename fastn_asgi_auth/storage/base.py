"""The store interface that the OAuth proxy and the bearer chain rely on."""

from __future__ import annotations

from typing import Any, Protocol


class Store(Protocol):
    """Async key-value store of JSON-compatible dicts, each with a lifetime.

    Keys are namespaced strings such as ``access:<sha256 of token>``; values
    never contain one of our own tokens in clear. A backend that cannot be
    reached raises OSError, TimeoutError or ConnectionError, or one of the
    exception types it lists in an ``unavailable_errors`` attribute. Callers
    turn those into a 503.
    """

    async def get(self, key: str) -> dict[str, Any] | None:
        """Return the value, or None when missing or expired."""
        ...

    async def set(self, key: str, value: dict[str, Any], ttl: float) -> None:
        """Store the value for ttl seconds, replacing any previous one."""
        ...

    async def add(self, key: str, value: dict[str, Any], ttl: float) -> bool:
        """Store the value only if the key is absent; return whether it was stored."""
        ...

    async def take(self, key: str) -> dict[str, Any] | None:
        """Atomically return and delete the value (for single-use records)."""
        ...

    async def delete(self, key: str) -> None: ...

    async def aclose(self) -> None: ...
