"""Settings for the middleware and the OAuth proxy, with environment loading."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

FASTN_REALM: Final = "https://live.fastn.ai/auth/realms/fastn"

# Hosts that may receive authorization codes: those of Fastn's production
# provider, plus the web callbacks that MCP clients register alongside their
# loopback URIs (Claude: claude.ai and claude.com /api/mcp/auth_callback;
# VS Code: vscode.dev and insiders.vscode.dev /redirect; Cursor:
# www.cursor.com). A host matches itself and its subdomains; loopback hosts
# take any port.
DEFAULT_REDIRECT_DOMAINS: Final = (
    "localhost",
    "127.0.0.1",
    "::1",
    "claude.ai",
    "claude.com",
    "vscode.dev",
    "cursor.com",
    "lovable.dev",
    "bolt.new",
    "v0.dev",
    "replit.com",
    "cursor.sh",
    "windsurf.ai",
    "app.fastn.ai",
    "mcp.ucl.dev",
    "ngrok-free.dev",
)

# Fastn API keys are lowercase or uppercase hex; the bounds keep short junk and
# oversized input away from the provisional-accept path.
FASTN_API_KEY_PATTERN: Final = r"[0-9a-fA-F]{16,128}"

ASYMMETRIC_JWT_ALGORITHMS: Final = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)

ApiKeyValidator = Callable[[str], Awaitable["Mapping[str, Any] | None"]]


class ConfigurationError(ValueError):
    """A setting is invalid; the message names the setting and the fix."""


@dataclass(frozen=True, kw_only=True)
class FastnAuthSettings:
    """Everything the middleware needs; every field has a working default.

    Lifetimes are in seconds.
    """

    issuer: str = FASTN_REALM
    """The upstream realm's issuer URL; endpoints come from its discovery document."""

    base_url: str = "http://localhost:8000"
    """This server's public URL, as clients reach it (scheme, host, port, no path)."""

    client_id: str = "fastn-oauth"
    """Upstream public client used for the login (authorization code with PKCE)."""

    refresh_client_ids: tuple[str, ...] = ("fastn-oauth", "fastn-sdk")
    """Upstream clients tried, in order, when a bearer token is an upstream refresh token."""

    prefix: str = "/oauth"
    """Path under which the OAuth endpoints are served; "" serves them at the root."""

    resource_paths: tuple[str, ...] = ("/mcp",)
    """Paths of the protected resources, each advertised by RFC 9728 metadata."""

    public_paths: tuple[str, ...] = ("/health", "/healthz")
    """Paths (and their subpaths) that pass through without a bearer token."""

    scopes: tuple[str, ...] = ("read", "write")
    """Scopes that clients may register and request."""

    required_scopes: tuple[str, ...] = ()
    """Scopes every request to a protected path must carry (otherwise 403)."""

    upstream_scopes: tuple[str, ...] = ("openid", "profile", "email")
    """Scopes requested from the upstream realm at login."""

    access_token_ttl: int = 3600
    refresh_token_ttl: int = 86400
    authorization_code_ttl: int = 300
    pending_login_ttl: int = 600
    client_ttl: int = 90 * 86400
    """How long a dynamically registered client is kept after registration."""

    consent: bool = True
    """Ask the user to approve each client before the upstream login.

    The upstream client id is shared by every registered client, so without
    this page a client could ride an existing upstream session unnoticed."""

    consent_secret: str | None = None
    """Key for signing the cookie that remembers approved clients. Without it a
    random key is used, so approvals last until the process restarts. Set it
    (32+ random characters) when several workers serve the same site."""

    consent_remember_days: int = 30

    redirect_domains: tuple[str, ...] = DEFAULT_REDIRECT_DOMAINS
    """Hosts allowed in registered redirect URIs (each also allows its subdomains)."""

    redirect_schemes: tuple[str, ...] = ("cursor", "vscode", "vscode-insiders")
    """Private-use URI schemes of native apps allowed in redirect URIs (RFC 8252 §7.1).
    Cursor registers cursor://anysphere.cursor-mcp/oauth/callback."""

    enable_jwt: bool = True
    enable_api_keys: bool = True
    enable_refresh_tokens: bool = True

    api_key_pattern: str = FASTN_API_KEY_PATTERN
    api_key_validator: ApiKeyValidator | None = None
    """Async callable checking an API key; returns claims (may be empty) or None.
    Without it, keys of the right shape are accepted provisionally, and the
    Fastn API checks them when the handler calls it."""

    api_key_ttl: int = 300
    """How long an accepted API key stays cached before it is checked again."""

    audience: str | None = None
    """If set, upstream JWTs must carry this audience."""

    jwt_algorithms: tuple[str, ...] = ("RS256", "RS384", "RS512", "ES256", "ES384", "PS256")
    jwt_leeway: int = 30
    """Clock skew allowed on exp/nbf/iat, in seconds."""

    upstream_refresh_margin: int = 30
    """Refresh an upstream access token this many seconds before it expires."""

    negative_cache_ttl: int = 60
    """Seconds a rejected unknown token stays in the in-process rejection cache."""

    max_concurrent_upstream: int = 8
    """Ceiling on simultaneous upstream calls made for unknown bearer tokens."""

    http_timeout: float = 10.0
    registration_rate_limit: int = 10
    """Registrations allowed per client address per minute."""

    authorization_rate_limit: int = 60
    """Authorization requests (each starts a pending login) allowed per client address per minute."""

    max_entries: int = 100_000
    """Bound on the in-memory store and caches."""

    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _validate(self)

    # Derived values. The issuer string is built here once, so that metadata,
    # protected-resource documents and redirects carry it byte for byte.

    @property
    def public_base_url(self) -> str:
        return self.base_url.rstrip("/")

    @property
    def our_issuer(self) -> str:
        """The issuer of our own authorization server (RFC 8414), no trailing slash."""
        return self.public_base_url + self.prefix

    @property
    def upstream_issuer(self) -> str:
        return self.issuer.rstrip("/")

    @property
    def callback_url(self) -> str:
        return self.our_issuer + "/callback"

    def resource_url(self, resource_path: str) -> str:
        return self.public_base_url + resource_path

    def replace(self, **changes: Any) -> FastnAuthSettings:
        return dataclasses.replace(self, **changes)

    @classmethod
    def strict(cls, *, audience: str, **values: Any) -> FastnAuthSettings:
        """Build settings that accept only our own tokens and upstream JWTs issued for audience.

        The MCP authorization spec requires resource servers to accept only tokens
        issued for them, so this preset turns off API keys and upstream
        refresh tokens, which carry no audience.
        """
        if not audience:
            raise ConfigurationError("the strict preset needs an audience: set audience (FASTN_AUTH_AUDIENCE).")
        return cls(**{**values, "audience": audience, "enable_api_keys": False, "enable_refresh_tokens": False})

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> FastnAuthSettings:
        """Build settings from FASTN_AUTH_* variables; keyword overrides win.

        FASTN_AUTH_PRESET=strict applies the strict preset (see strict()).
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for spec in dataclasses.fields(cls):
            name = ENV_PREFIX + spec.name.upper()
            if name not in env or spec.name in NOT_FROM_ENV:
                continue
            values[spec.name] = _parse_env(name, env[name], spec.type)
        values.update(overrides)

        preset = env.get(ENV_PREFIX + "PRESET", "").strip().lower()
        if preset not in ("", "default", "strict"):
            raise ConfigurationError(f"{ENV_PREFIX}PRESET={preset!r} is unknown: use 'strict' or leave it unset.")
        from_environment = {name for name in values if name not in overrides}
        try:
            if preset == "strict":
                audience = values.pop("audience", None) or ""
                return cls.strict(audience=audience, **values)
            return cls(**values)
        except ConfigurationError as exc:
            # Name the variable the operator actually set, not only the field.
            setting = str(exc).split("=", 1)[0].split(" ", 1)[0]
            if setting in from_environment:
                raise ConfigurationError(f"{ENV_PREFIX}{setting.upper()}: {exc}") from None
            raise


ENV_PREFIX: Final = "FASTN_AUTH_"
NOT_FROM_ENV: Final = frozenset({"api_key_validator", "extra"})


def _parse_env(name: str, raw: str, annotation: object) -> Any:
    text = str(annotation)
    value = raw.strip()
    if text.startswith("tuple"):
        separators = re.split(r"[,\s]+", value)
        return tuple(item for item in separators if item)
    if text == "bool":
        lowered = value.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigurationError(f"{name}={raw!r} is not a boolean: use true or false.")
    if text == "int":
        try:
            return int(value)
        except ValueError:
            raise ConfigurationError(f"{name}={raw!r} is not an integer.") from None
    if text == "float":
        try:
            return float(value)
        except ValueError:
            raise ConfigurationError(f"{name}={raw!r} is not a number.") from None
    if text == "str | None":
        return value or None
    return value


def _validate(settings: FastnAuthSettings) -> None:
    _check_url("issuer", settings.issuer, allow_path=True)
    _check_url("base_url", settings.base_url, allow_path=False)

    prefix = settings.prefix
    if prefix and (not prefix.startswith("/") or prefix.endswith("/") or "//" in prefix):
        raise ConfigurationError(
            f"prefix={prefix!r} is invalid: use a path such as '/oauth' (leading slash, no trailing slash) or ''."
        )
    for path in settings.resource_paths:
        if path and (not path.startswith("/") or path.endswith("/")):
            raise ConfigurationError(
                f"resource_paths contains {path!r}: use paths such as '/mcp' (leading slash, no trailing slash),"
                " or '' for the whole site."
            )
    for path in settings.public_paths:
        if not path.startswith("/"):
            raise ConfigurationError(f"public_paths contains {path!r}: each path must start with '/'.")
    if not settings.resource_paths:
        raise ConfigurationError("resource_paths is empty: name at least one protected resource path, e.g. '/mcp'.")

    if not settings.client_id:
        raise ConfigurationError("client_id is empty: set the upstream public client id, e.g. 'fastn-oauth'.")
    if settings.enable_refresh_tokens and not settings.refresh_client_ids:
        raise ConfigurationError(
            "refresh_client_ids is empty while enable_refresh_tokens is on: list the upstream client ids"
            " or set enable_refresh_tokens=False."
        )
    for scope in settings.scopes + settings.required_scopes + settings.upstream_scopes:
        if not scope or any(ch.isspace() or ch in '"\\' for ch in scope):
            raise ConfigurationError(f"scope {scope!r} is invalid: scopes are single words without quotes.")
    missing = set(settings.required_scopes) - set(settings.scopes)
    if missing:
        raise ConfigurationError(
            f"required_scopes has {sorted(missing)} which are not in scopes: add them to scopes or drop them."
        )

    positive = (
        "access_token_ttl",
        "refresh_token_ttl",
        "authorization_code_ttl",
        "pending_login_ttl",
        "client_ttl",
        "api_key_ttl",
        "negative_cache_ttl",
        "max_concurrent_upstream",
        "registration_rate_limit",
        "authorization_rate_limit",
        "max_entries",
        "consent_remember_days",
    )
    for name in positive:
        if getattr(settings, name) <= 0:
            raise ConfigurationError(f"{name}={getattr(settings, name)!r} must be a positive number.")
    if settings.http_timeout <= 0:
        raise ConfigurationError(f"http_timeout={settings.http_timeout!r} must be a positive number of seconds.")
    for name in ("jwt_leeway", "upstream_refresh_margin"):
        if getattr(settings, name) < 0:
            raise ConfigurationError(f"{name}={getattr(settings, name)!r} must be zero or more seconds.")

    bad_algorithms = set(settings.jwt_algorithms) - ASYMMETRIC_JWT_ALGORITHMS
    if bad_algorithms:
        raise ConfigurationError(
            f"jwt_algorithms contains {sorted(bad_algorithms)}: use asymmetric algorithms only"
            f" ({', '.join(sorted(ASYMMETRIC_JWT_ALGORITHMS))}), because the realm's public keys must not double"
            " as shared secrets and 'none' is never accepted."
        )
    if settings.consent_secret is not None and len(settings.consent_secret) < 32:
        raise ConfigurationError(
            "consent_secret is shorter than 32 characters: use a long random value, e.g. from"
            " `python -c 'import secrets; print(secrets.token_urlsafe(32))'`."
        )
    for scheme in settings.redirect_schemes:
        if scheme.lower() in ("http", "https", "javascript", "data", "file", "vbscript") or not re.fullmatch(
            r"[a-z][a-z0-9+.-]*", scheme
        ):
            raise ConfigurationError(
                f"redirect_schemes contains {scheme!r}: list lowercase private-use schemes of native apps such as"
                " 'cursor'; http(s) redirects are governed by redirect_domains."
            )
    try:
        re.compile(settings.api_key_pattern)
    except re.error as exc:
        raise ConfigurationError(f"api_key_pattern is not a valid regular expression: {exc}.") from None
    for domain in settings.redirect_domains:
        if not domain or "/" in domain or ":" in domain.strip("[]").replace("::1", ""):
            raise ConfigurationError(
                f"redirect_domains contains {domain!r}: list bare host names such as 'lovable.dev'."
            )


def _check_url(name: str, value: str, *, allow_path: bool) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"{name}={value!r} is not an absolute http(s) URL, e.g. 'https://example.com'.")
    if parts.query or parts.fragment:
        raise ConfigurationError(f"{name}={value!r} must not have a query or fragment.")
    if not allow_path and parts.path not in ("", "/"):
        raise ConfigurationError(
            f"{name}={value!r} has a path: give the origin only (scheme://host[:port]) and set prefix for paths."
        )
    # RFC 8414 §2 and the MCP authorization spec require https, except on loopback.
    if parts.scheme == "http" and parts.hostname not in ("localhost", "127.0.0.1", "::1"):
        raise ConfigurationError(f"{name}={value!r} uses http on a non-loopback host: use https.")
