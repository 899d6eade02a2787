"""Unit tests for FastnAuthSettings: defaults, derived URLs, environment loading and validation."""

from __future__ import annotations

import pytest

from fastn_asgi_auth.settings import (
    DEFAULT_REDIRECT_DOMAINS,
    FASTN_REALM,
    ConfigurationError,
    FastnAuthSettings,
)

LOCAL_ISSUER = "http://127.0.0.1:9/realms/fastn"


# Defaults


def test_default_issuer_is_fastn_realm() -> None:
    settings = FastnAuthSettings()

    assert settings.issuer == "https://live.fastn.ai/auth/realms/fastn"
    assert FASTN_REALM == settings.issuer


def test_default_base_url_is_localhost() -> None:
    assert FastnAuthSettings().base_url == "http://localhost:8000"


def test_default_client_ids() -> None:
    settings = FastnAuthSettings()

    assert settings.client_id == "fastn-oauth"
    assert settings.refresh_client_ids == ("fastn-oauth", "fastn-sdk")


@pytest.mark.parametrize(
    "domain",
    [
        "lovable.dev",
        "bolt.new",
        "v0.dev",
        "replit.com",
        "cursor.sh",
        "windsurf.ai",
        "app.fastn.ai",
        "mcp.ucl.dev",
        "ngrok-free.dev",
        "localhost",
        "127.0.0.1",
        "::1",
    ],
)
def test_default_redirect_domains_include(domain: str) -> None:
    assert domain in FastnAuthSettings().redirect_domains
    assert domain in DEFAULT_REDIRECT_DOMAINS


# Derived values


@pytest.mark.parametrize(
    ("base_url", "prefix", "expected"),
    [
        ("http://127.0.0.1:8000", "/oauth", "http://127.0.0.1:8000/oauth"),
        ("http://127.0.0.1:8000/", "/oauth", "http://127.0.0.1:8000/oauth"),
        ("http://127.0.0.1:8000", "", "http://127.0.0.1:8000"),
        ("http://127.0.0.1:8000/", "", "http://127.0.0.1:8000"),
        ("https://mcp.example.com/", "/auth/v1", "https://mcp.example.com/auth/v1"),
    ],
)
def test_our_issuer_has_no_trailing_slash(base_url: str, prefix: str, expected: str) -> None:
    settings = FastnAuthSettings(issuer=LOCAL_ISSUER, base_url=base_url, prefix=prefix)

    assert settings.our_issuer == expected
    assert not settings.our_issuer.endswith("/")


def test_callback_url_follows_issuer() -> None:
    settings = FastnAuthSettings(issuer=LOCAL_ISSUER, base_url="http://127.0.0.1:8000/", prefix="/oauth")

    assert settings.callback_url == "http://127.0.0.1:8000/oauth/callback"


def test_resource_url_joins_base_url() -> None:
    settings = FastnAuthSettings(issuer=LOCAL_ISSUER, base_url="http://127.0.0.1:8000/")

    assert settings.resource_url("/mcp") == "http://127.0.0.1:8000/mcp"


def test_upstream_issuer_strips_slash() -> None:
    settings = FastnAuthSettings(issuer=LOCAL_ISSUER + "/")

    assert settings.upstream_issuer == LOCAL_ISSUER


# Loading from the environment


def test_from_env_reads_str() -> None:
    settings = FastnAuthSettings.from_env({"FASTN_AUTH_CLIENT_ID": "  my-client  "})

    assert settings.client_id == "my-client"


def test_from_env_reads_url() -> None:
    settings = FastnAuthSettings.from_env(
        {"FASTN_AUTH_ISSUER": LOCAL_ISSUER, "FASTN_AUTH_BASE_URL": "https://mcp.example.com"}
    )

    assert settings.issuer == LOCAL_ISSUER
    assert settings.base_url == "https://mcp.example.com"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("read,write", ("read", "write")),
        ("read write", ("read", "write")),
        ("read, write ,admin", ("read", "write", "admin")),
        (" read\twrite\nadmin ", ("read", "write", "admin")),
        ("read,,write,", ("read", "write")),
    ],
)
def test_from_env_splits_tuple(raw: str, expected: tuple[str, ...]) -> None:
    settings = FastnAuthSettings.from_env({"FASTN_AUTH_SCOPES": raw})

    assert settings.scopes == expected


def test_from_env_empty_tuple() -> None:
    settings = FastnAuthSettings.from_env({"FASTN_AUTH_REQUIRED_SCOPES": ""})

    assert settings.required_scopes == ()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        ("on", True),
        ("false", False),
        ("False", False),
        ("0", False),
        ("no", False),
        ("off", False),
        (" false ", False),
    ],
)
def test_from_env_reads_bool(raw: str, expected: bool) -> None:
    settings = FastnAuthSettings.from_env({"FASTN_AUTH_ENABLE_API_KEYS": raw})

    assert settings.enable_api_keys is expected


