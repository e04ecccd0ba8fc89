"""Sign Clerk events exactly as Svix does, with svix's own `Webhook.sign`."""

from __future__ import annotations

import base64
import json
import secrets
from datetime import UTC, datetime
from typing import Any

from svix.webhooks import Webhook


def new_signing_secret() -> str:
    """A fresh ``whsec_`` secret, shaped like the ones Clerk's dashboard shows."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def new_message_id() -> str:
    return "msg_" + secrets.token_hex(13)


def sign(
    secret: str,
    body: str,
    *,
    msg_id: str | None = None,
    timestamp: datetime | None = None,
) -> dict[str, str]:
    """The three svix headers for ``body`` (a str: svix signs bytes as their repr)."""
    msg_id = msg_id or new_message_id()
    when = timestamp or datetime.now(UTC)
    return {
        "svix-id": msg_id,
        "svix-timestamp": str(int(when.timestamp())),
        "svix-signature": Webhook(secret).sign(msg_id, when, body),
        "content-type": "application/json",
    }


def signed_event(secret: str, event: dict[str, Any], **kwargs: Any) -> tuple[str, dict[str, str]]:
    """Serialize ``event`` and sign it; returns (body, headers)."""
    body = json.dumps(event)
    return body, sign(secret, body, **kwargs)
