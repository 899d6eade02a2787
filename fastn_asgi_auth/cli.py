"""The ``fastn-auth`` command: check a configuration before deploying it."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

import httpx

from fastn_asgi_auth.errors import UpstreamUnavailable
from fastn_asgi_auth.jwks import JwksCache
from fastn_asgi_auth.keycloak import UpstreamClient
from fastn_asgi_auth.routes import authorization_server_metadata_path, protected_resource_metadata_url
from fastn_asgi_auth.settings import ConfigurationError, FastnAuthSettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fastn-auth", description="fastn-asgi-auth tools")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "check",
        help="validate the FASTN_AUTH_* settings and reach the upstream realm",
        description="Validate the FASTN_AUTH_* environment settings, print the URLs clients will see, and fetch"
        " the upstream realm's discovery document and signing keys. Exit status: 0 ready, 1 invalid"
        " settings, 2 realm unreachable.",
    )
    args = parser.parse_args(argv)
    # The command prints its own findings; library warnings would repeat them.
    logging.basicConfig(level=logging.ERROR)
    if args.command == "check":
        return check()
    return 1


def check() -> int:
    try:
        settings = FastnAuthSettings.from_env()
    except ConfigurationError as exc:
        print(f"invalid settings: {exc}", file=sys.stderr)
        return 1

    source = "FASTN_AUTH_BASE_URL" if "FASTN_AUTH_BASE_URL" in os.environ else "the default; set FASTN_AUTH_BASE_URL"
    print(f"public base URL: {settings.public_base_url} (from {source})")
    print(f"authorization server issuer: {settings.our_issuer}")
    print(f"  metadata: {settings.public_base_url}{authorization_server_metadata_path(settings)}")
    for path in settings.resource_paths:
        print(f"protected resource: {settings.resource_url(path)}")
        print(f"  metadata: {protected_resource_metadata_url(settings, path)}")
    print(f"upstream callback (register it at the realm's client {settings.client_id}): {settings.callback_url}")
    print(f"upstream realm: {settings.upstream_issuer}")
    return asyncio.run(_reach_realm(settings))


async def _reach_realm(settings: FastnAuthSettings) -> int:
    async with httpx.AsyncClient(timeout=settings.http_timeout) as http:
        upstream = UpstreamClient(settings, http)
        endpoints = await upstream.endpoints()
        print(f"  authorization endpoint: {endpoints.authorization_endpoint}")
        print(f"  token endpoint: {endpoints.token_endpoint}")
        keys = JwksCache(http, lambda: _jwks_uri(upstream))
        try:
            # Any kid: a miss still fetches the whole key set, which is what is checked.
            await keys.key("fastn-auth-check", "RS256")
        except UpstreamUnavailable as exc:
            print(
                f"  signing keys: unreachable ({exc}). Check FASTN_AUTH_ISSUER and that this machine can reach"
                f" {endpoints.jwks_uri}.",
                file=sys.stderr,
            )
            return 2
        print(f"  signing keys: {keys.key_count} published at {endpoints.jwks_uri}")
    return 0


async def _jwks_uri(upstream: UpstreamClient) -> str:
    return (await upstream.endpoints()).jwks_uri


if __name__ == "__main__":
    sys.exit(main())
