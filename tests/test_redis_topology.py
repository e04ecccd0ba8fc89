"""The production-like Redis test parts work against real processes: a TLS-only server with a
private CA, and a server with CONFIG renamed away."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis
from redis.connection import SSLConnection
from redis.exceptions import ConnectionError, ResponseError

from devstack.redis_server import RedisServer, make_tls_files, no_retry


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tls=make_tls_files(tmp_path)) as server:
        yield server


def test_tls_only_server_takes_a_rediss_client_that_trusts_its_ca(tls_server: RedisServer) -> None:
    assert tls_server.url.startswith("rediss://127.0.0.1:")
    with Redis.from_url(tls_server.url) as client:
        assert client.ping()
        assert client.connection_pool.connection_class is SSLConnection
    # the certificate names localhost too, and the hostname is checked (no ssl_check_hostname=false here)
    with Redis.from_url(tls_server.url.replace("127.0.0.1", "localhost")) as client:
        assert client.ping()


def test_tls_only_server_refuses_plain_text_and_unverified_clients(tls_server: RedisServer) -> None:
    plain = f"redis://127.0.0.1:{tls_server.port}/0"
    with Redis.from_url(plain, retry=no_retry(), socket_timeout=2) as client, pytest.raises(ConnectionError):
        client.ping()
    no_ca = f"rediss://127.0.0.1:{tls_server.port}/0"  # the system's CAs only: ours is private
    with Redis.from_url(no_ca, retry=no_retry()) as client, pytest.raises(ConnectionError, match="verify failed"):
        client.ping()


def test_config_can_be_renamed_away_like_on_managed_redis() -> None:
    with RedisServer(extra_args=("--rename-command", "CONFIG", "")) as server, server.client() as client:
        assert client.ping()
        with pytest.raises(ResponseError, match="unknown command"):
            client.config_get("maxmemory")
