"""Metrics on real scrapes and JSON logs, after a scripted run of events and lookups."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import requests
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis

from cache import ClerkUnavailable, MembershipCache
from cache.contract import user_orgs_key
from devstack.clerk_standin import ClerkStandIn
from devstack.redis_server import RedisServer, free_port
from devstack.signing import new_message_id, new_signing_secret, signed_event
from devstack.stack import LocalStack
from devstack.waiting import wait_until
from tests.support import (
    ALICE,
    CLERK_KEY,
    METRICS_AUTH,
    SIGNING_SECRET,
    intake_client,
    make_cache,
    post_event,
    stack_env,
    start_process,
    stop_process,
    unreachable_redis_url,
)


def scraped_value(client: FlaskClient, name: str, **labels: str) -> float:
    """One sample from a real scrape of the app's /metrics endpoint (0 when absent)."""
    response = client.get("/metrics", headers=METRICS_AUTH)
    assert response.status_code == 200
    return scrape(response.get_data(as_text=True)).get((name, tuple(sorted(labels.items()))), 0.0)


def scrape(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_cache_and_intake_metrics_move_as_expected(
    client: FlaskClient, cache: MembershipCache, clerk: ClerkStandIn, redis: Redis
) -> None:
    acme = clerk.create_org("Acme")["data"]["id"]
    clerk.add_membership(ALICE, acme)
    names = [
        ("clerk_org_cache_lookups_total", {"result": "miss"}),
        ("clerk_org_cache_lookups_total", {"result": "hit"}),
        ("clerk_org_cache_lookups_total", {"result": "error"}),
        ("clerk_org_cache_fills_total", {"outcome": "stored"}),
        ("clerk_org_cache_fills_total", {"outcome": "refused"}),
        ("clerk_org_cache_clerk_responses_total", {"status": "200"}),
        ("clerk_org_cache_clerk_responses_total", {"status": "503"}),
        ("clerk_org_cache_single_flight_waits_total", {"outcome": "waited"}),
        ("clerk_org_cache_events_total", {"type": "organizationMembership.updated", "outcome": "processed"}),
        ("clerk_org_cache_events_total", {"type": "organizationMembership.updated", "outcome": "duplicate"}),
        ("clerk_org_cache_events_total", {"type": "other", "outcome": "ignored"}),
        ("clerk_org_cache_events_total", {"type": "unknown", "outcome": "rejected_invalid_signature"}),
        ("clerk_org_cache_intake_seconds_count", {}),
        ("clerk_org_cache_lookups_total", {"result": "redis_fallback"}),
        ("clerk_org_cache_clerk_request_seconds_count", {}),
        ("clerk_org_cache_events_total", {"type": "organizationMembership.updated", "outcome": "failed_to_record"}),
    ]
    before = {(n, tuple(sorted(lbl.items()))): scraped_value(client, n, **lbl) for n, lbl in names}

    cache.get_memberships(ALICE)  # miss, Clerk 200, fill stored
    cache.get_memberships(ALICE)  # hit
    event, msg_id = clerk.update_membership(ALICE, acme, "org:admin"), new_message_id()
    assert post_event(client, event, msg_id=msg_id).status_code == 200
    assert post_event(client, event, msg_id=msg_id).status_code == 200
    assert post_event(client, {"type": "email.created", "data": {}}).status_code == 200
    body, headers = signed_event(new_signing_secret(), event)
    assert client.post("/webhooks/clerk", data=body, headers={**headers}).status_code == 401
    clerk.fail_next(4, status=503)
    with contextlib.suppress(ClerkUnavailable):
        cache.get_memberships(ALICE)
    results: list[Any] = []
    with clerk.hold(ALICE) as gate:  # one lookup fills under a lease while another waits for it
        first = threading.Thread(target=lambda: results.append(cache.get_memberships(ALICE)))
        first.start()
        assert gate.wait_arrived()
        second = threading.Thread(target=lambda: results.append(cache.get_memberships(ALICE)))
        second.start()
        wait_until(lambda: cache.stats.snapshot()["waits"] >= 1, 5)
    first.join(5)
    second.join(5)
    redis.delete(user_orgs_key(ALICE))
    with clerk.hold(ALICE) as gate:  # a fill refused because an invalidation won
        reader = threading.Thread(target=lambda: results.append(cache.get_memberships(ALICE)))
        reader.start()
        assert gate.wait_arrived()
        cache.invalidate(ALICE)
    reader.join(5)

    dead_redis = unreachable_redis_url()
    without_redis = make_cache(dead_redis, clerk.url)
    assert without_redis.get_memberships(ALICE)  # answered by Clerk: a redis_fallback
    broken = intake_client(dead_redis)
    assert post_event(broken, clerk.update_membership(ALICE, acme, "org:member")).status_code == 503

    after = {(n, tuple(sorted(lbl.items()))): scraped_value(client, n, **lbl) for n, lbl in names}
    delta = {k[0] + str(dict(k[1])): after[k] - before[k] for k in before}
    assert delta == {
        "clerk_org_cache_lookups_total{'result': 'miss'}": 5.0,
        "clerk_org_cache_lookups_total{'result': 'hit'}": 1.0,
        "clerk_org_cache_lookups_total{'result': 'error'}": 1.0,
        "clerk_org_cache_fills_total{'outcome': 'stored'}": 2.0,
        "clerk_org_cache_fills_total{'outcome': 'refused'}": 1.0,
        "clerk_org_cache_clerk_responses_total{'status': '200'}": 4.0,
        "clerk_org_cache_clerk_responses_total{'status': '503'}": 4.0,
        "clerk_org_cache_single_flight_waits_total{'outcome': 'waited'}": 1.0,
        "clerk_org_cache_events_total{'outcome': 'processed', 'type': 'organizationMembership.updated'}": 1.0,
        "clerk_org_cache_events_total{'outcome': 'duplicate', 'type': 'organizationMembership.updated'}": 1.0,
        "clerk_org_cache_events_total{'outcome': 'ignored', 'type': 'other'}": 1.0,
        "clerk_org_cache_events_total{'outcome': 'rejected_invalid_signature', 'type': 'unknown'}": 1.0,
        "clerk_org_cache_intake_seconds_count{}": 5.0,
        "clerk_org_cache_lookups_total{'result': 'redis_fallback'}": 1.0,
        "clerk_org_cache_clerk_request_seconds_count{}": 8.0,
        "clerk_org_cache_events_total{'outcome': 'failed_to_record', 'type': 'organizationMembership.updated'}": 1.0,
    }


def test_procfile_processes_expose_metrics_and_log_json(
    own_redis: RedisServer, clerk: ClerkStandIn, tmp_path: Path
) -> None:
    """gunicorn with 2 workers sums its workers' counters; the worker serves its own metrics port."""
    secret = new_signing_secret()
    worker_port = free_port()
    log_path = tmp_path / "stack.log"
    acme = clerk.create_org("Acme")["data"]["id"]
    env = stack_env(own_redis.url, clerk, secret, WEB_CONCURRENCY="2", WORKER_METRICS_PORT=str(worker_port))
    cache = make_cache(own_redis.url, clerk.url)
    users = [f"user_2obs{i}" for i in range(6)]
    for user_id in users:
        clerk.add_membership(user_id, acme)
        cache.get_memberships(user_id)
    with open(log_path, "wb") as log, LocalStack(env, log=log) as stack:
        for user_id in users:
            body, headers = signed_event(secret, clerk.update_membership(user_id, acme, "org:admin"))
            assert requests.post(stack.url + "/webhooks/clerk", data=body, headers=headers, timeout=10).ok
        wait_until(lambda: all(b"org:admin" in (cache.redis.get(user_orgs_key(u)) or b"") for u in users))
        url = stack.url + "/webhooks/clerk"
        body, headers = signed_event(secret, clerk.update_membership(users[0], acme, "org:member"))
        assert requests.post(url, data=body, headers=headers, timeout=10).json() == {"status": "processed"}
        assert requests.post(url, data=body, headers=headers, timeout=10).json() == {"status": "duplicate"}
        body, headers = signed_event(secret, {"type": "session.created", "data": {}})
        assert requests.post(url, data=body, headers=headers, timeout=10).json() == {"status": "ignored"}
        assert (
            requests.post(url, data=body, headers={**headers, "svix-signature": "v1,x"}, timeout=10).status_code == 401
        )
        assert requests.get(stack.url + "/metrics", timeout=10).status_code == 401
        web = scrape(requests.get(stack.url + "/metrics", headers=METRICS_AUTH, timeout=10).text)
        assert (
            web[
                (
                    "clerk_org_cache_events_total",
                    (("outcome", "duplicate"), ("type", "organizationMembership.updated")),
                )
            ]
            == 1
        )
        assert web[("clerk_org_cache_events_total", (("outcome", "ignored"), ("type", "other")))] == 1
        assert (
            web[("clerk_org_cache_events_total", (("outcome", "rejected_invalid_signature"), ("type", "unknown")))] == 1
        )
        assert web[("clerk_org_cache_intake_seconds_count", ())] == 10
        processed = web[
            (
                "clerk_org_cache_events_total",
                (("outcome", "processed"), ("type", "organizationMembership.updated")),
            )
        ]
        assert processed == 7.0  # summed over both gunicorn workers
        wait_until(lambda: _worker_metric(worker_port, "clerk_org_cache_refreshes_total", outcome="refreshed") >= 6)
        assert _worker_metric(worker_port, "clerk_org_cache_jobs_total", kind="drain", outcome="succeeded") >= 1
        assert _worker_metric(worker_port, "clerk_org_cache_job_seconds_count", kind="drain") >= 1
        assert _worker_metric(worker_port, "clerk_org_cache_clerk_responses_total", status="200") >= 6
        assert _worker_metric(worker_port, "clerk_org_cache_fills_total", outcome="stored") >= 6
        assert _worker_metric(worker_port, "clerk_org_cache_queue_depth", what="rq_jobs") == 0
        assert _worker_metric(worker_port, "clerk_org_cache_oldest_job_age_seconds") == 0
        time.sleep(0.2)
    lines = [
        line.split(" | ", 1)[1]
        for line in log_path.read_text().splitlines()
        if re.match(r"^\S+ (web|worker)\.1 +\| ", line)
    ]
    records = [json.loads(line) for line in lines if line.strip()]  # every process line is one JSON object
    webhook_lines = [r for r in records if r.get("logger") == "webhook"]
    assert len(webhook_lines) == 10
    assert all(r["request_id"] for r in webhook_lines)
    assert sum(1 for r in webhook_lines if str(r["svix_id"]).startswith("msg_")) == 9  # all but the forged one
    assert [r["outcome"] for r in webhook_lines].count("processed") == 7
    assert {r["user_id"] for r in webhook_lines if r["outcome"] == "processed"} == set(users)
    assert any(r.get("logger") == "worker.jobs" and r.get("refreshed") for r in records)
    assert secret not in log_path.read_text() and CLERK_KEY not in log_path.read_text()


def _worker_metric(port: int, name: str, **labels: str) -> float:
    samples = scrape(requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text)
    return samples.get((name, tuple(sorted(labels.items()))), -1.0)


def test_request_id_is_kept_echoed_and_logged(client: FlaskClient, caplog: Any) -> None:
    with caplog.at_level("INFO", logger="webhook"):
        response = client.post(
            "/webhooks/clerk", data="{}", headers={"X-Request-ID": "req-123", "Content-Type": "application/json"}
        )
        odd = client.get("/healthz", headers={"X-Request-ID": "not ok\\n"})
    assert response.status_code == 400 and response.headers["X-Request-ID"] == "req-123"
    assert re.fullmatch(r"[0-9a-f]{32}", odd.headers["X-Request-ID"])  # a new id instead of the caller's junk
    lines = [r for r in caplog.records if r.name == "webhook"]
    assert [(r.request_id, r.outcome) for r in lines] == [("req-123", "rejected_missing_signature_headers")]


def test_metrics_are_not_for_the_internet(redis_server: RedisServer, redis: Redis) -> None:
    """Without METRICS_TOKEN the path does not exist; with it, only the bearer of the token gets a byte."""
    closed = intake_client(redis_server.url)
    response = closed.get("/metrics")
    assert response.status_code == 404 and b"clerk_org_cache" not in response.data
    guarded = intake_client(redis_server.url, METRICS_TOKEN="x" * 32)
    for headers in ({}, {"Authorization": "Bearer " + "y" * 32}, {"Authorization": "Basic " + "x" * 32}):
        response = guarded.get("/metrics", headers=headers)
        assert response.status_code == 401 and b"clerk_org_cache" not in response.data
        assert response.json == {"error": "unauthorized", "message": response.json["message"]}  # type: ignore[index]
    response = guarded.get("/metrics", headers={"Authorization": "Bearer " + "x" * 32})
    assert response.status_code == 200 and b"clerk_org_cache_events_total" in response.data


def test_a_line_logged_inside_a_request_under_gunicorn_carries_its_request_id(tmp_path: Path) -> None:
    """gunicorn applies its own logging config in every worker; the request-id filter is part of it."""
    port = free_port()
    env = {
        "PATH": os.environ["PATH"],
        "REDIS_URL": unreachable_redis_url(),  # nothing listens: recording the event fails
        "CLERK_WEBHOOK_SIGNING_SECRET": SIGNING_SECRET,
        "PORT": str(port),
        "WEB_CONCURRENCY": "2",
    }
    log_path = tmp_path / "web.log"
    with open(log_path, "wb") as log:
        web = start_process("web", env, log)
    try:
        wait_until(lambda: _answers(f"http://127.0.0.1:{port}/healthz"), 60, what="gunicorn")
        body, headers = signed_event(SIGNING_SECRET, {"type": "user.deleted", "data": {"id": ALICE}})
        response = requests.post(f"http://127.0.0.1:{port}/webhooks/clerk", data=body, headers=headers, timeout=15)
        assert response.status_code == 503
        request_id = response.headers["X-Request-ID"]
    finally:
        stop_process(web, 20)
    records = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    failure = [r for r in records if r["message"].startswith("could not record the event")]
    assert [r.get("request_id") for r in failure] == [request_id], records
    assert failure[0]["level"] == "warning" and failure[0]["logger"] == "webhook"
    summary = [r for r in records if r.get("outcome") == "failed_to_record"]
    assert [r["request_id"] for r in summary] == [request_id]


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


def test_importing_the_library_registers_only_lookup_metrics() -> None:
    """App processes import cache: their own /metrics must not show the intake's or the worker's."""
    script = (
        "import sys, cache, prometheus_client\n"
        "names = sorted(m.name for m in prometheus_client.REGISTRY.collect() if m.name.startswith('clerk_'))\n"
        "print(names)\n"
        "service_modules = ('flask', 'rq', 'gunicorn', 'webhook', 'worker', 'service', 'clerk_org_cache_cli')\n"
        "print(sorted(n for n in service_modules if n in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    names, web_or_worker_modules = result.stdout.strip().splitlines()
    assert names == str(
        sorted(
            [
                "clerk_org_cache_clerk_budget",
                "clerk_org_cache_clerk_budget_wait_seconds",
                "clerk_org_cache_clerk_pauses",
                "clerk_org_cache_clerk_request_seconds",
                "clerk_org_cache_clerk_responses",
                "clerk_org_cache_fills",
                "clerk_org_cache_lookups",
                "clerk_org_cache_near_ack_seconds",
                "clerk_org_cache_near_drops",
                "clerk_org_cache_near_keeps",
                "clerk_org_cache_near_lapse_wait_seconds",
                "clerk_org_cache_near_lapsed",
                "clerk_org_cache_near_lease_age_seconds",
                "clerk_org_cache_single_flight_waits",
            ]
        )
    )
    assert web_or_worker_modules == "[]"
