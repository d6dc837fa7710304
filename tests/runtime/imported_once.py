"""A target module that records, at import, which process imported it (``$GOMASTER_TEST_IMPORTS``)."""

from __future__ import annotations

import os
from pathlib import Path

from gomaster.runtime.lease import Leadership

with Path(os.environ["GOMASTER_TEST_IMPORTS"]).open("a") as _imports:
    _imports.write(f"{os.getpid()}\n")


def work(leadership: Leadership) -> None:
    """Does nothing: only the import matters."""
