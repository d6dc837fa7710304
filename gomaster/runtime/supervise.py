"""``supervise(targets)``: make this process the supervisor of master-only work."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, TypeAlias

from returns.result import Failure

from gomaster.backends import LockBackend, resolve_backend
from gomaster.core.election import Config
from gomaster.core.record import LockRecord, NodeIdentity, check_name, check_version
from gomaster.core.timing import Timing
from gomaster.runtime.console import announce_holder, chain, console_logging, logging_configured
from gomaster.runtime.elector import HolderChanged, Watched
from gomaster.runtime.names import STARTED
from gomaster.runtime.packing import pack
from gomaster.runtime.supervisor import Job, Supervisor, SupervisorOptions
from gomaster.runtime.worker import Target

if TYPE_CHECKING:
    from gomaster.runtime.metrics import Metrics


def new_identity(version: str, node_id: str = "") -> NodeIdentity:
    """This process as a node, for every front door: a fresh id unless ``Master`` chose one, so
    that a restarted process is a new node."""
    node_id = node_id or uuid.uuid4().hex
    return NodeIdentity(node_id=node_id, host=socket.gethostname(), pid=os.getpid(), version=version)


Targets: TypeAlias = Callable[..., object] | Sequence[Callable[..., object]]


def check_targets(targets: Targets, name: str | None = None) -> list[Target]:
    """Accept one callable or a sequence of them; each must survive the trip to a worker.

    Anything else is refused by saying what is accepted, rather than by whatever ``list()``
    happens to raise about it (``'int' object is not iterable``). ``name`` is the lock name
    they were given for, named in errors.
    """
    where = "" if name is None else f" for lock name {name!r}"
    if callable(targets):
        listed: list[Callable[..., object]] = [targets]
    elif isinstance(targets, Iterable) and not isinstance(targets, str | bytes | Mapping):
        listed = list(targets)
    else:
        raise TypeError(
            "supervise() takes a callable or a list of callables, each called with a "
            f"gomaster.Leadership, or a mapping of lock names to those, not {type(targets).__name__}{where}"
        )
    if not listed:
        raise ValueError(f"supervise() needs at least one target{where}")
    for index, target in enumerate(listed):
        if not callable(target):
            raise TypeError(
                f"target {index}{where} is {type(target).__name__}, not a callable taking a Leadership"
            )
        try:
            pack(target)
        except Exception as exc:
            raise TypeError(
                f"target {index}{where} ({getattr(target, '__name__', target)!r}) cannot be sent to a "
                f"worker process: {type(exc).__name__}: {exc}"
            ) from exc
    return listed


def check_jobs(targets: Targets | Mapping[str, Targets], name: str | None) -> dict[str, list[Target]]:
    """The targets of each lock name: a mapping of names to targets, or targets under ``name``
    (default ``"default"``); every name checked and every target loadable in a worker."""
    if not isinstance(targets, Mapping):
        chosen = "default" if name is None else name
        check_name_or_raise(chosen)
        return {chosen: check_targets(targets)}
    if name is not None:
        raise TypeError("give lock names either as the keys of the mapping or as name=, not both")
    if not targets:
        raise ValueError("supervise() needs at least one lock name in the mapping")
    jobs: dict[str, list[Target]] = {}
    for key, listed in targets.items():
        if not isinstance(key, str):
            raise TypeError(f"lock names are strings, not {type(key).__name__} ({key!r})")
        check_name_or_raise(key)
        jobs[key] = check_targets(listed, key)
    return jobs


def check_name_or_raise(name: str) -> None:
    """Refuse a lock name the backends cannot store, saying why."""
    match check_name(name):
        case Failure(problem):
            raise ValueError(problem)


def check_config(name: str, timing: Timing | None, version: str) -> tuple[str, Timing]:
    """Validate the lock name, timing and version up front, with errors that say what to fix."""
    check_name_or_raise(name)
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
    metrics: Metrics | None,
    on_new_leader: Callable[[LockRecord | None], None] | None,
    lock: str | None = None,
) -> Callable[[Watched], None] | None:
    """One observer feeding the metrics (of ``lock``, default the name they were made for) and
    calling ``on_new_leader`` when the holder changes."""
    if metrics is None and on_new_leader is None:
        return None

    def watch(seen: Watched) -> None:
        if metrics is not None:
            metrics.observe(seen, lock)
        if on_new_leader is not None and isinstance(seen, HolderChanged):
            on_new_leader(seen.record)

    return watch


def supervise(
    targets: Targets | Mapping[str, Targets],
    *,
    backend: LockBackend | str | None = None,
    name: str | None = None,
    timing: Timing | None = None,
    version: str = "",
    max_failures: int | None = None,
    metrics: Metrics | None = None,
    on_new_leader: Callable[[LockRecord | None], None] | None = None,
    spare_workers: bool = True,
    preload: bool = False,
) -> None:
    """Run ``targets`` in worker processes only while this process is master of their lock name.

    ``targets`` is a callable or a list of them, run while master of ``name`` (default
    ``"default"``), or a mapping of lock names to those, ``{"reports": report, "sweeper":
    [sweep_a, sweep_b]}``: each name is an election of its own, all carried by this one process
    over one backend connection, and a name's work runs only while this node is master of that
    name. Blocks until SIGTERM or SIGINT, then stops the work, releases every lock so another
    node takes over at once, and returns. Each target is called with a
    :class:`gomaster.Leadership` in its own process. A target that raises or exits non-zero is
    restarted with backoff while this node stays master; after ``max_failures`` failures in a
    row (if set) this node resigns that name. A target that returns normally is done until the
    next tenure. ``metrics`` (see :mod:`gomaster.metrics`; one object serves every name) and
    ``on_new_leader`` (called on the elector thread with the record whenever the holder this node
    sees changes, on masters and followers alike) are optional observers. Workers are forked
    from a zygote process, which keeps one spare worker ready so that an election waits for a
    single fork; ``spare_workers=False`` keeps none (one process fewer per node, one fork more,
    about a millisecond, per election). Each
    worker loads its target when it starts, so what loading imports stays in that worker;
    ``preload=True`` loads the targets once in the zygote instead, for targets slow to load (a
    large application): each start is then a fork, and the node joins the elections only once
    they are loaded, but whatever their import opens (connections, files) is shared by every
    worker.

    When the application has not set up logging, this node's elections, demotions and the
    master it waits for are logged to stderr while it runs (see :mod:`gomaster.runtime.console`).
    """
    with console_logging(not logging_configured()):
        jobs = check_jobs(targets, name)
        timing = check_config(next(iter(jobs)), timing, version)[1]
        store = resolve_backend(backend)
        me = new_identity(version)
        announce = announce_holder(me.node_id)
        options = SupervisorOptions(max_failures=max_failures, preload=preload, spare=spare_workers)
        with STARTED.held(store.url, list(jobs)):
            Supervisor(
                store,
                [
                    Job(
                        config=Config(name=lock, me=me, timing=timing),
                        targets=listed,
                        watch=chain(watcher(metrics, on_new_leader, lock), announce),
                    )
                    for lock, listed in jobs.items()
                ],
                options,
            ).run()
