"""Unit tests for MemoryStore: copies, expiry, add, take and the entry bound."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace

import pytest

from fastn_asgi_auth.storage import memory
from fastn_asgi_auth.storage.memory import MemoryStore


class FakeClock:
    """Stand-in for the time module inside storage.memory, advanced by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    # Replace the module's reference only, so the event loop keeps the real clock.
    fake = FakeClock()
    monkeypatch.setattr(memory, "time", SimpleNamespace(monotonic=fake.monotonic))
    return fake


# get, set and delete


async def test_get_missing_returns_none() -> None:
    assert await MemoryStore().get("absent") is None


async def test_set_then_get() -> None:
    store = MemoryStore()

    await store.set("client:a", {"name": "a", "uris": ["http://localhost/cb"]}, ttl=60)

    assert await store.get("client:a") == {"name": "a", "uris": ["http://localhost/cb"]}


async def test_set_replaces_value() -> None:
    store = MemoryStore()
    await store.set("k", {"v": 1}, ttl=60)

    await store.set("k", {"v": 2}, ttl=60)

    assert await store.get("k") == {"v": 2}
    assert len(store) == 1


async def test_delete_removes_key() -> None:
    store = MemoryStore()
    await store.set("k", {"v": 1}, ttl=60)

    await store.delete("k")

    assert await store.get("k") is None


async def test_delete_missing_is_quiet() -> None:
    store = MemoryStore()

    await store.delete("absent")

    assert len(store) == 0


async def test_aclose_clears_entries() -> None:
    store = MemoryStore()
    await store.set("k", {"v": 1}, ttl=60)

    await store.aclose()

    assert len(store) == 0


@pytest.mark.parametrize("max_entries", [0, -1])
def test_bad_max_entries_raises(max_entries: int) -> None:
    with pytest.raises(ValueError, match="max_entries"):
        MemoryStore(max_entries=max_entries)


# Copies in and out


async def test_returned_value_is_copy() -> None:
    store = MemoryStore()
    await store.set("k", {"scopes": ["read"], "meta": {"n": 1}}, ttl=60)

    first = await store.get("k")
    assert first is not None
    first["scopes"].append("write")
    first["meta"]["n"] = 2
    first["extra"] = True

    assert await store.get("k") == {"scopes": ["read"], "meta": {"n": 1}}


async def test_stored_value_is_copy() -> None:
    store = MemoryStore()
    value = {"scopes": ["read"]}
    await store.set("k", value, ttl=60)

    value["scopes"].append("write")

    assert await store.get("k") == {"scopes": ["read"]}


async def test_added_value_is_copy() -> None:
    store = MemoryStore()
    value = {"scopes": ["read"]}
    await store.add("k", value, ttl=60)

    value["scopes"].append("write")

    assert await store.get("k") == {"scopes": ["read"]}


# Expiry


async def test_value_lives_until_ttl(clock: FakeClock) -> None:
    store = MemoryStore()
    await store.set("k", {"v": 1}, ttl=10)

    clock.now += 9.9

    assert await store.get("k") == {"v": 1}


async def test_value_expires_at_ttl(clock: FakeClock) -> None:
    store = MemoryStore()
    await store.set("k", {"v": 1}, ttl=10)

    clock.now += 10

    assert await store.get("k") is None


async def test_expired_get_drops_entry(clock: FakeClock) -> None:
    store = MemoryStore()
    await store.set("k", {"v": 1}, ttl=10)
    clock.now += 11

    await store.get("k")

    assert len(store) == 0


@pytest.mark.parametrize("ttl", [0, -5])
async def test_nonpositive_ttl_is_expired(clock: FakeClock, ttl: float) -> None:
    store = MemoryStore()

    await store.set("k", {"v": 1}, ttl=ttl)

    assert await store.get("k") is None


async def test_set_resets_ttl(clock: FakeClock) -> None:
    store = MemoryStore()
    await store.set("k", {"v": 1}, ttl=10)
    clock.now += 8
    await store.set("k", {"v": 2}, ttl=10)

    clock.now += 8

    assert await store.get("k") == {"v": 2}


async def test_write_sweeps_expired_entries(clock: FakeClock) -> None:
    store = MemoryStore()
    for index in range(5):
        await store.set(f"old:{index}", {"v": index}, ttl=10)
    clock.now += 11

    await store.set("new", {"v": 0}, ttl=10)

    assert len(store) == 1


async def test_sweep_keeps_live_entries(clock: FakeClock) -> None:
    store = MemoryStore()
    await store.set("short", {"v": 1}, ttl=5)
    await store.set("long", {"v": 2}, ttl=100)
    clock.now += 6

    await store.set("new", {"v": 3}, ttl=10)

    assert await store.get("long") == {"v": 2}
    assert await store.get("short") is None


# add


async def test_add_when_absent() -> None:
    store = MemoryStore()

    assert await store.add("k", {"v": 1}, ttl=60) is True
    assert await store.get("k") == {"v": 1}


