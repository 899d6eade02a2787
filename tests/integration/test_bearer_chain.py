"""Each step of the bearer chain against the test realm, and each challenge.

The middleware runs in-process (httpx's ASGI transport) and talks to the real
OpenID provider on loopback for discovery, keys and refresh grants.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.authentication import requires
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket

from fastn_asgi_auth import FastnAuthMiddleware, FastnAuthService, FastnAuthSettings
from tests.support.apps import whoami
from tests.support.realm import TokenEndpointCounter, login_tokens

pytestmark = pytest.mark.integration

BASE_URL = "http://127.0.0.1:8000"


@requires("write")
async def write_only(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


async def echo_socket(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text(websocket.scope["fastn_auth"].method)
    await websocket.close()


def inner_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/mcp", whoami),
            Route("/mcp/write", write_only),
            WebSocketRoute("/mcp/socket", echo_socket),
        ]
    )


def build(issuer: str, counter: TokenEndpointCounter | None = None, **overrides) -> httpx.AsyncClient:
    settings = FastnAuthSettings(issuer=issuer, base_url=BASE_URL, **overrides)
    hooks = {"request": [counter]} if counter else {}
    service = FastnAuthService(settings, http=httpx.AsyncClient(timeout=10, event_hooks=hooks))
    app = FastnAuthMiddleware(inner_app(), service=service)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def realm_kid(issuer: str) -> str:
    keys = httpx.get(issuer + "/protocol/openid-connect/certs").json()["keys"]
    return keys[0]["kid"]


def build_forged_token(issuer: str, **claim_overrides) -> str:
    """An access token that names the realm's key id but is signed with another key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    claims = {"iss": issuer, "sub": "mallory", "azp": "fastn-sdk", "typ": "Bearer", "iat": now, "exp": now + 300}
    claims.update(claim_overrides)
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": realm_kid(issuer)})


def build_unsigned_token(issuer: str) -> str:
    now = int(time.time())
    header = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    payload = b64url(json.dumps({"iss": issuer, "sub": "mallory", "typ": "Bearer", "exp": now + 300}).encode())
    return f"{header}.{payload}."


def build_hs256_with_public_key(issuer: str) -> str:
    """The algorithm-confusion token: HS256 keyed with the realm's public key."""
    entry = httpx.get(issuer + "/protocol/openid-connect/certs").json()["keys"][0]
    public_pem = jwt.PyJWK(entry).key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    now = int(time.time())
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": entry["kid"]}).encode())
    payload = b64url(json.dumps({"iss": issuer, "sub": "mallory", "typ": "Bearer", "exp": now + 300}).encode())
    import hmac

    signature = hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64url(signature)}"


# Challenges


async def test_missing_token_challenge(realm):
    async with build(realm.issuer) as client:
        response = await client.get("/mcp")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == (
        f'Bearer resource_metadata="{BASE_URL}/.well-known/oauth-protected-resource/mcp", scope="read write"'
    )


async def test_junk_token_challenge(realm):
    async with build(realm.issuer) as client:
        response = await client.get("/mcp", headers=bearer("not-a-token"))
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer error="invalid_token", error_description="')
    assert f'resource_metadata="{BASE_URL}/.well-known/oauth-protected-resource/mcp"' in challenge
    assert response.json()["error"] == "invalid_token"


async def test_insufficient_scope_challenge(realm):
    tokens = login_tokens(realm.issuer)
    async with build(realm.issuer, required_scopes=("read",)) as client:
        response = await client.get("/mcp", headers=bearer(tokens["access_token"]))
    assert response.status_code == 403
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
    assert 'scope="read"' in response.headers["www-authenticate"]


async def test_starlette_requires_uses_scopes(realm):
    tokens = login_tokens(realm.issuer)
    async with build(realm.issuer) as client:
        response = await client.get("/mcp/write", headers=bearer(tokens["access_token"]))
    # Realm JWTs carry OpenID scopes only, so @requires("write") refuses them.
    assert response.status_code == 403


# Step: upstream JWT


async def test_realm_jwt_accepted(realm):
    tokens = login_tokens(realm.issuer)
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    async with build(realm.issuer) as client:
        response = await client.get("/mcp", headers=bearer(tokens["access_token"]))
    assert response.status_code == 200
    body = response.json()
    assert body["method"] == "jwt"
    assert body["sub"] == claims["sub"]
    assert body["client_id"] == "fastn-sdk"
    assert body["fastn_token_sha256"] == hashlib.sha256(tokens["access_token"].encode()).hexdigest()
    assert body["user"] == "fastn-sdk"


HOSTILE_JWTS = {
    "forged signature": lambda issuer: build_forged_token(issuer),
    "unsigned alg none": build_unsigned_token,
    "hs256 with public key": build_hs256_with_public_key,
    "forged and expired": lambda issuer: build_forged_token(issuer, exp=int(time.time()) - 3600),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_JWTS))
async def test_hostile_jwt_rejected(realm, name):
    token = HOSTILE_JWTS[name](realm.issuer)
    async with build(realm.issuer) as client:
        response = await client.get("/mcp", headers=bearer(token))
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


