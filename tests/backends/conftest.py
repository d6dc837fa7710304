"""One table of backends; every contract test runs against each of them.

Server backends get their URL from a session fixture named ``<kind>_url`` (see
``tests/servers``), which starts a throwaway server or uses ``GOMASTER_TEST_<KIND>_URL``. What
differs between backends is in ``tests/backends/traits.py``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gomaster.backends import LockBackend, connect
from gomaster.backends.memory import MemoryBackend, MemoryStore
from tests.backends.traits import SERVERS, TRAITS, Traits, param
from tests.servers.base import ThrowawayServer

SERVER_BACKENDS: list[str] = SERVERS


@dataclass(frozen=True)
class BackendCase:
    """How to make backends that share one store, and whether they can cross processes."""

    kind: str
    url: str | None
    make: Callable[[], LockBackend]

    @property
    def picklable(self) -> bool:
        return self.url is not None

    @property
    def traits(self) -> Traits:
        """What this backend has of its own (see ``traits.py``)."""
        return TRAITS[self.kind]


def _params(*, memory: bool = True, local: bool = True, sql: bool = False) -> list[object]:
    return [
        param(kind)
        for kind, traits in TRAITS.items()
        if (memory or kind != "memory") and (local or traits.network) and (not sql or traits.tables)
    ]


@pytest.fixture(params=_params())
def case(request: pytest.FixtureRequest, tmp_path: Path) -> BackendCase:
    return case_of(request.param, request, tmp_path)


@pytest.fixture(params=_params(memory=False))
def shared_case(request: pytest.FixtureRequest, tmp_path: Path) -> BackendCase:
    """Backends that several processes can share (all but memory)."""
    return case_of(request.param, request, tmp_path)


@pytest.fixture(params=_params(local=False))
def server_case(request: pytest.FixtureRequest, tmp_path: Path) -> BackendCase:
    """Backends with a server of their own (all but memory and SQLite)."""
    return case_of(request.param, request, tmp_path)


@pytest.fixture(params=_params(sql=True))
def sql_case(request: pytest.FixtureRequest, tmp_path: Path) -> BackendCase:
    """The SQL backends: those whose lock table a user may make by hand."""
    return case_of(request.param, request, tmp_path)


def case_of(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> BackendCase:
    """The case for ``kind``, its store a fresh one (memory, SQLite) or the session's server."""
    if kind == "memory":
        store = MemoryStore()
        return BackendCase(kind, None, lambda: MemoryBackend(store))
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'locks.db'}"
    else:
        url = request.getfixturevalue(f"{kind}_url")
    return BackendCase(kind, url, lambda: connect(url))


@pytest.fixture
def private(server_case: BackendCase) -> Iterator[tuple[ThrowawayServer, str]]:
    """A server of the test's own for ``server_case``'s backend (it keeps its data across a
    restart), which the test may freeze, stop and restart, and its URL."""
    with server_case.traits.private() as made:
        yield made


@pytest.fixture
def backend(case: BackendCase) -> Iterator[LockBackend]:
    made = case.make()
    yield made
    made.close()


@pytest.fixture
def lock_name() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"
