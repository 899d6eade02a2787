"""The ASGI middleware: serve the OAuth routes, resolve bearer tokens, attach identity."""

from __future__ import annotations

import json
import logging
from typing import Any

from mcp.server.auth.middleware.auth_context import auth_context_var
from starlette.authentication import AuthCredentials
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fastn_asgi_auth.errors import InvalidToken, UpstreamUnavailable
from fastn_asgi_auth.resolver import Resolution
from fastn_asgi_auth.routes import protected_resource_metadata_url
from fastn_asgi_auth.service import FastnAuthService
from fastn_asgi_auth.settings import FastnAuthSettings
from fastn_asgi_auth.storage.base import Store

logger = logging.getLogger("fastn_asgi_auth.middleware")


class FastnAuthMiddleware:
    """Put OAuth in front of an ASGI application.

    HTTP and websocket requests to protected paths need a bearer token. The
    handler then finds ``scope["fastn_token"]`` (the upstream access token),
    ``scope["fastn_auth"]`` (a FastnAuth) and Starlette's ``user``/``auth``.
    The OAuth endpoints are served under ``settings.prefix``. Lifespan and
    other scope types pass through untouched.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        settings: FastnAuthSettings | None = None,
        store: Store | None = None,
        service: FastnAuthService | None = None,
    ) -> None:
        self.app = app
        if service is None:
            service = FastnAuthService(settings if settings is not None else FastnAuthSettings.from_env(), store=store)
        self.service = service
        self.settings = service.settings
        # Longest first, so that "/mcp/admin" wins over "/mcp" when both are resources.
        self._resource_paths = sorted(self.settings.resource_paths, key=len, reverse=True)
        self._public_paths = tuple(path.rstrip("/") or "/" for path in self.settings.public_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return

        path: str = scope["path"]
        if scope["type"] == "http" and path in self.service.route_paths:
            await self.service.router(scope, receive, send)
            return
        if self._is_public(scope, path):
            await self.app(scope, receive, send)
            return

        resource_path = self._resource_path(path)
        token = _bearer_token(scope)
        if token is None:
            await self._deny(scope, receive, send, 401, None, "bearer token required", resource_path)
            return

        try:
            resolution = await self.service.resolver.resolve(token)
        except InvalidToken as exc:
            await self._deny(scope, receive, send, 401, "invalid_token", str(exc), resource_path)
            return
        except UpstreamUnavailable as exc:
            await self._unavailable(scope, receive, send, str(exc), exc.retry_after)
            return

        auth = resolution.auth
        if auth.method == "oauth" and auth.resource is not None and resource_path is not None:
            expected = self.settings.resource_url(resource_path)
            if auth.resource.rstrip("/") != expected:
                # RFC 8707: a token bound to another resource is not valid here.
                logger.info("client %s used a token for %s at %s", auth.client_id, auth.resource, expected)
                await self._deny(
                    scope, receive, send, 401, "invalid_token", "token is for another resource", resource_path
                )
                return
        missing = [name for name in self.settings.required_scopes if name not in auth.scopes]
        if missing:
            logger.info("client %s lacks required scopes %s", auth.client_id, missing)
            await self._deny(
                scope,
                receive,
                send,
                403,
                "insufficient_scope",
                "token lacks a required scope",
                resource_path,
                scopes=self.settings.required_scopes,
            )
            return

        await self._call_with_identity(scope, receive, send, resolution)

    async def _call_with_identity(self, scope: Scope, receive: Receive, send: Send, resolution: Resolution) -> None:
        auth = resolution.auth
        user = resolution.user
        # The ASGI spec requires middleware to copy the scope before changing it.
        scope = dict(scope)
        scope["fastn_token"] = resolution.upstream_token
        scope["fastn_auth"] = auth
        scope["user"] = user
        # Starlette's convention: "authenticated" plus the granted scopes.
        scope["auth"] = AuthCredentials(["authenticated", *auth.scopes])
        context = auth_context_var.set(user)
        try:
            await self.app(scope, receive, send)
        finally:
            auth_context_var.reset(context)

    def _is_public(self, scope: Scope, path: str) -> bool:
        if path.startswith("/.well-known/"):
            return True
        if (
            scope["type"] == "http"
            and scope["method"] == "OPTIONS"
            and _header(scope, b"access-control-request-method")
        ):
            return True  # CORS preflights carry no credentials (Fetch standard).
        for public in self._public_paths:
            if path == public or path.startswith(public + "/") or public == "/":
                return True
        return False

    def _resource_path(self, path: str) -> str | None:
        for resource_path in self._resource_paths:
            if not resource_path or path == resource_path or path.startswith(resource_path + "/"):
                return resource_path
        return None

    async def _deny(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        status: int,
        error: str | None,
        description: str,
        resource_path: str | None,
        *,
        scopes: tuple[str, ...] | None = None,
    ) -> None:
        # RFC 6750 §3: no error code when the request carried no credentials;
        # RFC 9728 §5.1: resource_metadata points clients at discovery.
        metadata_url = protected_resource_metadata_url(
            self.settings, resource_path if resource_path is not None else self.settings.resource_paths[0]
        )
        parts = []
        if error is not None:
            parts += [f'error="{error}"', f'error_description="{description}"']
        parts.append(f'resource_metadata="{metadata_url}"')
        scope_value = " ".join(scopes if scopes is not None else self.settings.scopes)
        if scope_value:
            parts.append(f'scope="{scope_value}"')
        body: dict[str, Any] = (
            {"error_description": description}
            if error is None
            else {
                "error": error,
                "error_description": description,
            }
        )
        headers = [(b"www-authenticate", ("Bearer " + ", ".join(parts)).encode())]
        await _respond(scope, receive, send, status, body, headers)

    async def _unavailable(
        self, scope: Scope, receive: Receive, send: Send, description: str, retry_after: int
    ) -> None:
        logger.warning("responding 503: %s", description)
        body = {"error": "temporarily_unavailable", "error_description": description}
        await _respond(scope, receive, send, 503, body, [(b"retry-after", str(retry_after).encode())])


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value
    return None


def _bearer_token(scope: Scope) -> str | None:
    value = _header(scope, b"authorization")
    if value is None:
        return None
    try:
        text = value.decode("latin-1")
    except UnicodeDecodeError:
        return None
    scheme, _, token = text.strip().partition(" ")
    # RFC 7235 §2.1: the scheme name is case-insensitive.
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    return token or None


async def _respond(
    scope: Scope, receive: Receive, send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]]
) -> None:
    payload = json.dumps(body).encode()
    all_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        (b"cache-control", b"no-store"),
        *headers,
    ]
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": status, "headers": all_headers})
        await send({"type": "http.response.body", "body": payload})
        return

    # Websockets: reject the handshake with an HTTP response where the server
    # supports the denial-response extension, otherwise close with 1008
    # (policy violation) before accepting.
    message: Message = await receive()
    if message["type"] != "websocket.connect":
        return
    if "websocket.http.response" in scope.get("extensions", {}):
        await send({"type": "websocket.http.response.start", "status": status, "headers": all_headers})
        await send({"type": "websocket.http.response.body", "body": payload})
    else:
        await send({"type": "websocket.close", "code": 1008})
