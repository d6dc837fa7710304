"""The lock names this process has started, per backend: a name is elected once per process.

Two contenders for one name in one process are almost always a mistake (a ``Master`` created
twice, a ``supervise()`` call beside a ``Master`` of the same name); they also could not share
one supervisor. Every front door takes its names here before anything starts and gives them back
when it is done. This is process-wide state by nature, kept to one guarded set.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterator
from contextlib import contextmanager


class StartedNames:
    """The (backend URL, lock name) pairs started in this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._started: set[tuple[str, str]] = set()

    def take(self, url: str, names: Collection[str]) -> None:
        """Mark ``names`` started on ``url``; ``ValueError`` naming the first one already is,
        in which case none is taken."""
        with self._lock:
            for name in names:
                if (url, name) in self._started:
                    raise ValueError(
                        f"lock name {name!r} on {url} is already started in this process (by a "
                        "Master or a supervise() call): stop that one first, or use another name"
                    )
            self._started.update((url, name) for name in names)

    def give_back(self, url: str, names: Collection[str]) -> None:
        """``names`` on ``url`` are stopped: they may start again."""
        with self._lock:
            self._started.difference_update((url, name) for name in names)

    @contextmanager
    def held(self, url: str, names: Collection[str]) -> Iterator[None]:
        """``names`` started on ``url`` for the duration of the block."""
        self.take(url, names)
        try:
            yield
        finally:
            self.give_back(url, names)


#: This process's started names (see the module docstring for why there is one).
STARTED = StartedNames()
