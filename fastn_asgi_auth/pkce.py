"""PKCE (RFC 7636) pair for our own leg to the upstream realm."""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass


@dataclass(frozen=True)
class PkcePair:
    code_verifier: str
    code_challenge: str


def s256_challenge(code_verifier: str) -> str:
    digest = hashlib.sha256(code_verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def new_pkce_pair() -> PkcePair:
    # 32 random bytes give a 43-character verifier, the minimum length that
    # RFC 7636 §4.1 allows, with 256 bits of entropy.
    verifier = secrets.token_urlsafe(32)
    return PkcePair(code_verifier=verifier, code_challenge=s256_challenge(verifier))
