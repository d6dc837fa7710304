"""Master work that tries to outlive its tenure: ``python -m tests.runtime.escapes ENTRY ...``.

ENTRY is ``supervise`` (the work is a ``supervise()`` target) or ``master`` (a go-master start
hook). The work starts an escapee through ``sh`` (a script the test writes, see ``script``),
records its own PID in ``--pidfile``, then works until stopped (``--mode forever``) or returns
after a moment, leaving the escapee behind (``--mode return``). Under ``gomaster run`` the same
script is CMD itself.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import gomaster
from gomaster import Timing

#: Each escape kind as a shell line; every escapee also ignores SIGTERM, so only SIGKILL ends it.
KINDS: dict[str, str] = {
    "ignores-term": '(trap "" TERM; exec sleep {marker}) &',
    "new-session": "setsid sh -c 'trap \"\" TERM; exec sleep {marker}' &",
    "double-fork": '( (trap "" TERM; exec sleep {marker}) & )',
}
#: How long ``--mode return`` work lives after starting its escapee.
RETURN_AFTER = 0.3


def escape(kind: str, marker: str) -> str:
    """The shell line that starts an escapee of ``kind`` whose command line holds ``marker``."""
    return KINDS[kind].format(marker=marker)


def command(escape_line: str, pidfile: Path, mode: str) -> str:
    """The whole script of ``gomaster run``'s CMD: escape, record the PID, then work or exit."""
    tail = "exec sleep 86400" if mode == "forever" else f"sleep {RETURN_AFTER}; exit 0"
    return f"{escape_line}\necho $$ > {pidfile}; {tail}"


def make_work(escape_line: str, pidfile: Path, mode: str) -> Callable[[], None]:
    """The Python work of the ``supervise``/``master`` entries."""

    def work() -> None:
        subprocess.Popen(["sh", "-c", escape_line])
        pidfile.write_text(str(os.getpid()))
        if mode == "return":
            time.sleep(RETURN_AFTER)
            return
        while True:
            time.sleep(0.05)

    return work


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("entry", choices=["supervise", "master"])
    parser.add_argument("--backend", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--ttl", type=float, default=1.0)
    parser.add_argument("--escape", required=True)
    parser.add_argument("--pidfile", type=Path, required=True)
    parser.add_argument("--mode", choices=["forever", "return"], default="forever")
    args = parser.parse_args()
    work = make_work(args.escape, args.pidfile, args.mode)
    timing = Timing.from_ttl(args.ttl)
    if args.entry == "supervise":
        gomaster.supervise(lambda _leadership: work(), backend=args.backend, name=args.name, timing=timing)
        sys.exit(0)
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _signum, _frame: stopping.set())
    master = gomaster.Master(args.backend, name=args.name, start_hook=work, timing=timing)
    master.start()
    while not stopping.wait(0.1):
        pass
    master.stop(timeout=30.0)
    sys.exit(0)


if __name__ == "__main__":
    main()
