"""``./dev send-event [URL]``: post one correctly signed sample Clerk event.

Checks a deployment's secret and routing end to end. The secret comes from
``CLERK_WEBHOOK_SIGNING_SECRET`` (the first one), else from the dev stack's file.
"""

from __future__ import annotations

import argparse
import os
import sys

import requests

from devstack.clerk_standin import SAMPLE_ORG_IDS, SAMPLE_USER_IDS
from devstack.signing import signed_event


def sample_event() -> dict[str, object]:
    """An ``organizationMembership.updated`` for the sample user alice in Acme."""
    return {
        "type": "organizationMembership.updated",
        "object": "event",
        "data": {
            "object": "organization_membership",
            "id": "orgmem_2sample0000000000000000000",
            "role": "org:admin",
            "organization": {"object": "organization", "id": SAMPLE_ORG_IDS["acme"], "name": "Acme Inc"},
            "public_user_data": {"user_id": SAMPLE_USER_IDS["alice"]},
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./dev send-event", description=__doc__)
    parser.add_argument("url", nargs="?", default=f"http://127.0.0.1:{os.environ.get('PORT', '8000')}/webhooks/clerk")
    args = parser.parse_args(argv)
    secret = os.environ.get("CLERK_WEBHOOK_SIGNING_SECRET", "").split()
    if not secret:
        from devstack.serve import signing_secret_file

        path = signing_secret_file()
        if not path.exists():
            print("send-event: CLERK_WEBHOOK_SIGNING_SECRET is not set (nor made by ./dev serve)", file=sys.stderr)
            return 2
        secret = [path.read_text().strip()]
    body, headers = signed_event(secret[0], sample_event())
    try:
        response = requests.post(args.url, data=body, headers=headers, timeout=15)
    except requests.RequestException as exc:
        print(f"send-event: {args.url}: {type(exc).__name__}", file=sys.stderr)
        return 1
    print(f"{response.status_code} {response.text.strip()}")
    return 0 if response.ok else 1


if __name__ == "__main__":
    sys.exit(main())
