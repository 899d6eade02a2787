"""An MCP server (streamable HTTP at /mcp) behind fastn-asgi-auth.

Run it with the FASTN_AUTH_* environment variables set (see the README):

    python examples/mcp_server.py --host 127.0.0.1 --port 8000

The tool ``whoami`` returns the ``sub`` and ``exp`` of the upstream (Keycloak)
access token that the handler received in ``scope["fastn_token"]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from typing import Any

import jwt
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.mcpserver import Context, MCPServer
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp

from fastn_asgi_auth import FastnAuthMiddleware, FastnAuthSettings


def build_server() -> MCPServer:
    server = MCPServer("fastn-example")

    @server.tool()
    async def whoami(ctx: Context) -> str:
        """Return the subject and expiry of the caller's Fastn access token."""
        request = ctx.request_context.request
        fastn_token = request.scope["fastn_token"]
        # The middleware verified the token; this only reads two claims to show them.
        claims: dict[str, Any] = jwt.decode(fastn_token, options={"verify_signature": False})
        auth = request.scope["fastn_auth"]
        # The MCP SDK's own accessor returns the same upstream token.
        sdk_token = get_access_token()
        return json.dumps(
            {
                "sub": claims.get("sub"),
                "exp": claims.get("exp"),
                "client_id": auth.client_id,
                "method": auth.method,
                "sdk_token_matches": sdk_token is not None and sdk_token.token == fastn_token,
            }
        )

    return server


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


def build_app(settings: FastnAuthSettings | None = None, *, host: str = "127.0.0.1") -> ASGIApp:
    settings = settings if settings is not None else FastnAuthSettings.from_env()
    server = build_server()
    # /health is one of the default public paths, so it needs no token.
    server.custom_route("/health", methods=["GET"])(health)
    mcp_app = server.streamable_http_app(streamable_http_path="/mcp", host=host)
    return FastnAuthMiddleware(mcp_app, settings=settings)


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="MCP server behind fastn-asgi-auth")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = FastnAuthSettings.from_env()
    if "FASTN_AUTH_BASE_URL" not in os.environ:
        settings = settings.replace(base_url=f"http://{args.host}:{args.port}")
    uvicorn.run(build_app(settings, host=args.host), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
