"""The Lua files in cache/lua/ are the protocol other services (some in TypeScript) run as they are.

So each file must be the very script the library runs (none orphaned), document its KEYS, ARGV
and reply in its header, and work with a plain EVAL / SCRIPT LOAD, with no Python in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
from pathlib import Path

import pytest
from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import ResponseError

import cache as cache_package
from cache import contract
from cache.aio.io import AsyncIO
from cache.contract import CHANGE_SEQ_KEY, lease_key, stash_key, user_orgs_key
from cache.effects import RunScript
from cache.io import SyncIO
from cache.protocol import Acquired, PatchAction, acquire_call, decode_acquired, new_token
from cache.scripts import SCRIPT_NAMES, script_source, script_text, without_shebang
from devstack.redis_server import RedisServer
from tests.support import ALICE, held_leases

LUA_DIR = Path(__file__).resolve().parents[1] / "cache" / "lua"
LUA_FILES = sorted(LUA_DIR.glob("*.lua"))


def _header(text: str) -> list[str]:
    """The leading comment block, after the shebang line if there is one."""
    lines = text.splitlines()
    if lines and lines[0].startswith("#!"):
        lines = lines[1:]
    header: list[str] = []
    for line in lines:
        if not line.startswith("--"):
            break
        header.append(line)
    return header


def test_the_files_are_there() -> None:
    assert {path.stem for path in LUA_FILES} == set(SCRIPT_NAMES)


def test_the_protocol_runs_every_file_as_it_is_and_nothing_else(redis: Redis) -> None:
    # every script call in the library names a file; a name that is not a file cannot be loaded
    called = set()
    for module in Path(cache_package.__file__).parent.glob("*.py"):
        called |= set(re.findall(r'RunScript\(\s*"([a-z_]+)"', module.read_text(encoding="utf-8")))
    assert called == set(SCRIPT_NAMES), "a file in cache/lua/ that nothing runs, or a call of a missing file"
    for path in LUA_FILES:
        text = path.read_text(encoding="utf-8")
        assert script_source(path.stem) == text
        assert script_text(path.stem) == text
        # the one variant allowed: a file without its shebang line, for servers that refuse the flags
        assert script_text(path.stem, unflagged=True) == without_shebang(text)
    with pytest.raises(ValueError, match="no such script"):
        SyncIO(redis).do(RunScript("flush_everything", (), ()))


def test_what_redis_runs_is_each_file_byte_for_byte(redis_server: RedisServer, redis: Redis) -> None:
    """Through both runners (blocking and asyncio), every script the library calls is loaded into
    Redis from the file's exact bytes: after SCRIPT FLUSH, running each one leaves the SHA1 of the
    file's bytes registered in Redis and held by the runner's script object, and the variant for
    servers that refuse shebang flags is the file with its first line blanked, nothing else."""
    keys = tuple(f"lua-sha-test:{i}" for i in range(1, 7))  # arguments do not matter: loading comes first

    def expected(name: str, unflagged: bool) -> str:
        data = (LUA_DIR / f"{name}.lua").read_bytes()
        if unflagged:
            first, newline, rest = data.partition(b"\n")
            data = (b"" if first.startswith(b"#!") else first) + newline + rest
        return hashlib.sha1(data).hexdigest()

    variants = [(name, unflagged) for name in SCRIPT_NAMES for unflagged in (False, True)]
    sync_io = SyncIO(redis)
    redis.script_flush()
    for name, unflagged in variants:
        with contextlib.suppress(ResponseError):  # a script error on these arguments, after the load
            sync_io.do(RunScript(name, keys, (), unflagged))
    want = [expected(name, unflagged) for name, unflagged in variants]
    assert redis.script_exists(*want) == [True] * len(want)
    assert [sync_io._script(RunScript(name, (), (), unflagged)).sha for name, unflagged in variants] == want

    async def run_async() -> list[str]:
        client = AsyncRedis.from_url(redis_server.url)
        try:
            async_io = AsyncIO(client)
            for name, unflagged in variants:
                with contextlib.suppress(ResponseError):
                    await async_io.do(RunScript(name, keys, (), unflagged))
            return [async_io._script(RunScript(name, (), (), unflagged)).sha for name, unflagged in variants]
        finally:
            await client.aclose()

    redis.script_flush()
    assert asyncio.run(run_async()) == want
    assert redis.script_exists(*want) == [True] * len(want)


def test_script_source_refuses_an_unknown_name() -> None:
    with pytest.raises(ValueError, match="no such script"):
        script_source("../protocol")


@pytest.mark.parametrize("path", LUA_FILES, ids=lambda p: p.name)
def test_each_file_documents_keys_argv_and_reply(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    header = _header(text)
    assert header, "no comment header"
    assert header[0].startswith(f"-- {path.name}: "), "the header starts by naming the file and what it does"
    documented = "\n".join(header)
    for section in ("KEYS[1]", "ARGV[1]", "Reply:"):
        assert section in documented
    # every KEYS[n] / ARGV[n] the code reads by number is described in the header
    body = "\n".join(text.splitlines()[len(header) :])
    for kind, index in set(re.findall(r"\b(KEYS|ARGV)\[(\d+)\]", body)):
        assert f"{kind}[{index}]" in documented, f"{kind}[{index}] is used but not documented"
    # a shebang (Redis 7 script flags) only counts as the very first line
    assert all(not line.startswith("#!") for line in text.splitlines()[1:])


def test_record_keeps_its_allow_oom_flag_on_the_first_line() -> None:
    assert (LUA_DIR / "record.lua").read_text(encoding="utf-8").splitlines()[0] == "#!lua flags=allow-oom"


def test_patch_actions_are_the_strings_finish_patch_expects() -> None:
    text = (LUA_DIR / "finish_patch.lua").read_text(encoding="utf-8")
    for action in PatchAction:
        assert f"'{action.value}'" in text


@pytest.mark.parametrize("path", LUA_FILES, ids=lambda p: p.name)
def test_script_load_accepts_the_file_as_it_is(redis: Redis, path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    sha = redis.script_load(text)
    assert sha == hashlib.sha1(text.encode()).hexdigest()
    assert redis.script_exists(sha) == [True]


def test_acquire_and_fill_hold_the_lease_rule_under_plain_eval(redis: Redis) -> None:
    """What a non-Python service gets from the files: a lease, a fill with it, a stale fill refused."""
    acquire = (LUA_DIR / "acquire.lua").read_text(encoding="utf-8")
    fill = (LUA_DIR / "fill.lua").read_text(encoding="utf-8")
    user, org = "user_lua1", "org_lua1"
    value = json.dumps(
        [
            {
                "organizationId": org,
                "organizationSlug": None,
                "organizationName": "Acme",
                "imageUrl": None,
                "role": "org:admin",
                "permissions": ["org:sys_memberships:read"],
            }
        ]
    )
    acquire_keys = [contract.user_orgs_key(user), contract.lease_key(user), contract.CHANGE_SEQ_KEY]
    fill_keys = [
        contract.user_orgs_key(user),
        contract.lease_key(user),
        contract.ROLES_CHANGED_KEY,
        contract.ROLES_INDEXED_KEY,
        contract.org_index_key(org),
        contract.org_changed_key(org),
        contract.role_index_key("org:admin"),
    ]
    fill_args = (value, 60_000, user, "", 1, "org:admin")  # no absolute expiry, one org, its role

    assert redis.eval(acquire, 3, *acquire_keys, "token-a", 5000, "0") == [2, "token-a"]
    assert redis.eval(acquire, 3, *acquire_keys, "token-b", 5000, "0") == [3]  # single-flight: wait

    assert redis.eval(fill, 7, *fill_keys, "token-b", *fill_args) == 0  # not the lease holder
    assert redis.get(contract.user_orgs_key(user)) is None

    assert redis.eval(fill, 7, *fill_keys, "token-a", *fill_args) == 1
    assert redis.get(contract.user_orgs_key(user)) == value
    assert redis.smembers(contract.org_index_key(org)) == {user}
    assert redis.smembers(contract.role_index_key("org:admin")) == {user}
    assert redis.smembers(contract.ROLES_INDEXED_KEY) == {"org:admin"}
    assert redis.exists(contract.lease_key(user)) == 0

    # the Python side sees the same state: a hit, with the value the plain EVAL stored
    assert decode_acquired(SyncIO(redis).do(acquire_call(user, "token-c", 5000))) == (Acquired.HIT, value)


@pytest.mark.parametrize("script", ["acquire", "acquire_patch"])
def test_the_lease_cap_is_enforced_by_the_script_itself(redis: Redis, script: str) -> None:
    """Found: only Python checked MAX_LEASE_MS; a 600 s lease was granted to a direct caller, longer
    than the 120 s an org change is remembered, so a slow first fill could pass the org-change check."""
    keys = [user_orgs_key(ALICE), lease_key(ALICE), CHANGE_SEQ_KEY]
    args: list[str | int] = [new_token(), 600_000]
    if script == "acquire":
        args.append("0")
    else:
        keys.append(stash_key(ALICE))
    with pytest.raises(ResponseError, match="lease lifetime must be 1 to 60000 ms"):
        redis.eval(script_source(script), len(keys), *keys, *args)
    assert held_leases(redis) == []
    redis.eval(script_source(script), len(keys), *keys, *args[:1], 60_000, *args[2:])
    assert held_leases(redis) == [ALICE]
