"""Who is signed in: Clerk's session token, verified as strictly as Clerk's own SDKs verify it.

The token arrives in the ``__session`` cookie (same origin) or as ``Authorization: Bearer``
(cross origin). It is verified without a network call against the instance's PEM public key
(``CLERK_JWT_KEY``, from the dashboard's API keys page). A token is a signed-in session only when:

- its RS256 signature verifies, and ``exp`` and ``nbf`` hold (with 5 s of clock skew, as Clerk's
  SDKs allow);
- its header's ``typ``, when present, is ``JWT``. Clerk's OAuth access tokens are signed with the
  same instance key but say ``at+jwt``: they are not sessions;
- it names a session (``sid``) and a user (``sub``);
- its session is not ``pending`` (``sts``: tasks such as MFA set-up are unfinished). Clerk's SDKs
  treat such a session as signed out by default, and so does this:
  ``CLERK_TREAT_PENDING_AS_SIGNED_OUT=false`` lets pending sessions in, as Clerk's
  ``treatPendingAsSignedOut: false`` does;
- when ``CLERK_AUTHORIZED_PARTIES`` lists origins (comma-separated), its ``azp`` is present and one
  of them. Clerk documents that check as optional; a token with no ``azp`` is then refused, as
  Clerk's Python SDK refuses it.

``sub`` is the user id. Both examples share this; authorization is then the library's (cache.authz).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from cache.errors import ConfigError

CLOCK_SKEW_S = 5
_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


@dataclass(frozen=True)
class SessionVerifier:
    public_key: RSAPublicKey
    authorized_parties: frozenset[str] = frozenset()
    treat_pending_as_signed_out: bool = True

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> SessionVerifier:
        """From ``CLERK_JWT_KEY`` (PEM; ``\\n`` escapes allowed), ``CLERK_AUTHORIZED_PARTIES`` and
        ``CLERK_TREAT_PENDING_AS_SIGNED_OUT`` (true or false; default true)."""
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
        pending = environ.get("CLERK_TREAT_PENDING_AS_SIGNED_OUT", "true").strip().lower()
        if pending not in _BOOLEANS:
            raise ConfigError("CLERK_TREAT_PENDING_AS_SIGNED_OUT", "must be true or false")
        return cls(key, frozenset(p.strip() for p in parties if p.strip()), _BOOLEANS[pending])

    def user_id(self, authorization: str | None, session_cookie: str | None) -> str | None:
        """The signed-in user's id, or None for a missing, forged, expired, foreign or pending token."""
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
                options={"require": ["exp", "nbf", "sub", "sid"]},
            )
            header = jwt.get_unverified_header(token)  # the signature above covers it
        except jwt.InvalidTokenError:
            return None
        if not self._is_a_session(header, claims):
            return None
        sub = claims["sub"]
        return sub if isinstance(sub, str) and sub else None

    def _is_a_session(self, header: Mapping[str, Any], claims: Mapping[str, Any]) -> bool:
        """The rules past the signature and the times: each refusal is one Clerk's SDKs make too."""
        if "typ" in header and header["typ"] != "JWT":
            return False  # e.g. an OAuth access token (at+jwt) of the same instance
        sid = claims.get("sid")
        if not isinstance(sid, str) or not sid:
            return False
        if self.treat_pending_as_signed_out and claims.get("sts") == "pending":
            return False
        if not self.authorized_parties:
            return True
        azp = claims.get("azp")
        return isinstance(azp, str) and azp in self.authorized_parties
