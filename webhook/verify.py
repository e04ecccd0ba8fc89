"""Svix signature verification with key rotation.

svix raises more than WebhookVerificationError for hostile headers (ValueError,
binascii.Error...), so every failure is translated here into WebhookRejected.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from svix.webhooks import Webhook

from webhook.errors import WebhookRejected

# svix reads the svix-* names first and falls back to the Standard Webhooks names.
_ID_HEADERS = ("svix-id", "webhook-id")
_TIMESTAMP_HEADERS = ("svix-timestamp", "webhook-timestamp")
_SIGNATURE_HEADERS = ("svix-signature", "webhook-signature")


def _first(get: Callable[[str], str | None], names: Sequence[str]) -> str | None:
    for name in names:
        value = get(name)
        if value:
            return value
    return None


class SignatureVerifier:
    """Accepts a delivery signed with any of the configured secrets (so one can be rotated)."""

    def __init__(self, secrets: Sequence[str]) -> None:
        if not secrets:
            raise ValueError("at least one signing secret is required")
        self._webhooks = [Webhook(secret) for secret in secrets]

    def __repr__(self) -> str:  # never show the secrets
        return f"SignatureVerifier({len(self._webhooks)} secret(s))"

    def verify(self, body: str, get_header: Callable[[str], str | None]) -> str:
        """Verify ``body`` against the signature headers; return the message id.

        ``get_header`` looks a header up case-insensitively (e.g. ``request.headers.get``).
        """
        msg_id = _first(get_header, _ID_HEADERS)
        timestamp = _first(get_header, _TIMESTAMP_HEADERS)
        signature = _first(get_header, _SIGNATURE_HEADERS)
        if not (msg_id and timestamp and signature):
            raise WebhookRejected(
                400, "missing_signature_headers", "svix-id, svix-timestamp and svix-signature are required"
            )
        headers = {"svix-id": msg_id, "svix-timestamp": timestamp, "svix-signature": signature}
        problem = "no signature matches"
        for webhook in self._webhooks:
            try:
                webhook.verify(body, headers)
            except Exception as exc:  # svix lets ValueError/binascii.Error escape for malformed headers
                if "timestamp" in str(exc).lower():
                    problem = "timestamp outside the 5 minute tolerance"
                continue
            return msg_id
        code = "invalid_timestamp" if "timestamp" in problem else "invalid_signature"
        raise WebhookRejected(401, code, f"signature verification failed: {problem}")
