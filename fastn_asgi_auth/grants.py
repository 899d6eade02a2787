"""Grants: one upstream login, shared by every token we issue from it.

A grant contains the upstream (Keycloak) access and refresh tokens of one login.
Our authorization code, access tokens and refresh tokens each point at their
grant by id, so refresh-token rotation keeps the upstream session of *that*
login, and revoking any token of the grant ends all of them in one write.

The upstream tokens are sealed under a random grant key. Each of our tokens
carries that key wrapped under a key derived from the token itself (see
crypto.py), so the store alone cannot reveal an upstream credential.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any, Final

from fastn_asgi_auth.cache import ExpiringCache
from fastn_asgi_auth.crypto import SealError, open_json, seal_json
from fastn_asgi_auth.errors import InvalidToken, UpstreamRejected, UpstreamUnavailable
from fastn_asgi_auth.keycloak import UpstreamClient, UpstreamTokens
from fastn_asgi_auth.locks import refresh_once, refresh_time_bound
from fastn_asgi_auth.settings import FastnAuthSettings
from fastn_asgi_auth.singleflight import SingleFlight
from fastn_asgi_auth.storage.base import Store

logger = logging.getLogger("fastn_asgi_auth.grants")


@dataclass(frozen=True)
class Grant:
    grant_id: str
    client_id: str
    subject: str | None
    scopes: tuple[str, ...]
    resource: str | None
    upstream_access_token: str
    upstream_refresh_token: str | None
    upstream_expires_at: int
    upstream_refresh_expires_at: int | None
    upstream_client_id: str


REVOKED_PREFIX: Final = "revoked_grant:"
LOCK_PREFIX: Final = "grant_lock:"


def grant_key_name(grant_id: str) -> str:
    return "grant:" + grant_id


class GrantBook:
    """Creates, reads, refreshes and revokes grants in the store."""

    def __init__(self, settings: FastnAuthSettings, store: Store, upstream: UpstreamClient) -> None:
        self._settings = settings
        self._store = store
        self._upstream = upstream
        self._refreshes: SingleFlight[Grant] = SingleFlight()
        # grant id -> (sealed value, grant key, opened grant), in process memory only.
        self._opened: ExpiringCache[tuple[str, bytes, Grant]] = ExpiringCache(settings.max_entries)

    async def create(
        self,
        tokens: UpstreamTokens,
        key: bytes,
        *,
        client_id: str,
        subject: str | None,
        scopes: list[str],
        resource: str | None,
    ) -> str:
        grant_id = secrets.token_urlsafe(18)
        grant = Grant(
            grant_id=grant_id,
            client_id=client_id,
            subject=subject,
            scopes=tuple(scopes),
            resource=resource,
            upstream_access_token=tokens.access_token,
            upstream_refresh_token=tokens.refresh_token,
            upstream_expires_at=tokens.expires_at,
            upstream_refresh_expires_at=tokens.refresh_expires_at,
            upstream_client_id=self._settings.client_id,
        )
        await self._save(grant, key)
        return grant_id

    async def load(self, grant_id: str, key: bytes) -> Grant | None:
        """Return the grant, or None when it was revoked or has expired."""
        record = await self._store.get(grant_key_name(grant_id))
        if record is None:
            return None
        sealed = record.get("sealed")
        opened = self._opened.get(grant_id)
        if opened is not None and opened[0] == sealed and opened[1] == key:
            # Same sealed value and key as last time: reuse the result, which
            # saves an AES-GCM decryption per request. The store read above
            # still runs, so a revocation is seen at once.
            return opened[2]
        try:
            secret = open_json(key, record["sealed"], grant_id.encode())
        except (SealError, KeyError) as exc:
            logger.warning("grant %s could not be unsealed (%s); treating it as revoked", grant_id[:8], exc)
            return None
        grant = Grant(
            grant_id=grant_id,
            client_id=record["client_id"],
            subject=record.get("subject"),
            scopes=tuple(record.get("scopes", ())),
            resource=record.get("resource"),
            upstream_access_token=secret["access_token"],
            upstream_refresh_token=secret.get("refresh_token"),
            upstream_expires_at=int(secret["expires_at"]),
            upstream_refresh_expires_at=secret.get("refresh_expires_at"),
            upstream_client_id=record.get("upstream_client_id", self._settings.client_id),
        )
        self._opened.put(grant_id, (sealed, key, grant), time.time() + self._settings.refresh_token_ttl)
        return grant

    async def fresh(self, grant_id: str, key: bytes) -> Grant:
        """Return the grant with an upstream access token that is not about to expire.

        Raises InvalidToken when the grant is gone or the upstream session has
        ended, and UpstreamUnavailable when a needed refresh could not be made.
        """
        grant = await self.load(grant_id, key)
        if grant is None:
            raise InvalidToken("token was revoked")
        if not self._needs_refresh(grant):
            return grant
        return await self._refreshes.run(grant_id, lambda: self._refresh(grant_id, key))

    async def is_revoked(self, grant_id: str) -> bool:
        return await self._store.get(REVOKED_PREFIX + grant_id) is not None

    async def revoke(self, grant_id: str, key: bytes | None = None) -> None:
        grant = await self.load(grant_id, key) if key is not None else None
        # The mark comes first: a refresh that is in flight re-reads it after
        # writing, so it cannot bring the grant back (see _save).
        await self._store.set(REVOKED_PREFIX + grant_id, {}, self._settings.refresh_token_ttl)
        await self._store.delete(grant_key_name(grant_id))
        logger.info("grant %s revoked", grant_id[:8])
        if grant is not None and grant.upstream_refresh_token:
            await self._upstream.revoke(grant.upstream_refresh_token, client_id=grant.upstream_client_id)

    async def extend(self, grant: Grant, key: bytes) -> None:
        """Keep the grant for as long as a newly issued refresh token may use it."""
        await self._save(grant, key)

    def _needs_refresh(self, grant: Grant) -> bool:
        return grant.upstream_expires_at - self._settings.upstream_refresh_margin <= time.time()

    async def _refresh(self, grant_id: str, key: bytes) -> Grant:
        # The single flight covers one process; the store lock covers workers.
        async def current() -> Grant | None:
            grant = await self.load(grant_id, key)
            if grant is None:
                raise InvalidToken("token was revoked")
            return None if self._needs_refresh(grant) else grant

        async def usable() -> Grant | None:
            grant = await self.load(grant_id, key)
            return grant if grant is not None and grant.upstream_expires_at > time.time() else None

        return await refresh_once(
            self._store,
            LOCK_PREFIX + grant_id,
            timeout=refresh_time_bound(self._settings),
            current=current,
            refresh=lambda: self._refresh_locked(grant_id, key),
            usable=usable,
        )

    async def _refresh_locked(self, grant_id: str, key: bytes) -> Grant:
        grant = await self.load(grant_id, key)
        if grant is None:
            raise InvalidToken("token was revoked")
        if not grant.upstream_refresh_token:
            if grant.upstream_expires_at > time.time():
                return grant
            raise InvalidToken("upstream session expired")

        try:
            tokens = await self._upstream.refresh(grant.upstream_refresh_token, client_id=grant.upstream_client_id)
        except UpstreamRejected as exc:
            if exc.error != "invalid_grant":
                # invalid_client or unauthorized_client: the realm's client
                # configuration changed. That is for an operator to fix, and
                # the user's session must survive it.
                logger.error(
                    "upstream refresh for grant %s rejected with %s; check the realm's client %s",
                    grant_id[:8],
                    exc.error,
                    grant.upstream_client_id,
                )
                raise UpstreamUnavailable(f"upstream refresh rejected with {exc.error}") from None
            # invalid_grant means the upstream session ended (logout, idle
            # timeout, admin action), so our tokens for it end too.
            logger.info("upstream refresh for grant %s rejected (invalid_grant); revoking the grant", grant_id[:8])
            await self._store.delete(grant_key_name(grant_id))
            raise InvalidToken("upstream session ended") from None
        except UpstreamUnavailable:
            if grant.upstream_expires_at > time.time():
                # Still valid for a few seconds: serve it rather than fail.
                logger.info("upstream refresh for grant %s failed; serving the current token", grant_id[:8])
                return grant
            raise

        refreshed = dataclasses.replace(
            grant,
            upstream_access_token=tokens.access_token,
            upstream_refresh_token=tokens.refresh_token or grant.upstream_refresh_token,
            upstream_expires_at=tokens.expires_at,
            upstream_refresh_expires_at=tokens.refresh_expires_at or grant.upstream_refresh_expires_at,
        )
        await self._save(refreshed, key)
        logger.info("upstream token for grant %s refreshed, valid until %d", grant_id[:8], tokens.expires_at)
        return refreshed

    async def _save(self, grant: Grant, key: bytes) -> None:
        secret: dict[str, Any] = {
            "access_token": grant.upstream_access_token,
            "refresh_token": grant.upstream_refresh_token,
            "expires_at": grant.upstream_expires_at,
            "refresh_expires_at": grant.upstream_refresh_expires_at,
        }
        record = {
            "client_id": grant.client_id,
            "subject": grant.subject,
            "scopes": list(grant.scopes),
            "resource": grant.resource,
            "upstream_client_id": grant.upstream_client_id,
            "sealed": seal_json(key, secret, grant.grant_id.encode()),
        }
        await self._store.set(grant_key_name(grant.grant_id), record, self._settings.refresh_token_ttl)
        if await self._store.get(REVOKED_PREFIX + grant.grant_id) is not None:
            # Revoked while this write was being prepared: undo it.
            await self._store.delete(grant_key_name(grant.grant_id))
            raise InvalidToken("token was revoked")