@pytest.mark.parametrize("raw", ["maybe", "", "2", "truthy"])
def test_from_env_rejects_bad_bool(raw: str) -> None:
    with pytest.raises(ConfigurationError, match="FASTN_AUTH_ENABLE_JWT"):
        FastnAuthSettings.from_env({"FASTN_AUTH_ENABLE_JWT": raw})


@pytest.mark.parametrize(("raw", "expected"), [("60", 60), (" 120 ", 120), ("86400", 86400)])
def test_from_env_reads_int(raw: str, expected: int) -> None:
    settings = FastnAuthSettings.from_env({"FASTN_AUTH_ACCESS_TOKEN_TTL": raw})

    assert settings.access_token_ttl == expected


def test_from_env_reads_float() -> None:
    settings = FastnAuthSettings.from_env({"FASTN_AUTH_HTTP_TIMEOUT": "2.5"})

    assert settings.http_timeout == 2.5


@pytest.mark.parametrize(("raw", "expected"), [("api://mcp", "api://mcp"), ("", None), ("   ", None)])
def test_from_env_reads_optional_str(raw: str, expected: str | None) -> None:
    settings = FastnAuthSettings.from_env({"FASTN_AUTH_AUDIENCE": raw})

    assert settings.audience == expected


def test_from_env_ignores_unrelated_variables() -> None:
    settings = FastnAuthSettings.from_env({"CLIENT_ID": "other", "FASTN_CLIENT_ID": "other"})

    assert settings.client_id == "fastn-oauth"


@pytest.mark.parametrize("name", ["FASTN_AUTH_API_KEY_VALIDATOR", "FASTN_AUTH_EXTRA"])
def test_from_env_skips_code_fields(name: str) -> None:
    settings = FastnAuthSettings.from_env({name: "os.system"})

    assert settings.api_key_validator is None
    assert dict(settings.extra) == {}


def test_from_env_overrides_win() -> None:
    settings = FastnAuthSettings.from_env(
        {"FASTN_AUTH_CLIENT_ID": "from-env", "FASTN_AUTH_ACCESS_TOKEN_TTL": "60"},
        client_id="from-code",
    )

    assert settings.client_id == "from-code"
    assert settings.access_token_ttl == 60


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("FASTN_AUTH_ACCESS_TOKEN_TTL", "abc"),
        ("FASTN_AUTH_ACCESS_TOKEN_TTL", "1.5"),
        ("FASTN_AUTH_ACCESS_TOKEN_TTL", ""),
        ("FASTN_AUTH_MAX_ENTRIES", "10k"),
        ("FASTN_AUTH_HTTP_TIMEOUT", "ten"),
    ],
)
def test_from_env_bad_number_names_variable(name: str, raw: str) -> None:
    with pytest.raises(ConfigurationError, match=name):
        FastnAuthSettings.from_env({name: raw})


def test_from_env_validates_result() -> None:
    with pytest.raises(ConfigurationError, match="access_token_ttl"):
        FastnAuthSettings.from_env({"FASTN_AUTH_ACCESS_TOKEN_TTL": "-5"})


# Validation


