"""The OAuth route bundle: the SDK's handlers under our prefix, plus our callback.

Paths, for prefix "/oauth" and resource path "/mcp":

  /oauth/authorize, /oauth/token, /oauth/register, /oauth/revoke   SDK handlers
  /oauth/consent                                   the per-client consent page
  /oauth/callback                                  the upstream realm's redirect back to us
  /.well-known/oauth-authorization-server/oauth    RFC 8414 metadata (path insertion, §3.1)
  /.well-known/oauth-protected-resource/mcp        RFC 9728 metadata (path insertion, §3.1)
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Final
from urllib.parse import parse_qs, urlsplit

from mcp.server.auth.handlers.metadata import MetadataHandler, ProtectedResourceMetadataHandler
from mcp.server.auth.handlers.token import TokenHandler
from mcp.server.auth.middleware.client_auth import AuthenticationError
from mcp.server.auth.provider import AccessToken, construct_redirect_uri
from mcp.server.auth.routes import build_metadata, cors_middleware, create_auth_routes
from mcp.server.auth.settings import ClientRegistrationOptions, RevocationOptions
from mcp.server.transport_security import RequestBodyLimitMiddleware
from mcp.shared.auth import OAuthMetadata, ProtectedResourceMetadata
from mcp.shared.inbound import MCP_PROTOCOL_VERSION_HEADER
from pydantic import AnyHttpUrl
from starlette.formparsers import MultiPartException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route, request_response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fastn_asgi_auth.cache import ExpiringCache
from fastn_asgi_auth.clients import HashedSecretAuthenticator
from fastn_asgi_auth.consent import ConsentEndpoint
from fastn_asgi_auth.errors import UpstreamUnavailable
from fastn_asgi_auth.pages import error_page
from fastn_asgi_auth.provider import FastnOAuthProvider, LoginStateUnknown
from fastn_asgi_auth.settings import FastnAuthSettings

logger = logging.getLogger("fastn_asgi_auth.routes")

AUTHORIZATION_SERVER_WELL_KNOWN: Final = "/.well-known/oauth-authorization-server"
PROTECTED_RESOURCE_WELL_KNOWN: Final = "/.well-known/oauth-protected-resource"
RATE_WINDOW_SECONDS: Final = 60
# OAuth requests are a few hundred bytes. The SDK allows 4 MiB, but Starlette
# refuses form fields over 1 MiB with an exception that becomes a 500, so the
# bundle's own limit sits well below both.
MAX_REQUEST_BODY_BYTES: Final = 64 * 1024


def authorization_server_metadata_path(settings: FastnAuthSettings) -> str:
    return AUTHORIZATION_SERVER_WELL_KNOWN + settings.prefix


def protected_resource_metadata_path(resource_path: str) -> str:
    return PROTECTED_RESOURCE_WELL_KNOWN + resource_path


def protected_resource_metadata_url(settings: FastnAuthSettings, resource_path: str) -> str:
    return settings.public_base_url + protected_resource_metadata_path(resource_path)


def build_routes(settings: FastnAuthSettings, provider: FastnOAuthProvider) -> list[Route]:
    registration = ClientRegistrationOptions(
        enabled=True, valid_scopes=list(settings.scopes), default_scopes=list(settings.scopes)
    )
    revocation = RevocationOptions(enabled=True)
    issuer = settings.our_issuer

    # Client secrets are stored as hashes, so /token and /revoke authenticate
    # clients with this instead of the SDK's plain-text comparison.
    authenticator = HashedSecretAuthenticator(provider)
    routes: list[Route] = []
    for route in create_auth_routes(
        provider=provider,
        issuer_url=AnyHttpUrl(issuer),
        client_registration_options=registration,
        revocation_options=revocation,
    ):
        if route.path.startswith("/.well-known/"):
            continue  # replaced below by the path-inserted document
        endpoint: ASGIApp = route.app
        if route.path in ("/register", "/authorize"):
            endpoint = RequestBodyLimitMiddleware(endpoint, MAX_REQUEST_BODY_BYTES)
        if route.path == "/register":
            endpoint = AddressRateLimit(
                endpoint, "registration", settings.registration_rate_limit, settings.max_entries
            )
        if route.path == "/authorize":
            # The SDK's handler reports its own failures to the client, except
            # when the store fails while it looks up the client.
            endpoint = IssuerOnErrorRedirects(FailureResponses(endpoint), issuer)
            # Each authorization request stores a pending login.
            endpoint = AddressRateLimit(
                endpoint, "authorization", settings.authorization_rate_limit, settings.max_entries
            )
        if route.path == "/token":
            endpoint = _cors_and_body_limit(TokenHandler(provider, authenticator).handle)
        if route.path == "/revoke":
            revocation_endpoint = RevocationEndpoint(provider, authenticator)
            endpoint = _cors_and_body_limit(revocation_endpoint.handle)
        if route.path != "/authorize":
            endpoint = FailureResponses(endpoint)
        routes.append(Route(settings.prefix + route.path, endpoint=endpoint, methods=route.methods))

    callback = FailureResponses(request_response(CallbackEndpoint(provider).handle))
    routes.append(Route(settings.prefix + "/callback", endpoint=callback, methods=["GET"]))
    consent_endpoint = ConsentEndpoint(settings, provider)
    consent = FailureResponses(
        RequestBodyLimitMiddleware(request_response(consent_endpoint.handle), MAX_REQUEST_BODY_BYTES)
    )
    routes.append(Route(settings.prefix + "/consent", endpoint=consent, methods=["GET", "POST"]))
    metadata_handler = MetadataHandler(_server_metadata(settings, registration, revocation))
    routes.append(
        Route(
            authorization_server_metadata_path(settings),
            endpoint=cors_middleware(metadata_handler.handle, ["GET", "OPTIONS"]),
            methods=["GET", "OPTIONS"],
        )
    )
    for resource_path in settings.resource_paths:
        document = ProtectedResourceMetadata(
            resource=settings.resource_url(resource_path),
            authorization_servers=[issuer],
            scopes_supported=list(settings.scopes),
        )
        routes.append(
            Route(
                protected_resource_metadata_path(resource_path),
                endpoint=cors_middleware(ProtectedResourceMetadataHandler(document).handle, ["GET", "OPTIONS"]),
                methods=["GET", "OPTIONS"],
            )
        )
    return routes


def _cors_and_body_limit(handler: Callable[[Request], Awaitable[Response]]) -> ASGIApp:
    """Wrap a POST endpoint in the same layers as the SDK's own token and revoke routes.

    CORS is outermost, so that a 413 from the body limit still carries CORS headers.
    """
    limited = RequestBodyLimitMiddleware(request_response(handler), MAX_REQUEST_BODY_BYTES)
    return CORSMiddleware(
        app=limited, allow_origins="*", allow_methods=["POST", "OPTIONS"], allow_headers=[MCP_PROTOCOL_VERSION_HEADER]
    )


def _server_metadata(
    settings: FastnAuthSettings, registration: ClientRegistrationOptions, revocation: RevocationOptions
) -> OAuthMetadata:
    # The SDK builds the document from a pydantic URL, which appends "/" to a
    # path-less issuer. Rebuilding it from plain strings keeps the issuer
    # byte-identical to the one in redirects and resource metadata
    # (RFC 8414 §3.3 compares them as strings).
    sdk_document = build_metadata(AnyHttpUrl(settings.our_issuer), None, registration, revocation)
    fields = sdk_document.model_dump(mode="json", exclude_none=True)
    issuer = settings.our_issuer
    fields.update(
        issuer=issuer,
        authorization_endpoint=issuer + "/authorize",
        token_endpoint=issuer + "/token",
        registration_endpoint=issuer + "/register",
        revocation_endpoint=issuer + "/revoke",
        # Public clients (the usual MCP desktop client) authenticate with PKCE only.
        token_endpoint_auth_methods_supported=["client_secret_post", "client_secret_basic", "none"],
        authorization_response_iss_parameter_supported=True,
        revocation_endpoint_auth_methods_supported=["client_secret_post", "client_secret_basic", "none"],
    )
    return OAuthMetadata.model_validate(fields)


class CallbackEndpoint:
    """The upstream realm's redirect back to us after the user logged in."""

    def __init__(self, provider: FastnOAuthProvider) -> None:
        self._provider = provider

    async def handle(self, request: Request) -> Response:
        state = request.query_params.get("state")
        if not state:
            logger.info("callback without state")
            return error_page("The login response is missing its state. Start the login again.", 400)
        try:
            target = await self._provider.complete_login(
                state=state, code=request.query_params.get("code"), error=request.query_params.get("error")
            )
        except LoginStateUnknown:
            logger.info("callback with an unknown, used or expired state")
            return error_page("This login has expired or was already completed. Start the login again.", 400)
        return RedirectResponse(target, status_code=302, headers={"Cache-Control": "no-store"})


