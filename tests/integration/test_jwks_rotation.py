"""Key rotation at a JWKS endpoint served over real HTTP on loopback."""

from __future__ import annotations

import time

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from fastn_asgi_auth import jwks as jwks_module
from fastn_asgi_auth.errors import InvalidToken, UpstreamUnavailable
from fastn_asgi_auth.jwks import JwksCache
from fastn_asgi_auth.jwt_validator import JwtValidator
from fastn_asgi_auth.settings import FastnAuthSettings
from tests.support.servers import serve

pytestmark = pytest.mark.integration

ISSUER = "http://127.0.0.1:9/realms/fastn"


class SigningKey:
    def __init__(self, kid: str) -> None:
        self.kid = kid
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwk(self) -> dict:
        public = jwt.algorithms.RSAAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        return {**public, "kid": self.kid, "use": "sig", "alg": "RS256"}

    def token(self) -> str:
        now = int(time.time())
        claims = {"iss": ISSUER, "sub": "alice", "typ": "Bearer", "azp": "fastn-sdk", "iat": now, "exp": now + 300}
        return jwt.encode(claims, self.private, algorithm="RS256", headers={"kid": self.kid})


class Clock:
    """A monotonic clock that the test can move forward, so the refetch floor passes without sleeping."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.perf_counter() + self.offset


@pytest.fixture
def published():
    return {"keys": []}


@pytest.fixture
def jwks_url(published):
    async def certs(request: Request) -> JSONResponse:
        return JSONResponse(published)

    with serve(lambda base_url: Starlette(routes=[Route("/certs", certs)])) as server:
        yield server.url + "/certs"


async def test_rotated_key_accepted_after_refetch_floor(published, jwks_url):
    clock = Clock()
    old_key, new_key = SigningKey("old"), SigningKey("new")
    published["keys"] = [old_key.jwk()]

    async with httpx.AsyncClient() as http:
        validator = JwtValidator(FastnAuthSettings(issuer=ISSUER), JwksCache(http, _constant(jwks_url), clock=clock))
        assert (await validator.validate(old_key.token()))["sub"] == "alice"

        published["keys"] = [old_key.jwk(), new_key.jwk()]
        # Within the refetch floor the new key cannot be checked yet: 503, not 401.
        with pytest.raises(UpstreamUnavailable) as unavailable:
            await validator.validate(new_key.token())
        assert 1 <= unavailable.value.retry_after <= jwks_module.MIN_REFETCH_SECONDS

        clock.offset += jwks_module.MIN_REFETCH_SECONDS
        assert (await validator.validate(new_key.token()))["sub"] == "alice"


async def test_unlisted_key_rejected_after_refetch(published, jwks_url):
    clock = Clock()
    published["keys"] = [SigningKey("listed").jwk()]
    stranger = SigningKey("never-published")

    async with httpx.AsyncClient() as http:
        validator = JwtValidator(FastnAuthSettings(issuer=ISSUER), JwksCache(http, _constant(jwks_url), clock=clock))
        with pytest.raises(InvalidToken):
            await validator.validate(stranger.token())
        # The fetch was made for this kid, so asking again is a plain 401 too.
        with pytest.raises(InvalidToken):
            await validator.validate(stranger.token())


def _constant(url: str):
    async def jwks_uri() -> str:
        return url

    return jwks_uri


async def test_unknown_kid_stays_rejected(published, jwks_url):
    clock = Clock()
    published["keys"] = [SigningKey("listed").jwk()]
    stranger, other = SigningKey("stranger"), SigningKey("other-stranger")

    async with httpx.AsyncClient() as http:
        validator = JwtValidator(FastnAuthSettings(issuer=ISSUER), JwksCache(http, _constant(jwks_url), clock=clock))
        with pytest.raises(InvalidToken):
            await validator.validate(stranger.token())
        clock.offset += jwks_module.MIN_REFETCH_SECONDS
        with pytest.raises(InvalidToken):
            await validator.validate(other.token())
        # Inside the floor of the fetch made for the other kid, the first one
        # is still a plain 401: a fetch after it first appeared did not list it.
        with pytest.raises(InvalidToken):
            await validator.validate(stranger.token())


async def test_late_published_key_accepted(published, jwks_url):
    clock = Clock()
    late = SigningKey("late")
    published["keys"] = [SigningKey("listed").jwk()]

    async with httpx.AsyncClient() as http:
        validator = JwtValidator(FastnAuthSettings(issuer=ISSUER), JwksCache(http, _constant(jwks_url), clock=clock))
        with pytest.raises(InvalidToken):
            await validator.validate(late.token())
        # A cache in front of the realm caught up with the rotation.
        published["keys"].append(late.jwk())
        clock.offset += jwks_module.MIN_REFETCH_SECONDS
        assert (await validator.validate(late.token()))["sub"] == "alice"
