"""A FastAPI application whose API under /api sits behind fastn-asgi-auth.

Run it with the FASTN_AUTH_* environment variables set (see the README):

    python examples/fastapi_app.py --host 127.0.0.1 --port 8000

``GET /health`` needs no token. ``GET /api/me`` needs a bearer token and
returns who called, how the middleware recognised the token, and the first 12
hex digits of the SHA-256 of the upstream access token in
``scope["fastn_token"]``, so that the token itself never leaves the server.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request

from fastn_asgi_auth import FastnAuth, FastnAuthMiddleware, FastnAuthSettings

# The protected resource of this application, unless FASTN_AUTH_RESOURCE_PATHS names others.
DEFAULT_RESOURCE_PATHS = "/api"


def settings_from_env() -> FastnAuthSettings:
    """Read the FASTN_AUTH_* variables, with /api as the default resource path."""
    environ = {"FASTN_AUTH_RESOURCE_PATHS": DEFAULT_RESOURCE_PATHS, **os.environ}
    return FastnAuthSettings.from_env(environ)


def current_auth(request: Request) -> FastnAuth:
    """Return the identity that FastnAuthMiddleware attached to the request (a FastAPI dependency)."""
    return request.scope["fastn_auth"]


def describe_caller(auth: FastnAuth, fastn_token: str | None) -> dict[str, Any]:
    """Summarise the caller without exposing the upstream access token."""
    token_prefix = hashlib.sha256(fastn_token.encode()).hexdigest()[:12] if fastn_token else None
    return {
        "sub": auth.subject,
        "client_id": auth.client_id,
        "method": auth.method,
        "scopes": list(auth.scopes),
        "has_fastn_token": bool(fastn_token),
        "fastn_token_sha256_prefix": token_prefix,
    }


def build_app(settings: FastnAuthSettings | None = None) -> FastAPI:
    app = FastAPI(title="fastn-asgi-auth FastAPI example")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/me")
    async def me(request: Request, auth: Annotated[FastnAuth, Depends(current_auth)]) -> dict[str, Any]:
        return describe_caller(auth, request.scope.get("fastn_token"))

    app.add_middleware(FastnAuthMiddleware, settings=settings if settings is not None else settings_from_env())
    return app


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="FastAPI application behind fastn-asgi-auth")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = settings_from_env()
    if "FASTN_AUTH_BASE_URL" not in os.environ:
        settings = settings.replace(base_url=f"http://{args.host}:{args.port}")
    uvicorn.run(build_app(settings), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
