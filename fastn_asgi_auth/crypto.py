"""Token hashing and sealing of upstream credentials at rest.

Store keys are SHA-256 hashes of tokens, so a dump of the store contains
no bearer token. Upstream tokens are sealed with AES-GCM under a random grant
key, and that key is kept only wrapped under keys derived from our own
tokens: whoever holds a store dump but none of our tokens cannot read the
upstream (Keycloak) credentials.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

NONCE_BYTES: Final = 12
KEY_BYTES: Final = 32
# RFC 6749 §10.10 requires at least 128 bits of entropy in tokens; these have 256.
TOKEN_BYTES: Final = 32


class SealError(Exception):
    """A sealed value could not be opened: wrong key or corrupted data."""


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def new_key() -> bytes:
    return os.urandom(KEY_BYTES)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def log_id(token: str) -> str:
    """Return a short hash prefix that correlates log lines without revealing the token."""
    return token_hash(token)[:10]


def derive_key(token: str, purpose: bytes) -> bytes:
    # The tokens are high-entropy random strings, so HKDF without a salt
    # gives an independent key per token and purpose.
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=b"fastn-asgi-auth:" + purpose)
    return hkdf.derive(token.encode("utf-8", "surrogatepass"))


def seal(key: bytes, data: bytes, associated: bytes = b"") -> str:
    nonce = os.urandom(NONCE_BYTES)
    sealed = AESGCM(key).encrypt(nonce, data, associated)
    return base64.urlsafe_b64encode(nonce + sealed).decode("ascii")


def open_sealed(key: bytes, value: str, associated: bytes = b"") -> bytes:
    try:
        raw = base64.urlsafe_b64decode(value.encode("ascii"))
        return AESGCM(key).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], associated)
    except (InvalidTag, ValueError) as exc:
        raise SealError("sealed value could not be opened") from exc


def seal_json(key: bytes, value: dict[str, Any], associated: bytes = b"") -> str:
    return seal(key, json.dumps(value, separators=(",", ":")).encode(), associated)


def open_json(key: bytes, value: str, associated: bytes = b"") -> dict[str, Any]:
    return json.loads(open_sealed(key, value, associated))


def wrap_key(token: str, grant_key: bytes) -> str:
    """Wrap a grant key under a key derived from one of our tokens."""
    return seal(derive_key(token, b"wrap"), grant_key)


def unwrap_key(token: str, wrapped: str) -> bytes:
    return open_sealed(derive_key(token, b"wrap"), wrapped)
