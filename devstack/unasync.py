"""Writes the blocking runner, cache/io.py, from the asyncio one, cache/aio/io.py, as httpcore's unasync does.

The two runners carry out the same effects the same way; only how they wait differs, plus the
few places where requests and httpx spell a call differently (a timeout, the transport's
exceptions) and where redis-py's blocking client lacks type hints. `SUBSTITUTIONS` lists
every one of those differences; each must apply at least once, so an edit of the async
runner that one of them no longer matches fails here instead of writing a wrong runner.

    python -m devstack.unasync          rewrite cache/io.py
    python -m devstack.unasync --check  exit 1 if cache/io.py is not what it would write (a test runs this)
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "cache" / "aio" / "io.py"
TARGET = REPO / "cache" / "io.py"

HEADER = "# Generated from cache/aio/io.py by `python -m devstack.unasync`: edit that file, then regenerate.\n"

SYNC_DOCSTRING = '''"""Carries out `cache.effects` with blocking clients: ``redis.Redis`` and a ``requests.Session``.

Generated from `cache.aio.io`, so the two runners cannot drift. Errors are translated at this
boundary: a requests transport failure becomes `HttpFailed`; Redis errors are redis-py's own
(the async client raises the same classes). Either is thrown into the program at the
``yield`` that asked for the I/O.
"""
'''

SUBSTITUTIONS: tuple[tuple[str, str], ...] = (
    ("import asyncio\n", "import time\n"),
    ("import httpx\n", "import requests\n"),
    ("from redis.asyncio import Redis\n", "from redis import Redis\n"),
    ("AsyncScript", "Script"),
    ("class AsyncIO:", "class SyncIO:"),
    ("httpx.AsyncClient", "requests.Session"),
    ("async with ", "with "),
    ("async def ", "def "),
    ("await ", ""),
    ("asyncio.sleep(", "time.sleep("),
    # requests takes (connect, read); httpx a Timeout
    (
        "timeout=httpx.Timeout(effect.read_timeout_s, connect=effect.connect_timeout_s),",
        "timeout=(effect.connect_timeout_s, effect.read_timeout_s),",
    ),
    # what a call can fail with: requests wraps it all in RequestException; httpx does not (anyio may group it)
    (
        "        except (httpx.HTTPError, httpx.InvalidURL, OSError, ValueError, ExceptionGroup) as exc:\n"
        "            # everything the call itself can fail with (anyio may group a socket error), as requests'\n"
        "            # RequestException covers it in the sync runner\n",
        "        except requests.RequestException as exc:\n",
    ),
    # the blocking pipeline's execute_command has no type hints
    ("pipe.execute_command(*step.args)\n", "pipe.execute_command(*step.args)  # type: ignore[no-untyped-call]\n"),
)


def generated(source: str | None = None) -> str:
    """The text cache/io.py must have: ``source`` (cache/aio/io.py's text) with every substitution made."""
    text = SOURCE.read_text(encoding="utf-8") if source is None else source
    opening = text.index('"""')
    code = text[text.index('"""', opening + 3) + 4 :]  # what follows the docstring and its line break
    for old, new in SUBSTITUTIONS:
        if old not in code:
            raise ValueError(f"cache/aio/io.py no longer contains {old!r}: update devstack/unasync.py")
        code = code.replace(old, new)
    leftover = [word for word in ("async", "await", "httpx", "asyncio") if word in code]
    if leftover:
        raise ValueError(f"the generated runner still says {leftover}: add a substitution to devstack/unasync.py")
    return HEADER + SYNC_DOCSTRING + code


def main(argv: list[str]) -> int:
    want = generated()
    if argv == ["--check"]:
        if TARGET.read_text(encoding="utf-8") != want:
            print("cache/io.py is stale: run python -m devstack.unasync", file=sys.stderr)
            return 1
        return 0
    if argv:
        print(__doc__, file=sys.stderr)
        return 2
    TARGET.write_text(want, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
