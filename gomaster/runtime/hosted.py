"""The supervisor process that an application's ``Master`` objects (or a ``gomaster.aio``
``Master``) share: it runs their elections and answers over its pipe (:mod:`gomaster.runtime.protocol`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

from gomaster.backends import LockBackend
from gomaster.core.election import Config
from gomaster.core.events import Announcement, Demoted, Elected
from gomaster.runtime.console import announce_holder, chain, console_logging
from gomaster.runtime.elector import Watched
from gomaster.runtime.lease import Leadership, SharedLease
from gomaster.runtime.protocol import (
    Answer,
    Failed,
    ForwardLogs,
    Hook,
    Join,
    Joined,
    Leave,
    Left,
    Member,
    Query,
    Ready,
    Resign,
    RoleChanged,
    Seen,
    Stop,
    WorkStopped,
)
from gomaster.runtime.supervise import new_identity
from gomaster.runtime.supervisor import Job, Supervisor, SupervisorOptions
from gomaster.runtime.tree import die_with_parent

#: Lock names one supervisor carries at most: ``Master`` objects on one backend in a process.
MAX_MASTERS = 256


def _hook_target(hook: Hook) -> Callable[[Leadership], object]:
    def run(_leadership: Leadership) -> object:
        return hook()

    return run


def _job(member: Member, send: Callable[[object], None]) -> Job:
    """The supervisor's job for one ``Master``, reporting over ``send``."""
    name = member.name

    def on_event(event: Announcement) -> None:
        if isinstance(event, Elected | Demoted):
            send(RoleChanged(name, event))

    def tell(seen: Watched) -> None:
        send(Seen(name, seen))

    start, stop = member.start_hook, member.stop_hook
    return Job(
        config=Config(name=name, me=new_identity(member.version, member.node_id), timing=member.timing),
        targets=[_hook_target(start)] if start is not None else [],
        labels=["start_hook"],
        stop_hook=_hook_target(stop) if stop is not None else None,
        on_event=on_event,
        watch=chain(tell, announce_holder(member.node_id)),
        on_failure=lambda text: send(Failed(name, text)),
        on_left=lambda: send(Left(name)),
        in_app=member.in_app,
    )


def supervisor_main(
    conn: Any,
    backend: LockBackend,
    first: Member,
    console: bool,
    parent: int,
    lease: SharedLease | None = None,
) -> None:
    """Entry point of the shared supervisor process: ``first`` is the Master that started it;
    ``console`` logs elections to stderr (decided in the application, whose logging it is);
    ``parent`` is the application, with which it dies; ``lease``, when the application reads
    its names' leases itself (``gomaster.aio``), is where they are published."""
    die_with_parent(signal.SIGTERM)
    if os.getppid() != parent:  # the application died before the signal was armed
        return
    with console_logging(console):
        _serve(conn, backend, first, lease, forward=not console)


def _serve(
    conn: Any, backend: LockBackend, first: Member, lease: SharedLease | None, *, forward: bool
) -> None:
    """Run the elections of every Master that joins, answering over ``conn`` until stopped;
    with ``forward``, log records go to the application's logging rather than nowhere."""
    lock = threading.Lock()

    def send(message: object) -> None:
        with lock, contextlib.suppress(OSError, BrokenPipeError, ValueError):
            conn.send(message)

    if forward:
        root = logging.getLogger()
        root.handlers[:] = [ForwardLogs(send)]
        root.setLevel(logging.INFO)

    capacity = MAX_MASTERS if lease is None else lease.size
    supervisor = Supervisor(backend, [_job(first, send)], SupervisorOptions(capacity=capacity), lease=lease)

    def on_control(ready: Any) -> None:
        try:
            message = ready.recv()
        except (EOFError, OSError):
            supervisor.request_stop()
            supervisor.unwatch(ready)
            return
        match message:
            case Join(member=member):
                try:
                    supervisor.add(_job(member, send))
                except (ValueError, RuntimeError) as exc:
                    send(Joined(member.name, str(exc)))
                else:
                    send(Joined(member.name, cell=supervisor.cell(member.name)))
            case Leave(name=name):
                try:
                    supervisor.remove(name)
                except KeyError:
                    send(Left(name))
            case Query(seq=seq, name=name):
                try:
                    send(Answer(seq, supervisor.status(name)))
                except KeyError:
                    send(Answer(seq, None))
            case Resign(name=name):
                with contextlib.suppress(KeyError):
                    supervisor.election(name).resign()
            case WorkStopped(name=name, token=token):
                supervisor.app_stopped(name, token)
            case Stop():
                supervisor.request_stop()
            case _:
                pass

    supervisor.watch(conn, on_control)
    send(Ready(os.getpid(), supervisor.cell(first.name)))
    supervisor.run()
