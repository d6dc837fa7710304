"""An application process for tests: ``python -m tests.runtime.app URL NAME MODE``.

MODE ``master``: starts a ``Master`` whose start hook runs forever, prints ``ready`` once master,
then sleeps until killed. MODE ``log``: runs ``supervise`` with a target that logs one warning.
MODE ``thread-block`` (and ``thread-block-warn``, with ``overrun="warn"``): a ``Master`` with
``hooks="thread"`` whose start hook never returns; prints ``ready`` once it runs.
"""

from __future__ import annotations

import logging
import sys
import time

import gomaster
from gomaster import Leadership, Master, Timing
from gomaster.runtime.supervisor import Overrun

TIMING = Timing.from_ttl(1.0)


def _forever() -> None:
    while True:
        time.sleep(1)


def _say_ready_forever() -> None:
    print("ready", flush=True)
    _forever()


def _log_once(leadership: Leadership) -> None:
    logging.getLogger("app.target").warning("hello from the target, token %d", leadership.token)


def main() -> None:
    url, name, mode = sys.argv[1:4]
    if mode == "log":
        logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s %(message)s")
        gomaster.supervise(_log_once, backend=url, name=name, timing=TIMING)
        return
    if mode.startswith("thread-block"):
        overrun: Overrun = "warn" if mode.endswith("warn") else "kill"
        hooked = Master(
            url, name=name, start_hook=_say_ready_forever, timing=TIMING, hooks="thread", overrun=overrun
        )
        hooked.start()
        _forever()
    master = Master(url, name=name, start_hook=_forever, timing=TIMING)
    master.start()
    while not master.is_master():
        time.sleep(0.01)
    print("ready", flush=True)
    _forever()


if __name__ == "__main__":
    main()
