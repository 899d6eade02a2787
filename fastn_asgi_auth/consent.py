"""The per-client consent page, shown before the upstream login.

Every registered client reaches the upstream realm through the same upstream
client id. Without a consent step, a client could send a user who is already
logged in at the realm straight through and receive a code for that user's
session: the "confused deputy" of the MCP security guidance. The page names
the client and where it will send the user, and needs an explicit approval.

The form is protected against cross-site submission by a double-submit token
(a cookie and a hidden field that must match), and against framing by
``frame-ancestors 'none'``. Approved clients are remembered in a signed cookie.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import logging
import secrets
import time
from typing import Any, Final
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from fastn_asgi_auth.crypto import log_id
from fastn_asgi_auth.errors import UpstreamUnavailable
from fastn_asgi_auth.pages import SECURITY_HEADERS, error_page
from fastn_asgi_auth.provider import FastnOAuthProvider
from fastn_asgi_auth.settings import FastnAuthSettings

logger = logging.getLogger("fastn_asgi_auth.consent")

CSRF_COOKIE: Final = "fastn_consent_csrf"
APPROVALS_COOKIE: Final = "fastn_consent"
# Bounds the approvals cookie well below the 4 KB browsers accept.
MAX_REMEMBERED_CLIENTS: Final = 20


class ApprovalCookie:
    """Signs and reads the cookie listing the clients a browser approved."""

    def __init__(self, secret: str | None, lifetime_seconds: int) -> None:
        self._key = hashlib.sha256((secret or secrets.token_urlsafe(32)).encode()).digest()
        self._lifetime = lifetime_seconds

    def approved(self, value: str | None) -> list[str]:
        if not value or "." not in value:
            return []
        body, _, signature = value.rpartition(".")
        if not hmac.compare_digest(signature, self._sign(body)):
            return []
        try:
            payload = json.loads(base64.urlsafe_b64decode(body.encode() + b"==="))
        except ValueError:
            return []
        if not isinstance(payload, dict) or payload.get("exp", 0) <= time.time():
            return []
        clients = payload.get("clients")
        return [str(client) for client in clients] if isinstance(clients, list) else []

    def with_client(self, value: str | None, client_id: str) -> str:
        clients = [client for client in self.approved(value) if client != client_id]
        clients = (clients + [client_id])[-MAX_REMEMBERED_CLIENTS:]
        payload = {"clients": clients, "exp": int(time.time()) + self._lifetime}
        body = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
        return body + "." + self._sign(body)

    def _sign(self, body: str) -> str:
        digest = hmac.new(self._key, body.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class ConsentEndpoint:
    """GET shows the page (or skips it for a remembered client); POST records the user's decision."""

    def __init__(self, settings: FastnAuthSettings, provider: FastnOAuthProvider) -> None:
        self._settings = settings
        self._provider = provider
        self._approvals = ApprovalCookie(settings.consent_secret, settings.consent_remember_days * 86400)
        self._path = settings.prefix + "/consent"
        self._secure = settings.public_base_url.startswith("https://")

    async def handle(self, request: Request) -> Response:
        if request.method == "POST":
            return await self._answer(request)
        return await self._show(request)

    async def _show(self, request: Request) -> Response:
        state = request.query_params.get("login", "")
        pending = await self._provider.pending_login(state) if state else None
        if pending is None:
            return error_page("This login has expired or was already completed. Start the login again.", 400)
        client = await self._provider.get_client(pending["client_id"])
        if client is None:
            return error_page("The application asking for access is no longer registered.", 400)

        if client.client_id in self._approvals.approved(request.cookies.get(APPROVALS_COOKIE)):
            logger.info("login %s: client %s approved earlier in this browser", log_id(state), client.client_id)
            return await self._to_upstream(state, pending)

        csrf = secrets.token_urlsafe(24)
        page = _render(self._settings, client.client_name, pending, state=state, csrf=csrf, action=self._path)
        response = HTMLResponse(page, headers=SECURITY_HEADERS)
        response.set_cookie(
            CSRF_COOKIE,
            csrf,
            max_age=self._settings.pending_login_ttl,
            path=self._path,
            httponly=True,
            secure=self._secure,
            samesite="strict",
        )
        return response

    async def _answer(self, request: Request) -> Response:
        form = await request.form()
        state = str(form.get("login", ""))
        submitted = str(form.get("csrf", ""))
        expected = request.cookies.get(CSRF_COOKIE, "")
        if not expected or not hmac.compare_digest(submitted, expected):
            logger.warning("consent form submitted without a matching CSRF token")
            return error_page("This form has expired. Go back and start the login again.", 403)

        pending = await self._provider.pending_login(state) if state else None
        if pending is None:
            return error_page("This login has expired or was already completed. Start the login again.", 400)

        if form.get("action") != "approve":
            target = await self._provider.deny_login(state)
            if target is None:
                return error_page("This login has expired or was already completed.", 400)
            return _redirect(target)

        logger.info("login %s: user approved client %s", log_id(state), pending["client_id"])
        response = await self._to_upstream(state, pending)
        response.set_cookie(
            APPROVALS_COOKIE,
            self._approvals.with_client(request.cookies.get(APPROVALS_COOKIE), pending["client_id"]),
            max_age=self._settings.consent_remember_days * 86400,
            path=self._path,
            httponly=True,
            secure=self._secure,
            samesite="lax",
        )
        response.delete_cookie(CSRF_COOKIE, path=self._path)
        return response

    async def _to_upstream(self, state: str, pending: dict[str, Any]) -> Response:
        try:
            return _redirect(await self._provider.upstream_redirect(state, pending))
        except UpstreamUnavailable:
            return error_page("The Fastn login service is unreachable right now. Try again in a minute.", 503)


def _redirect(url: str) -> RedirectResponse:
    # 303 turns the POST into a GET at the next location.
    return RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})


def _render(
    settings: FastnAuthSettings, client_name: str | None, pending: dict[str, Any], *, state: str, csrf: str, action: str
) -> str:
    target = urlsplit(pending["redirect_uri"])
    # A native app's private-use scheme names the app better than its host.
    redirect_host = target.netloc if target.scheme in ("http", "https") else f"{target.scheme}://{target.netloc}"
    name = html.escape(client_name or "An unnamed application")
    scopes = html.escape(" ".join(pending["scopes"]) or "(none)")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>Allow access?</title>
<style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem;color:#222}}
code{{background:#f2f2f2;padding:0 .25rem}}button{{font-size:1rem;padding:.5rem 1.25rem;margin-right:.5rem}}</style>
</head><body>
<h1>Allow access?</h1>
<p><strong id="client-name">{name}</strong> wants to use your Fastn account.</p>
<p>After you log in, you will be sent to <code id="redirect-host">{html.escape(redirect_host)}</code>.
Continue only if you started this login in that application.</p>
<p>Requested scopes: <code id="scopes">{scopes}</code></p>
<form method="post" action="{html.escape(action)}">
<input type="hidden" name="login" value="{html.escape(state)}">
<input type="hidden" name="csrf" value="{html.escape(csrf)}">
<button type="submit" name="action" value="approve" id="approve">Allow</button>
<button type="submit" name="action" value="deny" id="deny">Deny</button>
</form>
<p><small>Served by {html.escape(settings.our_issuer)}</small></p>
</body></html>"""
