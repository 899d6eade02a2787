"""Django settings for the fastn-asgi-auth example: no database, no sessions, JSON views only."""

from __future__ import annotations

import os

# Development default only: set DJANGO_SECRET_KEY to a long random value in any real deployment.
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "development-only-insecure-key-change-me")

DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

# The views read identity from the ASGI scope, which FastnAuthMiddleware fills,
# so no Django app, database or authentication backend is needed.
INSTALLED_APPS: list[str] = []
DATABASES: dict[str, dict[str, str]] = {}
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
]

ROOT_URLCONF = "fastn_site.urls"
ASGI_APPLICATION = "fastn_site.asgi.application"

USE_TZ = True
# Django also sets the process's TZ variable from this when it loads the settings.
TIME_ZONE = "UTC"
