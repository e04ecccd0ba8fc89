"""``./dev send-event [URL]``: the CLI's ``send-test-event`` against the local stack.

Uses ``CLERK_WEBHOOK_SIGNING_SECRET`` if set, else the secret ``./dev serve`` made,
and names the sample user alice in Acme, whom the stand-in knows.
"""

from __future__ import annotations

import os
import sys

from clerk_org_cache_cli.commands import main as cli_main
from devstack.clerk_standin import SAMPLE_ORG_IDS, SAMPLE_USER_IDS
from devstack.serve import signing_secret_file


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    url = args[0] if args else f"http://127.0.0.1:{os.environ.get('PORT', '8000')}/webhooks/clerk"
    if not os.environ.get("CLERK_WEBHOOK_SIGNING_SECRET"):
        path = signing_secret_file()
        if not path.exists():
            print("send-event: CLERK_WEBHOOK_SIGNING_SECRET is not set (nor made by ./dev serve)", file=sys.stderr)
            return 2
        os.environ["CLERK_WEBHOOK_SIGNING_SECRET"] = path.read_text().strip()
    return cli_main(["send-test-event", url, "--user-id", SAMPLE_USER_IDS["alice"], "--org-id", SAMPLE_ORG_IDS["acme"]])


if __name__ == "__main__":
    sys.exit(main())
