"""Failure classes shared by the bearer chain and the upstream client.

The split that matters to clients: a credential that is wrong (401, the
client should get a new one) versus a check that could not be made (503,
the client should retry with the same credential). An outage must never
make clients throw away good credentials.
"""

from __future__ import annotations


class InvalidToken(Exception):
    """The bearer token is not valid; the message is safe to show the client."""


class UpstreamUnavailable(Exception):
    """The upstream realm or the store could not be reached, or returned a server error."""

    def __init__(self, message: str, *, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UpstreamRejected(Exception):
    """The upstream realm refused a grant (RFC 6749 §5.2 error response)."""

    def __init__(self, error: str, description: str | None = None) -> None:
        super().__init__(f"{error}: {description}" if description else error)
        self.error = error
        self.description = description
