"""The ASGI entry point: Django behind FastnAuthMiddleware.

Serve it with any ASGI server from examples/django_app, for example

    uvicorn fastn_site.asgi:application --host 127.0.0.1 --port 8001

or with ``python run.py``, which also sets the base URL from --host and --port.
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application
from starlette.types import ASGIApp

from fastn_asgi_auth import FastnAuthMiddleware, FastnAuthSettings

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fastn_site.settings")

# The protected resource of this project, unless FASTN_AUTH_RESOURCE_PATHS names others.
DEFAULT_RESOURCE_PATHS = "/api"


def settings_from_env() -> FastnAuthSettings:
    """Read the FASTN_AUTH_* variables, with /api as the default resource path."""
    environ = {"FASTN_AUTH_RESOURCE_PATHS": DEFAULT_RESOURCE_PATHS, **os.environ}
    return FastnAuthSettings.from_env(environ)


def build_application(settings: FastnAuthSettings | None = None) -> ASGIApp:
    """Wrap Django's ASGI handler in FastnAuthMiddleware, with settings from the environment unless given."""
    settings = settings if settings is not None else settings_from_env()
    return FastnAuthMiddleware(get_asgi_application(), settings=settings)


application = build_application()
