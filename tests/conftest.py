"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.realm import RealmServer


@pytest.fixture(scope="session")
def realm() -> Iterator[RealmServer]:
    """The test OpenID provider with default token lifetimes (300 s access, 1800 s refresh)."""
    server = RealmServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def short_realm() -> Iterator[RealmServer]:
    """A second realm whose access tokens expire after 3 seconds, for refresh tests."""
    server = RealmServer()
    server.start(access_token_ttl=3)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def faulty_realm() -> Iterator[RealmServer]:
    """A realm with 3-second access tokens whose token endpoint can be made to fail on request."""
    server = RealmServer()
    server.start(access_token_ttl=3, test_faults=True)
    yield server
    server.stop()
