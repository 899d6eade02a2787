"""Unit tests for token hashing, sealing, key wrapping and PKCE."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest

from fastn_asgi_auth.crypto import (
    KEY_BYTES,
    SealError,
    derive_key,
    log_id,
    new_key,
    new_token,
    open_json,
    open_sealed,
    seal,
    seal_json,
    token_hash,
    unwrap_key,
    wrap_key,
)
from fastn_asgi_auth.pkce import new_pkce_pair, s256_challenge

# Fixed keys keep failures reproducible. The values are arbitrary test data.
KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


def flip_one_byte(sealed: str, index: int) -> str:
    raw = bytearray(base64.urlsafe_b64decode(sealed))
    raw[index] ^= 0x01
    return base64.urlsafe_b64encode(bytes(raw)).decode("ascii")


# seal and open_sealed


@pytest.mark.parametrize("data", [b"", b"x", b"upstream refresh token", bytes(range(256)) * 4])
def test_seal_round_trip(data: bytes) -> None:
    assert open_sealed(KEY, seal(KEY, data)) == data


def test_seal_round_trip_with_associated() -> None:
    sealed = seal(KEY, b"secret", b"grant:1")

    assert open_sealed(KEY, sealed, b"grant:1") == b"secret"


def test_seal_output_is_ascii() -> None:
    sealed = seal(KEY, b"secret")

    assert re.fullmatch(r"[A-Za-z0-9_\-]+=*", sealed)


def test_seal_hides_plaintext() -> None:
    sealed = seal(KEY, b"plain-upstream-token")

    assert b"plain-upstream-token" not in base64.urlsafe_b64decode(sealed)


def test_seal_uses_fresh_nonce() -> None:
    assert seal(KEY, b"same data") != seal(KEY, b"same data")


def test_open_with_wrong_key_raises() -> None:
    sealed = seal(KEY, b"secret")

    with pytest.raises(SealError):
        open_sealed(OTHER_KEY, sealed)


@pytest.mark.parametrize("index", [0, 11, 12, 20, -1])
def test_open_tampered_data_raises(index: int) -> None:
    sealed = seal(KEY, b"upstream refresh token")

    with pytest.raises(SealError):
        open_sealed(KEY, flip_one_byte(sealed, index))


@pytest.mark.parametrize(
    ("sealed_with", "opened_with"),
    [(b"grant:1", b"grant:2"), (b"grant:1", b""), (b"", b"grant:1")],
)
def test_open_wrong_associated_raises(sealed_with: bytes, opened_with: bytes) -> None:
    sealed = seal(KEY, b"secret", sealed_with)

    with pytest.raises(SealError):
        open_sealed(KEY, sealed, opened_with)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "AAAA",
        "not base64 at all!",
        "é",
        base64.urlsafe_b64encode(b"\x00" * 12).decode(),
        base64.urlsafe_b64encode(b"\x00" * 40).decode(),
    ],
)
def test_open_malformed_value_raises(value: str) -> None:
    with pytest.raises(SealError):
        open_sealed(KEY, value)


def test_seal_json_round_trip() -> None:
    record = {"access_token": "abc", "expires_at": 1700000000, "scopes": ["read"]}

    assert open_json(KEY, seal_json(KEY, record, b"ad"), b"ad") == record


def test_open_json_wrong_key_raises() -> None:
    with pytest.raises(SealError):
        open_json(OTHER_KEY, seal_json(KEY, {"a": 1}))


# wrap_key and unwrap_key


def test_unwrap_with_right_token() -> None:
    grant_key = new_key()
    token = new_token()

    assert unwrap_key(token, wrap_key(token, grant_key)) == grant_key


def test_unwrap_with_wrong_token_raises() -> None:
    wrapped = wrap_key(new_token(), new_key())

    with pytest.raises(SealError):
        unwrap_key(new_token(), wrapped)


def test_wrapped_key_hides_grant_key() -> None:
    grant_key = new_key()

    wrapped = wrap_key(new_token(), grant_key)

    assert grant_key not in base64.urlsafe_b64decode(wrapped)


def test_new_key_length() -> None:
    assert len(new_key()) == KEY_BYTES


def test_derive_key_depends_on_purpose() -> None:
    token = new_token()

    assert derive_key(token, b"wrap") != derive_key(token, b"seal")


def test_derive_key_depends_on_token() -> None:
    assert derive_key("token-a", b"wrap") != derive_key("token-b", b"wrap")


def test_derive_key_is_deterministic() -> None:
    assert derive_key("token-a", b"wrap") == derive_key("token-a", b"wrap")


# token_hash, new_token and log_id


@pytest.mark.parametrize("token", ["", "abc", "x" * 1000, "tok\u00e9n"])
def test_token_hash_is_sha256_hex(token: str) -> None:
    assert token_hash(token) == hashlib.sha256(token.encode("utf-8")).hexdigest()


def test_token_hash_known_vector() -> None:
    # SHA-256("abc") from FIPS 180-2, Appendix B.1.
    assert token_hash("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_token_hash_lone_surrogate() -> None:
    # token_hash encodes with surrogatepass, so a lone surrogate hashes instead of raising.
    assert re.fullmatch(r"[0-9a-f]{64}", token_hash("\udcff"))


def test_new_token_length() -> None:
    assert len(new_token()) >= 43


def test_new_token_is_urlsafe() -> None:
    assert re.fullmatch(r"[A-Za-z0-9_\-]+", new_token())


def test_new_token_differs_each_call() -> None:
    tokens = {new_token() for _ in range(100)}

    assert len(tokens) == 100


def test_log_id_is_hash_prefix() -> None:
    token = new_token()

    assert log_id(token) == token_hash(token)[:10]
    assert len(log_id(token)) == 10


@pytest.mark.parametrize("token", ["abcdefghij", "0123456789abcdef", new_token()])
def test_log_id_hides_token(token: str) -> None:
    assert token not in log_id(token)
    assert log_id(token) not in token


# PKCE


def test_s256_rfc7636_vector() -> None:
    # RFC 7636, Appendix B.
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"

    assert s256_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_s256_has_no_padding() -> None:
    assert "=" not in s256_challenge(new_token())


def test_new_pkce_pair_verifies() -> None:
    pair = new_pkce_pair()

    assert s256_challenge(pair.code_verifier) == pair.code_challenge


def test_new_pkce_verifier_format() -> None:
    # RFC 7636 §4.1: 43 to 128 characters of [A-Z] / [a-z] / [0-9] / "-" / "." / "_" / "~".
    verifier = new_pkce_pair().code_verifier

    assert 43 <= len(verifier) <= 128
    assert re.fullmatch(r"[A-Za-z0-9\-._~]+", verifier)


def test_new_pkce_pairs_differ() -> None:
    first = new_pkce_pair()
    second = new_pkce_pair()

    assert first.code_verifier != second.code_verifier
    assert first.code_challenge != second.code_challenge
