"""Every setting is parsed in one place; a bad value stops the process that reads it with one line, exit 2."""

from __future__ import annotations

import subprocess

import pytest

from cache.config import VARIABLES, Settings
from devstack.signing import new_signing_secret
from tests.support import bare_env, run_module

GOOD = {"CLERK_SECRET_KEY": "sk_test_" + "s3cr3t" * 4, "CLERK_WEBHOOK_SIGNING_SECRET": new_signing_secret()}
BAD = {
    "REDIS_URL": "http://x",
    "REDIS_SENTINELS": "no-port",
    "REDIS_SENTINEL_MASTER": "two words",
    "REDIS_SENTINEL_PASSWORD": "with space",
    "REDIS_WAIT_REPLICAS": "all",
    "REDIS_WAIT_TIMEOUT_MS": "60000",
    "CLERK_SECRET_KEY": "sk_test_with space",
    "CLERK_API_URL": "ftp://x",
    "CLERK_WEBHOOK_SIGNING_SECRET": "whsec_not*base64",
    "USER_ORGS_TTL_SECONDS": "soon",
    "CLERK_RATE_LIMIT": "lots",
    "CLERK_RATE_LIMIT_RESERVE": "-1",
    "CLERK_RATE_WINDOW_SECONDS": "0",
    "CLERK_INTERACTIVE_WAIT_MS": "forever",
    "PORT": "http",
    "WEB_CONCURRENCY": "many",
    "METRICS_TOKEN": "short",
    "REFRESH_CONCURRENCY": "0",
    "REFRESH_RETRY_INTERVALS": "soon",
    "WORKER_METRICS_PORT": "70000",
    "WORKER_SWEEP_SECONDS": "never",
    "NEAR_CACHE_SIZE": "-1",
    "NEAR_CACHE_LEASE_MS": "100",  # below the 500 ms a renewal every L/4 needs
    "LOG_FORMAT": "xml",
    "LOG_LEVEL": "verbose",
}
MODULES = {"worker": "worker", "web": "webhook", "cli": "clerk_org_cache_cli"}


def run(module: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_module(module, *args, env=bare_env(**env))


def test_every_variable_has_a_bad_value_below() -> None:
    assert sorted(BAD) == sorted(v.name for v in VARIABLES)


@pytest.mark.parametrize("variable", VARIABLES, ids=lambda v: v.name)
def test_a_bad_value_exits_2_with_one_line_naming_the_variable(variable: object) -> None:
    name = variable.name  # type: ignore[attr-defined]
    readers = variable.read_by | variable.required_by  # type: ignore[attr-defined]
    process = next(p for p in ("worker", "web", "cli") if p in readers)
    result = run(MODULES[process], {**GOOD, name: BAD[name]}, *(["stats"] if process == "cli" else []))
    assert result.returncode == 2 if process != "cli" else result.returncode != 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and name in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    for secret in GOOD.values():
        assert secret not in result.stderr


@pytest.mark.parametrize(
    ("module", "variable"), [("worker", "CLERK_SECRET_KEY"), ("webhook", "CLERK_WEBHOOK_SIGNING_SECRET")]
)
def test_a_missing_required_variable_exits_2(module: str, variable: str) -> None:
    result = run(module, {k: v for k, v in GOOD.items() if k != variable})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"{'web' if module == 'webhook' else module}: {variable}: "
        + ("is not set (" + next(v.meaning for v in VARIABLES if v.name == variable) + ")")
    ]


def test_each_process_reads_only_its_own_variables() -> None:
    """App code importing the library is not refused over the web process's PORT, and so on."""
    env = {**GOOD, "PORT": BAD["PORT"], "WEB_CONCURRENCY": BAD["WEB_CONCURRENCY"], "LOG_LEVEL": BAD["LOG_LEVEL"]}
    settings = Settings.from_env(env, process="library")
    assert settings.port == 8000 and settings.clerk_secret_key == GOOD["CLERK_SECRET_KEY"]
    assert "s3cr3t" not in repr(settings)


@pytest.mark.parametrize(
    ("given", "missing"),
    [
        ({"REDIS_SENTINELS": "127.0.0.1:26379"}, "REDIS_SENTINEL_MASTER"),
        ({"REDIS_SENTINEL_MASTER": "main"}, "REDIS_SENTINELS"),
    ],
)
def test_sentinel_settings_come_in_pairs(given: dict[str, str], missing: str) -> None:
    result = run("worker", {**GOOD, **given})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"worker: {missing}: is not set")


@pytest.mark.parametrize("url", ["http://127.0.0.1:99999", "https://api.clerk.com:port"])
def test_a_clerk_url_with_an_impossible_port_is_refused_at_start_up(url: str) -> None:
    """Found in review: the async client failed on it with an error outside our hierarchy, per lookup."""
    from cache.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^CLERK_API_URL: has an invalid port$"):
        Settings.from_env({**GOOD, "CLERK_API_URL": url}, process="library")
