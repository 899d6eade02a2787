"""Upstream client: discovery, the authorize URL, code and refresh grants.

Keycloak is the reference upstream, but any OpenID provider that publishes
discovery metadata works. Discovery is fetched on first need, not at start-up,
so an unreachable realm never stops the server from starting.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlencode

import httpx

from fastn_asgi_auth.errors import UpstreamRejected, UpstreamUnavailable
from fastn_asgi_auth.settings import FastnAuthSettings

logger = logging.getLogger("fastn_asgi_auth.upstream")

DISCOVERY_TTL_SECONDS: Final = 3600
# After a failed discovery, the Keycloak layout is used and discovery is tried
# again after this long.
DISCOVERY_RETRY_SECONDS: Final = 60
# Keycloak access tokens live 5 minutes by default; used when a token
# response leaves out expires_in.
DEFAULT_UPSTREAM_TOKEN_SECONDS: Final = 300


# RFC 6749 §5.2 error codes: only these mean the realm judged the grant.
OAUTH_TOKEN_ERRORS: Final = frozenset(
    {
        "invalid_request",
        "invalid_client",
        "invalid_grant",
        "unauthorized_client",
        "unsupported_grant_type",
        "invalid_scope",
    }
)


@dataclass(frozen=True)
class Endpoints:
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    revocation_endpoint: str | None = None


@dataclass(frozen=True)
class UpstreamTokens:
    access_token: str
    refresh_token: str | None
    expires_at: int
    refresh_expires_at: int | None
    id_token: str | None = None


def keycloak_layout(issuer: str) -> Endpoints:
    base = issuer.rstrip("/") + "/protocol/openid-connect"
    return Endpoints(
        authorization_endpoint=base + "/auth",
        token_endpoint=base + "/token",
        jwks_uri=base + "/certs",
        revocation_endpoint=base + "/revoke",
    )


class UpstreamClient:
    """Talks to the upstream realm over one shared httpx client."""

    def __init__(self, settings: FastnAuthSettings, http: httpx.AsyncClient) -> None:
        self._settings = settings
        self._http = http
        self._endpoints: Endpoints | None = None
        self._endpoints_expire_at = 0.0
        self._discovery_lock = asyncio.Lock()

    @property
    def http(self) -> httpx.AsyncClient:
        return self._http

    async def endpoints(self) -> Endpoints:
        if self._endpoints is not None and time.monotonic() < self._endpoints_expire_at:
            return self._endpoints
        async with self._discovery_lock:
            if self._endpoints is not None and time.monotonic() < self._endpoints_expire_at:
                return self._endpoints
            self._endpoints, lifetime = await self._discover()
            self._endpoints_expire_at = time.monotonic() + lifetime
            return self._endpoints

    async def _discover(self) -> tuple[Endpoints, float]:
        issuer = self._settings.upstream_issuer
        url = issuer + "/.well-known/openid-configuration"
        try:
            response = await self._http.get(url)
            response.raise_for_status()
            document = response.json()
            if not isinstance(document, dict):
                raise ValueError("discovery document is not a JSON object")
            if document.get("issuer") != issuer:
                # OpenID Connect Discovery §4.3: the document must name the
                # issuer it was fetched for, or it belongs to someone else.
                logger.error(
                    "upstream discovery at %s names issuer %r, expected %r; using the Keycloak layout",
                    url,
                    document.get("issuer"),
                    issuer,
                )
                return keycloak_layout(issuer), DISCOVERY_RETRY_SECONDS
            endpoints = Endpoints(
                authorization_endpoint=document["authorization_endpoint"],
                token_endpoint=document["token_endpoint"],
                jwks_uri=document["jwks_uri"],
                revocation_endpoint=document.get("revocation_endpoint"),
            )
            logger.info("upstream discovery loaded from %s", url)
            return endpoints, DISCOVERY_TTL_SECONDS
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            logger.warning(
                "upstream discovery at %s failed (%s); using the Keycloak layout and retrying in %ds",
                url,
                type(exc).__name__,
                DISCOVERY_RETRY_SECONDS,
            )
            return keycloak_layout(issuer), DISCOVERY_RETRY_SECONDS

    async def authorize_url(self, *, state: str, code_challenge: str) -> str:
        endpoints = await self.endpoints()
        query = urlencode(
            {
                "client_id": self._settings.client_id,
                "response_type": "code",
                "redirect_uri": self._settings.callback_url,
                "scope": " ".join(self._settings.upstream_scopes),
                "state": state,
                "code_challenge": code_challenge,
                "code_challenge_method": "S256",
            }
        )
        separator = "&" if "?" in endpoints.authorization_endpoint else "?"
        return endpoints.authorization_endpoint + separator + query

    async def exchange_code(self, *, code: str, code_verifier: str) -> UpstreamTokens:
        return await self._token_request(
            {
                "grant_type": "authorization_code",
                "client_id": self._settings.client_id,
                "code": code,
                "redirect_uri": self._settings.callback_url,
                "code_verifier": code_verifier,
            }
        )

    async def refresh(self, refresh_token: str, *, client_id: str) -> UpstreamTokens:
        return await self._token_request(
            {"grant_type": "refresh_token", "client_id": client_id, "refresh_token": refresh_token}
        )

    async def revoke(self, refresh_token: str, *, client_id: str) -> None:
        """Best-effort revocation of an upstream refresh token (RFC 7009)."""
        endpoints = await self.endpoints()
        if not endpoints.revocation_endpoint:
            return
        try:
            response = await self._http.post(
                endpoints.revocation_endpoint,
                data={"token": refresh_token, "token_type_hint": "refresh_token", "client_id": client_id},
            )
            if response.status_code >= 400:
                logger.info("upstream revocation returned HTTP %d", response.status_code)
        except httpx.HTTPError as exc:
            logger.info("upstream revocation failed (%s); the upstream session ends at its own expiry", exc)

    async def _token_request(self, form: dict[str, str]) -> UpstreamTokens:
        endpoints = await self.endpoints()
        grant = form["grant_type"]
        try:
            response = await self._http.post(endpoints.token_endpoint, data=form)
        except httpx.HTTPError as exc:
            logger.warning("upstream %s grant failed: %s (%s)", grant, type(exc).__name__, exc)
            raise UpstreamUnavailable(f"upstream token endpoint unreachable ({type(exc).__name__})") from exc

        body = _json_object(response)
        if response.status_code != 200:
            error = body.get("error")
            if response.status_code in (400, 401) and error in OAUTH_TOKEN_ERRORS:
                description = body.get("error_description")
                raise UpstreamRejected(str(error), str(description) if description else None)
            # 5xx, 408, 429, a proxy's 403 or 404, or a body without an RFC
            # 6749 §5.2 error: the grant was not judged, so nothing is lost.
            logger.warning("upstream %s grant returned HTTP %d (%s)", grant, response.status_code, error or "no error")
            retry_after = _retry_after(response)
            raise UpstreamUnavailable(
                f"upstream token endpoint returned HTTP {response.status_code}", retry_after=retry_after
            )

        access_token = body.get("access_token")
        if not isinstance(access_token, str) or not access_token:
            logger.error("upstream %s grant returned no access_token", grant)
            raise UpstreamUnavailable("upstream token response has no access_token")
        now = int(time.time())
        expires_in = _positive_int(body.get("expires_in")) or DEFAULT_UPSTREAM_TOKEN_SECONDS
        refresh_expires_in = _positive_int(body.get("refresh_expires_in"))
        refresh_token = body.get("refresh_token")
        id_token = body.get("id_token")
        return UpstreamTokens(
            access_token=access_token,
            refresh_token=refresh_token if isinstance(refresh_token, str) and refresh_token else None,
            expires_at=now + expires_in,
            refresh_expires_at=now + refresh_expires_in if refresh_expires_in else None,
            id_token=id_token if isinstance(id_token, str) else None,
        )


def _retry_after(response: httpx.Response) -> int:
    value = response.headers.get("retry-after", "")
    return min(int(value), 300) if value.isdigit() else 5


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _positive_int(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return int(value) if value > 0 else None
