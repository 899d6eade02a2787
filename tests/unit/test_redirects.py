"""Unit tests for the redirect URI policy and loopback port matching."""

from __future__ import annotations

import pytest
from mcp.shared.auth import InvalidRedirectUriError, OAuthClientInformationFull
from pydantic import AnyUrl

from fastn_asgi_auth.redirects import RegisteredClient, is_loopback, redirect_uri_problem
from fastn_asgi_auth.settings import DEFAULT_REDIRECT_DOMAINS

# redirect_uri_problem


@pytest.mark.parametrize(
    "uri",
    [
        "http://localhost/callback",
        "http://localhost:3000/callback",
        "http://localhost:65535/cb",
        "https://localhost:8443/cb",
        "http://127.0.0.1/callback",
        "http://127.0.0.1:51234/callback",
        "http://[::1]/callback",
        "http://[::1]:8080/callback",
        "http://LOCALHOST:3000/callback",
        "http://127.0.0.1:3000/callback?session=1",
    ],
)
def test_loopback_redirect_allowed(uri: str) -> None:
    assert redirect_uri_problem(uri, DEFAULT_REDIRECT_DOMAINS) is None


@pytest.mark.parametrize(
    "uri",
    [
        "https://lovable.dev/callback",
        "https://preview.lovable.dev/callback",
        "https://a.b.lovable.dev/callback",
        "https://bolt.new/oauth/callback",
        "https://v0.dev/cb",
        "https://my-repl.replit.com/cb",
        "https://cursor.sh/cb",
        "https://windsurf.ai/cb",
        "https://app.fastn.ai/cb",
        "https://mcp.ucl.dev/cb",
        "https://abc123.ngrok-free.dev/cb",
        "https://LOVABLE.DEV/callback",
        "https://lovable.dev:8443/callback",
    ],
)
def test_allowed_domain_https_allowed(uri: str) -> None:
    assert redirect_uri_problem(uri, DEFAULT_REDIRECT_DOMAINS) is None


@pytest.mark.parametrize(
    "uri",
    [
        "http://lovable.dev/callback",
        "http://preview.lovable.dev/callback",
        "http://app.fastn.ai/callback",
    ],
)
def test_http_on_allowed_domain_rejected(uri: str) -> None:
    assert redirect_uri_problem(uri, DEFAULT_REDIRECT_DOMAINS) is not None


@pytest.mark.parametrize(
    "uri",
    [
        "https://evil-lovable.dev/callback",
        "https://evillovable.dev/callback",
        "https://lovable.dev.evil.com/callback",
        "https://lovable.devx/callback",
        "https://lovable.dev-evil.com/callback",
        "https://fastn.ai/callback",
        "https://evil.com/lovable.dev/callback",
        "https://evil.com/?next=https://lovable.dev",
        "https://example.com/callback",
        "https://127.0.0.1.evil.com/callback",
        "http://localhost.evil.com/callback",
    ],
)
def test_lookalike_domain_rejected(uri: str) -> None:
    assert redirect_uri_problem(uri, DEFAULT_REDIRECT_DOMAINS) is not None


@pytest.mark.parametrize(
    "uri",
    [
        "https://lovable.dev/callback#token",
        "https://lovable.dev/callback#",
        "http://localhost:3000/callback#x",
    ],
)
def test_fragment_rejected(uri: str) -> None:
    assert redirect_uri_problem(uri, DEFAULT_REDIRECT_DOMAINS) is not None


@pytest.mark.parametrize(
    "uri",
    [
        "https://lovable.dev@evil.com/",
        "https://user:pass@lovable.dev/callback",
        "https://user@lovable.dev/callback",
        "https://@lovable.dev/callback",
        "http://lovable.dev@localhost:3000/callback",
        "https://evil.com\\@lovable.dev/callback",
    ],
)
def test_user_info_rejected(uri: str) -> None:
    assert redirect_uri_problem(uri, DEFAULT_REDIRECT_DOMAINS) is not None


@pytest.mark.parametrize(
    "uri",
    [
        "myapp://callback",
        "myapp://lovable.dev/callback",
        "javascript://lovable.dev/%0aalert(1)",
        "ftp://lovable.dev/callback",
        "ws://lovable.dev/callback",
        "file://lovable.dev/etc/passwd",
        "myapp://localhost/callback",
    ],
)
def test_custom_scheme_rejected(uri: str) -> None:
    assert redirect_uri_problem(uri, DEFAULT_REDIRECT_DOMAINS) is not None


@pytest.mark.parametrize(
    "uri",
    [
        "",
        "/callback",
        "lovable.dev/callback",
        "https:///callback",
        "https://",
        "myapp:/callback",
        "data:text/html,hi",
        "//lovable.dev/callback",
    ],
)
def test_missing_host_rejected(uri: str) -> None:
    assert redirect_uri_problem(uri, DEFAULT_REDIRECT_DOMAINS) is not None


@pytest.mark.parametrize(
    "uri",
    [
        "https://lovable.dev:abc/callback",
        "https://lovable.dev:99999/callback",
        "http://localhost:-1/callback",
        "http://localhost:65536/callback",
        "http://127.0.0.1:3000:4000/callback",
    ],
)
def test_malformed_port_rejected(uri: str) -> None:
    assert redirect_uri_problem(uri, DEFAULT_REDIRECT_DOMAINS) is not None


