"""The consent page and the realm's login in a real headless Chromium."""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from playwright.sync_api import Route, sync_playwright

from fastn_asgi_auth.pkce import new_pkce_pair
from tests.integration.test_oauth_proxy import REGISTERED_REDIRECT, running_proxy

pytestmark = pytest.mark.integration

# The flags keep Chromium from calling home: this machine has no network
# beyond loopback, and every page here is served on 127.0.0.1.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT_DIR = Path(__file__).resolve().parents[2] / ".pytest_cache" / "screenshots"


def chromium_path() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("Debian's chromium is not installed; scripts/test.sh installs it")
    return path


def run_browser_login(url: str, *, answer: str) -> tuple[str, dict[str, str]]:
    """Open url, submit the consent page and log in. Return the final redirect and the page's text."""
    captured: dict[str, str] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()

            def hand_over(route: Route) -> None:
                # Stand-in for the desktop client's loopback listener.
                captured["redirect"] = route.request.url
                route.fulfill(status=200, content_type="text/html", body="<p>You can close this window.</p>")

            page.route(REGISTERED_REDIRECT + "**", hand_over)
            page.goto(url)
            page_text = {
                "title": page.title(),
                "client": page.locator("#client-name").inner_text(),
                "redirect_host": page.locator("#redirect-host").inner_text(),
                "scopes": page.locator("#scopes").inner_text(),
            }
            SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT_DIR / "consent.png"))
            page.locator("#approve" if answer == "approve" else "#deny").click()

            if answer == "approve":
                page.wait_for_selector("input[name=username]")
                page.fill("input[name=username]", "alice")
                page.fill("input[name=password]", "alice-password")
                page.locator("button[value=login]").click()
            page.wait_for_load_state()
            page.wait_for_function("() => document.body.innerText.includes('close this window')")
        finally:
            browser.close()
    return captured["redirect"], page_text


def start_login(proxy, client_name: str) -> tuple[dict, str, str]:
    client = proxy.register(client_name=client_name, token_endpoint_auth_method="none").json()
    pkce = new_pkce_pair()
    return client, proxy.authorize_url(client, REGISTERED_REDIRECT, pkce.code_challenge), pkce.code_verifier


def test_browser_approves_and_logs_in(realm):
    with running_proxy(realm.issuer) as proxy:
        client, url, verifier = start_login(proxy, "Browser Test Client")
        redirect, page_text = run_browser_login(url, answer="approve")
        query = {key: values[0] for key, values in parse_qs(urlsplit(redirect).query).items()}
        token = proxy.http.post(
            proxy.url + "/oauth/token",
            data={
                "grant_type": "authorization_code",
                "code": query["code"],
                "redirect_uri": REGISTERED_REDIRECT,
                "client_id": client["client_id"],
                "code_verifier": verifier,
            },
        )
        call = proxy.call(token.json()["access_token"])

    assert page_text["title"] == "Allow access?"
    assert page_text["client"] == "Browser Test Client"
    assert page_text["redirect_host"] == "127.0.0.1:3000"
    assert page_text["scopes"] == "read write"
    assert query["state"] == "client-state"
    assert token.status_code == 200
    assert call.status_code == 200
    assert call.json()["method"] == "oauth"


def test_browser_denies_consent(realm):
    with running_proxy(realm.issuer) as proxy:
        _client, url, _verifier = start_login(proxy, "Unwanted Client")
        redirect, _page_text = run_browser_login(url, answer="deny")
    query = parse_qs(urlsplit(redirect).query)
    assert query["error"] == ["access_denied"]
    assert query["state"] == ["client-state"]
    assert "code" not in query


def test_consent_page_not_framed(realm):
    with running_proxy(realm.issuer) as proxy:
        _client, url, _verifier = start_login(proxy, "Framed Client")
        response = httpx.get(url, follow_redirects=True)
    assert response.headers["x-frame-options"] == "DENY"
