"""The fixtures the process tests share: nodes on one SQLite file, and Masters, stopped after
the test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gomaster import Master
from tests.runtime.cluster import Cluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """Nodes sharing a SQLite file and a witness log (ttl 2 s), every one stopped afterwards."""
    made = Cluster(backend=f"sqlite:///{tmp_path / 'locks.db'}", log=tmp_path / "witness.jsonl")
    yield made
    made.stop_all()


@pytest.fixture
def url(tmp_path: Path) -> str:
    """A SQLite backend of the test's own."""
    return f"sqlite:///{tmp_path / 'locks.db'}"


@pytest.fixture
def masters() -> Iterator[list[Master]]:
    """Masters the test appends here are stopped afterwards."""
    made: list[Master] = []
    yield made
    for master in made:
        master.stop(timeout=10)
