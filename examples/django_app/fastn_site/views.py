"""JSON views that read the caller's identity from the ASGI scope."""

from __future__ import annotations

import hashlib

from django.http import HttpRequest, JsonResponse


def health(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def me(request: HttpRequest) -> JsonResponse:
    """Return who called and how the middleware recognised the token.

    The response carries the first 12 hex digits of the upstream access
    token's SHA-256, never the token itself.
    """
    # Django's ASGIRequest keeps the scope that FastnAuthMiddleware passed on.
    auth = request.scope["fastn_auth"]
    fastn_token = request.scope.get("fastn_token")
    token_prefix = hashlib.sha256(fastn_token.encode()).hexdigest()[:12] if fastn_token else None
    return JsonResponse(
        {
            "sub": auth.subject,
            "client_id": auth.client_id,
            "method": auth.method,
            "scopes": list(auth.scopes),
            "has_fastn_token": bool(fastn_token),
            "fastn_token_sha256_prefix": token_prefix,
        }
    )
