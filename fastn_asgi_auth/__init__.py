"""OAuth in front of any ASGI application, with Fastn's Keycloak realm upstream.

    app = FastnAuthMiddleware(app, settings=FastnAuthSettings.from_env())

Handlers then read ``scope["fastn_token"]`` (the upstream access token, kept
fresh) and ``scope["fastn_auth"]`` (who called and how).
"""

from fastn_asgi_auth.errors import InvalidToken, UpstreamUnavailable
from fastn_asgi_auth.middleware import FastnAuthMiddleware
from fastn_asgi_auth.resolver import FastnAuth
from fastn_asgi_auth.service import FastnAuthService
from fastn_asgi_auth.settings import ConfigurationError, FastnAuthSettings
from fastn_asgi_auth.storage import MemoryStore, Store

__all__ = [
    "ConfigurationError",
    "FastnAuth",
    "FastnAuthMiddleware",
    "FastnAuthService",
    "FastnAuthSettings",
    "InvalidToken",
    "MemoryStore",
    "Store",
    "UpstreamUnavailable",
]
