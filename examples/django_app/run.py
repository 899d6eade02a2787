"""Serve the Django example behind fastn-asgi-auth with uvicorn.

Run it with the FASTN_AUTH_* environment variables set (see the README):

    python examples/django_app/run.py --host 127.0.0.1 --port 8001

``GET /health`` needs no token. ``GET /api/me`` needs a bearer token.
"""

from __future__ import annotations

import argparse
import logging
import os


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="Django project behind fastn-asgi-auth")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8001, help="TCP port (default 8001)")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # fastn_site.asgi builds its settings from the environment when uvicorn imports it.
    os.environ.setdefault("FASTN_AUTH_BASE_URL", f"http://{args.host}:{args.port}")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fastn_site.settings")
    # Django 5.2's ASGI handler raises on lifespan events, so uvicorn runs with lifespan off.
    uvicorn.run("fastn_site.asgi:application", host=args.host, port=args.port, lifespan="off")


if __name__ == "__main__":
    main()
