"""The OAuth proxy over real HTTP: registration, login at the realm, codes, tokens.

The server runs under uvicorn on loopback. The client side is plain httpx
doing what an MCP client does, so that every step and error can be checked.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from fastn_asgi_auth import FastnAuthMiddleware, FastnAuthService, FastnAuthSettings, MemoryStore, Store
from fastn_asgi_auth.pkce import new_pkce_pair
from tests.support.apps import whoami
from tests.support.realm import RealmServer, TokenEndpointCounter, browse_login
from tests.support.servers import serve

pytestmark = pytest.mark.integration

REGISTERED_REDIRECT = "http://127.0.0.1:3000/callback"


@dataclass
class Proxy:
    url: str
    settings: FastnAuthSettings
    http: httpx.Client

    def register(self, redirect_uris: list[str] | None = None, **extra) -> httpx.Response:
        body = {"client_name": "proxy test", "redirect_uris": redirect_uris or [REGISTERED_REDIRECT], **extra}
        return self.http.post(self.url + "/oauth/register", json=body)

    def client(self) -> dict:
        response = self.register(token_endpoint_auth_method="none")
        assert response.status_code == 201, response.text
        return response.json()

    def authorize_url(self, client: dict, redirect_uri: str, challenge: str, state: str = "client-state") -> str:
        query = {
            "response_type": "code",
            "client_id": client["client_id"],
            "redirect_uri": redirect_uri,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "state": state,
            "resource": self.url + "/mcp",
        }
        return self.url + "/oauth/authorize?" + urlencode(query)

    def login(
        self,
        client: dict,
        redirect_uri: str = REGISTERED_REDIRECT,
        *,
        deny: bool = False,
        consent: str | None = "approve",
        browser: httpx.Client | None = None,
    ) -> dict:
        """Run the browser part; return the query of the final redirect to the client."""
        pkce = new_pkce_pair()
        url = self.authorize_url(client, redirect_uri, pkce.code_challenge)
        final = browse_login(url, redirect_uri, deny=deny, consent=consent, client=browser)
        query = {key: values[0] for key, values in parse_qs(urlsplit(final).query).items()}
        query["code_verifier"] = pkce.code_verifier
        query["redirect_uri"] = redirect_uri
        return query

    def exchange(self, client: dict, login: dict) -> httpx.Response:
        form = {
            "grant_type": "authorization_code",
            "code": login["code"],
            "redirect_uri": login["redirect_uri"],
            "client_id": client["client_id"],
            "code_verifier": login["code_verifier"],
        }
        return self.http.post(self.url + "/oauth/token", data=form)

    def tokens(self, client: dict, redirect_uri: str = REGISTERED_REDIRECT) -> dict:
        response = self.exchange(client, self.login(client, redirect_uri))
        assert response.status_code == 200, response.text
        return response.json()

    def refresh(self, client: dict, refresh_token: str, scope: str | None = None) -> httpx.Response:
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": client["client_id"]}
        if scope is not None:
            form["scope"] = scope
        return self.http.post(self.url + "/oauth/token", data=form)

    def call(self, access_token: str) -> httpx.Response:
        return self.http.get(self.url + "/mcp", headers={"Authorization": f"Bearer {access_token}"})


@contextlib.contextmanager
def running_proxy(
    issuer: str, counter: TokenEndpointCounter | None = None, *, store: Store | None = None, **overrides
) -> Iterator[Proxy]:
    holder: dict[str, FastnAuthSettings] = {}

    def build(base_url: str):
        holder["settings"] = FastnAuthSettings(issuer=issuer, base_url=base_url, **overrides)
        hooks = {"request": [counter]} if counter else {}
        http = httpx.AsyncClient(timeout=holder["settings"].http_timeout, event_hooks=hooks)
        service = FastnAuthService(holder["settings"], store=store, http=http)
        return FastnAuthMiddleware(Starlette(routes=[Route("/mcp", whoami)]), service=service)

    with serve(build) as server, httpx.Client(timeout=15) as http:
        yield Proxy(server.url, holder["settings"], http)


@pytest.fixture
def proxy(realm) -> Iterator[Proxy]:
    with running_proxy(realm.issuer) as running:
        yield running


# Metadata


def test_issuer_identical_everywhere(proxy):
    server_metadata = proxy.http.get(proxy.url + "/.well-known/oauth-authorization-server/oauth").json()
    resource_metadata = proxy.http.get(proxy.url + "/.well-known/oauth-protected-resource/mcp").json()
    login = proxy.login(proxy.client())
    expected = proxy.url + "/oauth"
    assert server_metadata["issuer"] == expected
    assert resource_metadata["authorization_servers"] == [expected]
    assert resource_metadata["resource"] == proxy.url + "/mcp"
    assert login["iss"] == expected
    assert server_metadata["authorization_endpoint"] == expected + "/authorize"
    assert server_metadata["code_challenge_methods_supported"] == ["S256"]


# Registration


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "https://evil.example/callback",
        "http://lovable.dev/callback",
        "https://lovable.dev.evil.example/callback",
        "https://lovable.dev@evil.example/callback",
        "https://lovable.dev/callback#fragment",
    ],
)
def test_registration_rejects_redirect(proxy, redirect_uri):
    response = proxy.register([redirect_uri])
    assert response.status_code == 400
    assert response.json()["error"] in ("invalid_redirect_uri", "invalid_client_metadata")


def test_registration_defaults_scope(proxy):
    client = proxy.client()
    assert client["scope"] == "read write"


def test_registration_rate_limited(realm):
    with running_proxy(realm.issuer, registration_rate_limit=3) as proxy:
        statuses = [proxy.register().status_code for _ in range(5)]
    assert statuses == [201, 201, 201, 429, 429]


# Login and tokens


def test_full_flow_with_other_loopback_port(proxy):
    client = proxy.client()
    # Registered with port 3000; the desktop client now listens on 51234.
    tokens = proxy.tokens(client, redirect_uri="http://127.0.0.1:51234/callback")
    response = proxy.call(tokens["access_token"])
    assert response.status_code == 200
    assert response.json()["method"] == "oauth"
    assert response.json()["client_id"] == client["client_id"]
    assert tokens["token_type"].lower() == "bearer"
    assert tokens["expires_in"] == 3600


def test_other_loopback_path_rejected(proxy):
    client = proxy.client()
    pkce = new_pkce_pair()
    url = proxy.authorize_url(client, "http://127.0.0.1:51234/elsewhere", pkce.code_challenge)
    response = proxy.http.get(url)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_denied_login_reaches_client(proxy):
    client = proxy.client()
    result = proxy.login(client, deny=True)
    assert result["error"] == "access_denied"
    assert result["state"] == "client-state"
    assert result["iss"] == proxy.url + "/oauth"
    assert "code" not in result


def test_unknown_callback_state(proxy):
    response = proxy.http.get(proxy.url + "/oauth/callback", params={"state": "made-up", "code": "x"})
    assert response.status_code == 400
    assert "expired" in response.text


def test_pending_login_expires(realm):
    with running_proxy(realm.issuer, pending_login_ttl=1) as proxy:
        client = proxy.client()
        pkce = new_pkce_pair()
        start = proxy.http.get(proxy.authorize_url(client, REGISTERED_REDIRECT, pkce.code_challenge))
        assert start.status_code == 302
        # With consent on, the first stop is the consent page, named by the login's state.
        upstream_state = parse_qs(urlsplit(start.headers["location"]).query)["login"][0]
        time.sleep(1.5)
        late = proxy.http.get(proxy.url + "/oauth/callback", params={"state": upstream_state, "code": "x"})
    assert late.status_code == 400


def test_unknown_resource_rejected(proxy):
    client = proxy.client()
    pkce = new_pkce_pair()
    url = proxy.authorize_url(client, REGISTERED_REDIRECT, pkce.code_challenge).replace("%2Fmcp", "%2Fother")
    response = proxy.http.get(url)
    assert response.status_code == 302
    query = parse_qs(urlsplit(response.headers["location"]).query)
    assert query["error"] == ["invalid_target"]
    assert query["state"] == ["client-state"]
    # RFC 9207: error responses carry the issuer too.
    assert query["iss"] == [proxy.url + "/oauth"]


def test_wrong_code_verifier_rejected(proxy):
    client = proxy.client()
    login = proxy.login(client)
    login["code_verifier"] = new_pkce_pair().code_verifier
    response = proxy.exchange(client, login)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


def test_code_replay_revokes_grant(proxy):
    client = proxy.client()
    login = proxy.login(client)
    first = proxy.exchange(client, login)
    replay = proxy.exchange(client, login)
    assert first.status_code == 200
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"
    # RFC 6749 §4.1.2: the tokens issued from the replayed code stop working.
    assert proxy.call(first.json()["access_token"]).status_code == 401


def test_code_of_other_client_rejected(proxy):
    owner = proxy.client()
    other = proxy.client()
    login = proxy.login(owner)
    response = proxy.exchange(other, login)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


# Refresh and revocation


def test_refresh_rotates_and_detects_reuse(proxy):
    client = proxy.client()
    tokens = proxy.tokens(client)
    rotated = proxy.refresh(client, tokens["refresh_token"])
    assert rotated.status_code == 200
    new_tokens = rotated.json()
    assert new_tokens["refresh_token"] != tokens["refresh_token"]
    assert proxy.call(new_tokens["access_token"]).status_code == 200

    reuse = proxy.refresh(client, tokens["refresh_token"])
    assert reuse.status_code == 400
    assert reuse.json()["error"] == "invalid_grant"
    # Reuse of a rotated refresh token ends the whole grant.
    assert proxy.call(new_tokens["access_token"]).status_code == 401
    assert proxy.refresh(client, new_tokens["refresh_token"]).status_code == 400


def test_refresh_keeps_own_grant(proxy):
    client = proxy.client()
    first_login = proxy.tokens(client)
    second_login = proxy.tokens(client)
    upstream_first = proxy.call(first_login["access_token"]).json()["fastn_token_sha256"]
    upstream_second = proxy.call(second_login["access_token"]).json()["fastn_token_sha256"]
    assert upstream_first != upstream_second

    refreshed = proxy.refresh(client, second_login["refresh_token"]).json()
    after = proxy.call(refreshed["access_token"]).json()["fastn_token_sha256"]
    # The refreshed token carries the upstream session of the login it came from.
    assert after == upstream_second


def test_refresh_by_other_client_rejected(proxy):
    owner = proxy.client()
    other = proxy.client()
    tokens = proxy.tokens(owner)
    response = proxy.refresh(other, tokens["refresh_token"])
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


def test_revoke_access_token_ends_grant(proxy):
    client = proxy.client()
    tokens = proxy.tokens(client)
    response = proxy.http.post(
        proxy.url + "/oauth/revoke", data={"token": tokens["access_token"], "client_id": client["client_id"]}
    )
    assert response.status_code == 200
    assert proxy.call(tokens["access_token"]).status_code == 401
    assert proxy.refresh(client, tokens["refresh_token"]).status_code == 400


def test_revoke_leaves_other_grants(proxy):
    client = proxy.client()
    surviving = proxy.tokens(client)
    revoked = proxy.tokens(client)
    proxy.http.post(
        proxy.url + "/oauth/revoke", data={"token": revoked["refresh_token"], "client_id": client["client_id"]}
    )
    assert proxy.call(revoked["access_token"]).status_code == 401
    assert proxy.call(surviving["access_token"]).status_code == 200


def test_upstream_refreshed_behind_own_token(short_realm):
    with running_proxy(short_realm.issuer, upstream_refresh_margin=1) as proxy:
        client = proxy.client()
        tokens = proxy.tokens(client)
        first = proxy.call(tokens["access_token"]).json()["fastn_token_sha256"]
        time.sleep(3.2)
        second = proxy.call(tokens["access_token"])
    assert second.status_code == 200
    assert second.json()["fastn_token_sha256"] != first


# Consent


def test_consent_denied_reaches_client(proxy):
    client = proxy.client()
    result = proxy.login(client, consent="deny")
    assert result["error"] == "access_denied"
    assert result["state"] == "client-state"
    assert result["iss"] == proxy.url + "/oauth"


def test_consent_remembered_per_browser(proxy):
    client = proxy.client()
    with httpx.Client(timeout=15) as browser:
        first = proxy.login(client, browser=browser)
        # consent=None: the walk fails if the consent page is shown again.
        second = proxy.login(client, consent=None, browser=browser)
    assert "code" in first
    assert "code" in second


def test_consent_asked_for_each_client(proxy):
    first_client = proxy.client()
    second_client = proxy.client()
    with httpx.Client(timeout=15) as browser:
        proxy.login(first_client, browser=browser)
        with pytest.raises(AssertionError):
            proxy.login(second_client, consent=None, browser=browser)


def test_consent_post_without_csrf_cookie(proxy):
    client = proxy.client()
    pkce = new_pkce_pair()
    start = proxy.http.get(proxy.authorize_url(client, REGISTERED_REDIRECT, pkce.code_challenge))
    login_state = parse_qs(urlsplit(start.headers["location"]).query)["login"][0]
    # A cross-site form post carries neither the page's token nor its cookie.
    with httpx.Client(timeout=15) as attacker_page:
        response = attacker_page.post(
            proxy.url + "/oauth/consent", data={"login": login_state, "csrf": "guess", "action": "approve"}
        )
    assert response.status_code == 403
    assert "location" not in response.headers


def test_consent_page_escapes_client_name(proxy):
    response = proxy.register(token_endpoint_auth_method="none", client_name="<script>alert(1)</script>")
    client = response.json()
    pkce = new_pkce_pair()
    page = proxy.http.get(proxy.authorize_url(client, REGISTERED_REDIRECT, pkce.code_challenge), follow_redirects=True)
    assert page.status_code == 200
    assert "<script>" not in page.text
    assert "&lt;script&gt;" in page.text
    assert page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


def test_consent_can_be_switched_off(realm):
    with running_proxy(realm.issuer, consent=False) as proxy:
        client = proxy.client()
        pkce = new_pkce_pair()
        start = proxy.http.get(proxy.authorize_url(client, REGISTERED_REDIRECT, pkce.code_challenge))
    assert start.headers["location"].startswith(realm.issuer + "/protocol/openid-connect/auth?")


def test_default_scope_granted(proxy):
    # The authorization request carries no scope parameter.
    tokens = proxy.tokens(proxy.client())
    assert tokens["scope"] == "read write"


def test_refresh_during_outage_keeps_token():
    # A realm of its own, stopped mid-test to cut the upstream off.
    outage_realm = RealmServer()
    outage_realm.start(access_token_ttl=3)
    try:
        with running_proxy(outage_realm.issuer, upstream_refresh_margin=1) as proxy:
            client = proxy.client()
            tokens = proxy.tokens(client)
            time.sleep(3.2)
            outage_realm.stop()
            first = proxy.refresh(client, tokens["refresh_token"])
            second = proxy.refresh(client, tokens["refresh_token"])
    finally:
        outage_realm.stop()
    assert first.status_code == 503
    assert first.json()["error"] == "temporarily_unavailable"
    assert first.headers["retry-after"].isdigit()
    # The refresh token was not used up by the failed attempt.
    assert second.status_code == 503


def test_revoked_token_not_sent_upstream(realm):
    counter = TokenEndpointCounter()
    with running_proxy(realm.issuer, counter) as proxy:
        client = proxy.client()
        tokens = proxy.tokens(client)
        proxy.http.post(
            proxy.url + "/oauth/revoke", data={"token": tokens["access_token"], "client_id": client["client_id"]}
        )
        before = counter.calls
        response = proxy.call(tokens["access_token"])
        after = counter.calls
    assert tokens["access_token"].startswith("fastn_at_")
    assert tokens["refresh_token"].startswith("fastn_rt_")
    assert response.status_code == 401
    assert after == before


@pytest.mark.parametrize("status", [429, 403, 404, 500])
def test_realm_fault_keeps_grant(faulty_realm, status):
    with running_proxy(faulty_realm.issuer, upstream_refresh_margin=1) as proxy:
        client = proxy.client()
        tokens = proxy.tokens(client)
        first = proxy.call(tokens["access_token"])
        time.sleep(3.2)
        faulty_realm.fail_token_requests(status, 1)
        during = proxy.call(tokens["access_token"])
        after = proxy.call(tokens["access_token"])
    # A realm that did not judge the grant must not end the user's session.
    assert during.status_code == 503
    assert during.headers["retry-after"] == "1"
    assert after.status_code == 200
    assert after.json()["fastn_token_sha256"] != first.json()["fastn_token_sha256"]


def test_narrower_refresh_keeps_scope(proxy):
    client = proxy.client()
    tokens = proxy.tokens(client)
    narrow = proxy.refresh(client, tokens["refresh_token"], scope="read")
    assert narrow.status_code == 200
    assert narrow.json()["scope"] == "read"
    # RFC 6749 §6: the new refresh token still carries the original scope.
    wide = proxy.refresh(client, narrow.json()["refresh_token"], scope="read write")
    assert wide.status_code == 200
    assert wide.json()["scope"] == "read write"


def test_strict_preset_proxy_login(realm):
    with running_proxy(realm.issuer, audience="some-api", enable_api_keys=False, enable_refresh_tokens=False) as proxy:
        client = proxy.client()
        tokens = proxy.tokens(client)
        response = proxy.call(tokens["access_token"])
    # The audience applies to JWTs that clients bring, not to the proxy's own logins.
    assert response.status_code == 200
    assert response.json()["method"] == "oauth"


class FlakyStore(MemoryStore):
    """A real MemoryStore whose reads of one key family fail while `down` is set."""

    def __init__(self, failing_prefix: str) -> None:
        super().__init__()
        self.failing_prefix = failing_prefix
        self.down = False

    async def get(self, key: str):
        if self.down and key.startswith(self.failing_prefix):
            raise ConnectionError("store connection refused")
        return await super().get(key)


def test_store_outage_during_refresh(realm):
    store = FlakyStore("grant:")
    with running_proxy(realm.issuer, store=store) as proxy:
        client = proxy.client()
        tokens = proxy.tokens(client)
        store.down = True
        during_refresh = proxy.refresh(client, tokens["refresh_token"])
        during_call = proxy.call(tokens["access_token"])
        store.down = False
        after = proxy.refresh(client, tokens["refresh_token"])
        after_call = proxy.call(after.json()["access_token"])
    assert during_refresh.status_code == 503
    assert during_refresh.json()["error"] == "temporarily_unavailable"
    assert during_call.status_code == 503
    # The refresh token survived the outage; it is not treated as reused.
    assert after.status_code == 200
    assert after_call.status_code == 200


async def test_workers_share_one_upstream_refresh(short_realm):
    store = MemoryStore()
    with running_proxy(short_realm.issuer, store=store, upstream_refresh_margin=1) as proxy:
        client = proxy.client()
        tokens = proxy.tokens(client)
        settings = proxy.settings

    # Two workers share the store but not their in-process single flights.
    counter = TokenEndpointCounter()
    workers = []
    for _ in range(2):
        service = FastnAuthService(
            settings, store=store, http=httpx.AsyncClient(timeout=10, event_hooks={"request": [counter]})
        )
        app = FastnAuthMiddleware(Starlette(routes=[Route("/mcp", whoami)]), service=service)
        workers.append(httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=settings.public_base_url))

    await asyncio.sleep(3.2)
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    try:
        responses = await asyncio.gather(*(worker.get("/mcp", headers=headers) for worker in workers for _ in range(5)))
    finally:
        for worker in workers:
            await worker.aclose()

    assert [response.status_code for response in responses] == [200] * 10
    assert len({response.json()["fastn_token_sha256"] for response in responses}) == 1
    # Rotating upstream refresh tokens allow one refresh; a second would be reuse.
    assert counter.calls == 1


def test_authorization_rate_limited(realm):
    with running_proxy(realm.issuer, authorization_rate_limit=3) as proxy:
        client = proxy.client()
        pkce = new_pkce_pair()
        url = proxy.authorize_url(client, REGISTERED_REDIRECT, pkce.code_challenge)
        statuses = [proxy.http.get(url).status_code for _ in range(5)]
    assert statuses == [302, 302, 302, 429, 429]


# Redirect URIs that MCP clients register (their published or observed lists).
CLIENT_REDIRECTS = {
    "vs code": [
        "https://insiders.vscode.dev/redirect",
        "https://vscode.dev/redirect",
        "http://127.0.0.1/",
        "http://127.0.0.1:33418/",
    ],
    "cursor": [
        "cursor://anysphere.cursor-mcp/oauth/callback",
        "https://www.cursor.com/agents/mcp/oauth/callback",
        "http://localhost:8787/callback",
    ],
    "claude": ["https://claude.ai/api/mcp/auth_callback", "https://claude.com/api/mcp/auth_callback"],
    "mcp inspector": ["http://localhost:6274/oauth/callback"],
}


@pytest.mark.parametrize("name", sorted(CLIENT_REDIRECTS))
def test_known_clients_register(proxy, name):
    response = proxy.register(CLIENT_REDIRECTS[name], token_endpoint_auth_method="none")
    assert response.status_code == 201, response.text


def test_unlisted_private_scheme_rejected(proxy):
    response = proxy.register(["someapp://callback"])
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_redirect_uri"


def test_vscode_random_port_login(proxy):
    client = proxy.register(CLIENT_REDIRECTS["vs code"], token_endpoint_auth_method="none").json()
    # VS Code falls back to a random port when 33418 is taken.
    tokens = proxy.tokens(client, redirect_uri="http://127.0.0.1:59656/")
    assert proxy.call(tokens["access_token"]).status_code == 200


# Confidential clients


@pytest.mark.parametrize("method", ["client_secret_post", "client_secret_basic"])
def test_confidential_client_flow(proxy, method):
    client = proxy.register(token_endpoint_auth_method=method).json()
    login = proxy.login(client)
    form = {
        "grant_type": "authorization_code",
        "code": login["code"],
        "redirect_uri": login["redirect_uri"],
        "client_id": client["client_id"],
        "code_verifier": login["code_verifier"],
    }
    credentials = (client["client_id"], client["client_secret"])
    if method == "client_secret_post":
        response = proxy.http.post(proxy.url + "/oauth/token", data={**form, "client_secret": client["client_secret"]})
    else:
        response = proxy.http.post(proxy.url + "/oauth/token", data=form, auth=credentials)
    assert response.status_code == 200, response.text
    assert proxy.call(response.json()["access_token"]).status_code == 200


def test_wrong_client_secret_rejected(proxy):
    client = proxy.register(token_endpoint_auth_method="client_secret_post").json()
    tokens_form = {
        "grant_type": "refresh_token",
        "refresh_token": "fastn_rt_unknown",
        "client_id": client["client_id"],
        "client_secret": client["client_secret"][:-1] + ("0" if client["client_secret"][-1] != "0" else "1"),
    }
    response = proxy.http.post(proxy.url + "/oauth/token", data=tokens_form)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def test_client_secret_hashed_at_rest(realm):
    store = MemoryStore()
    with running_proxy(realm.issuer, store=store) as proxy:
        client = proxy.register(token_endpoint_auth_method="client_secret_post").json()
    stored = asyncio.run(store.get("client:" + client["client_id"]))
    assert client["client_secret"] not in json.dumps(stored)
    assert stored["client"]["client_secret"].startswith("sha256:")


def test_retry_during_slow_refresh(faulty_realm):
    with running_proxy(faulty_realm.issuer, upstream_refresh_margin=1) as proxy:
        client = proxy.client()
        tokens = proxy.tokens(client)
        time.sleep(3.2)
        faulty_realm.delay_token_requests(1500, 1)
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            first = pool.submit(proxy.refresh, client, tokens["refresh_token"])
            time.sleep(0.5)
            retry = proxy.refresh(client, tokens["refresh_token"])
            first_response = first.result(timeout=30)
        after = proxy.call(first_response.json()["access_token"])
    # The client's retry gets 503 (retry later), not a refresh token reuse verdict.
    assert retry.status_code == 503
    assert first_response.status_code == 200
    assert after.status_code == 200


def test_stored_hash_is_not_the_secret(realm):
    store = MemoryStore()
    with running_proxy(realm.issuer, store=store) as proxy:
        client = proxy.register(token_endpoint_auth_method="client_secret_post").json()
        stored_hash = asyncio.run(store.get("client:" + client["client_id"]))["client"]["client_secret"]
        form = {
            "grant_type": "refresh_token",
            "refresh_token": "fastn_rt_unknown",
            "client_id": client["client_id"],
            "client_secret": stored_hash,
        }
        response = proxy.http.post(proxy.url + "/oauth/token", data=form)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def test_post_client_with_basic_header(proxy):
    client = proxy.register(token_endpoint_auth_method="client_secret_post").json()
    login = proxy.login(client)
    form = {
        "grant_type": "authorization_code",
        "code": login["code"],
        "redirect_uri": login["redirect_uri"],
        "client_id": client["client_id"],
        "code_verifier": login["code_verifier"],
        "client_secret": client["client_secret"],
    }
    # Some HTTP stacks add a Basic header of their own; the form secret counts.
    response = proxy.http.post(proxy.url + "/oauth/token", data=form, auth=("someone", "else"))
    assert response.status_code == 200, response.text


def test_authorize_during_store_outage(realm):
    store = FlakyStore("client:")
    with running_proxy(realm.issuer, store=store) as proxy:
        client = proxy.client()
        pkce = new_pkce_pair()
        store.down = True
        response = proxy.http.get(proxy.authorize_url(client, REGISTERED_REDIRECT, pkce.code_challenge))
    assert response.status_code == 503
    assert response.headers["retry-after"].isdigit()


@pytest.mark.parametrize("path", ["/oauth/token", "/oauth/revoke", "/oauth/consent", "/oauth/register"])
def test_oversized_body_rejected(proxy, path):
    client = proxy.client()
    response = proxy.http.post(proxy.url + path, data={"token": "x" * 2_000_000, "client_id": client["client_id"]})
    assert response.status_code == 413


def test_slow_realm_serves_valid_token(faulty_realm):
    # Refresh is due one second after issue, the token lives three.
    with running_proxy(faulty_realm.issuer, upstream_refresh_margin=2, http_timeout=0.5) as proxy:
        client = proxy.client()
        tokens = proxy.tokens(client)
        before = proxy.call(tokens["access_token"])
        time.sleep(1.1)
        faulty_realm.delay_token_requests(1500, 1)
        during = proxy.call(tokens["access_token"])
    assert during.status_code == 200
    assert during.json()["fastn_token_sha256"] == before.json()["fastn_token_sha256"]


def test_malformed_form_is_400(proxy):
    # 1,001 empty parts: small enough for the body limit, but more fields
    # than Starlette's form parser accepts.
    part = b'--b\r\nContent-Disposition: form-data; name="a"\r\n\r\n\r\n'
    body = part * 1001 + b"--b--\r\n"
    response = proxy.http.post(
        proxy.url + "/oauth/token", content=body, headers={"Content-Type": "multipart/form-data; boundary=b"}
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
