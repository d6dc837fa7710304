"""An application for the logging tests: ``python -m tests.runtime.console_app URL API [logging]``.

API ``supervise`` runs ``supervise()``; ``master`` starts a ``Master`` and stops it on SIGTERM.
Either prints ``working TOKEN`` or ``working`` on stdout once its work runs. With ``logging``
the application sets up logging first (a root handler on stdout at WARNING), as an application
that owns its logging does; ``logging-info`` does the same at INFO.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time

import gomaster

TIMING = gomaster.Timing.from_ttl(1.0)
NAME = "console"


def _work(leadership: gomaster.Leadership) -> None:
    print(f"working {leadership.token}", flush=True)
    while True:
        time.sleep(1)


def _hook() -> None:
    print("working", flush=True)
    while True:
        time.sleep(1)


def _run_master(url: str) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())
    master = gomaster.Master(url, name=NAME, start_hook=_hook, timing=TIMING)
    master.start()
    while not stop.wait(0.05):
        pass
    master.stop()


def main() -> None:
    url, api = sys.argv[1:3]
    if sys.argv[3:4] in (["logging"], ["logging-info"]):
        level = logging.INFO if sys.argv[3] == "logging-info" else logging.WARNING
        logging.basicConfig(stream=sys.stdout, level=level, format="app %(name)s %(message)s")
    if api == "supervise":
        gomaster.supervise(_work, backend=url, name=NAME, timing=TIMING)
    else:
        _run_master(url)


if __name__ == "__main__":
    main()
