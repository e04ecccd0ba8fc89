"""The docs stay true to the code: the environment table is `cache.config.VARIABLES`, every relative link
and anchor exists, the Python they show imports what exists, the README fits on a screen and opens with
the two commands, and its quick-start app guards by org role as it says."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.util
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from cache import MembershipCache
from cache.config import VARIABLES, Settings, Variable
from devstack.clerk_standin import SAMPLE_ORG_IDS, SAMPLE_USER_IDS, ClerkStandIn
from devstack.docs_env import (
    BEGIN,
    DESCRIPTIONS,
    END,
    REFERENCE,
    Described,
    TableError,
    default_text,
    env_table,
    settings_defaults,
    with_table,
)
from tests.sessions import PUBLIC_PEM, session_token

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
MANUAL = [README, REPO / "CHANGELOG.md", *sorted((REPO / "docs").glob("*.md"))]

FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"\]\(([^)\s]+)\)")


def committed_table() -> str:
    text = REFERENCE.read_text()
    return text[text.index(BEGIN) + len(BEGIN) : text.index(END)].strip("\n") + "\n"


def table_rows() -> list[list[str]]:
    """The committed table's cells, header and rule left out."""
    lines = committed_table().splitlines()[2:]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines]


# -- the environment table is cache.config.VARIABLES ---------------------------------------------------


def test_the_environment_table_is_the_one_generated_from_config() -> None:
    assert committed_table() == env_table(), "run: .venv/bin/python -m devstack.docs_env"
    assert with_table(REFERENCE.read_text(), env_table()) == REFERENCE.read_text()


def test_the_table_names_exactly_the_variables_of_config_in_its_order() -> None:
    assert [row[0] for row in table_rows()] == [f"`{variable.name}`" for variable in VARIABLES]


def test_the_table_shows_each_default_of_settings() -> None:
    defaults = settings_defaults()
    shown = {row[0].strip("`"): row[1] for row in table_rows()}
    for variable in VARIABLES:
        assert shown[variable.name] == default_text(variable, defaults, DESCRIPTIONS[variable.name]), variable.name
    assert shown["USER_ORGS_TTL_SECONDS"] == "`300`"  # and the rendering itself is the plain value
    assert shown["REFRESH_RETRY_INTERVALS"] == "`2,10,30,60,120,300`"


def test_a_variable_added_to_config_without_a_description_fails() -> None:
    added = Variable("CLERK_NEW_SETTING", "port", int, frozenset({"web"}), "a new setting")
    with pytest.raises(TableError, match="CLERK_NEW_SETTING"):
        env_table((*VARIABLES, added))
    described = {**DESCRIPTIONS, "CLERK_NEW_SETTING": Described("a new setting")}
    assert env_table((*VARIABLES, added), descriptions=described) != committed_table()


def test_a_table_row_for_a_variable_config_does_not_have_fails() -> None:
    with pytest.raises(TableError, match="REDIS_URL"):
        env_table(VARIABLES[1:])


def test_a_default_changed_in_settings_changes_the_table() -> None:
    assert env_table(defaults={**settings_defaults(), "user_orgs_ttl_seconds": 600}) != committed_table()
    # a default given where there was none, or taken away, must be described again
    with pytest.raises(TableError, match="WORKER_METRICS_PORT"):
        env_table(defaults={**settings_defaults(), "worker_metrics_port": 9100})
    with pytest.raises(TableError, match="PORT"):
        env_table(defaults={**settings_defaults(), "port": None})


def test_every_variable_sets_a_settings_field() -> None:
    fields = {f.name for f in dataclasses.fields(Settings)}
    assert {variable.field for variable in VARIABLES} <= fields


# -- the README and the links ---------------------------------------------------------------------------


def test_the_readme_fits_on_a_screen() -> None:
    assert len(README.read_text().splitlines()) <= 200


def test_the_readme_opens_with_the_two_commands_and_they_exist() -> None:
    first_block = FENCE.search(README.read_text())
    assert first_block is not None
    commands = [line.split("#")[0].strip() for line in first_block.group(2).splitlines()]
    assert commands == ["./dev serve", "./dev test"]
    dev = (REPO / "dev").read_text()
    assert re.search(r"^\s*serve\)", dev, re.MULTILINE) and re.search(r"^\s*test\)", dev, re.MULTILINE)
    assert (REPO / ".ci" / "run").read_text().rstrip().endswith("exec ./dev test")


