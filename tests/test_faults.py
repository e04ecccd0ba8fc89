"""Faults in real processes: a worker SIGKILLed mid-job, Redis restarting under a stream of
events, Clerk timing out, oversize streamed bodies, and secrets kept out of every log."""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from redis import Redis

from cache import ClerkUnavailable
from devstack.clerk_standin import ClerkStandIn
from devstack.redis_server import RedisServer
from devstack.signing import new_signing_secret, sign, signed_event
from devstack.stack import LocalStack
from devstack.waiting import wait_until
from tests.read_apis import ReadApi
from tests.support import (
    ALICE,
    CLERK_KEY,
    cached_member,
    cached_users,
    held_leases,
    make_cache,
    pending_users,
    queued_jobs,
    stack_env,
    stashed_users,
)

MIB = 1024 * 1024


def test_clerk_timing_out_raises_a_typed_error_within_the_budget(
    open_api: Callable[..., ReadApi], redis_server: RedisServer, redis: Redis, clerk: ClerkStandIn
) -> None:
    """Through the sync API (requests) and the async one (httpx): each names the timeout.

    The retry budget is what stops the lookup here, not the attempt count: 8 attempts at a
    0.2 s read timeout with the client's backoff between them (0.1 s, doubling) would take
    about 14 s. An attempt starts only while the 1 s budget lasts, so the lookup ends by the
    budget plus one read timeout (1.2 s; about 0.9 s here). The bound is twice that: wide for
    a loaded machine (the budget runs on the clock, so a slow machine makes fewer attempts and
    only the last one's overhead can add), and far below what ignoring the budget costs."""
    clerk.add_membership(ALICE, clerk.create_org("Acme")["data"]["id"])
    clerk.latency_s = 1.0
    read_timeout_s, budget_s = 0.2, 1.0
    slow = open_api(redis_server.url, clerk.url, read_timeout_s=read_timeout_s, max_attempts=8, retry_budget_s=budget_s)
    started = time.perf_counter()
    with pytest.raises(ClerkUnavailable, match="Timeout"):
        slow.get_memberships(ALICE)
    elapsed = time.perf_counter() - started
    assert elapsed < 2 * (budget_s + read_timeout_s), elapsed
    assert cached_users(redis) == [] and held_leases(redis) == [] and stashed_users(redis) == []


def test_redis_restarting_under_a_stream_of_events_loses_no_acknowledged_event(
    own_redis: RedisServer, clerk: ClerkStandIn, tmp_path: Path
) -> None:
    """Events are redelivered after a 503, as Svix does. Every acknowledged removal must hold
    at once, and at the end every lookup agrees with Clerk."""
    secret = new_signing_secret()
    rng = random.Random(7)
    orgs = [clerk.create_org(f"Org {i}")["data"]["id"] for i in range(3)]
    users = [f"user_2stream{i}" for i in range(6)]
    env = stack_env(own_redis.url, clerk, secret)
    cache = make_cache(own_redis.url, clerk.url)
    with LocalStack(env, log=open(tmp_path / "stack.log", "wb")) as stack:

        def outage_then_empty_restart() -> None:
            time.sleep(1.0)
            own_redis.stop()  # a crash: all data gone
            time.sleep(0.5)
            own_redis.start()  # empty, same port

        outage = threading.Thread(target=outage_then_empty_restart)
        outage.start()
        unavailable = stale = 0
        started = time.monotonic()
        while time.monotonic() - started < 4.0:
            user_id, org_id = rng.choice(users), rng.choice(orgs)
            member = any(m["organization"]["id"] == org_id for m in clerk.memberships_of(user_id))
            cache.get_memberships(user_id)
            event = clerk.remove_membership(user_id, org_id) if member else clerk.add_membership(user_id, org_id)
            body, headers = signed_event(secret, event)
            while True:  # Svix: retry until 2xx
                try:
                    status = requests.post(stack.url + "/webhooks/clerk", data=body, headers=headers, timeout=15)
                except requests.RequestException:
                    status = None
                if status is not None and status.status_code == 200:
                    break
                assert status is None or status.status_code == 503
                unavailable += 1
                assert unavailable < 200, "the intake did not recover after Redis came back"
                time.sleep(0.05)
            if member and cache.get_membership(user_id, org_id) is not None:
                stale += 1
        outage.join()
        assert unavailable > 0  # the outage happened mid-stream
        assert stale == 0
        redis = Redis.from_url(own_redis.url)
        wait_until(lambda: not queued_jobs(redis) and not pending_users(redis))
        for user_id in users:
            want = sorted(m["organization"]["id"] for m in clerk.memberships_of(user_id))
            assert sorted(m.organization_id for m in cache.get_memberships(user_id)) == want
        redis.close()