class RevocationEndpoint:
    """RFC 7009 token revocation.

    Replaces the SDK's handler (mcp 2.3), which requires a client_secret field
    in the form and so returns 400 to public clients, the usual MCP desktop
    clients, who have no secret to send.
    """

    def __init__(self, provider: FastnOAuthProvider, authenticator: HashedSecretAuthenticator) -> None:
        self._provider = provider
        self._authenticator = authenticator

    async def handle(self, request: Request) -> Response:
        headers = {"Cache-Control": "no-store", "Pragma": "no-cache"}
        try:
            client = await self._authenticator.authenticate_request(request)
        except AuthenticationError as exc:
            logger.info("revocation rejected: client authentication failed (%s)", exc.message)
            return JSONResponse(
                {"error": "invalid_client", "error_description": exc.message}, status_code=401, headers=headers
            )
        form = await request.form()
        token = form.get("token")
        if not isinstance(token, str) or not token:
            return JSONResponse(
                {"error": "invalid_request", "error_description": "the token parameter is required"},
                status_code=400,
                headers=headers,
            )

        found = await self._provider.load_access_token(token)
        if found is None:
            found = await self._provider.load_refresh_token(client, token)
        # RFC 7009 §2.2: an unknown token, or one of another client, still gets 200.
        if found is not None and found.client_id == client.client_id:
            await self._provider.revoke_token(found)
            kind = "access" if isinstance(found, AccessToken) else "refresh"
            logger.info("client %s revoked a %s token", client.client_id, kind)
        return Response(status_code=200, headers=headers)


