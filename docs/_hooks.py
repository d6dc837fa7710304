"""MkDocs hooks: the changelog as a page, and Sphinx roles in docstrings rendered as plain code.

CHANGELOG.md lives at the repository root, outside ``docs_dir``; ``on_files`` adds it to the site
as ``changelog.md`` at every build, so the page can never drift from the file. Its links to
``docs/...`` pages are rewritten to the site's own paths.

The package's docstrings use reStructuredText roles (``:class:`gomaster.Leadership```), which
Markdown shows literally as ``:class:`` before the code span; ``on_page_content`` drops the role
name. It also fails the build when a rendered signature shows a private parameter (such as
``Leadership``'s ``_lease``), which docs/_griffe.py is there to hide.
"""

from __future__ import annotations

import re
from html import unescape
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

CHANGELOG = Path(__file__).resolve().parent.parent / "CHANGELOG.md"
CHANGELOG_PAGE = "changelog.md"

_ROLE = re.compile(r":(?:py:)?(?:class|mod|func|meth|attr|exc|data|obj|const):(<code>)")
_DOCS_LINK = re.compile(r"\]\(docs/")
_SIGNATURE = re.compile(r'<div class="doc-signature highlight">(.*?)</div>', re.DOTALL)
_TAG = re.compile(r"<[^>]+>")
_PRIVATE_PARAMETER = re.compile(r"[(,]\s*(_\w+)\s*[:=]")


def on_files(files: Files, config: MkDocsConfig, **_: Any) -> Files:
    """Add CHANGELOG.md to the site as ``changelog.md``."""
    text = _DOCS_LINK.sub("](", CHANGELOG.read_text(encoding="utf-8"))
    files.append(File.generated(config, CHANGELOG_PAGE, content=text))
    return files


def on_page_content(html: str, page: Page, **_: Any) -> str:
    """Strip role prefixes from rendered API pages (no-op elsewhere); refuse private parameters."""
    for block in _SIGNATURE.findall(html):
        private = _PRIVATE_PARAMETER.search(unescape(_TAG.sub("", block)))
        if private is not None:
            raise PluginError(
                f"{page.file.src_uri}: a signature shows the private parameter {private.group(1)}; "
                "check the griffe extensions in mkdocs.yml (dataclasses, then docs/_griffe.py)"
            )
    return _ROLE.sub(r"\1", html)
