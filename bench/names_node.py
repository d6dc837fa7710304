"""A gomaster node carrying many lock names, on this checkout's runtime or on the one before it.

    python -m bench.names_node --runtime new|before --backend URL --prefix P --count N
                               [--offset K] [--work sleep|none] [--hold-within SECONDS]

Its names are ``P-K`` to ``P-(K+N-1)``, at ``Timing()`` defaults; while held, each runs
``bench.idle.idle`` (``--work sleep``: a worker and a target process that sleeps) or
``bench.idle.done`` (``--work none``: it returns at once, so the name is kept with no worker).
``--runtime new`` is issue 18's runtime: one ``gomaster.supervise({name: target, ...})`` call
carries every name in this process.
``--runtime before`` is gomaster 7d9d93a and earlier, whose ``supervise`` takes one name per
call, so a node with N names was N supervisor processes: this process starts one ``--count 1``
child per name and forwards SIGTERM and SIGINT to them (with one name it is that supervisor
itself). The flag says which gomaster the harness put on ``PYTHONPATH``; nothing is guessed,
and the wrong one fails at once (each runtime refuses the other's call).

``--hold-within S`` makes the node fail loudly: if any name is not held by it (its own process
or one of its children) S seconds after start, it names them on stderr, stops, and exits
``EXIT_NOT_HELD``. A child of a ``before`` node that exits on its own ends the node with
``EXIT_CHILD_DIED``.

Only the standard library is imported at module level: the runtime's zygote imports this main
module too, and whatever it imported would be counted in the node's footprint.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterable
from types import FrameType
from typing import TYPE_CHECKING, Literal, TypeAlias

if TYPE_CHECKING:
    from gomaster.backends import LockBackend

Runtime: TypeAlias = Literal["new", "before"]
RUNTIMES: tuple[Runtime, ...] = ("new", "before")
Work: TypeAlias = Literal["sleep", "none"]
WORKS: tuple[Work, ...] = ("sleep", "none")
EXIT_NOT_HELD = 3
EXIT_CHILD_DIED = 4
#: How often a ``before`` node looks at its signals and children.
POLL = 0.2
#: The hold check looks first after this long, then twice as long each time, up to its deadline.
FIRST_HOLD_CHECK = 1.0
MAX_HOLD_CHECK = 10.0
#: One observe's timeout while checking who holds the names.
OBSERVE_TIMEOUT = 5.0
#: How long a ``before`` node waits for its children after forwarding a stop.
STOP_WAIT = 30.0
#: How many names a failure message lists.
SHOWN = 5
#: What the runtime logs (to stderr, when the application set up no logging): once per name a
#: follower first sees held by another node, and when a node wins or loses a name.
LOGGED_FOLLOWING = "waiting: master is"
LOGGED_ELECTED = "elected master of"
LOGGED_DEMOTED = "demoted from master of"


def is_supervisor(runtime: Runtime, count: int) -> bool:
    """Whether the process started for a node is its supervisor, and so part of its footprint;
    a ``before`` node of several names only starts their supervisors, standing in for N units."""
    return not (runtime == "before" and count > 1)


def lock_names(prefix: str, count: int, offset: int = 0) -> list[str]:
    """The names of a node: ``prefix-offset`` onwards, ``count`` of them."""
    return [f"{prefix}-{i}" for i in range(offset, offset + count)]


def not_held(backend: LockBackend, names: Iterable[str], pids: Collection[int], host: str) -> list[str]:
    """The names whose lease is not live and held by one of ``pids`` on ``host``, in order; a
    name that cannot be read counts as not held."""
    from returns.io import IO
    from returns.unsafe import unsafe_perform_io

    missing = []
    for name in names:
        seen = unsafe_perform_io(IO.from_ioresult(backend.observe(name, OBSERVE_TIMEOUT))).value_or(None)
        record = seen.record if seen is not None else None
        if (
            seen is None
            or record is None
            or not record.live_at(seen.server_now)
            or record.pid not in pids
            or record.host != host
        ):
            missing.append(name)
    return missing


def describe(names: list[str]) -> str:
    """``len`` names, the first few of them."""
    more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return f"{len(names)} names ({', '.join(names[:SHOWN])}{more})"


class _HoldCheck(threading.Thread):
    """Checks, ever less often, that this node holds every name; past ``within`` seconds it says
    which it does not, and stops the node with SIGTERM to itself (the supervisor's way out)."""

    def __init__(self, url: str, names: list[str], pids: Callable[[], set[int]], within: float) -> None:
        super().__init__(name="hold-check", daemon=True)
        self._url = url
        self._names = names
        self._pids = pids
        self._deadline = time.monotonic() + within
        self._within = within
        self.missing: list[str] = []

    def run(self) -> None:
        from gomaster.backends import connect

        backend = connect(self._url)
        pause = FIRST_HOLD_CHECK
        try:
            while True:
                time.sleep(max(0.0, min(pause, self._deadline - time.monotonic())))
                missing = not_held(backend, self._names, self._pids(), socket.gethostname())
                if not missing:
                    return
                if time.monotonic() >= self._deadline:
                    self.missing = missing
                    print(
                        f"bench.names_node: {describe(missing)} not held by this node "
                        f"{self._within:g} s after start; stopping",
                        file=sys.stderr,
                        flush=True,
                    )
                    os.kill(os.getpid(), signal.SIGTERM)
                    return
                pause = min(pause * 2, MAX_HOLD_CHECK)
        finally:
            backend.close()


def _supervise(runtime: Runtime, url: str, names: list[str], work: Work) -> None:
    """This process becomes the supervisor of ``names``, until SIGTERM or SIGINT."""
    import importlib

    from bench.idle import done, idle

    target = idle if work == "sleep" else done
    gomaster = importlib.import_module("gomaster")
    # Looked up by name and typed loosely: the call must fit whichever runtime is on the path,
    # and each runtime's signature refuses the other's form.
    supervise: Callable[..., None] = gomaster.supervise
    if runtime == "new":
        supervise(dict.fromkeys(names, target), backend=url, timing=gomaster.Timing())
    else:
        (name,) = names
        supervise(target, backend=url, name=name, timing=gomaster.Timing())


def _one_per_name(url: str, prefix: str, offset: int, count: int, work: Work, check: float | None) -> int:
    """A ``before`` node: one supervisor child per name, stopped when this process is."""
    signals: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        signals.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    command = [
        sys.executable,
        "-m",
        "bench.names_node",
        "--runtime",
        "before",
        "--backend",
        url,
        "--work",
        work,
    ]
    children = [
        subprocess.Popen([*command, "--prefix", prefix, "--offset", str(i), "--count", "1"])
        for i in range(offset, offset + count)
    ]
    pids = {os.getpid(), *(child.pid for child in children)}
    checker = None
    if check is not None:
        checker = _HoldCheck(url, lock_names(prefix, count, offset), lambda: pids, check)
        checker.start()
    code = 0
    while not signals and not (checker is not None and checker.missing):
        dead = [child for child in children if child.poll() is not None]
        if dead:
            print(
                f"bench.names_node: the supervisor of {prefix}-{offset + children.index(dead[0])} "
                f"exited with {dead[0].returncode}; stopping",
                file=sys.stderr,
                flush=True,
            )
            code = EXIT_CHILD_DIED
            break
        time.sleep(POLL)
    for child in children:
        if child.poll() is None:
            child.terminate()
    deadline = time.monotonic() + STOP_WAIT
    for child in children:
        try:
            child.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    if checker is not None and checker.missing:
        return EXIT_NOT_HELD
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.names_node",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--runtime", choices=RUNTIMES, required=True)
    parser.add_argument("--backend", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--offset", type=int, default=0)
    parser.add_argument("--work", choices=WORKS, default="sleep", help="what each held name runs")
    parser.add_argument("--hold-within", type=float, help="fail unless every name is held this soon (s)")
    args = parser.parse_args(argv)
    if not is_supervisor(args.runtime, args.count):
        return _one_per_name(args.backend, args.prefix, args.offset, args.count, args.work, args.hold_within)
    names = lock_names(args.prefix, args.count, args.offset)
    checker = None
    if args.hold_within is not None:
        checker = _HoldCheck(args.backend, names, lambda: {os.getpid()}, args.hold_within)
        checker.start()
    _supervise(args.runtime, args.backend, names, args.work)
    return EXIT_NOT_HELD if checker is not None and checker.missing else 0


if __name__ == "__main__":
    sys.exit(main())
