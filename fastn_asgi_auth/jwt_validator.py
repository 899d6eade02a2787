"""Validation of upstream (Keycloak) JWT access tokens."""

from __future__ import annotations

import logging
from typing import Any

import jwt

from fastn_asgi_auth.errors import InvalidToken
from fastn_asgi_auth.jwks import JwksCache
from fastn_asgi_auth.settings import FastnAuthSettings

logger = logging.getLogger("fastn_asgi_auth.jwt")


class NotAnAccessToken(Exception):
    """The token is JWT-shaped but is not a JWT access token of this realm.

    Keycloak's own refresh tokens are HS512-signed JWTs; they land here and the
    chain goes on to the refresh-token step instead of rejecting them.
    """


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and all(token.split("."))


class JwtValidator:
    def __init__(self, settings: FastnAuthSettings, jwks: JwksCache) -> None:
        self._settings = settings
        self._jwks = jwks
        self._algorithms = frozenset(settings.jwt_algorithms)

    async def validate(self, token: str, *, check_audience: bool = True) -> dict[str, Any]:
        """Return the verified claims of an upstream JWT access token.

        Raises NotAnAccessToken when another chain step should look at the
        token, InvalidToken when it is an access token that fails a check, and
        UpstreamUnavailable when the realm's keys cannot be fetched.
        """
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError as exc:
            raise NotAnAccessToken("undecodable JWT header") from exc

        algorithm = header.get("alg")
        if algorithm not in self._algorithms:
            # "none" and HS* land here: never verified, never accepted as access tokens.
            raise NotAnAccessToken(f"algorithm {algorithm!r} is not accepted for access tokens")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise InvalidToken("token has no key id")

        try:
            key = await self._jwks.key(kid, algorithm)
        except jwt.PyJWTError as exc:
            logger.warning("JWT rejected: key id %r does not fit algorithm %s (%s)", kid, algorithm, exc)
            raise InvalidToken("token algorithm does not match its key") from None
        if key is None:
            logger.warning("JWT rejected: key id %r is not published by the realm", kid)
            raise InvalidToken("token signed by an unknown key")

        audience = self._settings.audience if check_audience else None
        options: dict[str, Any] = {"require": ["exp", "iat", "iss"], "verify_aud": audience is not None}
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[algorithm],
                issuer=self._settings.upstream_issuer,
                audience=audience,
                leeway=self._settings.jwt_leeway,
                options=options,
            )
        except jwt.ExpiredSignatureError:
            logger.info("JWT rejected: expired")
            raise InvalidToken("token expired") from None
        except jwt.InvalidSignatureError:
            logger.warning("JWT rejected: bad signature (key id %r)", kid)
            raise InvalidToken("token signature is invalid") from None
        except jwt.InvalidIssuerError:
            logger.warning("JWT rejected: issuer is not %s", self._settings.upstream_issuer)
            raise InvalidToken("token issued by another realm") from None
        except jwt.InvalidAudienceError:
            logger.info("JWT rejected: audience is not %s", self._settings.audience)
            raise InvalidToken("token issued for another audience") from None
        except jwt.InvalidTokenError as exc:
            logger.info("JWT rejected: %s", exc)
            raise InvalidToken("token is invalid") from None

        _check_token_type(header, claims)
        return claims


def _check_token_type(header: dict[str, Any], claims: dict[str, Any]) -> None:
    # Keycloak marks access tokens with typ "Bearer" in the payload; ID tokens
    # carry "ID" and must not be accepted as access tokens. RFC 9068 access
    # tokens mark themselves in the header instead.
    payload_type = claims.get("typ")
    if payload_type is None:
        if str(header.get("typ", "")).lower() in ("at+jwt", "application/at+jwt"):
            return
        raise InvalidToken("token is not marked as an access token")
    if str(payload_type).lower() != "bearer":
        logger.warning("JWT rejected: typ %r is not an access token", payload_type)
        raise InvalidToken("token is not an access token")
