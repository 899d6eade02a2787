"""Small ASGI endpoints that report what the middleware attached to the scope."""

from __future__ import annotations

import hashlib

from starlette.requests import Request
from starlette.responses import JSONResponse


async def whoami(request: Request) -> JSONResponse:
    """Return the caller's identity and a hash of scope["fastn_token"], never the token itself."""
    auth = request.scope["fastn_auth"]
    token = request.scope["fastn_token"]
    return JSONResponse(
        {
            "method": auth.method,
            "sub": auth.subject,
            "client_id": auth.client_id,
            "scopes": list(auth.scopes),
            "fastn_token_sha256": hashlib.sha256(token.encode()).hexdigest(),
            "fastn_token_is_jwt": token.count(".") == 2,
            "user": request.user.display_name,
        }
    )