async def test_jwt_from_other_realm_rejected(realm, short_realm):
    tokens = login_tokens(short_realm.issuer)
    async with build(realm.issuer) as client:
        response = await client.get("/mcp", headers=bearer(tokens["access_token"]))
    assert response.status_code == 401


async def test_id_token_rejected(realm):
    tokens = login_tokens(realm.issuer)
    assert "id_token" in tokens
    async with build(realm.issuer) as client:
        response = await client.get("/mcp", headers=bearer(tokens["id_token"]))
    assert response.status_code == 401


async def test_expired_jwt_rejected(short_realm):
    tokens = login_tokens(short_realm.issuer)
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    await asyncio.sleep(max(0.0, claims["exp"] - time.time()) + 1.1)
    async with build(short_realm.issuer, jwt_leeway=0) as client:
        response = await client.get("/mcp", headers=bearer(tokens["access_token"]))
    assert response.status_code == 401
    assert "expired" in response.json()["error_description"]


async def test_jwt_audience_checked(realm):
    tokens = login_tokens(realm.issuer)
    async with build(realm.issuer, audience="some-other-api") as client:
        response = await client.get("/mcp", headers=bearer(tokens["access_token"]))
    assert response.status_code == 401


# Step: API key


async def test_api_key_accepted_provisionally(realm):
    key = "0123456789abcdef" * 2
    async with build(realm.issuer) as client:
        response = await client.get("/mcp", headers=bearer(key))
    assert response.status_code == 200
    assert response.json()["method"] == "api_key"
    assert response.json()["fastn_token_sha256"] == hashlib.sha256(key.encode()).hexdigest()


async def test_api_key_validator_rejects(realm):
    async def only_known(key: str):
        return {"sub": "service-a"} if key == "a" * 32 else None

    async with build(realm.issuer, api_key_validator=only_known) as client:
        known = await client.get("/mcp", headers=bearer("a" * 32))
        unknown = await client.get("/mcp", headers=bearer("b" * 32))
    assert known.status_code == 200
    assert known.json()["sub"] == "service-a"
    assert unknown.status_code == 401


async def test_api_keys_switched_off(realm):
    async with build(realm.issuer, enable_api_keys=False) as client:
        response = await client.get("/mcp", headers=bearer("c" * 32))
    assert response.status_code == 401


# Step: upstream refresh token


@pytest.mark.parametrize("client_id", ["fastn-oauth", "fastn-sdk"])
async def test_refresh_token_exchanged(realm, client_id):
    tokens = login_tokens(realm.issuer, client_id=client_id)
    counter = TokenEndpointCounter()
    async with build(realm.issuer, counter) as client:
        first = await client.get("/mcp", headers=bearer(tokens["refresh_token"]))
        second = await client.get("/mcp", headers=bearer(tokens["refresh_token"]))
    assert first.status_code == 200
    body = first.json()
    assert body["method"] == "refresh_token"
    assert body["client_id"] == client_id
    assert body["fastn_token_is_jwt"] is True
    assert body["fastn_token_sha256"] != hashlib.sha256(tokens["refresh_token"].encode()).hexdigest()
    assert second.json()["fastn_token_sha256"] == body["fastn_token_sha256"]
    # fastn-oauth: one grant; fastn-sdk: a rejected try with fastn-oauth first.
    assert counter.calls == (1 if client_id == "fastn-oauth" else 2)


async def test_refresh_token_re_refreshed(short_realm):
    tokens = login_tokens(short_realm.issuer)
    async with build(short_realm.issuer, upstream_refresh_margin=1) as client:
        first = await client.get("/mcp", headers=bearer(tokens["refresh_token"]))
        await asyncio.sleep(3.2)
        second = await client.get("/mcp", headers=bearer(tokens["refresh_token"]))
    assert first.status_code == 200
    assert second.status_code == 200
    # The realm rotated the refresh token on the first exchange; the second
    # request only works because the rotated one was kept.
    assert second.json()["fastn_token_sha256"] != first.json()["fastn_token_sha256"]


async def test_unknown_token_negatively_cached(realm):
    counter = TokenEndpointCounter()
    async with build(realm.issuer, counter) as client:
        for _ in range(5):
            response = await client.get("/mcp", headers=bearer("unknown-opaque-token"))
            assert response.status_code == 401
    assert counter.calls == 2  # one try per configured upstream client, once


async def test_concurrent_unknown_token_single_flight(realm):
    counter = TokenEndpointCounter()
    async with build(realm.issuer, counter) as client:
        responses = await asyncio.gather(
            *(client.get("/mcp", headers=bearer("another-unknown-token")) for _ in range(20))
        )
    assert {response.status_code for response in responses} == {401}
    assert counter.calls == 2


async def test_refresh_step_switched_off(realm):
    tokens = login_tokens(realm.issuer)
    counter = TokenEndpointCounter()
    async with build(realm.issuer, counter, enable_refresh_tokens=False) as client:
        response = await client.get("/mcp", headers=bearer(tokens["refresh_token"]))
    assert response.status_code == 401
    assert counter.calls == 0


