"""The blocking runner, cache/io.py, is generated from the asyncio one (devstack/unasync.py), so they cannot drift.

A hand edit of cache/io.py, or an edit of cache/aio/io.py without regenerating, fails here (in ``./dev test``).
"""

from __future__ import annotations

import pytest

from devstack import unasync


def test_the_blocking_runner_is_what_the_generator_writes_from_the_asyncio_one() -> None:
    assert unasync.main(["--check"]) == 0, "cache/io.py is stale: run python -m devstack.unasync"


def test_an_edit_of_the_asyncio_runner_that_a_substitution_no_longer_matches_fails_loudly() -> None:
    source = unasync.SOURCE.read_text(encoding="utf-8").replace("asyncio.sleep(", "asyncio.sleep_for(")
    with pytest.raises(ValueError, match="no longer contains"):
        unasync.generated(source)


def test_async_code_the_substitutions_miss_is_refused() -> None:
    source = unasync.SOURCE.read_text(encoding="utf-8") + "\n\nasync_only = httpx.Limits()\n"
    with pytest.raises(ValueError, match="still says"):
        unasync.generated(source)
