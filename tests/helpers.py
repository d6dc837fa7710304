"""Small helpers shared by the test packages: unwrapping I/O results and making identities."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from returns.io import IOResult
from returns.result import Failure, Result, Success

from gomaster.core.record import NodeIdentity
from gomaster.runtime._io import performed

T = TypeVar("T")
E = TypeVar("E")


def result(io: IOResult[T, E]) -> Result[T, E]:
    """The plain Result inside an IOResult, for assertions."""
    return performed(io)


def ok(io: IOResult[T, E]) -> T:
    """The success value, failing the test with the error otherwise."""
    outcome = result(io)
    if isinstance(outcome, Failure):
        raise AssertionError(f"expected success, got {outcome.failure()!r}")
    value: T = outcome.unwrap()
    return value


def err(io: IOResult[T, E]) -> E:
    """The failure value, failing the test if the step succeeded."""
    outcome = result(io)
    if isinstance(outcome, Success):
        raise AssertionError(f"expected failure, got {outcome.unwrap()!r}")
    error: E = outcome.failure()
    return error


def identity(version: str = "") -> NodeIdentity:
    """A fresh node, as a new process start would be."""
    return NodeIdentity(node_id=uuid.uuid4().hex, host=socket.gethostname(), pid=os.getpid(), version=version)


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


#: How long a test waits for something that should happen soon.
WAIT = 15.0


def wait_until(condition: Callable[[], bool], timeout: float = WAIT, what: str = "condition") -> None:
    """Poll ``condition`` every 10 ms; AssertionError naming ``what`` if it is not met in time."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} not met within {timeout} s")
        time.sleep(0.01)


def waiter(
    backend: Any, name: str, timeout: float, answer: Callable[[IOResult[bool, Any]], object] = ok
) -> tuple[threading.Thread, list[Any]]:
    """A thread waiting for ``name``'s release: ``answer`` of what the wait returned, then the
    ``time.monotonic()`` it returned at, land in the list."""
    outcome: list[Any] = []

    def wait() -> None:
        outcome.append(answer(backend.wait_for_release(name, timeout)))
        outcome.append(time.monotonic())

    thread = threading.Thread(target=wait)
    thread.start()
    return thread, outcome


# ---- a lock as a test sees it, through a connection of its own ----------------------------


def holder(url: str, name: str) -> str | None:
    """The node holding lock ``name`` on ``url`` now, or None when nobody does."""
    from gomaster.backends import connect

    seen = ok(connect(url).observe(name, 5.0))
    return None if seen.record is None or seen.record.released else seen.record.holder


def released(url: str, name: str) -> bool:
    """Lock ``name`` on ``url`` has a record, and it is released."""
    from gomaster.backends import connect

    seen = ok(connect(url).observe(name, 5.0))
    return seen.record is not None and seen.record.released


def force_release(url: str, name: str) -> None:
    """``gomaster release``: the holder fails its next renewal, as an operator makes it."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-m", "gomaster.cli", "release", "--backend", url, "--name", name],
        check=False,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