def test_no_secret_reaches_any_log_or_response(own_redis: RedisServer, clerk: ClerkStandIn, tmp_path: Path) -> None:
    secret = new_signing_secret()
    log_path = tmp_path / "stack.log"
    acme = cached_member(clerk, make_cache(own_redis.url, clerk.url), ALICE)
    bodies: list[str] = []
    with open(log_path, "wb") as log, LocalStack(stack_env(own_redis.url, clerk, secret), log=log) as stack:
        url = stack.url + "/webhooks/clerk"
        body, headers = signed_event(secret, clerk.update_membership(ALICE, acme, "org:admin"))
        bodies.append(requests.post(url, data=body, headers=headers, timeout=15).text)
        bodies.append(requests.post(url, data=body, headers={**headers, "svix-signature": "v1,x"}, timeout=15).text)
        bodies.append(requests.post(url, data=body, headers=sign(new_signing_secret(), body), timeout=15).text)
        clerk.fail_next(50, status=401)  # the worker's Clerk calls are refused: it logs the failure
        body, headers = signed_event(secret, clerk.update_membership(ALICE, acme, "org:member"))
        bodies.append(requests.post(url, data=body, headers=headers, timeout=15).text)
        # the worker's failure reaches the log within a second here, later on a busy machine
        wait_until(lambda: "refresh failed" in log_path.read_text(errors="replace"), 30, what="the worker's log line")
    text = log_path.read_text(errors="replace") + "".join(bodies)
    assert "refresh failed" in text  # the worker did log the Clerk failure...
    for value in (secret, secret.removeprefix("whsec_"), CLERK_KEY):
        assert value not in text  # ...and no secret anywhere


def test_an_oversize_streamed_body_is_refused_without_reading_it_all(
    own_redis: RedisServer, clerk: ClerkStandIn
) -> None:
    """A chunked body (no Content-Length) of 64 MiB against the real gunicorn process, limit 1 MiB.

    The client's send buffer is kept small, so what it has sent is what the server's socket
    took in: the server's reads plus its receive buffer. The 413 must arrive while the client
    is still sending, long before the whole body is out, and the server must close the
    connection without reading the rest, so the client's sending ends in a reset (recorded
    and asserted, not swallowed). An intake that read the whole body before checking its size
    would take in all 64 MiB and answer only after the last chunk."""
    body_size, chunk = 64 * MIB, b"x" * 65536
    secret = new_signing_secret()
    with LocalStack(stack_env(own_redis.url, clerk, secret)) as stack:
        with socket.create_connection(("127.0.0.1", stack.port), timeout=10) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
            sent = 0  # body bytes handed to the socket so far
            received: list[bytes] = []
            sent_when_answered: list[int] = []
            read_error: list[OSError] = []

            def read() -> None:  # read while sending: the server answers, then closes the connection
                try:
                    while data := sock.recv(65536):
                        if not received:
                            sent_when_answered.append(sent)
                        received.append(data)
                except OSError as exc:
                    read_error.append(exc)  # a reset after the answer: its bytes are already in received

            reader = threading.Thread(target=read)
            reader.start()
            sock.sendall(
                b"POST /webhooks/clerk HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            send_error: OSError | None = None
            try:
                while sent < body_size:
                    sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    sent += len(chunk)
                sock.sendall(b"0\r\n\r\n")
            except OSError as exc:
                send_error = exc
            reader.join(10)
            answer = b"".join(received).decode(errors="replace")
        assert answer.startswith("HTTP/1.1 413"), answer[:200]
        assert '"error":"request_entity_too_large"' in answer.replace(" ", "")
        # The answer came after about the limit, not after the body: the 1 MiB read plus what the
        # server's receive buffer held (about 1.2 MiB in all here; 16 MiB leaves room for a buffer
        # the kernel grew), where reading it all means the whole 64 MiB was out first.
        assert sent_when_answered and sent_when_answered[0] < 16 * MIB, (sent_when_answered, sent, read_error)
        # And the server never read the rest: it closed with the body unread, and the reset
        # ended the client's sending long before the end of the body.
        assert isinstance(send_error, (ConnectionResetError, BrokenPipeError)), (send_error, sent)
        assert sent < 16 * MIB, sent
