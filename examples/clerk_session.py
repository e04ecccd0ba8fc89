"""Who is signed in: Clerk's session token, verified as Clerk's "manual JWT verification" says.

The token arrives in the ``__session`` cookie (same origin) or as ``Authorization: Bearer``
(cross origin). It is verified without a network call against the instance's PEM public key
(``CLERK_JWT_KEY``, from the dashboard's API keys page): an RS256 signature, ``exp`` and
``nbf`` (with 5 s of clock skew, as Clerk's SDKs allow), and, when ``CLERK_AUTHORIZED_PARTIES``
lists origins (comma-separated), an ``azp`` claim that is one of them. ``sub`` is the user id.
Both examples share this; authorization is then the library's (cache.authz).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from cache.errors import ConfigError

CLOCK_SKEW_S = 5


@dataclass(frozen=True)
class SessionVerifier:
    public_key: RSAPublicKey
    authorized_parties: frozenset[str] = frozenset()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> SessionVerifier:
        """From ``CLERK_JWT_KEY`` (PEM; ``\\n`` escapes allowed) and ``CLERK_AUTHORIZED_PARTIES``."""
        pem = environ.get("CLERK_JWT_KEY", "").strip().replace("\\n", "\n")
        if not pem:
            raise ConfigError("CLERK_JWT_KEY", "is not set (the instance's PEM public key)")
        try:
            key = load_pem_public_key(pem.encode())
        except ValueError:
            raise ConfigError("CLERK_JWT_KEY", "is not a PEM public key") from None
        if not isinstance(key, RSAPublicKey):
            raise ConfigError("CLERK_JWT_KEY", "is not an RSA public key")
        parties = environ.get("CLERK_AUTHORIZED_PARTIES", "").split(",")
        return cls(key, frozenset(p.strip() for p in parties if p.strip()))

    def user_id(self, authorization: str | None, session_cookie: str | None) -> str | None:
        """The signed-in user's id, or None for a missing, forged, expired or foreign token."""
        scheme, _, bearer = (authorization or "").partition(" ")
        token = bearer.strip() if scheme.lower() == "bearer" else session_cookie
        if not token:
            return None
        try:
            claims = jwt.decode(
                token,
                self.public_key,
                algorithms=["RS256"],
                leeway=CLOCK_SKEW_S,
                options={"require": ["exp", "nbf", "sub"]},
            )
        except jwt.InvalidTokenError:
            return None
        azp = claims.get("azp")
        if self.authorized_parties and azp is not None and azp not in self.authorized_parties:
            return None  # minted for another origin (Clerk: skip the check when there is no azp)
        sub = claims["sub"]
        return sub if isinstance(sub, str) else None
