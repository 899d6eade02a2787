"""Registered clients: secrets kept as hashes, and client authentication over them."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
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
    against the stored hash. Then the SDK's authenticator runs its usual
    checks (auth method, Basic header format, secret expiry) on a copy of the
    client, which carries the presented secret only when the hash matched.
    """

    def __init__(self, provider: Any) -> None:
        self._provider = provider

    async def authenticate_request(self, request: Request) -> OAuthClientInformationFull:
        presented = await _presented_secret(request)
        view = _CheckedClients(self._provider, presented)
        return await ClientAuthenticator(view).authenticate_request(request)


class _CheckedClients:
    def __init__(self, provider: Any, presented: str | None) -> None:
        self._provider = provider
        self._presented = presented

    async def get_client(self, client_id: str) -> OAuthClientInformationFull | None:
        client = await self._provider.get_client(client_id)
        if client is None or not client.client_secret or self._presented is None:
            return client
        if secret_matches(self._presented, client.client_secret):
            return client.model_copy(update={"client_secret": self._presented})
        return client


async def _presented_secret(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.startswith("Basic "):
        try:
            decoded = base64.b64decode(header[6:]).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None  # the SDK's authenticator rejects the header itself
        _, separator, secret = decoded.partition(":")
        return unquote(secret) if separator else None
    form = await request.form()
    secret = form.get("client_secret")
    return secret if isinstance(secret, str) else None
