"""The bearer chain: from an Authorization header's token to an identity.

Order: in-process cache, our own tokens (store), upstream JWT, API key,
upstream refresh token. Every step can be switched off in the settings.
Unknown tokens are negatively cached, concurrent requests with one token share
one resolution, and upstream calls made for unknown tokens share a global
ceiling, so junk tokens cost a bounded number of upstream calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken

from fastn_asgi_auth.cache import ExpiringCache
from fastn_asgi_auth.crypto import SealError, derive_key, log_id, open_json, seal_json, token_hash, unwrap_key
from fastn_asgi_auth.errors import InvalidToken, UpstreamRejected, UpstreamUnavailable
from fastn_asgi_auth.grants import GrantBook
from fastn_asgi_auth.jwt_validator import JwtValidator, NotAnAccessToken, looks_like_jwt
from fastn_asgi_auth.keycloak import UpstreamClient, UpstreamTokens
from fastn_asgi_auth.locks import refresh_once, refresh_time_bound
from fastn_asgi_auth.provider import OWN_TOKEN_PREFIXES
from fastn_asgi_auth.settings import FastnAuthSettings
from fastn_asgi_auth.singleflight import SingleFlight
from fastn_asgi_auth.storage.base import Store

logger = logging.getLogger("fastn_asgi_auth.resolver")

Method = Literal["oauth", "jwt", "api_key", "refresh_token"]

# Longer tokens are rejected before any work; real ones are far shorter
# (Keycloak JWTs are a few kilobytes).
MAX_TOKEN_CHARS: Final = 16_384
# RFC 6750 §2.1 b64token characters.
TOKEN_SYNTAX: Final = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
# Upstream refresh errors meaning "this token is not for that client", so the
# next configured client is tried.
WRONG_CLIENT_ERRORS: Final = frozenset({"invalid_grant", "invalid_client", "unauthorized_client", "invalid_request"})


@dataclass(frozen=True)
class FastnAuth:
    """Identity of the caller, and the chain step that recognised its bearer token."""

    subject: str | None
    client_id: str
    scopes: tuple[str, ...]
    expires_at: int | None
    """When the presented credential stops being accepted (epoch seconds)."""
    method: Method
    """The chain step that recognised the token."""
    issuer: str
    """Issuer of the presented credential: our authorization server or the realm."""
    realm: str
    upstream_expires_at: int | None
    resource: str | None = None
    claims: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class Resolution:
    auth: FastnAuth
    upstream_token: str = field(repr=False)
    """The upstream access token to call Fastn with; never one of our tokens."""
    cache_until: float = 0.0
    user: AuthenticatedUser = field(init=False, repr=False)
    """The MCP SDK's user object, built once so that cached resolutions reuse it."""

    def __post_init__(self) -> None:
        access_token = AccessToken(
            token=self.upstream_token,
            client_id=self.auth.client_id,
            scopes=list(self.auth.scopes),
            expires_at=self.auth.expires_at,
            resource=self.auth.resource,
            subject=self.auth.subject,
            claims={"iss": self.auth.issuer},
        )
        object.__setattr__(self, "user", AuthenticatedUser(access_token))


