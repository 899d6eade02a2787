"""GuardedStore: which backend failures become "could not check"."""

from __future__ import annotations

import pytest

from fastn_asgi_auth.errors import UpstreamUnavailable
from fastn_asgi_auth.storage.guarded import GuardedStore
from fastn_asgi_auth.storage.memory import MemoryStore


class BackendDown(Exception):
    """A client library's own connection error, not an OSError."""


class FailingStore(MemoryStore):
    def __init__(self, error: Exception, **kwargs) -> None:
        super().__init__(**kwargs)
        self.error = error

    async def get(self, key: str):
        raise self.error


class DeclaringStore(FailingStore):
    unavailable_errors = (BackendDown,)


@pytest.mark.parametrize("error", [ConnectionRefusedError("refused"), TimeoutError("slow"), OSError("reset")])
async def test_io_errors_become_unavailable(error):
    with pytest.raises(UpstreamUnavailable):
        await GuardedStore(FailingStore(error)).get("client:a")


async def test_declared_backend_error_unavailable():
    with pytest.raises(UpstreamUnavailable):
        await GuardedStore(DeclaringStore(BackendDown("down"))).get("client:a")


async def test_bug_passes_through():
    with pytest.raises(KeyError):
        await GuardedStore(FailingStore(KeyError("bug"))).get("client:a")


async def test_lock_keys_evicted_before_clients():
    store = MemoryStore(max_entries=3)
    await store.set("client:a", {}, 60)
    await store.set("client:b", {}, 60)
    await store.set("upstream_session_lock:x", {}, 60)
    await store.set("client:c", {}, 60)
    assert await store.get("client:a") == {}
    assert await store.get("upstream_session_lock:x") is None
