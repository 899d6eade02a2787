"""Redirect URI policy for registered clients."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from mcp.shared.auth import InvalidRedirectUriError, OAuthClientInformationFull
from pydantic import AnyUrl

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
# RFC 3986 §2: whitespace, controls, backslash and these delimiters never
# appear unencoded in a URI.
UNSAFE_URI_CHARACTERS = re.compile(r'[\x00-\x20\x7f\\"<>^`{|}]')


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def redirect_uri_problem(
    uri: str, allowed_domains: tuple[str, ...], allowed_schemes: tuple[str, ...] = ()
) -> str | None:
    """Return why a redirect URI may not be registered, or None when it may.

    Loopback URIs may use http (RFC 8252 §7.3). A private-use scheme of a
    native app (RFC 8252 §7.1, such as cursor://) is allowed when listed in
    allowed_schemes. Every other URI must use https on an allowed domain or
    one of its subdomains. Fragments are forbidden (RFC 6749 §3.1.2) and so
    is user info, which could smuggle a different host past a naive parser.
    """
    if UNSAFE_URI_CHARACTERS.search(uri):
        # Browsers end an http(s) host at a backslash, while urlsplit keeps it,
        # so "https://evil.example\\.lovable.dev/" would look allowed here.
        return "it contains characters that are not allowed in a URI"
    try:
        parts = urlsplit(uri)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return "it is not a valid URL"
    if parts.fragment or "#" in uri:
        return "it contains a fragment"
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        return "it contains user info"
    if parts.scheme.lower() in allowed_schemes:
        return None
    if not parts.scheme or not host:
        return "it has no scheme or host"
    host = host.lower().rstrip(".")
    if is_loopback(host):
        if parts.scheme not in ("http", "https"):
            return "loopback redirect URIs must use http or https"
        return None
    if parts.scheme != "https":
        return "redirect URIs on hosts other than loopback must use https"
    for domain in allowed_domains:
        domain = domain.lower()
        if host == domain or host.endswith("." + domain):
            return None
    return f"host {host!r} is not in the allowed redirect domains"


def loopback_port_match(registered: str, requested: str) -> bool:
    """RFC 8252 §7.3: for loopback redirect URIs, any port matches.

    Desktop clients bind a fresh port for each login, so the registered URI's
    port is compared loosely; scheme, host, path and query must still match.
    """
    reg = urlsplit(registered)
    req = urlsplit(requested)
    if not is_loopback(reg.hostname) or reg.hostname != req.hostname:
        return False
    try:
        req.port  # noqa: B018 - a malformed port is no match
    except ValueError:
        return False
    return (reg.scheme, reg.path or "/", reg.query) == (req.scheme, req.path or "/", req.query)


class RegisteredClient(OAuthClientInformationFull):
    """A registered client whose loopback redirect URIs accept any port."""

    def validate_redirect_uri(self, redirect_uri: AnyUrl | None) -> AnyUrl:
        if redirect_uri is not None and self.redirect_uris:
            requested = str(redirect_uri)
            for registered in self.redirect_uris:
                if str(registered) == requested or loopback_port_match(str(registered), requested):
                    return redirect_uri
            raise InvalidRedirectUriError(f"Redirect URI '{redirect_uri}' not registered for client")
        return super().validate_redirect_uri(redirect_uri)
