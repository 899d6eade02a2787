"""Unit tests for bearer header parsing and the middleware paths that need no upstream call.

The middleware runs in process through httpx.ASGITransport, so no socket is
opened. No request here carries a bearer token to a protected path, because
resolving one would contact the upstream realm.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.types import Message, Receive, Scope, Send

from fastn_asgi_auth.middleware import FastnAuthMiddleware, _bearer_token
from fastn_asgi_auth.settings import FastnAuthSettings

BASE_URL = "http://127.0.0.1:8000"
# The realm is port 9 (discard) on loopback, so an unintended upstream call cannot leave this machine.
REALM = "http://127.0.0.1:9/realms/fastn"
RESOURCE_METADATA_URL = BASE_URL + "/.well-known/oauth-protected-resource/mcp"


def http_scope(headers: list[tuple[bytes, bytes]]) -> Scope:
    return {"type": "http", "method": "GET", "path": "/mcp", "headers": headers}


# _bearer_token


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([(b"authorization", b"Bearer abc")], "abc"),
        ([(b"authorization", b"bearer abc")], "abc"),
        ([(b"authorization", b"BEARER  abc ")], "abc"),
        ([(b"authorization", b"  Bearer abc")], "abc"),
        ([(b"authorization", b"Bearer eyJhbGciOiJSUzI1NiJ9.e30.c2ln")], "eyJhbGciOiJSUzI1NiJ9.e30.c2ln"),
        ([(b"authorization", b"Bearer abc=")], "abc="),
        ([(b"Authorization", b"Bearer abc")], "abc"),
        ([(b"AUTHORIZATION", b"Bearer abc")], "abc"),
        ([(b"authorization", b"Basic abc")], None),
        ([(b"authorization", b"Basic YWxhZGRpbjpvcGVuc2VzYW1l")], None),
        ([(b"authorization", b"Bearerabc")], None),
        ([(b"authorization", b"Bearer")], None),
        ([(b"authorization", b"Bearer ")], None),
        ([(b"authorization", b"Bearer    ")], None),
        ([(b"authorization", b"")], None),
        ([(b"authorization", b"abc")], None),
        ([(b"authorization", b"Token abc")], None),
        ([(b"authorization", b"Bear abc")], None),
        ([(b"x-authorization", b"Bearer abc")], None),
        ([(b"cookie", b"token=abc")], None),
        ([], None),
    ],
)
def test_bearer_token_parsing(headers: list[tuple[bytes, bytes]], expected: str | None) -> None:
    assert _bearer_token(http_scope(headers)) == expected


def test_bearer_token_without_headers_key() -> None:
    assert _bearer_token({"type": "http", "method": "GET", "path": "/mcp"}) is None


def test_bearer_token_first_header_wins() -> None:
    headers = [(b"authorization", b"Bearer first"), (b"authorization", b"Bearer second")]

    assert _bearer_token(http_scope(headers)) == "first"


def test_bearer_token_non_ascii_bytes() -> None:
    # Header bytes are decoded as Latin-1, so any byte value yields a string.
    assert _bearer_token(http_scope([(b"authorization", b"Bearer \xff\xfe")])) == "\xff\xfe"


# The middleware, driven in process


class RecordingApp:
    """Inner ASGI app that records each scope and responds 200 to HTTP requests."""

    def __init__(self) -> None:
        self.calls: list[tuple[Scope, Receive, Send]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls.append((scope, receive, send))
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"inner app"})

    @property
    def paths(self) -> list[str]:
        return [scope.get("path", "") for scope, _receive, _send in self.calls]


def make_middleware(inner: RecordingApp, **changes: Any) -> FastnAuthMiddleware:
    values: dict[str, Any] = {"issuer": REALM, "base_url": BASE_URL}
    values.update(changes)
    settings = FastnAuthSettings(**values)
    return FastnAuthMiddleware(inner, settings=settings)


@pytest.fixture
def inner() -> RecordingApp:
    return RecordingApp()


@pytest.fixture
async def middleware(inner: RecordingApp) -> AsyncIterator[FastnAuthMiddleware]:
    app = make_middleware(inner)
    yield app
    await app.service.aclose()


@pytest.fixture
async def client(middleware: FastnAuthMiddleware) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=middleware)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as http:
        yield http


@pytest.mark.parametrize("path", ["/health", "/health/", "/health/live", "/healthz"])
async def test_public_path_passes(client: httpx.AsyncClient, inner: RecordingApp, path: str) -> None:
    response = await client.get(path)

    assert response.status_code == 200
    assert response.text == "inner app"
    assert inner.paths == [path]


@pytest.mark.parametrize("path", ["/mcp", "/mcp/", "/mcp/messages", "/healthx", "/other", "/"])
async def test_protected_path_needs_token(client: httpx.AsyncClient, inner: RecordingApp, path: str) -> None:
    response = await client.get(path)

    assert response.status_code == 401
    assert inner.calls == []


@pytest.mark.parametrize("authorization", ["Basic YWxhZGRpbjpvcGVuc2VzYW1l", "Bearer", "Bearer   "])
async def test_non_bearer_header_gets_401(client: httpx.AsyncClient, inner: RecordingApp, authorization: str) -> None:
    response = await client.get("/mcp", headers={"Authorization": authorization})

    assert response.status_code == 401
    assert "error=" not in response.headers["www-authenticate"]
    assert inner.calls == []


async def test_missing_token_challenge(client: httpx.AsyncClient) -> None:
    response = await client.get("/mcp")

    assert response.headers["www-authenticate"] == (
        f'Bearer resource_metadata="{RESOURCE_METADATA_URL}", scope="read write"'
    )


async def test_missing_token_has_no_error(client: httpx.AsyncClient) -> None:
    # RFC 6750 §3.1: a request without credentials gets no error code.
    response = await client.get("/mcp")

    assert "error=" not in response.headers["www-authenticate"]
    assert "error" not in response.json()


async def test_missing_token_body_is_json(client: httpx.AsyncClient) -> None:
    response = await client.get("/mcp")

    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    assert response.json() == {"error_description": "bearer token required"}


async def test_challenge_names_matching_resource(inner: RecordingApp) -> None:
    app = make_middleware(inner, resource_paths=("/mcp", "/api"))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL) as http:
            response = await http.get("/api/items")
    finally:
        await app.service.aclose()

    expected = f'resource_metadata="{BASE_URL}/.well-known/oauth-protected-resource/api"'
    assert expected in response.headers["www-authenticate"]


async def test_lifespan_passes_untouched(middleware: FastnAuthMiddleware, inner: RecordingApp) -> None:
    scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0"}}

    async def receive() -> Message:
        return {"type": "lifespan.startup"}

    async def send(message: Message) -> None:
        return None

    await middleware(scope, receive, send)

    assert len(inner.calls) == 1
    passed_scope, passed_receive, passed_send = inner.calls[0]
    assert passed_scope is scope
    assert passed_scope == {"type": "lifespan", "asgi": {"version": "3.0"}}
    assert passed_receive is receive
    assert passed_send is send


async def test_cors_preflight_passes(client: httpx.AsyncClient, inner: RecordingApp) -> None:
    response = await client.options(
        "/mcp",
        headers={"Origin": "https://lovable.dev", "Access-Control-Request-Method": "POST"},
    )

    assert response.status_code == 200
    assert inner.paths == ["/mcp"]


async def test_plain_options_needs_token(client: httpx.AsyncClient, inner: RecordingApp) -> None:
    response = await client.options("/mcp", headers={"Origin": "https://lovable.dev"})

    assert response.status_code == 401
    assert inner.calls == []


async def test_websocket_without_token_closed(middleware: FastnAuthMiddleware, inner: RecordingApp) -> None:
    scope: Scope = {"type": "websocket", "path": "/mcp", "headers": [], "extensions": {}}
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await middleware(scope, receive, send)

    assert sent == [{"type": "websocket.close", "code": 1008}]
    assert inner.calls == []


# Metadata documents


async def test_metadata_issuer_with_prefix(client: httpx.AsyncClient) -> None:
    response = await client.get("/.well-known/oauth-authorization-server/oauth")

    assert response.status_code == 200
    assert response.json()["issuer"] == "http://127.0.0.1:8000/oauth"
    assert '"issuer":"http://127.0.0.1:8000/oauth"' in response.text


async def test_metadata_endpoints_under_issuer(client: httpx.AsyncClient) -> None:
    document = (await client.get("/.well-known/oauth-authorization-server/oauth")).json()

    assert document["authorization_endpoint"] == "http://127.0.0.1:8000/oauth/authorize"
    assert document["token_endpoint"] == "http://127.0.0.1:8000/oauth/token"
    assert document["registration_endpoint"] == "http://127.0.0.1:8000/oauth/register"
    assert document["revocation_endpoint"] == "http://127.0.0.1:8000/oauth/revoke"


async def test_metadata_issuer_without_prefix(inner: RecordingApp) -> None:
    app = make_middleware(inner, prefix="")
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL) as http:
            response = await http.get("/.well-known/oauth-authorization-server")
    finally:
        await app.service.aclose()

    assert response.status_code == 200
    assert response.json()["issuer"] == "http://127.0.0.1:8000"
    assert '"issuer":"http://127.0.0.1:8000"' in response.text


@pytest.mark.parametrize("prefix", ["/oauth", ""])
async def test_resource_names_issuer_exactly(inner: RecordingApp, prefix: str) -> None:
    # A base_url with a trailing slash must not leak a "/" into either document.
    app = make_middleware(inner, prefix=prefix, base_url=BASE_URL + "/")
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL) as http:
            server = await http.get("/.well-known/oauth-authorization-server" + prefix)
            resource = await http.get("/.well-known/oauth-protected-resource/mcp")
    finally:
        await app.service.aclose()

    issuer = server.json()["issuer"]
    assert issuer == BASE_URL + prefix
    assert resource.status_code == 200
    assert resource.json()["authorization_servers"][0] == issuer
    assert f'"authorization_servers":["{issuer}"]' in resource.text


async def test_resource_document_names_resource(client: httpx.AsyncClient) -> None:
    document = (await client.get("/.well-known/oauth-protected-resource/mcp")).json()

    assert document["resource"] == "http://127.0.0.1:8000/mcp"
    assert document["scopes_supported"] == ["read", "write"]


async def test_unknown_well_known_passes(client: httpx.AsyncClient, inner: RecordingApp) -> None:
    response = await client.get("/.well-known/security.txt")

    assert response.status_code == 200
    assert inner.paths == ["/.well-known/security.txt"]