class IssuerOnErrorRedirects:
    """Add iss to the error redirects that the SDK's authorize handler sends.

    RFC 9207 §2 puts iss in every authorization response, errors included,
    and the metadata advertises it; the SDK's handler (mcp 2.3) adds it to
    none. Only redirects that carry an error parameter are changed: those are
    the ones sent to the client's redirect URI.
    """

    def __init__(self, app: ASGIApp, issuer: str) -> None:
        self._app = app
        self._issuer = issuer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_issuer(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] in (302, 303):
                message = {**message, "headers": [self._rewrite(name, value) for name, value in message["headers"]]}
            await send(message)

        await self._app(scope, receive, send_with_issuer)

    def _rewrite(self, name: bytes, value: bytes) -> tuple[bytes, bytes]:
        if name.lower() != b"location":
            return name, value
        location = value.decode("latin-1")
        query = parse_qs(urlsplit(location).query)
        if "error" not in query or "iss" in query:
            return name, value
        return name, construct_redirect_uri(location, iss=self._issuer).encode("latin-1")


class FailureResponses:
    """Turn an outage of the realm or the store into 503, and a malformed form into 400, not 500.

    The SDK's handlers pass on any exception other than their own error
    types. A 503 with Retry-After makes the client retry with the same
    credentials, while invalid_grant would make it discard good ones.
    """

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._app(scope, receive, send)
        except MultiPartException as exc:
            # Starlette refuses forms with too many or too large fields this
            # way, from inside the SDK's handlers; it is the client's error.
            logger.info("%s %s: malformed form (%s)", scope["method"], scope["path"], exc)
            response = JSONResponse(
                {"error": "invalid_request", "error_description": "the form could not be parsed"},
                status_code=400,
                headers={"Cache-Control": "no-store", "Access-Control-Allow-Origin": "*"},
            )
            await response(scope, receive, send)
        except UpstreamUnavailable as exc:
            # Raised before the handler built its response, so nothing was sent yet.
            logger.warning("%s %s failed: %s; responding 503", scope["method"], scope["path"], exc)
            response = JSONResponse(
                {"error": "temporarily_unavailable", "error_description": str(exc)},
                status_code=503,
                headers={
                    "Retry-After": str(exc.retry_after),
                    "Cache-Control": "no-store",
                    # Browser-based clients must be able to read the 503 too.
                    "Access-Control-Allow-Origin": "*",
                },
            )
            await response(scope, receive, send)


class AddressRateLimit:
    """An endpoint limited per client address and minute.

    Registration (RFC 7591) and authorization requests need no credentials
    and each writes to the store, so without a limit one address could fill it.
    """

    def __init__(self, app: ASGIApp, name: str, per_minute: int, max_addresses: int) -> None:
        self._app = app
        self._name = name
        self._per_minute = per_minute
        self._recent: ExpiringCache[deque[float]] = ExpiringCache(max_addresses)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "OPTIONS":
            await self._app(scope, receive, send)
            return
        address = (scope.get("client") or ("unknown", 0))[0]
        now = time.time()
        recent = self._recent.get(address) or deque()
        while recent and recent[0] <= now - RATE_WINDOW_SECONDS:
            recent.popleft()
        if len(recent) >= self._per_minute:
            retry_after = int(recent[0] + RATE_WINDOW_SECONDS - now) + 1
            logger.warning("%s rate limit reached for %s (%d per minute)", self._name, address, self._per_minute)
            response = JSONResponse(
                {
                    "error": "temporarily_unavailable",
                    "error_description": f"too many {self._name} requests; retry later",
                },
                status_code=429,
                # Browser-based clients must be able to read the 429 too.
                headers={"Retry-After": str(retry_after), "Access-Control-Allow-Origin": "*"},
            )
            await response(scope, receive, send)
            return
        recent.append(now)
        self._recent.put(address, recent, now + RATE_WINDOW_SECONDS)
        await self._app(scope, receive, send)
