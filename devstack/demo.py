"""``./dev demo``: a short scripted story through the real processes.

Starts a private Redis, the Clerk stand-in (60 ms per call) and the Procfile's web
and worker processes, then caches a user, renames an org and removes the member,
each change delivered as a signed webhook, and prints every lookup with its latency
and where its answer came from.
"""

from __future__ import annotations

import os
import sys
import time

import requests

from cache import ClerkClient, Membership, MembershipCache
from cache.connections import cache_redis
from devstack.clerk_standin import SAMPLE_ORG_IDS, SAMPLE_USER_IDS, ClerkStandIn
from devstack.redis_server import RedisServer, free_port
from devstack.signing import new_signing_secret, signed_event
from devstack.stack import REPO, LocalStack
from devstack.waiting import wait_until

ALICE = SAMPLE_USER_IDS["alice"]
ACME = SAMPLE_ORG_IDS["acme"]
KEY = "sk_test_demo_standin"


class Timeline:
    def __init__(self, cache: MembershipCache) -> None:
        self.cache = cache
        self.t0 = time.perf_counter()

    def note(self, text: str) -> None:
        print(f"{(time.perf_counter() - self.t0) * 1000:8.1f} ms  {text}")

    def lookup(self, label: str) -> list[Membership]:
        before = self.cache.stats.snapshot()
        started = time.perf_counter()
        result = self.cache.get_memberships(ALICE)
        took = (time.perf_counter() - started) * 1000
        after = self.cache.stats.snapshot()
        if after["clerk_calls"] > before["clerk_calls"]:
            source = "Clerk"
        elif after["waits"] > before["waits"]:
            source = "Redis, after waiting for the worker's fill"
        else:
            source = "Redis"
        orgs = ", ".join(f"{m.organization_name} ({m.role})" for m in result) or "no orgs"
        self.note(f"lookup {label:<28} {took:7.2f} ms  {orgs:<48} from {source}")
        return result


def main() -> int:
    secret = new_signing_secret()
    log_path = REPO / ".devstack" / "demo.log"
    log_path.parent.mkdir(exist_ok=True)
    with (
        RedisServer() as redis_server,
        ClerkStandIn(secret_key=KEY, latency_s=0.06) as clerk,
        open(log_path, "wb") as log,
    ):
        clerk.seed_sample()
        env = dict(os.environ)
        env.update(
            REDIS_URL=redis_server.url,
            CLERK_SECRET_KEY=KEY,
            CLERK_API_URL=clerk.url,
            CLERK_WEBHOOK_SIGNING_SECRET=secret,
            PORT=str(free_port()),
        )
        with LocalStack(env, log=log) as stack:
            cache = MembershipCache(cache_redis(redis_server.url), ClerkClient(KEY, clerk.url))
            timeline = Timeline(cache)

            def deliver(event: dict[str, object]) -> None:
                body, headers = signed_event(secret, event)
                response = requests.post(stack.url + "/webhooks/clerk", data=body, headers=headers, timeout=15)
                timeline.note(f"webhook {event['type']} -> {response.status_code} {response.json()['status']}")

            def refreshed() -> bool:
                return bool(cache.redis.exists(f"user-orgs:{ALICE}"))

            timeline.note(f"web on {stack.url}, worker running, Clerk stand-in answers in 60 ms")
            timeline.lookup("(cold)")
            timeline.lookup("(warm)")
            deliver(clerk.update_org(ACME, name="Acme Corporation"))
            timeline.lookup("right after the rename")
            wait_until(refreshed, 10, what="the worker's refresh")
            timeline.lookup("(warm again)")
            deliver(clerk.remove_membership(ALICE, ACME))
            timeline.lookup("right after the removal")
            wait_until(refreshed, 10, what="the worker's refresh")
            timeline.lookup("after the worker refreshed")
            member = cache.get_membership(ALICE, ACME)
            timeline.note(f"get_membership(alice, acme) -> {member}")
    print(f"(process logs: {log_path.relative_to(REPO)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