async def test_add_when_present_keeps_old() -> None:
    store = MemoryStore()
    await store.set("k", {"v": 1}, ttl=60)

    assert await store.add("k", {"v": 2}, ttl=60) is False
    assert await store.get("k") == {"v": 1}


async def test_add_over_expired_entry(clock: FakeClock) -> None:
    store = MemoryStore()
    await store.set("k", {"v": 1}, ttl=10)
    clock.now += 11

    assert await store.add("k", {"v": 2}, ttl=10) is True
    assert await store.get("k") == {"v": 2}


async def test_concurrent_adds_one_wins() -> None:
    store = MemoryStore()

    results = await asyncio.gather(*(store.add("used:code", {"n": n}, ttl=60) for n in range(50)))

    assert results.count(True) == 1
    assert await store.get("used:code") == {"n": results.index(True)}


# take


async def test_take_returns_value() -> None:
    store = MemoryStore()
    await store.set("code:1", {"client_id": "c"}, ttl=60)

    assert await store.take("code:1") == {"client_id": "c"}


async def test_take_deletes_value() -> None:
    store = MemoryStore()
    await store.set("code:1", {"client_id": "c"}, ttl=60)

    await store.take("code:1")

    assert await store.get("code:1") is None
    assert await store.take("code:1") is None


async def test_take_missing_returns_none() -> None:
    assert await MemoryStore().take("absent") is None


async def test_take_expired_returns_none(clock: FakeClock) -> None:
    store = MemoryStore()
    await store.set("code:1", {"client_id": "c"}, ttl=10)
    clock.now += 10

    assert await store.take("code:1") is None
    assert len(store) == 0


async def test_taken_value_is_copy() -> None:
    store = MemoryStore()
    value = {"scopes": ["read"]}
    await store.set("code:1", value, ttl=60)

    record = await store.take("code:1")

    assert record == {"scopes": ["read"]}
    assert record is not value


async def test_concurrent_takes_one_wins() -> None:
    store = MemoryStore()
    await store.set("code:1", {"client_id": "c"}, ttl=60)

    results = await asyncio.gather(*(store.take("code:1") for _ in range(50)))

    winners = [result for result in results if result is not None]
    assert winners == [{"client_id": "c"}]
    assert results.count(None) == 49


# The entry bound


async def test_bound_keeps_last_written() -> None:
    store = MemoryStore(max_entries=3)

    for index in range(5):
        await store.set(f"k{index}", {"v": index}, ttl=60)

    assert len(store) == 3
    assert await store.get("k0") is None
    assert await store.get("k1") is None
    assert await store.get("k2") == {"v": 2}
    assert await store.get("k3") == {"v": 3}
    assert await store.get("k4") == {"v": 4}


async def test_rewrite_refreshes_position() -> None:
    store = MemoryStore(max_entries=3)
    for key in ("a", "b", "c"):
        await store.set(key, {"key": key}, ttl=60)

    await store.set("a", {"key": "a2"}, ttl=60)
    await store.set("d", {"key": "d"}, ttl=60)

    assert await store.get("a") == {"key": "a2"}
    assert await store.get("b") is None


async def test_read_does_not_refresh_position() -> None:
    # The bound evicts the least recently written entry, not the least recently read.
    store = MemoryStore(max_entries=3)
    for key in ("a", "b", "c"):
        await store.set(key, {"key": key}, ttl=60)

    await store.get("a")
    await store.set("d", {"key": "d"}, ttl=60)

    assert await store.get("a") is None
    assert await store.get("b") == {"key": "b"}


async def test_eviction_logs_warning(caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryStore(max_entries=1)

    with caplog.at_level(logging.WARNING, logger="fastn_asgi_auth.storage"):
        await store.set("a", {"v": 1}, ttl=60)
        await store.set("b", {"v": 2}, ttl=60)

    assert "memory store is full" in caplog.text


async def test_login_flood_keeps_other_entries() -> None:
    store = MemoryStore(max_entries=10)
    for name in ("client:a", "grant:a", "access:a"):
        await store.set(name, {"kept": True}, 60)

    for number in range(50):
        await store.set(f"login:{number}", {"number": number}, 60)

    assert await store.get("client:a") == {"kept": True}
    assert await store.get("grant:a") == {"kept": True}
    assert await store.get("access:a") == {"kept": True}
    assert await store.get("login:49") == {"number": 49}
    assert await store.get("login:0") is None
    assert len(store) == 10


async def test_full_without_logins_evicts_oldest() -> None:
    store = MemoryStore(max_entries=2)
    await store.set("client:a", {}, 60)
    await store.set("client:b", {}, 60)
    await store.set("client:c", {}, 60)

    assert await store.get("client:a") is None
    assert await store.get("client:c") == {}


async def test_write_into_full_store_kept() -> None:
    store = MemoryStore(max_entries=3)
    for name in ("client:a", "client:b", "client:c"):
        await store.set(name, {}, 60)

    await store.set("login:new", {"pending": True}, 60)

    assert await store.get("login:new") == {"pending": True}
    assert await store.get("client:a") is None
    assert len(store) == 3
