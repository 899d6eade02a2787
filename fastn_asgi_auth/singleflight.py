"""Single-flight: concurrent callers with one key share one execution."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class SingleFlight(Generic[T]):
    """Run at most one coroutine per key at a time; late callers await its result.

    The shared task is shielded, so one caller's cancellation (a client hanging
    up) does not cancel the work the others wait for.
    """

    def __init__(self) -> None:
        self._running: dict[str, asyncio.Task[T]] = {}

    def __len__(self) -> int:
        return len(self._running)

    async def run(self, key: str, work: Callable[[], Awaitable[T]]) -> T:
        task = self._running.get(key)
        if task is None:
            task = asyncio.ensure_future(work())
            self._running[key] = task
            task.add_done_callback(lambda _done: self._forget(key, task))
        return await asyncio.shield(task)

    def _forget(self, key: str, task: asyncio.Task[T]) -> None:
        if self._running.get(key) is task:
            del self._running[key]
        if not task.cancelled():
            # Mark the exception as retrieved even when every waiter was
            # cancelled, so asyncio does not log it as never retrieved.
            task.exception()