def test_the_file_map_names_paths_that_exist() -> None:
    """Each row's first cell: a path, then names in the same folder (``webhook/app.py``, ``routes.py``)."""
    section = README.read_text().split("\n## File map\n", 1)[1].split("\n## ", 1)[0]
    missing = []
    for row in (line for line in section.splitlines() if line.startswith("| `")):
        folder = ""
        for name in re.findall(r"`([^`]+)`", row.split(" | ")[0]):
            if "/" in name:
                folder = name if name.endswith("/") else name.rsplit("/", 1)[0] + "/"
                path = name
            else:
                path = folder + name
            if not list(REPO.glob(path.rstrip("/"))):
                missing.append(path)
    assert not missing, missing


def prose(text: str) -> str:
    """The text without fenced code blocks and inline code, where a ``](`` is not a link."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in FENCE.sub("", path.read_text()).splitlines():
        heading = re.match(r"#{1,6} (.*)", line)
        if heading:
            base = slug(heading.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def relative_links(path: Path) -> Iterator[str]:
    for target in LINK.findall(prose(path.read_text())):
        if not re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: are not ours to check
            yield target


@pytest.mark.parametrize("doc", MANUAL, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_points_to_a_file_and_heading_that_exist(doc: Path) -> None:
    broken = []
    for target in relative_links(doc):
        file_part, _, anchor = target.partition("#")
        linked = (doc.parent / file_part).resolve() if file_part else doc
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no such heading in {linked.relative_to(REPO)}")
    assert not broken, broken


def test_the_link_check_sees_links_and_headings() -> None:
    assert "docs/reference.md#the-redis-data-contract" in set(relative_links(README))
    assert slug("Authorization in Flask and FastAPI (`cache.authz`)") == "authorization-in-flask-and-fastapi-cacheauthz"
    assert slug("Clerk's rate limit") == "clerks-rate-limit"


# -- the Python the docs show ---------------------------------------------------------------------------


def python_blocks(path: Path) -> list[str]:
    return [code for language, code in FENCE.findall(path.read_text()) if language == "python"]


@pytest.mark.parametrize("doc", MANUAL, ids=lambda p: str(p.relative_to(REPO)))
def test_the_python_shown_parses_and_imports_names_that_exist(doc: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # DRF reads Django's settings as it is imported; the example project's, unless a test configured them
    settings_module = os.environ.get("DJANGO_SETTINGS_MODULE", "examples.django_app.settings")
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", settings_module)
    for code in python_blocks(doc):
        flags = ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        tree = compile(code, str(doc), "exec", flags=flags, dont_inherit=True)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    importlib.import_module(alias.name)
            elif isinstance(node, ast.ImportFrom) and node.module:
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(module, alias.name) or importlib.util.find_spec(f"{node.module}.{alias.name}"), (
                        f"{doc.name}: {node.module} has no {alias.name}"
                    )


def test_the_readme_quick_start_app_guards_by_org_role(
    cache: MembershipCache, clerk: ClerkStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's app, run as shown, on the cache under test (installed as the process-wide one)."""
    clerk.seed_sample()
    monkeypatch.setenv("CLERK_JWT_KEY", PUBLIC_PEM)
    namespace: dict[str, object] = {"__name__": "readme_quick_start"}
    exec(python_blocks(README)[0], namespace)
    client = namespace["app"].test_client()  # type: ignore[attr-defined]

    def get(user: str | None) -> tuple[int, object]:
        headers = {"Authorization": f"Bearer {session_token(SAMPLE_USER_IDS[user])}"} if user else {}
        response = client.get("/orgs/acme/settings", headers=headers)
        return response.status_code, response.get_json()

    assert get("alice") == (200, {"org_id": SAMPLE_ORG_IDS["acme"], "slug": "acme"})
    assert get("bob")[0] == 403 and get("bob")[1]["error"] == "role_not_allowed"  # type: ignore[index]
    assert get(None)[0] == 401
