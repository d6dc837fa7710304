"""Each page of docs/recipes shows its program verbatim, and every program has its page and its
place in mkdocs.yml's nav (the pages copy the files: mkdocs.yml enables no snippets extension)."""

from __future__ import annotations

import re

from tests.recipes.conftest import RECIPES
from tests.runtime.cluster import ROOT

#: Each program of docs/recipes and the page that shows it.
PAGES = {
    "fastapi_app.py": "fastapi.md",
    "asyncio_worker.py": "asyncio-worker.md",
    "thread_hooks.py": "thread-hooks.md",
    "apscheduler_jobs.py": "apscheduler.md",
}
_TITLED_BLOCK = re.compile(r'^```python title="([\w.]+)"\n(.*?)^```$', re.MULTILINE | re.DOTALL)


def test_every_program_has_a_page_and_every_page_is_in_the_nav() -> None:
    assert {path.name for path in RECIPES.glob("*.py")} == set(PAGES)
    assert {path.name for path in RECIPES.glob("*.md")} == {*PAGES.values(), "index.md"}
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in [*PAGES.values(), "index.md"]:
        assert f"recipes/{page}" in nav, f"recipes/{page} is not in mkdocs.yml's nav"


def test_each_page_shows_its_program_verbatim() -> None:
    for program, page in PAGES.items():
        blocks = dict(_TITLED_BLOCK.findall((RECIPES / page).read_text()))
        assert set(blocks) == {program}, (
            f"{page} should show exactly one titled block, {program}: {set(blocks)}"
        )
        assert blocks[program] == (RECIPES / program).read_text(), (
            f"the code in docs/recipes/{page} differs from {program}: copy the file into the page"
        )
