"""The FastAPI and Django examples over real HTTP, against the test realm.

Each example runs under uvicorn on a loopback port, with /api as its protected
resource. ``GET /api/me`` is called without a token and with a realm JWT, a
realm refresh token, an API key and a junk token.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from starlette.types import ASGIApp

from examples.fastapi_app import build_app as build_fastapi_app
from fastn_asgi_auth import FastnAuthSettings
from tests.support.realm import HTTP_TIMEOUT_SECONDS, login_tokens
from tests.support.servers import serve

pytestmark = pytest.mark.integration

DJANGO_PROJECT_DIR = Path(__file__).resolve().parents[2] / "examples" / "django_app"
EXAMPLES = ("fastapi", "django")


def example_settings(issuer: str, base_url: str) -> FastnAuthSettings:
    return FastnAuthSettings(issuer=issuer, base_url=base_url, resource_paths=("/api",))


def sha256_prefix(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:12]


def build_django_app(settings: FastnAuthSettings) -> ASGIApp:
    # The project is imported as fastn_site, as `python run.py` and uvicorn
    # import it. The context restores sys.path, DJANGO_SETTINGS_MODULE and TZ,
    # which Django sets from TIME_ZONE when it loads its settings.
    # NOTE: django.conf.settings stays configured for the rest of the test
    # process, because Django has no supported way to unconfigure it.
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(DJANGO_PROJECT_DIR))
        patch.setenv("DJANGO_SETTINGS_MODULE", "fastn_site.settings")
        patch.setenv("TZ", "UTC")
        from fastn_site.asgi import build_application

        application = build_application(settings)
    time.tzset()
    return application


def app_builder(example: str, issuer: str) -> Callable[[str], ASGIApp]:
    if example == "fastapi":
        return lambda base_url: build_fastapi_app(example_settings(issuer, base_url))
    return lambda base_url: build_django_app(example_settings(issuer, base_url))


@pytest.fixture(scope="module", params=EXAMPLES)
def server_url(request: pytest.FixtureRequest, realm) -> Iterator[str]:
    # Django's ASGI handler does not speak the lifespan protocol.
    lifespan = "off" if request.param == "django" else "on"
    with serve(app_builder(request.param, realm.issuer), lifespan=lifespan) as server:
        yield server.url


def get_me(server_url: str, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.get(f"{server_url}/api/me", headers=headers, timeout=HTTP_TIMEOUT_SECONDS)


def test_health_without_token(server_url):
    response = httpx.get(f"{server_url}/health", timeout=HTTP_TIMEOUT_SECONDS)

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_me_without_token(server_url):
    response = get_me(server_url, None)

    assert response.status_code == 401
    challenge = response.headers.get("www-authenticate", "")
    assert challenge.startswith("Bearer ")
    assert f'resource_metadata="{server_url}/.well-known/oauth-protected-resource/api"' in challenge
    assert "error=" not in challenge


def test_me_with_realm_jwt(server_url, realm):
    access_token = login_tokens(realm.issuer)["access_token"]
    claims = jwt.decode(access_token, options={"verify_signature": False})

    response = get_me(server_url, access_token)

    assert response.status_code == 200
    body = response.json()
    assert body["sub"] == claims["sub"]
    assert body["client_id"] == "fastn-sdk"
    assert body["method"] == "jwt"
    assert body["has_fastn_token"] is True
    assert body["fastn_token_sha256_prefix"] == sha256_prefix(access_token)


def test_me_with_refresh_token(server_url, realm):
    # The realm rotates refresh tokens, so each example needs its own login.
    tokens = login_tokens(realm.issuer)
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})

    response = get_me(server_url, tokens["refresh_token"])

    assert response.status_code == 200
    body = response.json()
    assert body["sub"] == claims["sub"]
    assert body["method"] == "refresh_token"
    assert body["has_fastn_token"] is True
    assert body["fastn_token_sha256_prefix"] != sha256_prefix(tokens["refresh_token"])
    assert body["fastn_token_sha256_prefix"] != sha256_prefix(tokens["access_token"])


def test_me_with_junk_token(server_url):
    response = get_me(server_url, "not-a-token")

    assert response.status_code == 401
    challenge = response.headers.get("www-authenticate", "")
    assert challenge.startswith("Bearer ")
    assert 'error="invalid_token"' in challenge


def test_me_with_api_key(server_url):
    api_key = secrets.token_hex(16)

    response = get_me(server_url, api_key)

    assert response.status_code == 200
    body = response.json()
    assert body["method"] == "api_key"
    assert body["has_fastn_token"] is True
    # Without an api_key_validator the key is accepted provisionally and
    # passed on unchanged, for the Fastn API to check.
    assert body["fastn_token_sha256_prefix"] == sha256_prefix(api_key)