@pytest.mark.parametrize(
    "uri",
    [
        "https://[::1/callback",
        "http://[localhost]/callback",
    ],
)
def test_malformed_host_rejected(uri: str) -> None:
    assert redirect_uri_problem(uri, DEFAULT_REDIRECT_DOMAINS) is not None


@pytest.mark.parametrize(
    "uri",
    [
        "https://evil.com\\.lovable.dev/callback",
        "https://evil.com\\@lovable.dev/callback",
        "https://lovable.dev/call back",
        "https://lovable.dev/callback\n",
        "https://lovable.dev/<script>",
    ],
)
def test_unsafe_characters_rejected(uri: str) -> None:
    assert redirect_uri_problem(uri, DEFAULT_REDIRECT_DOMAINS) is not None


def test_domain_list_is_respected() -> None:
    assert redirect_uri_problem("https://lovable.dev/cb", ("example.com",)) is not None
    assert redirect_uri_problem("https://sub.example.com/cb", ("example.com",)) is None


def test_problem_names_the_host() -> None:
    problem = redirect_uri_problem("https://example.org/cb", DEFAULT_REDIRECT_DOMAINS)

    assert problem is not None
    assert "example.org" in problem


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("localhost", True),
        ("LocalHost", True),
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("10.0.0.1", False),
        ("0.0.0.0", False),
        ("localhost.evil.com", False),
        ("", False),
        (None, False),
    ],
)
def test_is_loopback(host: str | None, expected: bool) -> None:
    assert is_loopback(host) is expected


# RegisteredClient.validate_redirect_uri


def make_client(*redirect_uris: str) -> RegisteredClient:
    return RegisteredClient(client_id="client-1", redirect_uris=[AnyUrl(uri) for uri in redirect_uris])


def test_registered_client_is_sdk_client() -> None:
    assert isinstance(make_client("http://127.0.0.1:3000/callback"), OAuthClientInformationFull)


@pytest.mark.parametrize(
    ("registered", "requested"),
    [
        ("http://127.0.0.1:3000/callback", "http://127.0.0.1:3000/callback"),
        ("http://127.0.0.1:3000/callback", "http://127.0.0.1:51234/callback"),
        ("http://127.0.0.1/callback", "http://127.0.0.1:51234/callback"),
        ("http://localhost:3000/callback", "http://localhost:4000/callback"),
        ("http://[::1]:3000/callback", "http://[::1]:4000/callback"),
        ("http://127.0.0.1:3000/callback?x=1", "http://127.0.0.1:4000/callback?x=1"),
        ("https://lovable.dev/callback", "https://lovable.dev/callback"),
    ],
)
def test_redirect_uri_accepted(registered: str, requested: str) -> None:
    client = make_client(registered)

    assert str(client.validate_redirect_uri(AnyUrl(requested))) == requested


def test_second_registered_uri_accepted() -> None:
    client = make_client("https://lovable.dev/callback", "http://127.0.0.1:3000/callback")

    accepted = client.validate_redirect_uri(AnyUrl("http://127.0.0.1:9999/callback"))

    assert str(accepted) == "http://127.0.0.1:9999/callback"


@pytest.mark.parametrize(
    ("registered", "requested"),
    [
        ("http://127.0.0.1:3000/callback", "http://127.0.0.1:51234/other"),
        ("http://127.0.0.1:3000/callback", "http://127.0.0.1:51234/callback/extra"),
        ("http://127.0.0.1:3000/callback", "http://localhost:3000/callback"),
        ("http://localhost:3000/callback", "http://127.0.0.1:3000/callback"),
        ("http://127.0.0.1:3000/callback", "http://[::1]:3000/callback"),
        ("http://127.0.0.1:3000/callback", "https://127.0.0.1:3000/callback"),
        ("http://127.0.0.1:3000/callback", "https://127.0.0.1:51234/callback"),
        ("http://127.0.0.1:3000/callback?x=1", "http://127.0.0.1:4000/callback?x=2"),
        ("http://127.0.0.1:3000/callback", "http://127.0.0.2:3000/callback"),
        ("https://lovable.dev/callback", "https://lovable.dev:8443/callback"),
        ("https://lovable.dev:8443/callback", "https://lovable.dev:9443/callback"),
        ("https://lovable.dev/callback", "https://evil.lovable.dev/callback"),
        ("https://lovable.dev/callback", "https://lovable.dev/callback2"),
    ],
)
def test_redirect_uri_rejected(registered: str, requested: str) -> None:
    client = make_client(registered)

    with pytest.raises(InvalidRedirectUriError):
        client.validate_redirect_uri(AnyUrl(requested))


def test_missing_uri_uses_single_registered() -> None:
    client = make_client("http://127.0.0.1:3000/callback")

    assert str(client.validate_redirect_uri(None)) == "http://127.0.0.1:3000/callback"


def test_missing_uri_ambiguous_rejected() -> None:
    client = make_client("http://127.0.0.1:3000/callback", "https://lovable.dev/callback")

    with pytest.raises(InvalidRedirectUriError):
        client.validate_redirect_uri(None)
