"""Tests of the test OpenID provider: it must behave like the Keycloak realm the package targets."""

from __future__ import annotations

import secrets
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest

from tests.support.realm import (
    HTTP_TIMEOUT_SECONDS,
    TEST_USER_EMAIL,
    TEST_USER_SUB,
    TEST_USERNAME,
    authorization_url,
    browse_login,
    endpoint_url,
    find_login_form,
    login_tokens,
    new_pkce_pair,
    refresh,
)


def decode_access_token(issuer: str, token: str) -> dict:
    certs = httpx.get(endpoint_url(issuer, "certs"), timeout=HTTP_TIMEOUT_SECONDS).json()
    key = jwt.PyJWKSet.from_dict(certs)[jwt.get_unverified_header(token)["kid"]]
    return jwt.decode(token, key, algorithms=["RS256"], audience="account", issuer=issuer)


def test_discovery_uses_keycloak_layout(realm):
    issuer = realm.issuer
    response = httpx.get(f"{issuer}/.well-known/openid-configuration", timeout=HTTP_TIMEOUT_SECONDS)
    assert response.status_code == 200
    metadata = response.json()

    assert issuer == f"http://127.0.0.1:{realm.port}/realms/fastn"
    assert metadata["issuer"] == issuer
    assert metadata["authorization_endpoint"] == f"{issuer}/protocol/openid-connect/auth"
    assert metadata["token_endpoint"] == f"{issuer}/protocol/openid-connect/token"
    assert metadata["jwks_uri"] == f"{issuer}/protocol/openid-connect/certs"
    assert metadata["userinfo_endpoint"] == f"{issuer}/protocol/openid-connect/userinfo"
    assert metadata["revocation_endpoint"] == f"{issuer}/protocol/openid-connect/revoke"
    assert metadata["end_session_endpoint"] == f"{issuer}/protocol/openid-connect/logout"
    assert metadata["code_challenge_methods_supported"] == ["S256"]


def test_access_token_is_rs256_jwt(realm):
    tokens = login_tokens(realm.issuer, client_id="fastn-sdk")
    access_token = tokens["access_token"]

    header = jwt.get_unverified_header(access_token)
    certs = httpx.get(endpoint_url(realm.issuer, "certs"), timeout=HTTP_TIMEOUT_SECONDS).json()
    assert header["alg"] == "RS256"
    assert header["typ"] == "JWT"
    assert header["kid"] in {key["kid"] for key in certs["keys"]}

    claims = decode_access_token(realm.issuer, access_token)
    assert claims["iss"] == realm.issuer
    assert claims["sub"] == TEST_USER_SUB
    assert claims["aud"] == "account"
    assert claims["azp"] == "fastn-sdk"
    assert {"openid", "profile", "email"} <= set(claims["scope"].split())
    assert claims["typ"] == "Bearer"
    assert claims["exp"] - claims["iat"] == 300
    assert claims["jti"]
    assert claims["preferred_username"] == TEST_USERNAME
    assert claims["email"] == TEST_USER_EMAIL
    assert tokens["token_type"] == "Bearer"
    assert tokens["refresh_token"]


def test_userinfo_accepts_access_token(realm):
    tokens = login_tokens(realm.issuer)

    response = httpx.get(
        endpoint_url(realm.issuer, "userinfo"),
        headers={"authorization": f"Bearer {tokens['access_token']}"},
        timeout=HTTP_TIMEOUT_SECONDS,
    )
    assert response.status_code == 200
    assert response.json()["sub"] == TEST_USER_SUB
    assert response.json()["email"] == TEST_USER_EMAIL

    rejected = httpx.get(
        endpoint_url(realm.issuer, "userinfo"),
        headers={"authorization": "Bearer not-a-token"},
        timeout=HTTP_TIMEOUT_SECONDS,
    )
    assert rejected.status_code == 401


def test_refresh_rotates_refresh_token(realm):
    tokens = login_tokens(realm.issuer, client_id="fastn-oauth")

    first = refresh(realm.issuer, tokens["refresh_token"], "fastn-oauth")
    assert first.status_code == 200
    refreshed = first.json()
    assert refreshed["refresh_token"] != tokens["refresh_token"]
    assert decode_access_token(realm.issuer, refreshed["access_token"])["sub"] == TEST_USER_SUB

    reused = refresh(realm.issuer, tokens["refresh_token"], "fastn-oauth")
    assert reused.status_code == 400
    assert reused.json()["error"] == "invalid_grant"


def test_refresh_with_other_client_fails(realm):
    tokens = login_tokens(realm.issuer, client_id="fastn-sdk")

    wrong_client = refresh(realm.issuer, tokens["refresh_token"], "fastn-oauth")
    assert wrong_client.status_code == 400
    assert wrong_client.json()["error"] == "invalid_grant"

    # The rejected attempt must not use up the token for its own client.
    right_client = refresh(realm.issuer, tokens["refresh_token"], "fastn-sdk")
    assert right_client.status_code == 200


def test_deny_returns_access_denied(realm):
    redirect_uri = "http://localhost:9/denied"
    state = secrets.token_urlsafe(16)
    start_url = authorization_url(realm.issuer, "fastn-oauth", redirect_uri, state, new_pkce_pair().challenge)

    callback_url = browse_login(start_url, redirect_uri, deny=True)

    callback = parse_qs(urlsplit(callback_url).query)
    assert callback["error"] == ["access_denied"]
    assert callback["state"] == [state]
    assert "code" not in callback


def test_wrong_password_shows_form_again(realm):
    redirect_uri = "http://127.0.0.1:9/callback"
    start_url = authorization_url(realm.issuer, "fastn-sdk", redirect_uri, "state-1", new_pkce_pair().challenge)

    with httpx.Client(timeout=HTTP_TIMEOUT_SECONDS) as client:
        login_page = client.get(start_url, follow_redirects=True)
        assert login_page.status_code == 200
        form = find_login_form(login_page.text, str(login_page.url))
        assert form is not None

        retry_page = client.post(
            form.action,
            data={**form.hidden_fields, "username": TEST_USERNAME, "password": "wrong", "action": "login"},
        )
        assert retry_page.status_code == 200
        retry_form = find_login_form(retry_page.text, str(retry_page.url))
        assert retry_form is not None
        assert retry_form.error_message == "Invalid username or password."

        # The same sign-in still succeeds with the right password.
        callback_url = browse_login(str(retry_page.url), redirect_uri, client=client)
        assert "code" in parse_qs(urlsplit(callback_url).query)


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "https://app.example.test/callback",
        "http://app.example.test/callback",
        "https://127.0.0.1:8443/callback",
        "http://127.0.0.1.example.test/callback",
    ],
)
def test_non_loopback_redirect_rejected(realm, redirect_uri):
    start_url = authorization_url(realm.issuer, "fastn-sdk", redirect_uri, "state-1", new_pkce_pair().challenge)

    response = httpx.get(start_url, follow_redirects=False, timeout=HTTP_TIMEOUT_SECONDS)

    assert response.status_code == 400
    assert "location" not in response.headers
    assert "invalid_redirect_uri" in response.text


def test_short_realm_access_token_lifetime(short_realm):
    tokens = login_tokens(short_realm.issuer)

    claims = decode_access_token(short_realm.issuer, tokens["access_token"])
    assert claims["exp"] - claims["iat"] == 3
    assert tokens["expires_in"] == 3
