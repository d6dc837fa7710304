"""The process tree below this process: find every descendant, signal them all, reap them all.

The tree follows parenthood under ``/proc/<pid>/task/*/children``, which no process can leave
(a worker is a subreaper: see docs/concepts.md, "Containment"). Signals go through pidfds,
checked against the parent that listed them, so a recycled PID is never hit.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
#: How long one pass of ``kill_tree`` sleeps when no child was reaped (SIGKILL is fast).
_REAP_PAUSE = 0.002
#: ``kill_tree`` gives up after this long: a process stuck in the kernel (D state) cannot be
#: killed by anyone, and the caller must not hang on it for ever.
KILL_TREE_TIMEOUT = 5.0

#: Called with (pid, wait status) for every child this process reaps.
OnReaped = Callable[[int, int], None]


def _libc_prctl() -> Callable[..., int] | None:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


#: libc's ``prctl``, looked up once when the zygote imports this module: a worker and its
#: target each call it just after a fork, where a fresh ``dlopen`` cost a third of a millisecond
#: (most of it copying the pages that lookup touched).
_PRCTL = _libc_prctl()


def _prctl(option: int, value: int) -> bool:
    return _PRCTL is not None and int(_PRCTL(option, value, 0, 0, 0)) == 0


def become_subreaper() -> bool:
    """Adopt every orphan below this process (Linux 3.4+); False where the kernel refuses."""
    return _prctl(_PR_SET_CHILD_SUBREAPER, 1)


def die_with_parent(sig: int) -> bool:
    """Ask the kernel to send ``sig`` when the thread that created this process exits.

    The caller must check ``os.getppid()`` afterwards: the parent may already be gone.
    """
    return _prctl(_PR_SET_PDEATHSIG, int(sig))


def children(pid: int) -> list[int]:
    """The live and zombie children of ``pid`` (created by any of its threads)."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as listing:
            found += [int(word) for word in listing.read().split()]
    return found


def descendants(root: int) -> list[int]:
    """Every process below ``root``, parents before their children."""
    found: list[int] = []
    seen = {root}
    frontier = [root]
    while frontier:
        below = [pid for parent in frontier for pid in children(parent) if pid not in seen]
        seen.update(below)
        found += below
        frontier = below
    return found


def _parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1])


def _send(pid: int, sig: int, parents: set[int]) -> None:
    """Signal ``pid`` only if it is still the process that a parent in ``parents`` listed."""
    try:
        handle = os.pidfd_open(pid)
    except OSError:
        return
    try:
        if _parent(pid) in parents:
            signal.pidfd_send_signal(handle, sig)
    except OSError:
        pass
    finally:
        os.close(handle)


def signal_tree(sig: int, root: int | None = None) -> int:
    """Send ``sig`` to every descendant of ``root`` (default: this process); how many there were."""
    top = os.getpid() if root is None else root
    below = descendants(top)
    parents = {top, *below}
    for pid in below:
        _send(pid, sig, parents)
    return len(below)


def reap(on_reaped: OnReaped) -> bool:
    """Collect every child of this process that has exited; False once no child is left at all.

    Only a process that runs no user code may call this: it takes the exit status of *any*
    child, which would steal it from a ``subprocess`` waiting in the same process.
    """
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == 0:
            return True
        on_reaped(pid, status)


def kill_tree(on_reaped: OnReaped, timeout: float = KILL_TREE_TIMEOUT) -> bool:
    """SIGKILL every descendant, again and again, until this process has no child left.

    A process that forked while the previous pass killed its parent is found on the next pass
    (its orphan comes to us, the subreaper). False if something below survived ``timeout``.
    """
    give_up = time.monotonic() + timeout
    while True:
        signal_tree(signal.SIGKILL)
        if not reap(on_reaped):
            return True
        if time.monotonic() >= give_up:
            return False
        time.sleep(_REAP_PAUSE)
