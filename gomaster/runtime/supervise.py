"""``supervise(targets)``: make this process the supervisor of master-only work."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import dill
from returns.result import Failure

from gomaster.backends import LockBackend, resolve_backend
from gomaster.core.election import Config
from gomaster.core.record import LockRecord, NodeIdentity, check_name, check_version
from gomaster.core.timing import Timing
from gomaster.runtime.console import announce_holder, chain, console_logging, logging_configured
from gomaster.runtime.elector import HolderChanged, Watched
from gomaster.runtime.supervisor import Supervisor, SupervisorOptions
from gomaster.runtime.worker import Target

if TYPE_CHECKING:
    from gomaster.runtime.metrics import Metrics


def new_identity(version: str, node_id: str = "") -> NodeIdentity:
    """This process as a node, for every front door: a fresh id unless ``Master`` chose one, so
    that a restarted process is a new node."""
    node_id = node_id or uuid.uuid4().hex
    return NodeIdentity(node_id=node_id, host=socket.gethostname(), pid=os.getpid(), version=version)


def check_targets(targets: Callable[..., object] | Sequence[Callable[..., object]]) -> list[Target]:
    """Accept one callable or a sequence of them; each must survive the trip to a worker.

    Anything else is refused by saying what is accepted, rather than by whatever ``list()``
    happens to raise about it (``'int' object is not iterable``).
    """
    if callable(targets):
        listed: list[Callable[..., object]] = [targets]
    elif isinstance(targets, Iterable) and not isinstance(targets, str | bytes | Mapping):
        listed = list(targets)
    else:
        raise TypeError(
            "supervise() takes a callable or a list of callables, each called with a "
            f"gomaster.Leadership, not {type(targets).__name__}"
        )
    if not listed:
        raise ValueError("supervise() needs at least one target")
    for index, target in enumerate(listed):
        if not callable(target):
            raise TypeError(f"target {index} is {type(target).__name__}, not a callable taking a Leadership")
        try:
            dill.dumps(target, recurse=True)
        except Exception as exc:
            raise TypeError(
                f"target {index} ({getattr(target, '__name__', target)!r}) cannot be sent to a worker "
                f"process: {type(exc).__name__}: {exc}"
            ) from exc
    return listed


def check_config(name: str, timing: Timing | None, version: str) -> tuple[str, Timing]:
    """Validate the lock name, timing and version up front, with errors that say what to fix."""
    match check_name(name):
        case Failure(problem):
            raise ValueError(problem)
    if timing is None:
        timing = Timing()
    if not isinstance(timing, Timing):
        raise TypeError(f"timing must be a gomaster.Timing, not {type(timing).__name__}")
    if not isinstance(version, str):
        raise TypeError(f"version must be a string, not {type(version).__name__}")
    match check_version(version):
        case Failure(problem):
            raise ValueError(problem)
    return name, timing


def watcher(
    metrics: Metrics | None, on_new_leader: Callable[[LockRecord | None], None] | None
) -> Callable[[Watched], None] | None:
    """One observer feeding the metrics and calling ``on_new_leader`` when the holder changes."""
    if metrics is None and on_new_leader is None:
        return None

    def watch(seen: Watched) -> None:
        if metrics is not None:
            metrics.observe(seen)
        if on_new_leader is not None and isinstance(seen, HolderChanged):
            on_new_leader(seen.record)

    return watch


def supervise(
    targets: Callable[..., object] | Sequence[Callable[..., object]],
    *,
    backend: LockBackend | str | None = None,
    name: str = "default",
    timing: Timing | None = None,
    version: str = "",
    max_failures: int | None = None,
    metrics: Metrics | None = None,
    on_new_leader: Callable[[LockRecord | None], None] | None = None,
    spare_workers: bool = True,
    preload: bool = False,
) -> None:
    """Run ``targets`` in worker processes only while this process is master of ``name``.

    Blocks until SIGTERM or SIGINT, then stops the work, releases the lock so another node takes
    over at once, and returns. Each target is called with a :class:`gomaster.Leadership` in its
    own process (spawned, so the calling module needs an ``if __name__ == "__main__":`` guard).
    A target that raises or exits non-zero is restarted with backoff while this node stays
    master; after ``max_failures`` failures in a row (if set) this node resigns. A target that
    returns normally is done until the next tenure. ``metrics`` (see :mod:`gomaster.metrics`)
    and ``on_new_leader`` (called on this thread's elector with the record whenever the holder
    this node sees changes, on masters and followers alike) are optional observers. Workers are
    forked from a zygote process when this node is elected, in a few milliseconds, so a
    follower keeps no worker waiting; ``spare_workers`` is accepted for compatibility and has
    no effect. Each worker loads its target when it starts, so what loading imports stays in
    that worker; ``preload=True`` loads the targets once in the zygote instead, for targets slow
    to load (a large application): each start is then a fork, and the node joins the election
    only once they are loaded, but whatever their import opens (connections, files) is shared
    by every worker.

    When the application has not set up logging, this node's elections, demotions and the
    master it waits for are logged to stderr while it runs (see :mod:`gomaster.runtime.console`).
    """
    with console_logging(not logging_configured()):
        checked = check_targets(targets)
        name, timing = check_config(name, timing, version)
        store = resolve_backend(backend)
        config = Config(name=name, me=new_identity(version), timing=timing)
        watch = chain(watcher(metrics, on_new_leader), announce_holder(config.me.node_id))
        del spare_workers  # workers fork from the zygote: there are no spares to keep
        options = SupervisorOptions(max_failures=max_failures, watch=watch, preload=preload)
        Supervisor(checked, store, config, options).run()
