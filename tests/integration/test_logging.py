"""The operator's log: reasons for rejections, and never a secret."""

from __future__ import annotations

import logging
from urllib.parse import parse_qs, urlsplit

import pytest

from fastn_asgi_auth.pkce import new_pkce_pair
from tests.integration.test_oauth_proxy import REGISTERED_REDIRECT, running_proxy
from tests.support.realm import login_tokens

pytestmark = pytest.mark.integration


def test_full_flow_logs_no_secret(realm, caplog):
    caplog.set_level(logging.DEBUG, logger="fastn_asgi_auth")
    with running_proxy(realm.issuer) as proxy:
        client = proxy.client()
        pkce = new_pkce_pair()
        start = proxy.http.get(proxy.authorize_url(client, REGISTERED_REDIRECT, pkce.code_challenge))
        upstream_state = parse_qs(urlsplit(start.headers["location"]).query)["login"][0]
        login = proxy.login(client)
        tokens = proxy.exchange(client, login).json()
        proxy.call(tokens["access_token"])
        rotated = proxy.refresh(client, tokens["refresh_token"]).json()
        proxy.refresh(client, tokens["refresh_token"])  # reuse, logged as a warning
        realm_tokens = login_tokens(realm.issuer)
        proxy.call(realm_tokens["access_token"])
        proxy.call(realm_tokens["refresh_token"])

    secrets = {
        "access token": tokens["access_token"],
        "refresh token": tokens["refresh_token"],
        "rotated access token": rotated["access_token"],
        "rotated refresh token": rotated["refresh_token"],
        "authorization code": login["code"],
        "upstream state": upstream_state,
        "code verifier": login["code_verifier"],
        "realm access token": realm_tokens["access_token"],
        "realm refresh token": realm_tokens["refresh_token"],
    }
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "login" in logged
    assert "revoking its grant" in logged
    for name, value in secrets.items():
        assert value not in logged, f"{name} appears in the log"


def test_rejection_reason_logged(realm, caplog):
    caplog.set_level(logging.INFO, logger="fastn_asgi_auth")
    with running_proxy(realm.issuer) as proxy:
        response = proxy.call("made-up-opaque-token")
    assert response.status_code == 401
    reasons = [record.getMessage() for record in caplog.records if record.name == "fastn_asgi_auth.resolver"]
    assert any("not recognised by any step" in reason and "invalid_grant" in reason for reason in reasons)
