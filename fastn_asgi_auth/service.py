"""Assembly of the parts: settings, store, upstream client, chain and routes."""

from __future__ import annotations

import logging

import httpx
from starlette.routing import Router

from fastn_asgi_auth.grants import GrantBook
from fastn_asgi_auth.jwks import JwksCache
from fastn_asgi_auth.jwt_validator import JwtValidator
from fastn_asgi_auth.keycloak import UpstreamClient
from fastn_asgi_auth.provider import FastnOAuthProvider
from fastn_asgi_auth.resolver import BearerResolver
from fastn_asgi_auth.routes import build_routes
from fastn_asgi_auth.settings import FastnAuthSettings
from fastn_asgi_auth.storage.base import Store
from fastn_asgi_auth.storage.guarded import GuardedStore
from fastn_asgi_auth.storage.memory import MemoryStore

logger = logging.getLogger("fastn_asgi_auth")


class FastnAuthService:
    """Everything one middleware instance uses, built once.

    Nothing here touches the network at construction: discovery and keys are
    fetched on first need, so the application starts even while the realm is
    unreachable.
    """

    def __init__(
        self,
        settings: FastnAuthSettings,
        *,
        store: Store | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.settings = settings
        backend: Store = store if store is not None else MemoryStore(max_entries=settings.max_entries)
        self.store: Store = GuardedStore(backend)
        self.http = http if http is not None else httpx.AsyncClient(timeout=settings.http_timeout)
        self.upstream = UpstreamClient(settings, self.http)
        self.jwks = JwksCache(self.http, self._jwks_uri)
        self.jwt = JwtValidator(settings, self.jwks)
        self.grants = GrantBook(settings, self.store, self.upstream)
        self.provider = FastnOAuthProvider(settings, self.store, self.upstream, self.grants, self.jwt)
        self.resolver = BearerResolver(settings, self.store, self.grants, self.jwt, self.upstream)
        self.routes = build_routes(settings, self.provider)
        self.router = Router(routes=self.routes)
        self.route_paths = frozenset(route.path for route in self.routes)
        logger.info(
            "fastn_asgi_auth ready: issuer %s, upstream realm %s, resources %s",
            settings.our_issuer,
            settings.upstream_issuer,
            ", ".join(settings.resource_url(path) for path in settings.resource_paths),
        )

    async def _jwks_uri(self) -> str:
        return (await self.upstream.endpoints()).jwks_uri

    async def aclose(self) -> None:
        await self.http.aclose()
        await self.store.aclose()