# Malformed input and outages


@pytest.mark.parametrize(
    "header",
    ["Bearer a b", "Bearer " + "x" * 20000, "Bearer \u00e9t\u00e9", "Bearer abc,def", "Bearer ====="],
)
async def test_malformed_bearer_rejected(realm, header):
    async with build(realm.issuer) as client:
        response = await client.get("/mcp", headers={"Authorization": header.encode("utf-8")})
    assert response.status_code == 401


async def test_unreachable_realm_is_503(realm):
    tokens = login_tokens(realm.issuer)
    closed = "http://127.0.0.1:9/realms/fastn"  # the discard port: nothing listens
    async with build(closed) as client:
        as_jwt = await client.get("/mcp", headers=bearer(tokens["access_token"]))
        as_opaque = await client.get("/mcp", headers=bearer("opaque-token-while-down"))
    assert as_jwt.status_code == 503
    assert as_jwt.headers["retry-after"].isdigit()
    assert as_opaque.status_code == 503


async def test_websocket_without_token_denied(realm):
    settings = FastnAuthSettings(issuer=realm.issuer, base_url=BASE_URL)
    app = FastnAuthMiddleware(inner_app(), settings=settings)
    sent = []
    messages = iter([{"type": "websocket.connect"}])

    async def receive():
        return next(messages)

    async def send(message):
        sent.append(message)

    scope = {"type": "websocket", "path": "/mcp/socket", "headers": [], "query_string": b"", "subprotocols": []}
    await app(scope, receive, send)
    assert sent == [{"type": "websocket.close", "code": 1008}]


async def test_lifespan_passes_through(realm):
    seen = []

    async def inner(scope, receive, send):
        seen.append(scope)

    app = FastnAuthMiddleware(inner, settings=FastnAuthSettings(issuer=realm.issuer, base_url=BASE_URL))
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}}
    await app(scope, None, None)
    assert seen == [scope]
    assert seen[0] is scope


# The strict preset


def build_strict(issuer: str, audience: str) -> httpx.AsyncClient:
    settings = FastnAuthSettings.strict(audience=audience, issuer=issuer, base_url=BASE_URL)
    app = FastnAuthMiddleware(inner_app(), settings=settings)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL)


async def test_strict_accepts_audience_jwt(realm):
    tokens = login_tokens(realm.issuer)
    async with build_strict(realm.issuer, "account") as client:
        response = await client.get("/mcp", headers=bearer(tokens["access_token"]))
    assert response.status_code == 200
    assert response.json()["method"] == "jwt"


async def test_strict_rejects_other_audience(realm):
    tokens = login_tokens(realm.issuer)
    async with build_strict(realm.issuer, "another-api") as client:
        response = await client.get("/mcp", headers=bearer(tokens["access_token"]))
    assert response.status_code == 401


async def test_strict_rejects_keys_and_refresh(realm):
    tokens = login_tokens(realm.issuer)
    async with build_strict(realm.issuer, "account") as client:
        api_key = await client.get("/mcp", headers=bearer("d" * 32))
        refresh_token = await client.get("/mcp", headers=bearer(tokens["refresh_token"]))
    assert api_key.status_code == 401
    assert refresh_token.status_code == 401


def test_websocket_with_token_accepted(realm):
    tokens = login_tokens(realm.issuer)
    settings = FastnAuthSettings(issuer=realm.issuer, base_url=BASE_URL)
    app = FastnAuthMiddleware(inner_app(), settings=settings)
    with TestClient(app) as client:
        with client.websocket_connect("/mcp/socket", headers=bearer(tokens["access_token"])) as socket:
            method = socket.receive_text()
    assert method == "jwt"


async def test_realm_fault_keeps_refresh_session(faulty_realm):
    tokens = login_tokens(faulty_realm.issuer)
    async with build(faulty_realm.issuer, upstream_refresh_margin=1) as client:
        first = await client.get("/mcp", headers=bearer(tokens["refresh_token"]))
        await asyncio.sleep(3.2)
        faulty_realm.fail_token_requests(429, 1)
        during = await client.get("/mcp", headers=bearer(tokens["refresh_token"]))
        after = await client.get("/mcp", headers=bearer(tokens["refresh_token"]))
    assert first.status_code == 200
    assert during.status_code == 503
    assert after.status_code == 200


async def test_refreshed_token_of_other_audience(realm):
    tokens = login_tokens(realm.issuer)
    counter = TokenEndpointCounter()
    async with build(realm.issuer, counter, audience="another-api") as client:
        first = await client.get("/mcp", headers=bearer(tokens["refresh_token"]))
        second = await client.get("/mcp", headers=bearer(tokens["refresh_token"]))
    # Not acceptable here, so 401, and cached: only the first request reaches
    # the realm (fastn-oauth rejected, then fastn-sdk).
    assert first.status_code == 401
    assert second.status_code == 401
    assert counter.calls == 2