@pytest.mark.parametrize(
    ("changes", "setting"),
    [
        ({"prefix": "oauth"}, "prefix"),
        ({"prefix": "/oauth/"}, "prefix"),
        ({"prefix": "/"}, "prefix"),
        ({"prefix": "//oauth"}, "prefix"),
        ({"prefix": "/a//b"}, "prefix"),
        ({"base_url": "localhost:8000"}, "base_url"),
        ({"base_url": "ftp://127.0.0.1:8000"}, "base_url"),
        ({"base_url": "http://"}, "base_url"),
        ({"base_url": "http://example.com"}, "base_url"),
        ({"base_url": "http://127.0.0.1:8000/app"}, "base_url"),
        ({"base_url": "https://example.com/mcp/"}, "base_url"),
        ({"base_url": "https://example.com?x=1"}, "base_url"),
        ({"base_url": "https://example.com#top"}, "base_url"),
        ({"issuer": ""}, "issuer"),
        ({"issuer": "live.fastn.ai/auth/realms/fastn"}, "issuer"),
        ({"issuer": "http://live.fastn.ai/auth/realms/fastn"}, "issuer"),
        ({"issuer": "https://live.fastn.ai/auth/realms/fastn?x=1"}, "issuer"),
        ({"jwt_algorithms": ("RS256", "HS256")}, "jwt_algorithms"),
        ({"jwt_algorithms": ("hs512",)}, "jwt_algorithms"),
        ({"jwt_algorithms": ("none",)}, "jwt_algorithms"),
        ({"required_scopes": ("admin",)}, "required_scopes"),
        ({"scopes": ("read", "two words")}, "scope"),
        ({"scopes": ('say"hi',)}, "scope"),
        ({"scopes": ("",)}, "scope"),
        ({"access_token_ttl": -1}, "access_token_ttl"),
        ({"access_token_ttl": 0}, "access_token_ttl"),
        ({"refresh_token_ttl": -60}, "refresh_token_ttl"),
        ({"authorization_code_ttl": -1}, "authorization_code_ttl"),
        ({"pending_login_ttl": -1}, "pending_login_ttl"),
        ({"client_ttl": -1}, "client_ttl"),
        ({"api_key_ttl": -1}, "api_key_ttl"),
        ({"negative_cache_ttl": -1}, "negative_cache_ttl"),
        ({"max_entries": 0}, "max_entries"),
        ({"max_concurrent_upstream": 0}, "max_concurrent_upstream"),
        ({"registration_rate_limit": 0}, "registration_rate_limit"),
        ({"http_timeout": 0.0}, "http_timeout"),
        ({"jwt_leeway": -1}, "jwt_leeway"),
        ({"upstream_refresh_margin": -1}, "upstream_refresh_margin"),
        ({"api_key_pattern": "[0-9a-f"}, "api_key_pattern"),
        ({"api_key_pattern": "(?P<x"}, "api_key_pattern"),
        ({"client_id": ""}, "client_id"),
        ({"refresh_client_ids": ()}, "refresh_client_ids"),
        ({"resource_paths": ()}, "resource_paths"),
        ({"resource_paths": ("mcp",)}, "resource_paths"),
        ({"resource_paths": ("/mcp/",)}, "resource_paths"),
        ({"public_paths": ("health",)}, "public_paths"),
        ({"redirect_domains": ("https://lovable.dev",)}, "redirect_domains"),
        ({"redirect_domains": ("lovable.dev/path",)}, "redirect_domains"),
        ({"redirect_domains": ("lovable.dev:443",)}, "redirect_domains"),
        ({"redirect_domains": ("",)}, "redirect_domains"),
    ],
)
def test_invalid_setting_names_field(changes: dict[str, object], setting: str) -> None:
    values: dict[str, object] = {"issuer": LOCAL_ISSUER, "base_url": "http://127.0.0.1:8000"}
    values.update(changes)

    with pytest.raises(ConfigurationError, match=setting):
        FastnAuthSettings(**values)


@pytest.mark.parametrize(
    "base_url",
    [
        "http://localhost:8000",
        "http://127.0.0.1",
        "http://[::1]:8000",
        "https://mcp.example.com",
        "http://127.0.0.1:8000/",
    ],
)
def test_valid_base_url_accepted(base_url: str) -> None:
    assert FastnAuthSettings(base_url=base_url).base_url == base_url


def test_refresh_ids_optional_when_disabled() -> None:
    settings = FastnAuthSettings(refresh_client_ids=(), enable_refresh_tokens=False)

    assert settings.refresh_client_ids == ()


def test_required_scopes_within_scopes() -> None:
    settings = FastnAuthSettings(scopes=("read", "write", "admin"), required_scopes=("admin",))

    assert settings.required_scopes == ("admin",)


def test_configuration_error_is_value_error() -> None:
    assert issubclass(ConfigurationError, ValueError)


def test_replace_validates_again() -> None:
    settings = FastnAuthSettings()

    with pytest.raises(ConfigurationError, match="prefix"):
        settings.replace(prefix="oauth")


def test_strict_preset_from_env() -> None:
    settings = FastnAuthSettings.from_env({"FASTN_AUTH_PRESET": "strict", "FASTN_AUTH_AUDIENCE": "account"})
    assert settings.audience == "account"
    assert settings.enable_api_keys is False
    assert settings.enable_refresh_tokens is False
    assert settings.enable_jwt is True


def test_strict_preset_needs_audience() -> None:
    with pytest.raises(ConfigurationError, match="audience"):
        FastnAuthSettings.from_env({"FASTN_AUTH_PRESET": "strict"})


def test_unknown_preset_rejected() -> None:
    with pytest.raises(ConfigurationError, match="FASTN_AUTH_PRESET"):
        FastnAuthSettings.from_env({"FASTN_AUTH_PRESET": "paranoid"})


def test_env_error_names_variable() -> None:
    with pytest.raises(ConfigurationError, match="^FASTN_AUTH_ISSUER: issuer="):
        FastnAuthSettings.from_env({"FASTN_AUTH_ISSUER": "ftp://realm.example"})
