"""One table of backends; every contract test runs against each of them.

Server backends get their URL from a session fixture named ``<kind>_url`` (see
``tests/servers``), which starts a throwaway server or uses ``GOMASTER_TEST_<KIND>_URL``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gomaster.backends import LockBackend, connect
from gomaster.backends.memory import MemoryBackend, MemoryStore

SERVER_BACKENDS: list[str] = ["mysql", "mongodb", "postgresql", "redis"]


@dataclass(frozen=True)
class BackendCase:
    """How to make backends that share one store, and whether they can cross processes."""

    kind: str
    url: str | None
    make: Callable[[], LockBackend]

    @property
    def picklable(self) -> bool:
        return self.url is not None


def _params(*, memory: bool = True) -> list[object]:
    params: list[object] = [pytest.param("memory", id="memory")] if memory else []
    params.append(pytest.param("sqlite", id="sqlite"))
    params += [pytest.param(kind, marks=getattr(pytest.mark, kind), id=kind) for kind in SERVER_BACKENDS]
    return params


@pytest.fixture(params=_params())
def case(request: pytest.FixtureRequest, tmp_path: Path) -> BackendCase:
    return _case(request, tmp_path)


@pytest.fixture(params=_params(memory=False))
def shared_case(request: pytest.FixtureRequest, tmp_path: Path) -> BackendCase:
    """Backends that several processes can share (all but memory)."""
    return _case(request, tmp_path)


def _case(request: pytest.FixtureRequest, tmp_path: Path) -> BackendCase:
    kind: str = request.param
    if kind == "memory":
        store = MemoryStore()
        return BackendCase(kind, None, lambda: MemoryBackend(store))
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'locks.db'}"
    else:
        url = request.getfixturevalue(f"{kind}_url")
    return BackendCase(kind, url, lambda: connect(url))


@pytest.fixture
def backend(case: BackendCase) -> Iterator[LockBackend]:
    made = case.make()
    yield made
    made.close()


@pytest.fixture
def lock_name() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"
