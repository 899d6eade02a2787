"""Async cache of the realm's signing keys (JWKS), following key rotation."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Final

import httpx
import jwt

from fastn_asgi_auth.cache import ExpiringCache
from fastn_asgi_auth.errors import UpstreamUnavailable

logger = logging.getLogger("fastn_asgi_auth.jwks")

JWKS_TTL_SECONDS: Final = 3600
# An unknown kid triggers a refetch (the realm may have rotated its keys), but
# at most this often, so that tokens with made-up kids cannot hammer the realm.
MIN_REFETCH_SECONDS: Final = 10
# Bound and lifetime of the memory of kids that the realm did not publish.
MAX_UNKNOWN_KIDS: Final = 1024
UNKNOWN_KID_MEMORY_SECONDS: Final = 600


class JwksCache:
    """Keys by kid, fetched on first need and refetched on rotation."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        jwks_uri: Callable[[], Awaitable[str]],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._http = http
        self._jwks_uri = jwks_uri
        self._keys: dict[str, dict[str, object]] = {}
        self._built: dict[tuple[str, str], jwt.PyJWK] = {}
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()
        # kid -> clock time it was first asked for while not published.
        self._unknown_kids: ExpiringCache[float] = ExpiringCache(MAX_UNKNOWN_KIDS)
        self._fetched_ok_at = 0.0

    @property
    def key_count(self) -> int:
        return len(self._keys)

    async def key(self, kid: str, algorithm: str) -> jwt.PyJWK | None:
        """Return the key for kid usable with algorithm, or None when the realm
        publishes no such key.

        Raises jwt.PyJWTError when the key exists but does not fit the
        algorithm (an RSA key named by an ES256 token, say). Raises
        UpstreamUnavailable when the kid is not known and the key set cannot
        be fetched now, because the realm is unreachable or was asked too
        recently.
        """
        built = self._built.get((kid, algorithm))
        if built is not None and self._clock() - self._fetched_at < JWKS_TTL_SECONDS:
            return built
        entry = await self._entry(kid)
        if entry is None:
            return None
        declared = entry.get("alg")
        if declared is not None and declared != algorithm:
            raise jwt.InvalidKeyError(f"key {kid!r} is for {declared}, not {algorithm}")
        built = jwt.PyJWK(entry, algorithm=algorithm)
        self._built[(kid, algorithm)] = built
        return built

    async def _entry(self, kid: str) -> dict[str, object] | None:
        now = self._clock()
        if self._fetched_at and now - self._fetched_at < JWKS_TTL_SECONDS and kid in self._keys:
            return self._keys[kid]
        async with self._lock:
            # Another task may have refetched while this one waited.
            now = self._clock()
            expired = now - self._fetched_at >= JWKS_TTL_SECONDS
            if not expired and kid in self._keys:
                return self._keys[kid]
            if expired and kid in self._keys:
                # A known key past the cache lifetime: refresh the set, but keep
                # using the key if the realm cannot be reached.
                await self._refetch_or_keep()
                return self._keys.get(kid)

            first_seen = self._unknown_kids.get(kid)
            if first_seen is None:
                first_seen = now
                self._unknown_kids.put(kid, now, time.time() + UNKNOWN_KID_MEMORY_SECONDS)
            since_fetch = now - self._fetched_at
            if self._fetched_at and since_fetch < MIN_REFETCH_SECONDS:
                if self._fetched_ok_at > first_seen:
                    # A fetch made after this kid first appeared did not list it.
                    return None
                # The realm may have rotated its keys since the last fetch.
                # The refetch floor keeps that from being checked yet, so the
                # token is neither valid nor invalid for now.
                retry_after = max(1, math.ceil(MIN_REFETCH_SECONDS - since_fetch))
                raise UpstreamUnavailable("the token's signing key is not known yet", retry_after=retry_after)

            # Past the floor, ask again: a key missing from one fetch (a cache
            # in front of the realm lagging a rotation) may be listed now.
            fetched = await self._refetch()
            if kid in self._keys:
                return self._keys[kid]
            if not fetched:
                raise UpstreamUnavailable("the realm's signing keys could not be fetched")
            return None

    async def _refetch_or_keep(self) -> None:
        try:
            await self._refetch()
        except UpstreamUnavailable:
            return

    async def _refetch(self) -> bool:
        """Fetch the key set; return False when that failed but older keys remain in use."""
        uri = await self._jwks_uri()
        try:
            response = await self._http.get(uri)
            response.raise_for_status()
            document = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            if self._keys:
                # Keep serving the keys we have: a realm outage should not
                # turn valid tokens into 503s while their keys are known.
                logger.warning("JWKS refetch from %s failed (%s); keeping %d cached keys", uri, exc, len(self._keys))
                self._fetched_at = self._clock()
                return False
            logger.warning("JWKS fetch from %s failed: %s", uri, exc)
            raise UpstreamUnavailable("the realm's signing keys could not be fetched") from exc

        entries = document.get("keys", []) if isinstance(document, dict) else []
        # Keycloak also publishes encryption keys ("use": "enc"); only signing keys count.
        keys = {
            str(entry["kid"]): entry
            for entry in entries
            if isinstance(entry, dict) and entry.get("use", "sig") == "sig" and "kid" in entry
        }
        added = keys.keys() - self._keys.keys()
        if self._keys and added:
            logger.info("JWKS rotated: %d new signing keys", len(added))
        self._keys = keys
        self._built = {}
        self._fetched_at = self._fetched_ok_at = self._clock()
        return True
