"""The fastn-auth command against the test realm."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def run_check(**env: str) -> subprocess.CompletedProcess[str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("FASTN_AUTH_")}
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-m", "fastn_asgi_auth.cli", "check"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_reaches_realm(realm):
    result = run_check(FASTN_AUTH_ISSUER=realm.issuer, FASTN_AUTH_BASE_URL="http://127.0.0.1:8000")
    assert result.returncode == 0, result.stderr
    assert "authorization server issuer: http://127.0.0.1:8000/oauth" in result.stdout
    assert f"token endpoint: {realm.issuer}/protocol/openid-connect/token" in result.stdout
    assert "signing keys: 1 published" in result.stdout
    assert "public base URL: http://127.0.0.1:8000 (from FASTN_AUTH_BASE_URL)" in result.stdout


def test_check_names_bad_setting():
    result = run_check(FASTN_AUTH_ACCESS_TOKEN_TTL="an hour")
    assert result.returncode == 1
    assert "FASTN_AUTH_ACCESS_TOKEN_TTL" in result.stderr


def test_check_unreachable_realm():
    result = run_check(FASTN_AUTH_ISSUER="http://127.0.0.1:9/realms/fastn")
    assert result.returncode == 2
    assert "unreachable" in result.stderr
