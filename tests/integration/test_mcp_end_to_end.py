"""End to end: the MCP SDK's own OAuth client against the example MCP server.

The upstream is the test realm (a real OpenID provider on loopback); the user
logs in through its HTML form, driven headlessly.
"""

from __future__ import annotations

import asyncio
import json
import time
from urllib.parse import parse_qs, urlsplit

import httpx
import httpx2
import pytest
from mcp import ClientSession
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

from examples.mcp_server import build_app
from fastn_asgi_auth import FastnAuthSettings
from tests.support.realm import browse_login
from tests.support.servers import bind_loopback, serve


class MemoryTokenStorage:
    """The client's token storage, as a desktop client would keep it."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


class HeadlessUser:
    """Plays the user's browser: opens the authorization URL and logs in."""

    def __init__(self, redirect_uri: str) -> None:
        self.redirect_uri = redirect_uri
        self.authorization_url: str | None = None
        self.logins = 0

    async def open(self, url: str) -> None:
        self.authorization_url = url

    async def callback(self) -> AuthorizationCodeResult:
        assert self.authorization_url is not None
        final = await asyncio.to_thread(browse_login, self.authorization_url, self.redirect_uri)
        self.logins += 1
        query = parse_qs(urlsplit(final).query)
        return AuthorizationCodeResult(
            code=query["code"][0], state=query.get("state", [None])[0], iss=query.get("iss", [None])[0]
        )


def loopback_redirect_uri() -> str:
    # A desktop client listens on a port of its choosing; nothing needs to
    # listen here because the headless user stops at the redirect.
    sock = bind_loopback()
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}/callback"


def example_settings(issuer: str, base_url: str) -> FastnAuthSettings:
    # A 1-second refresh margin, so that the 3-second upstream tokens of the
    # short-lived realm are used until they expire.
    return FastnAuthSettings(issuer=issuer, base_url=base_url, upstream_refresh_margin=1)


async def call_whoami(server_url: str, provider: OAuthClientProvider) -> dict[str, object]:
    async with httpx2.AsyncClient(auth=provider, timeout=30) as http:
        async with streamable_http_client(server_url + "/mcp", http_client=http) as streams:
            read_stream, write_stream = streams[0], streams[1]
            async with ClientSession(read_stream, write_stream) as session:
                await session.initialize()
                result = await session.call_tool("whoami", {})
    assert not result.is_error, result
    return json.loads(result.content[0].text)


@pytest.mark.integration
async def test_mcp_client_login_and_refresh(short_realm):
    with serve(lambda base_url: build_app(example_settings(short_realm.issuer, base_url))) as server:
        user = HeadlessUser(loopback_redirect_uri())
        storage = MemoryTokenStorage()
        provider = OAuthClientProvider(
            server_url=server.url + "/mcp",
            client_metadata=OAuthClientMetadata(
                client_name="end-to-end test",
                redirect_uris=[user.redirect_uri],
                grant_types=["authorization_code", "refresh_token"],
                response_types=["code"],
            ),
            storage=storage,
            redirect_handler=user.open,
            callback_handler=user.callback,
        )

        first = await call_whoami(server.url, provider)
        print("first whoami:", first)
        assert user.logins == 1
        assert first["method"] == "oauth"
        assert first["client_id"] == storage.client_info.client_id
        assert isinstance(first["sub"], str) and first["sub"]
        assert isinstance(first["exp"], int)
        assert first["sdk_token_matches"] is True

        # Outlive the upstream token: the server refreshes it, the client
        # keeps its own token and does not log in again.
        await asyncio.sleep(max(0.0, first["exp"] - time.time()) + 1.0)
        second = await call_whoami(server.url, provider)
        print("second whoami:", second)
        assert user.logins == 1
        assert second["sub"] == first["sub"]
        assert second["exp"] > first["exp"]


@pytest.mark.integration
def test_example_health_is_public(realm):
    with serve(lambda base_url: build_app(example_settings(realm.issuer, base_url))) as server:
        health = httpx.get(server.url + "/health")
        mcp = httpx.post(server.url + "/mcp", json={})
    assert health.status_code == 200
    assert mcp.status_code == 401
