"""Clerk session tokens for the tests: real RS256 tokens signed with a key pair made here (as a Clerk
instance holds one; the apps under test get only its PEM public key)."""

from __future__ import annotations

import time
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ORIGIN = "http://localhost:3000"  # the app's own frontend: the only authorized party

INSTANCE_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PUBLIC_PEM = INSTANCE_KEY.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()


def session_token(
    user_id: str, *, key: rsa.RSAPrivateKey = INSTANCE_KEY, typ: str | None = "JWT", **overrides: Any
) -> str:
    """A session token shaped as Clerk mints them (a claim set to None is left out; ``typ=None``: no
    ``typ`` in the header)."""
    now = int(time.time())
    claims = {
        "sub": user_id,
        "sid": "sess_2example",
        "iss": "https://example.clerk.accounts.dev",
        "azp": ORIGIN,
        "iat": now,
        "nbf": now - 10,
        "exp": now + 60,
        **overrides,
    }
    payload = {name: value for name, value in claims.items() if value is not None}
    return jwt.encode(payload, key, algorithm="RS256", headers={"kid": "ins_2example", "typ": typ})
