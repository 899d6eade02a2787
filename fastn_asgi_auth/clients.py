"""Registered clients: secrets kept as hashes, and client authentication over them."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from typing import Any, Final
from urllib.parse import unquote

from mcp.server.auth.middleware.client_auth import ClientAuthenticator
from mcp.shared.auth import OAuthClientInformationFull
from starlette.requests import Request

SECRET_HASH_PREFIX: Final = "sha256:"


def hash_client_secret(secret: str) -> str:
    # mcp 2.3's registration handler issues secrets.token_hex(32), 256 random
    # bits, so a plain SHA-256 cannot be reversed by guessing and needs no
    # slow password hash.
    return SECRET_HASH_PREFIX + hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(presented: str, stored: str) -> bool:
    if not stored.startswith(SECRET_HASH_PREFIX):
        # A record written before secrets were hashed.
        return hmac.compare_digest(presented.encode(), stored.encode())
    return hmac.compare_digest(hash_client_secret(presented).encode(), stored.encode())


def storable_client(client: OAuthClientInformationFull) -> dict[str, Any]:
    """Return the client's record for the store, with its secret replaced by a hash."""
    record = client.model_dump(mode="json", exclude_none=True)
    if client.client_secret:
        record["client_secret"] = hash_client_secret(client.client_secret)
    return record


class HashedSecretAuthenticator:
    """Client authentication at /token and /revoke against hashed secrets.

    The SDK's ClientAuthenticator compares the presented secret with the
    stored one as plain text. This class first checks the presented secret
    against the stored hash, taking it from the place that the client's
    registered auth method names (Basic header or form), as the SDK does. Then the SDK's
    authenticator runs its usual checks (auth method, Basic header format,
    secret expiry) on a copy of the client. That copy carries the presented
    secret when the hash matched, and a random value otherwise, so the stored
    hash can never serve as the secret.
    """

    def __init__(self, provider: Any) -> None:
        self._provider = provider

    async def authenticate_request(self, request: Request) -> OAuthClientInformationFull:
        view = _CheckedClients(self._provider, _basic_secret(request), await _form_secret(request))
        return await ClientAuthenticator(view).authenticate_request(request)


class _CheckedClients:
    def __init__(self, provider: Any, basic_secret: str | None, form_secret: str | None) -> None:
        self._provider = provider
        self._basic_secret = basic_secret
        self._form_secret = form_secret

    async def get_client(self, client_id: str) -> OAuthClientInformationFull | None:
        client = await self._provider.get_client(client_id)
        if client is None or not client.client_secret:
            return client
        if client.token_endpoint_auth_method == "client_secret_basic":
            presented = self._basic_secret
        else:
            presented = self._form_secret
        if presented is not None and secret_matches(presented, client.client_secret):
            return client.model_copy(update={"client_secret": presented})
        return client.model_copy(update={"client_secret": secrets.token_hex(32)})


def _basic_secret(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if not header.startswith("Basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:]).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None  # the SDK's authenticator rejects the header itself
    _, separator, secret = decoded.partition(":")
    return unquote(secret) if separator else None


async def _form_secret(request: Request) -> str | None:
    form = await request.form()
    secret = form.get("client_secret")
    return secret if isinstance(secret, str) else None
