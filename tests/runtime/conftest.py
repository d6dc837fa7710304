"""The fixture the process tests share: nodes on one SQLite file, stopped after the test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.runtime.cluster import Cluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """Nodes sharing a SQLite file and a witness log (ttl 2 s), every one stopped afterwards."""
    made = Cluster(backend=f"sqlite:///{tmp_path / 'locks.db'}", log=tmp_path / "witness.jsonl")
    yield made
    made.stop_all()
