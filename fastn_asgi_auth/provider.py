"""The MCP SDK's authorization-server provider, proxying logins to the upstream realm.

Flow: the SDK's /authorize handler calls ``authorize``, which stores a pending
login and sends the browser to the upstream realm with our own PKCE pair. The
realm redirects to our callback, ``complete_login`` exchanges the upstream code,
opens a grant and redirects to the client with our authorization code. The
SDK's /token handler then calls ``exchange_authorization_code`` and
``exchange_refresh_token``; /revoke calls ``revoke_token``.

Store keys (every token appears only as its SHA-256 hash):

  client:<client_id>            registered client metadata
  login:<hash(upstream state)>  pending login, sealed under the state, single use
  code:<hash(code)>             our authorization code, single use
  access:<hash(token)>          our access token
  refresh:<hash(token)>         our refresh token, single use (rotation)
  used_code:<hash(code)>        marks a redeemed code, for replay detection
  used_refresh:<hash(token)>    marks a rotated refresh token, for reuse detection
  grant:<grant_id>              upstream tokens of one login (see grants.py)
"""

from __future__ import annotations

import logging
import time
from typing import Any, Final
from urllib.parse import urlencode

from mcp.server.auth.provider import (
    AccessToken,
    AuthorizationCode,
    AuthorizationParams,
    AuthorizeError,
    RefreshToken,
    RegistrationError,
    TokenError,
    construct_redirect_uri,
)
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken

from fastn_asgi_auth.clients import storable_client
from fastn_asgi_auth.crypto import (
    SealError,
    derive_key,
    log_id,
    new_key,
    new_token,
    open_json,
    seal_json,
    token_hash,
    unwrap_key,
    wrap_key,
)
from fastn_asgi_auth.errors import InvalidToken, UpstreamRejected, UpstreamUnavailable
from fastn_asgi_auth.grants import GrantBook
from fastn_asgi_auth.jwt_validator import JwtValidator, NotAnAccessToken
from fastn_asgi_auth.keycloak import UpstreamClient
from fastn_asgi_auth.locks import refresh_time_bound
from fastn_asgi_auth.pkce import new_pkce_pair, s256_challenge
from fastn_asgi_auth.redirects import RegisteredClient, redirect_uri_problem
from fastn_asgi_auth.settings import FastnAuthSettings
from fastn_asgi_auth.storage.base import Store

logger = logging.getLogger("fastn_asgi_auth.provider")

# Our tokens carry a recognisable prefix, so that the bearer chain never
# sends an expired or revoked one of them to the upstream realm as if it
# were an upstream refresh token, and so that secret scanners can spot them.
ACCESS_TOKEN_PREFIX: Final = "fastn_at_"
REFRESH_TOKEN_PREFIX: Final = "fastn_rt_"
OWN_TOKEN_PREFIXES: Final = (ACCESS_TOKEN_PREFIX, REFRESH_TOKEN_PREFIX)

# A refresh-in-progress marker outlives the bounded exchange by this much.
IN_PROGRESS_EXTRA_SECONDS: Final = 5

# A client's registration lifetime restarts on use, at most this often.
CLIENT_RENEWAL_SECONDS: Final = 86400

# Marks of redeemed codes outlive the codes themselves, so a replay shortly
# after expiry is still recognised.
USED_MARK_MIN_SECONDS: Final = 3600


class StoredCode(AuthorizationCode):
    grant_id: str
    wrapped_key: str


class StoredRefreshToken(RefreshToken):
    grant_id: str
    wrapped_key: str


class StoredAccessToken(AccessToken):
    grant_id: str
    wrapped_key: str


class LoginError(Exception):
    """The upstream leg of a login failed; carries the RFC 6749 §4.1.2.1 code."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


class LoginStateUnknown(Exception):
    """The callback's state matches no pending login (unknown, used or expired)."""


