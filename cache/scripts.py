"""The protocol's Lua scripts as text: the files in ``cache/lua/``, shipped as package data.

Each file has a header documenting its KEYS, ARGV and reply, so a TypeScript (or any)
client can run the very same files. `cache.protocol` says what each one is for.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from importlib import resources
from typing import Generic, TypeVar

S = TypeVar("S")

SCRIPT_NAMES = (
    "acquire",
    "acquire_patch",
    "fill",
    "release",
    "record",
    "take_pending",
    "recover_drains",
    "clerk_budget",
    "clerk_pause",
    "finish_patch",
    "finish_org_patch",
    "near_register",
    "near_publish",
    "near_get",
)
"""The scripts of the protocol: ``cache/lua/<name>.lua``."""


@functools.cache
def script_source(name: str) -> str:
    """The text of ``cache/lua/<name>.lua``, exactly as Redis runs it (``name`` in `SCRIPT_NAMES`)."""
    if name not in SCRIPT_NAMES:
        raise ValueError(f"no such script: {name!r} (one of {', '.join(SCRIPT_NAMES)})")
    return resources.files("cache").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")


def without_shebang(source: str) -> str:
    """The script with its ``#!lua flags=...`` line blanked (kept as an empty line so line numbers match)."""
    first, newline, rest = source.partition("\n")
    return ("" if first.startswith("#!") else first) + newline + rest


def script_text(name: str, unflagged: bool = False) -> str:
    """What to load for a `cache.effects.RunScript`: the file, or the file without its shebang flags."""
    source = script_source(name)
    return without_shebang(source) if unflagged else source


class LoadedScripts(Generic[S]):
    """The script objects of one client (redis-py's ``Script`` or ``AsyncScript``), registered on first use:
    each then runs by SHA and is loaded again by redis-py if the server forgot it."""

    def __init__(self, register: Callable[[str], S]) -> None:
        self._register = register
        self._scripts: dict[tuple[str, bool], S] = {}

    def get(self, name: str, unflagged: bool = False) -> S:
        key = (name, unflagged)
        script = self._scripts.get(key)
        if script is None:
            script = self._scripts[key] = self._register(script_text(name, unflagged))
        return script
