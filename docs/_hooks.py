"""MkDocs hook: render Sphinx cross-reference roles left in docstrings as plain code.

The package's docstrings use reStructuredText roles (``:class:`gomaster.Leadership```), which
Markdown shows literally as ``:class:`` before the code span; this drops the role name.
"""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(r":(?:py:)?(?:class|mod|func|meth|attr|exc|data|obj|const):(<code>)")


def on_page_content(html: str, **_: Any) -> str:
    """Strip role prefixes from rendered API pages (no-op elsewhere)."""
    return _ROLE.sub(r"\1", html)