class BearerResolver:
    def __init__(
        self,
        settings: FastnAuthSettings,
        store: Store,
        grants: GrantBook,
        jwt_validator: JwtValidator,
        upstream: UpstreamClient,
    ) -> None:
        self._settings = settings
        self._store = store
        self._grants = grants
        self._jwt = jwt_validator
        self._upstream = upstream
        self._api_key_pattern = re.compile(settings.api_key_pattern)
        self._resolved: ExpiringCache[Resolution] = ExpiringCache(settings.max_entries)
        self._rejected: ExpiringCache[str] = ExpiringCache(settings.max_entries)
        self._flights: SingleFlight[Resolution] = SingleFlight()
        self._grant_keys: ExpiringCache[bytes] = ExpiringCache(settings.max_entries)
        self._upstream_slots = asyncio.Semaphore(settings.max_concurrent_upstream)

    async def resolve(self, token: str) -> Resolution:
        """Return the identity behind token.

        Raises InvalidToken (respond 401) or UpstreamUnavailable (respond 503).
        """
        if len(token) > MAX_TOKEN_CHARS or not TOKEN_SYNTAX.fullmatch(token):
            raise InvalidToken("token is malformed")
        digest = token_hash(token)

        cached = self._resolved.get(digest)
        if cached is not None:
            return cached
        reason = self._rejected.get(digest)
        if reason is not None:
            raise InvalidToken(reason)

        # Our own tokens need no upstream call (GrantBook single-flights its
        # refreshes), so they skip the per-token single flight and its cost.
        own = await self._own_token(token, digest)
        if own is not None:
            return own
        return await self._flights.run(digest, lambda: self._resolve_external(token, digest))

    def forget(self, token: str) -> None:
        self._resolved.discard(token_hash(token))

    async def _resolve_external(self, token: str, digest: str) -> Resolution:
        try:
            if token.startswith(OWN_TOKEN_PREFIXES):
                logger.info("bearer %s: our token is unknown, expired or revoked", log_id(token))
                raise InvalidToken("token expired or revoked")
            resolution = await self._external_token(token, digest)
        except InvalidToken as exc:
            self._rejected.put(digest, str(exc), time.time() + self._settings.negative_cache_ttl)
            raise
        self._resolved.put(digest, resolution, resolution.cache_until)
        return resolution

    # Step: our own opaque tokens. Not cached in-process, so that a revocation
    # in any worker takes effect at once.

    async def _own_token(self, token: str, digest: str) -> Resolution | None:
        record = await self._store.get("access:" + digest)
        if record is None:
            return None
        if record["expires_at"] <= time.time():
            logger.info("bearer %s: our access token expired", log_id(token))
            raise InvalidToken("token expired")
        grant_key = self._grant_keys.get(digest)
        if grant_key is None:
            try:
                grant_key = unwrap_key(token, record["wrapped_key"])
            except SealError:
                logger.warning("bearer %s: access record could not be unsealed", log_id(token))
                raise InvalidToken("token is invalid") from None
            # Kept in process memory only; the store keeps just the wrapped form.
            self._grant_keys.put(digest, grant_key, record["expires_at"])
        try:
            grant = await self._grants.fresh(record["grant_id"], grant_key)
        except InvalidToken as exc:
            logger.info("bearer %s: %s", log_id(token), exc)
            raise
        auth = FastnAuth(
            subject=grant.subject,
            client_id=record["client_id"],
            scopes=tuple(record["scopes"]),
            expires_at=int(record["expires_at"]),
            method="oauth",
            issuer=self._settings.our_issuer,
            realm=self._settings.upstream_issuer,
            upstream_expires_at=grant.upstream_expires_at,
            resource=record.get("resource"),
        )
        return Resolution(auth=auth, upstream_token=grant.upstream_access_token)

    async def _external_token(self, token: str, digest: str) -> Resolution:
        settings = self._settings
        if settings.enable_jwt and looks_like_jwt(token):
            try:
                return await self._jwt_token(token)
            except NotAnAccessToken as exc:
                logger.debug("bearer %s: not a JWT access token (%s)", log_id(token), exc)
        if settings.enable_api_keys and self._api_key_pattern.fullmatch(token):
            return await self._api_key(token)
        if settings.enable_refresh_tokens:
            return await self._refresh_token(token, digest)
        logger.info("bearer %s: not recognised by any enabled step", log_id(token))
        raise InvalidToken("token is not recognised")

    # Step: upstream JWT access tokens.

    async def _jwt_token(self, token: str) -> Resolution:
        claims = await self._jwt.validate(token)
        expires_at = int(claims["exp"])
        auth = self._auth_from_claims(claims, method="jwt", expires_at=expires_at, upstream_expires_at=expires_at)
        return Resolution(auth=auth, upstream_token=token, cache_until=expires_at)

    # Step: API keys.

    async def _api_key(self, token: str) -> Resolution:
        claims: Mapping[str, Any] = {}
        validator = self._settings.api_key_validator
        if validator is not None:
            try:
                async with self._upstream_slot():
                    checked = await validator(token)
            except UpstreamUnavailable:
                raise
            except Exception as exc:
                logger.exception("bearer %s: API key validator failed", log_id(token))
                raise UpstreamUnavailable("API key could not be checked") from exc
            if checked is None:
                logger.info("bearer %s: API key rejected by the validator", log_id(token))
                raise InvalidToken("API key is not valid")
            claims = checked
        expires_at = int(time.time()) + self._settings.api_key_ttl
        auth = FastnAuth(
            subject=claims.get("sub"),
            client_id=str(claims.get("client_id", "api-key")),
            scopes=tuple(claims.get("scopes", self._settings.scopes)),
            expires_at=None,
            method="api_key",
            issuer=self._settings.upstream_issuer,
            realm=self._settings.upstream_issuer,
            upstream_expires_at=None,
            claims=MappingProxyType(dict(claims)),
        )
        # Provisional acceptance: the Fastn API checks the key itself when the
        # handler calls it with scope["fastn_token"].
        return Resolution(auth=auth, upstream_token=token, cache_until=expires_at)

    # Step: upstream refresh tokens. The first use exchanges the token. The
    # rotated upstream refresh token is kept, sealed under a key derived from
    # the presented token, for the re-refreshes that keep fastn_token fresh.

    async def _refresh_token(self, token: str, digest: str) -> Resolution:
        session_key = "upstream_session:" + digest
        sealing_key = derive_key(token, b"upstream-session")

        async def read_state() -> dict[str, Any] | None:
            session = await self._store.get(session_key)
            if session is None:
                return None
            try:
                return open_json(sealing_key, session["sealed"])
            except (SealError, KeyError):
                logger.warning("bearer %s: upstream session record could not be unsealed", log_id(token))
                raise InvalidToken("token is invalid") from None

        async def current() -> dict[str, Any] | None:
            state = await read_state()
            if state is None or state["expires_at"] - self._settings.upstream_refresh_margin <= time.time():
                return None
            return state

        async def refresh() -> dict[str, Any]:
            state = await read_state()
            if state is None:
                tokens, client_id = await self._first_refresh(token)
            else:
                tokens, client_id = await self._refresh_again(token, state), state["client_id"]
            new_state = {
                "client_id": client_id,
                "access_token": tokens.access_token,
                "refresh_token": tokens.refresh_token,
                "expires_at": tokens.expires_at,
                "refresh_expires_at": tokens.refresh_expires_at,
            }
            lifetime = (tokens.refresh_expires_at or 0) - time.time()
            ttl = lifetime if lifetime > 0 else self._settings.refresh_token_ttl
            await self._store.set(session_key, {"sealed": seal_json(sealing_key, new_state)}, ttl)
            return new_state

        async def usable() -> dict[str, Any] | None:
            state = await read_state()
            return state if state is not None and state["expires_at"] > time.time() else None

        state = await current()
        if state is None:
            known = await read_state() is not None
            # An unknown token takes one of the global upstream slots before
            # anything else, so a flood of junk tokens costs a bounded number
            # of realm calls and lock writes. Even the first exchange runs
            # under the lock: two workers that both exchanged the presented
            # token would make the realm see it reused.
            async with contextlib.nullcontext() if known else self._upstream_slot():
                state = await refresh_once(
                    self._store,
                    "upstream_session_lock:" + digest,
                    timeout=refresh_time_bound(self._settings),
                    current=current,
                    refresh=refresh,
                    usable=usable,
                )

        try:
            claims = await self._jwt.validate(state["access_token"])
        except (InvalidToken, NotAnAccessToken) as exc:
            # For example another audience than the configured one: the
            # credential is not acceptable here, and the 401 is cached.
            logger.info("bearer %s: the access token it refreshes to is not accepted (%s)", log_id(token), exc)
            raise InvalidToken("token is not accepted here") from None

        auth = self._auth_from_claims(
            claims,
            method="refresh_token",
            expires_at=state["refresh_expires_at"],
            upstream_expires_at=state["expires_at"],
        )
        cache_until = state["expires_at"] - self._settings.upstream_refresh_margin
        return Resolution(auth=auth, upstream_token=state["access_token"], cache_until=cache_until)

    async def _first_refresh(self, token: str) -> tuple[UpstreamTokens, str]:
        rejections = []
        for client_id in self._settings.refresh_client_ids:
            try:
                return await self._upstream.refresh(token, client_id=client_id), client_id
            except UpstreamRejected as exc:
                rejections.append(f"{client_id}: {exc.error}")
                if exc.error not in WRONG_CLIENT_ERRORS:
                    break
        logger.info("bearer %s: not recognised by any step (refresh grant: %s)", log_id(token), "; ".join(rejections))
        raise InvalidToken("token is not valid")

    async def _refresh_again(self, token: str, state: dict[str, Any]) -> UpstreamTokens:
        if not state.get("refresh_token"):
            raise InvalidToken("upstream session expired")
        try:
            tokens = await self._upstream.refresh(state["refresh_token"], client_id=state["client_id"])
        except UpstreamRejected as exc:
            if exc.error != "invalid_grant":
                logger.error(
                    "bearer %s: upstream refresh rejected with %s; check the realm's client %s",
                    log_id(token),
                    exc.error,
                    state["client_id"],
                )
                raise UpstreamUnavailable(f"upstream refresh rejected with {exc.error}") from None
            logger.info("bearer %s: upstream session ended (invalid_grant)", log_id(token))
            await self._store.delete("upstream_session:" + token_hash(token))
            raise InvalidToken("upstream session ended") from None
        if tokens.refresh_token is None:
            tokens = UpstreamTokens(
                access_token=tokens.access_token,
                refresh_token=state["refresh_token"],
                expires_at=tokens.expires_at,
                refresh_expires_at=state.get("refresh_expires_at"),
            )
        logger.info("bearer %s: upstream token refreshed, valid until %d", log_id(token), tokens.expires_at)
        return tokens

    def _upstream_slot(self) -> _Slot:
        return _Slot(self._upstream_slots, self._settings.http_timeout)

    def _auth_from_claims(
        self, claims: dict[str, Any], *, method: Method, expires_at: int | None, upstream_expires_at: int
    ) -> FastnAuth:
        scope = claims.get("scope")
        return FastnAuth(
            subject=claims.get("sub"),
            client_id=str(claims.get("azp") or claims.get("client_id") or "unknown"),
            scopes=tuple(scope.split()) if isinstance(scope, str) else (),
            expires_at=expires_at,
            method=method,
            issuer=self._settings.upstream_issuer,
            realm=self._settings.upstream_issuer,
            upstream_expires_at=upstream_expires_at,
            claims=MappingProxyType(claims),
        )


class _Slot:
    """Acquire one of the global upstream slots, or fail with 503 after a timeout."""

    def __init__(self, semaphore: asyncio.Semaphore, timeout: float) -> None:
        self._semaphore = semaphore
        self._timeout = timeout

    async def __aenter__(self) -> None:
        try:
            await asyncio.wait_for(self._semaphore.acquire(), self._timeout)
        except TimeoutError:
            logger.warning("all upstream slots busy for %.0fs; responding 503", self._timeout)
            raise UpstreamUnavailable("too many tokens being checked; retry shortly") from None

    async def __aexit__(self, *exc_info: object) -> None:
        self._semaphore.release()
