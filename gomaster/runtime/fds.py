"""Standard streams that stay standard: nothing gomaster opens may become fd 0, 1 or 2.

A process started with stdout closed (``cmd >&-``) hands the lowest free descriptor to the next
file it opens. Were that the lease's shared memory or a worker's pipe, the master's command
would inherit it as its stdout and write over the lease. Every closed standard descriptor is
therefore pointed at ``/dev/null`` before gomaster opens anything, and the commands it runs get
``/dev/null`` for a stream their parent had closed.
"""

from __future__ import annotations

import contextlib
import io
import os
import resource
import sys

_STANDARD = (0, 1, 2)


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def hold_standard_fds() -> None:
    """Point every closed fd 0, 1 or 2 at ``/dev/null``, and give Python a stream for each.

    Python sets ``sys.stdout`` (or ``stdin``/``stderr``) to None when it starts with that fd
    closed; a print or a log line would then fail, so each gets a stream on ``/dev/null``.
    """
    for fd in _STANDARD:
        if _is_open(fd):
            continue
        opened = os.open(os.devnull, os.O_RDWR)
        if opened != fd:
            os.dup2(opened, fd)
            os.close(opened)
        os.set_inheritable(fd, True)
    streams = (("stdin", 0, "r"), ("stdout", 1, "w"), ("stderr", 2, "w"))
    for attribute, fd, mode in streams:
        if getattr(sys, attribute) is None:
            with contextlib.suppress(OSError):
                setattr(sys, attribute, io.TextIOWrapper(io.FileIO(fd, mode, closefd=False)))


def close_all_but_standard_fds() -> None:
    """Close every descriptor above 2 before an ``exec``, as ``subprocess`` does by default.

    The target's process holds the lease's shared memory and the worker's pipes, some of them
    inheritable (``multiprocess`` passes them that way); a command must get none of them.
    """
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > max(_STANDARD):
            with contextlib.suppress(OSError):
                os.close(fd)


def allow_descriptors(needed: int) -> None:
    """Raise this process's soft limit on open descriptors to ``needed``, or as near as the hard
    limit allows: a supervisor holding many names keeps a socket and a pidfd per worker, more
    than the usual soft limit of 1,024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and wanted > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