class FastnOAuthProvider:
    """Implements the SDK's OAuthAuthorizationServerProvider protocol over a Store."""

    def __init__(
        self,
        settings: FastnAuthSettings,
        store: Store,
        upstream: UpstreamClient,
        grants: GrantBook,
        jwt_validator: JwtValidator,
    ) -> None:
        self._settings = settings
        self._store = store
        self._upstream = upstream
        self._grants = grants
        self._jwt = jwt_validator
        self._resource_urls = frozenset(settings.resource_url(path) for path in settings.resource_paths)

    # Clients

    async def get_client(self, client_id: str) -> OAuthClientInformationFull | None:
        """Return the client, with its secret as a hash (see clients.py)."""
        record = await self._store.get("client:" + client_id)
        if record is None:
            return None
        if "client" not in record:
            # A record written before renewal was tracked: the client itself.
            record = {"client": record, "renewed_at": 0.0}
        if record["renewed_at"] < time.time() - CLIENT_RENEWAL_SECONDS:
            # Clients in use stay registered: registration promised a secret
            # that never expires (client_secret_expires_at 0).
            record["renewed_at"] = time.time()
            await self._store.set("client:" + client_id, record, self._settings.client_ttl)
        return RegisteredClient.model_validate(record["client"])

    async def register_client(self, client_info: OAuthClientInformationFull) -> None:
        for uri in client_info.redirect_uris or []:
            problem = redirect_uri_problem(str(uri), self._settings.redirect_domains, self._settings.redirect_schemes)
            if problem:
                logger.info("registration rejected: redirect URI %s (%s)", uri, problem)
                raise RegistrationError(
                    error="invalid_redirect_uri",
                    error_description=f"redirect URI {uri} is not allowed: {problem}",
                )
        record = {"client": storable_client(client_info), "renewed_at": time.time()}
        await self._store.set("client:" + client_info.client_id, record, self._settings.client_ttl)
        logger.info(
            "registered client %s (%s), %d redirect URIs, scope %r",
            client_info.client_id,
            client_info.client_name or "unnamed",
            len(client_info.redirect_uris or []),
            client_info.scope,
        )

    # Authorization: the upstream leg

    async def authorize(self, client: OAuthClientInformationFull, params: AuthorizationParams) -> str:
        if params.resource is not None and params.resource.rstrip("/") not in self._resource_urls:
            # RFC 8707 §2: a resource this server does not serve is invalid_target.
            raise AuthorizeError(error="invalid_target", error_description=f"unknown resource {params.resource}")

        # RFC 6749 §3.3: without a scope parameter, the client's registered
        # scopes are the default.
        scopes = params.scopes or (client.scope.split() if client.scope else list(self._settings.scopes))
        pkce = new_pkce_pair()
        state = new_token()
        pending = {
            "client_id": client.client_id,
            "redirect_uri": str(params.redirect_uri),
            "redirect_uri_provided_explicitly": params.redirect_uri_provided_explicitly,
            "client_state": params.state,
            "scopes": scopes,
            "code_challenge": params.code_challenge,
            "resource": params.resource,
            "code_verifier": pkce.code_verifier,
        }
        record = {"sealed": seal_json(derive_key(state, b"login"), pending)}
        await self._store.set("login:" + token_hash(state), record, self._settings.pending_login_ttl)
        logger.info("login %s started for client %s", log_id(state), client.client_id)
        if self._settings.consent:
            return self._settings.our_issuer + "/consent?" + urlencode({"login": state})
        try:
            return await self.upstream_redirect(state, pending)
        except UpstreamUnavailable as exc:
            raise AuthorizeError(error="temporarily_unavailable", error_description=str(exc)) from None

    async def pending_login(self, state: str) -> dict[str, Any] | None:
        """Return the pending login for state without consuming it, or None."""
        record = await self._store.get("login:" + token_hash(state))
        if record is None:
            return None
        try:
            return open_json(derive_key(state, b"login"), record["sealed"])
        except (SealError, KeyError):
            logger.warning("login %s: pending record could not be unsealed", log_id(state))
            return None

    async def upstream_redirect(self, state: str, pending: dict[str, Any]) -> str:
        """Return the upstream realm's authorization URL for a pending login."""
        challenge = s256_challenge(pending["code_verifier"])
        return await self._upstream.authorize_url(state=state, code_challenge=challenge)

    async def deny_login(self, state: str) -> str | None:
        """End a pending login refused by the user; return the client's error redirect."""
        record = await self._store.take("login:" + token_hash(state))
        if record is None:
            return None
        try:
            pending = open_json(derive_key(state, b"login"), record["sealed"])
        except (SealError, KeyError):
            return None
        logger.info("login %s for client %s denied at the consent page", log_id(state), pending["client_id"])
        return construct_redirect_uri(
            pending["redirect_uri"],
            error="access_denied",
            error_description="the user denied access",
            state=pending["client_state"],
            iss=self._settings.our_issuer,
        )

    async def complete_login(self, *, state: str, code: str | None, error: str | None) -> str:
        """Finish the upstream leg and return the URL to send the browser to.

        The pending login is taken (single use) before anything else, so a
        replayed callback finds nothing. Errors after that point are reported
        to the client's redirect URI with the client's original state.
        """
        record = await self._store.take("login:" + token_hash(state))
        if record is None:
            raise LoginStateUnknown()
        try:
            pending = open_json(derive_key(state, b"login"), record["sealed"])
        except (SealError, KeyError):
            logger.warning("login %s: pending record could not be unsealed", log_id(state))
            raise LoginStateUnknown() from None

        try:
            redirect = await self._finish(pending, code=code, upstream_error=error)
        except LoginError as exc:
            logger.info("login %s for client %s failed: %s", log_id(state), pending["client_id"], exc.error)
            return construct_redirect_uri(
                pending["redirect_uri"],
                error=exc.error,
                error_description=exc.description,
                state=pending["client_state"],
                iss=self._settings.our_issuer,
            )
        logger.info("login %s for client %s completed", log_id(state), pending["client_id"])
        return redirect

    async def _finish(self, pending: dict[str, Any], *, code: str | None, upstream_error: str | None) -> str:
        if upstream_error:
            # RFC 6749 §4.1.2.1 codes pass through; anything else is reported
            # as access_denied, the usual meaning of an upstream login error.
            passthrough = {"access_denied", "invalid_scope", "server_error", "temporarily_unavailable"}
            error = upstream_error if upstream_error in passthrough else "access_denied"
            raise LoginError(error, "the login at the identity provider did not complete")
        if not code:
            raise LoginError("server_error", "the identity provider returned no authorization code")

        try:
            tokens = await self._upstream.exchange_code(code=code, code_verifier=pending["code_verifier"])
        except UpstreamRejected as exc:
            logger.warning("upstream code exchange rejected: %s", exc.error)
            raise LoginError("server_error", "the identity provider rejected the login") from None
        except UpstreamUnavailable:
            raise LoginError("temporarily_unavailable", "the identity provider is unreachable") from None

        try:
            # The proxy asked the realm for this token itself, so the audience
            # setting, which is for bearer tokens clients bring, does not apply.
            claims = await self._jwt.validate(tokens.access_token, check_audience=False)
        except (InvalidToken, NotAnAccessToken) as exc:
            logger.error("upstream access token from the code exchange failed validation: %s", exc)
            raise LoginError("server_error", "the identity provider returned an unusable token") from None
        except UpstreamUnavailable:
            raise LoginError("temporarily_unavailable", "the identity provider's keys are unreachable") from None

        grant_key = new_key()
        grant_id = await self._grants.create(
            tokens,
            grant_key,
            client_id=pending["client_id"],
            subject=claims.get("sub"),
            scopes=pending["scopes"],
            resource=pending["resource"],
        )

        our_code = new_token()
        code_record = {
            "client_id": pending["client_id"],
            "scopes": pending["scopes"],
            "expires_at": time.time() + self._settings.authorization_code_ttl,
            "code_challenge": pending["code_challenge"],
            "redirect_uri": pending["redirect_uri"],
            "redirect_uri_provided_explicitly": pending["redirect_uri_provided_explicitly"],
            "resource": pending["resource"],
            "subject": claims.get("sub"),
            "grant_id": grant_id,
            "wrapped_key": wrap_key(our_code, grant_key),
        }
        await self._store.set("code:" + token_hash(our_code), code_record, self._settings.authorization_code_ttl)
        # RFC 9207: iss names the server that issued the response.
        return construct_redirect_uri(
            pending["redirect_uri"], code=our_code, state=pending["client_state"], iss=self._settings.our_issuer
        )

    # Authorization codes

    async def load_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: str
    ) -> StoredCode | None:
        digest = token_hash(authorization_code)
        record = await self._store.get("code:" + digest)
        if record is None:
            used = await self._store.get("used_code:" + digest)
            if used is not None:
                # RFC 6749 §4.1.2: a code used twice revokes what it issued.
                logger.warning("authorization code replayed by client %s; revoking its grant", client.client_id)
                await self._grants.revoke(used["grant_id"])
            else:
                logger.info("client %s presented an unknown or expired authorization code", client.client_id)
            return None
        if record["client_id"] != client.client_id:
            logger.warning("client %s presented a code issued to another client", client.client_id)
            return None
        return StoredCode(code=authorization_code, **record)

    async def exchange_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: StoredCode
    ) -> OAuthToken:
        digest = token_hash(authorization_code.code)
        # take() makes redemption atomic: of two concurrent exchanges, one wins.
        record = await self._store.take("code:" + digest)
        if record is None:
            raise TokenError(error="invalid_grant", error_description="authorization code was already used")
        mark_ttl = max(self._settings.authorization_code_ttl, USED_MARK_MIN_SECONDS)
        used_key = "used_code:" + digest
        try:
            await self._store.set(used_key, {"grant_id": record["grant_id"]}, mark_ttl)
            grant_key = unwrap_key(authorization_code.code, record["wrapped_key"])
            return await self._issue_tokens(
                client_id=client.client_id,
                scopes=record["scopes"],
                resource=record["resource"],
                subject=record["subject"],
                grant_id=record["grant_id"],
                grant_key=grant_key,
            )
        except Exception:
            # No tokens were returned, so the client may retry with the same code.
            remaining = record["expires_at"] - time.time()
            await self._restore(used_key, "code:" + digest, record, remaining)
            raise

    # Refresh tokens

    async def load_refresh_token(
        self, client: OAuthClientInformationFull, refresh_token: str
    ) -> StoredRefreshToken | None:
        digest = token_hash(refresh_token)
        record = await self._store.get("refresh:" + digest)
        if record is None:
            if await self._store.get("refreshing:" + digest) is not None:
                # A retry while the first exchange of this token still runs:
                # not reuse, so the client is asked to retry, not logged out.
                logger.info("client %s retried a refresh that is still in progress", client.client_id)
                raise UpstreamUnavailable("this refresh token is being exchanged; retry shortly", retry_after=1)
            used = await self._store.get("used_refresh:" + digest)
            if used is not None:
                # OAuth 2.1 §4.3.1: a rotated refresh token presented again
                # means it leaked or was stolen, so the whole grant ends.
                logger.warning("refresh token reuse by client %s; revoking its grant", client.client_id)
                await self._grants.revoke(used["grant_id"])
            else:
                logger.info("client %s presented an unknown or expired refresh token", client.client_id)
            return None
        if record["client_id"] != client.client_id:
            logger.warning("client %s presented a refresh token issued to another client", client.client_id)
            return None
        return StoredRefreshToken(token=refresh_token, **record)

    async def exchange_refresh_token(
        self, client: OAuthClientInformationFull, refresh_token: StoredRefreshToken, scopes: list[str]
    ) -> OAuthToken:
        digest = token_hash(refresh_token.token)
        in_progress_key = "refreshing:" + digest
        # The marker goes first: once the record is taken, a retry must find it.
        await self._store.set(in_progress_key, {}, refresh_time_bound(self._settings) + IN_PROGRESS_EXTRA_SECONDS)
        try:
            return await self._exchange_refresh_token(client, refresh_token, scopes, digest)
        finally:
            try:
                await self._store.delete(in_progress_key)
            except UpstreamUnavailable:
                # The marker expires by itself, and the exchange's result is kept.
                logger.warning("a refresh-in-progress marker could not be deleted; it expires by itself")

    async def _exchange_refresh_token(
        self, client: OAuthClientInformationFull, refresh_token: StoredRefreshToken, scopes: list[str], digest: str
    ) -> OAuthToken:
        record = await self._store.take("refresh:" + digest)
        if record is None:
            raise TokenError(error="invalid_grant", error_description="refresh token was already used")
        used_key = "used_refresh:" + digest
        try:
            grant_key = unwrap_key(refresh_token.token, record["wrapped_key"])
            # Refresh upstream now if it is due, so a dead upstream session
            # surfaces as invalid_grant here rather than as a 401 later.
            grant = await self._grants.fresh(record["grant_id"], grant_key)
            await self._grants.extend(grant, grant_key)

            # RFC 6749 §6: a narrower scope applies to the new access token
            # only; the new refresh token keeps the scope of the original grant.
            tokens = await self._issue_tokens(
                client_id=client.client_id,
                scopes=scopes or record["scopes"],
                refresh_scopes=record["scopes"],
                resource=record.get("resource"),
                subject=record.get("subject"),
                grant_id=record["grant_id"],
                grant_key=grant_key,
            )
            await self._store.set(used_key, {"grant_id": record["grant_id"]}, self._settings.refresh_token_ttl)
            return tokens
        except InvalidToken as exc:
            logger.info("refresh for client %s rejected: %s", client.client_id, exc)
            raise TokenError(error="invalid_grant", error_description="the login session has ended") from None
        except Exception:
            # An outage must not cost the client its session: no tokens were
            # returned, so the refresh token is put back for a retry.
            remaining = (record.get("expires_at") or 0) - time.time()
            await self._restore(used_key, "refresh:" + digest, record, remaining)
            raise

    async def _restore(self, used_key: str, record_key: str, record: dict[str, Any], ttl: float) -> None:
        if ttl <= 0:
            return
        try:
            if await self._grants.is_revoked(record["grant_id"]):
                return
            await self._store.delete(used_key)
            await self._store.set(record_key, record, ttl)
        except UpstreamUnavailable:
            logger.warning(
                "a single-use record could not be restored after a failed exchange; the client must log in again"
            )

    # Access tokens

    async def load_access_token(self, token: str) -> StoredAccessToken | None:
        record = await self._store.get("access:" + token_hash(token))
        if record is None:
            return None
        if record["expires_at"] <= time.time():
            return None
        return StoredAccessToken(token=token, **record)

    async def revoke_token(self, token: StoredAccessToken | StoredRefreshToken) -> None:
        # RFC 7009 §2.1: revoking either token of a grant revokes the grant.
        kind = "refresh:" if isinstance(token, RefreshToken) else "access:"
        await self._store.delete(kind + token_hash(token.token))
        try:
            grant_key = unwrap_key(token.token, token.wrapped_key)
        except SealError:
            grant_key = None
        await self._grants.revoke(token.grant_id, grant_key)

    async def _issue_tokens(
        self,
        *,
        client_id: str,
        scopes: list[str],
        resource: str | None,
        subject: str | None,
        grant_id: str,
        grant_key: bytes,
        refresh_scopes: list[str] | None = None,
    ) -> OAuthToken:
        access_token = ACCESS_TOKEN_PREFIX + new_token()
        refresh_token = REFRESH_TOKEN_PREFIX + new_token()
        now = int(time.time())
        common = {"client_id": client_id, "resource": resource, "subject": subject}
        await self._store.set(
            "access:" + token_hash(access_token),
            {
                **common,
                "scopes": scopes,
                "expires_at": now + self._settings.access_token_ttl,
                "grant_id": grant_id,
                "wrapped_key": wrap_key(access_token, grant_key),
            },
            self._settings.access_token_ttl,
        )
        await self._store.set(
            "refresh:" + token_hash(refresh_token),
            {
                **common,
                "scopes": refresh_scopes if refresh_scopes is not None else scopes,
                "expires_at": now + self._settings.refresh_token_ttl,
                "grant_id": grant_id,
                "wrapped_key": wrap_key(refresh_token, grant_key),
            },
            self._settings.refresh_token_ttl,
        )
        return OAuthToken(
            access_token=access_token,
            token_type="Bearer",
            expires_in=self._settings.access_token_ttl,
            scope=" ".join(scopes) if scopes else None,
            refresh_token=refresh_token,
        )
