"""GrantBook: upstream refreshes racing with revocation, with a stand-in upstream."""

from __future__ import annotations

import asyncio
import time

import pytest

from fastn_asgi_auth.crypto import new_key
from fastn_asgi_auth.errors import InvalidToken
from fastn_asgi_auth.grants import GrantBook
from fastn_asgi_auth.keycloak import UpstreamTokens
from fastn_asgi_auth.settings import FastnAuthSettings
from fastn_asgi_auth.storage.memory import MemoryStore

SETTINGS = FastnAuthSettings(issuer="http://127.0.0.1:9/realms/fastn", base_url="http://127.0.0.1:8000")


class HeldUpstream:
    """Upstream stand-in whose refresh waits until the test releases it."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.refreshes = 0

    async def refresh(self, refresh_token: str, *, client_id: str) -> UpstreamTokens:
        self.refreshes += 1
        self.started.set()
        await self.release.wait()
        return UpstreamTokens(
            access_token="upstream-access-2",
            refresh_token="upstream-refresh-2",
            expires_at=int(time.time()) + 300,
            refresh_expires_at=None,
        )

    async def revoke(self, refresh_token: str, *, client_id: str) -> None:
        return None


async def expired_grant(book: GrantBook, key: bytes) -> str:
    tokens = UpstreamTokens(
        access_token="upstream-access-1",
        refresh_token="upstream-refresh-1",
        expires_at=int(time.time()) - 1,
        refresh_expires_at=None,
    )
    return await book.create(tokens, key, client_id="client", subject="alice", scopes=["read"], resource=None)


async def test_revoke_during_refresh_wins():
    upstream = HeldUpstream()
    book = GrantBook(SETTINGS, MemoryStore(), upstream)
    key = new_key()
    grant_id = await expired_grant(book, key)

    refreshing = asyncio.create_task(book.fresh(grant_id, key))
    await asyncio.wait_for(upstream.started.wait(), 5)
    await book.revoke(grant_id, key)
    upstream.release.set()

    with pytest.raises(InvalidToken):
        await asyncio.wait_for(refreshing, 5)
    assert await book.load(grant_id, key) is None


async def test_concurrent_fresh_refreshes_once():
    upstream = HeldUpstream()
    book = GrantBook(SETTINGS, MemoryStore(), upstream)
    key = new_key()
    grant_id = await expired_grant(book, key)

    waiters = [asyncio.create_task(book.fresh(grant_id, key)) for _ in range(10)]
    await asyncio.wait_for(upstream.started.wait(), 5)
    upstream.release.set()
    grants = await asyncio.wait_for(asyncio.gather(*waiters), 5)

    assert upstream.refreshes == 1
    assert {grant.upstream_access_token for grant in grants} == {"upstream-access-2"}
