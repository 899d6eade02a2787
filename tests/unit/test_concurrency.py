"""Unit tests for SingleFlight and ExpiringCache."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from fastn_asgi_auth import cache
from fastn_asgi_auth.cache import ExpiringCache
from fastn_asgi_auth.singleflight import SingleFlight

# Every wait in these tests is bounded, so a regression fails instead of hanging.
WAIT_SECONDS = 5.0


class CountingWork:
    """Shared work that blocks on a gate, so that callers can pile up first."""

    def __init__(self, result: str = "resolved", error: Exception | None = None) -> None:
        self.result = result
        self.error = error
        self.calls = 0
        self.started = asyncio.Event()
        self.gate = asyncio.Event()
        self.cancelled = False

    async def __call__(self) -> str:
        self.calls += 1
        self.started.set()
        try:
            await asyncio.wait_for(self.gate.wait(), WAIT_SECONDS)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        if self.error is not None:
            raise self.error
        return self.result


async def let_tasks_run() -> None:
    # A few loop turns let every started task reach its first await.
    for _ in range(5):
        await asyncio.sleep(0)


# SingleFlight


async def test_concurrent_callers_share_work() -> None:
    flight: SingleFlight[str] = SingleFlight()
    work = CountingWork()
    callers = [asyncio.create_task(flight.run("token-hash", work)) for _ in range(20)]
    await let_tasks_run()

    work.gate.set()
    results = await asyncio.wait_for(asyncio.gather(*callers), WAIT_SECONDS)

    assert work.calls == 1
    assert results == ["resolved"] * 20


async def test_finished_key_is_forgotten() -> None:
    flight: SingleFlight[str] = SingleFlight()
    work = CountingWork()
    work.gate.set()

    await asyncio.wait_for(flight.run("k", work), WAIT_SECONDS)

    assert len(flight) == 0


async def test_sequential_calls_run_again() -> None:
    flight: SingleFlight[str] = SingleFlight()
    work = CountingWork()
    work.gate.set()

    await asyncio.wait_for(flight.run("k", work), WAIT_SECONDS)
    await asyncio.wait_for(flight.run("k", work), WAIT_SECONDS)

    assert work.calls == 2


async def test_different_keys_run_separately() -> None:
    flight: SingleFlight[str] = SingleFlight()
    first = CountingWork("first")
    second = CountingWork("second")
    callers = [
        asyncio.create_task(flight.run("a", first)),
        asyncio.create_task(flight.run("b", second)),
    ]
    await let_tasks_run()

    first.gate.set()
    second.gate.set()
    results = await asyncio.wait_for(asyncio.gather(*callers), WAIT_SECONDS)

    assert results == ["first", "second"]
    assert first.calls == 1
    assert second.calls == 1


async def test_exception_reaches_all_callers() -> None:
    flight: SingleFlight[str] = SingleFlight()
    work = CountingWork(error=RuntimeError("upstream down"))
    callers = [asyncio.create_task(flight.run("k", work)) for _ in range(20)]
    await let_tasks_run()

    work.gate.set()
    results = await asyncio.wait_for(asyncio.gather(*callers, return_exceptions=True), WAIT_SECONDS)

    assert work.calls == 1
    assert all(isinstance(result, RuntimeError) for result in results)
    assert {str(result) for result in results} == {"upstream down"}


async def test_call_after_exception_runs_again() -> None:
    flight: SingleFlight[str] = SingleFlight()
    failing = CountingWork(error=RuntimeError("upstream down"))
    failing.gate.set()
    with pytest.raises(RuntimeError):
        await asyncio.wait_for(flight.run("k", failing), WAIT_SECONDS)

    succeeding = CountingWork("second try")
    succeeding.gate.set()
    result = await asyncio.wait_for(flight.run("k", succeeding), WAIT_SECONDS)

    assert result == "second try"
    assert succeeding.calls == 1
    assert len(flight) == 0


async def test_cancelled_waiter_keeps_shared_work() -> None:
    flight: SingleFlight[str] = SingleFlight()
    work = CountingWork()
    leaving = asyncio.create_task(flight.run("k", work))
    staying = [asyncio.create_task(flight.run("k", work)) for _ in range(3)]
    await asyncio.wait_for(work.started.wait(), WAIT_SECONDS)
    await let_tasks_run()

    leaving.cancel()
    await let_tasks_run()
    work.gate.set()
    results = await asyncio.wait_for(asyncio.gather(*staying), WAIT_SECONDS)

    assert leaving.cancelled()
    assert work.cancelled is False
    assert work.calls == 1
    assert results == ["resolved"] * 3


async def test_first_caller_cancel_keeps_work() -> None:
    # The caller that started the work leaves, and a caller arriving later still shares it.
    flight: SingleFlight[str] = SingleFlight()
    work = CountingWork()
    starter = asyncio.create_task(flight.run("k", work))
    await asyncio.wait_for(work.started.wait(), WAIT_SECONDS)
    starter.cancel()
    await let_tasks_run()

    late = asyncio.create_task(flight.run("k", work))
    await let_tasks_run()
    work.gate.set()
    result = await asyncio.wait_for(late, WAIT_SECONDS)

    assert result == "resolved"
    assert work.calls == 1


# ExpiringCache


class FakeWallClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def time(self) -> float:
        return self.now


@pytest.fixture
def wall_clock(monkeypatch: pytest.MonkeyPatch) -> FakeWallClock:
    # Replace only the cache module's reference to the time module.
    fake = FakeWallClock()
    monkeypatch.setattr(cache, "time", SimpleNamespace(time=fake.time))
    return fake


def test_cache_get_before_expiry(wall_clock: FakeWallClock) -> None:
    entries: ExpiringCache[str] = ExpiringCache(10)
    entries.put("k", "v", wall_clock.now + 60)

    wall_clock.now += 59

    assert entries.get("k") == "v"


def test_cache_get_at_expiry(wall_clock: FakeWallClock) -> None:
    entries: ExpiringCache[str] = ExpiringCache(10)
    entries.put("k", "v", wall_clock.now + 60)

    wall_clock.now += 60

    assert entries.get("k") is None


def test_cache_expired_entry_dropped(wall_clock: FakeWallClock) -> None:
    entries: ExpiringCache[str] = ExpiringCache(10)
    entries.put("k", "v", wall_clock.now + 60)
    wall_clock.now += 61

    entries.get("k")

    assert len(entries) == 0


def test_cache_get_missing() -> None:
    assert ExpiringCache[str](10).get("absent") is None


@pytest.mark.parametrize("offset", [0, -1, -3600])
def test_cache_past_expiry_stores_nothing(wall_clock: FakeWallClock, offset: float) -> None:
    entries: ExpiringCache[str] = ExpiringCache(10)

    entries.put("k", "v", wall_clock.now + offset)

    assert len(entries) == 0
    assert entries.get("k") is None


def test_cache_past_expiry_removes_old(wall_clock: FakeWallClock) -> None:
    entries: ExpiringCache[str] = ExpiringCache(10)
    entries.put("k", "old", wall_clock.now + 60)

    entries.put("k", "new", wall_clock.now - 1)

    assert entries.get("k") is None


def test_cache_bound_evicts_oldest(wall_clock: FakeWallClock) -> None:
    entries: ExpiringCache[int] = ExpiringCache(3)

    for index in range(5):
        entries.put(f"k{index}", index, wall_clock.now + 60)

    assert len(entries) == 3
    assert entries.get("k0") is None
    assert entries.get("k1") is None
    assert entries.get("k4") == 4


def test_cache_read_refreshes_position(wall_clock: FakeWallClock) -> None:
    entries: ExpiringCache[str] = ExpiringCache(2)
    entries.put("a", "A", wall_clock.now + 60)
    entries.put("b", "B", wall_clock.now + 60)

    entries.get("a")
    entries.put("c", "C", wall_clock.now + 60)

    assert entries.get("a") == "A"
    assert entries.get("b") is None


def test_cache_put_replaces_value(wall_clock: FakeWallClock) -> None:
    entries: ExpiringCache[str] = ExpiringCache(2)
    entries.put("a", "A", wall_clock.now + 60)

    entries.put("a", "A2", wall_clock.now + 60)

    assert entries.get("a") == "A2"
    assert len(entries) == 1


def test_cache_discard_and_clear(wall_clock: FakeWallClock) -> None:
    entries: ExpiringCache[str] = ExpiringCache(10)
    entries.put("a", "A", wall_clock.now + 60)
    entries.put("b", "B", wall_clock.now + 60)

    entries.discard("a")
    entries.discard("absent")

    assert entries.get("a") is None
    assert len(entries) == 1

    entries.clear()

    assert len(entries) == 0
