"""A chaos node whose work tries to outlive its tenure: ``python -m tests.chaos.node ...``.

It carries every ``--name`` in one supervisor. It is the demo's node (witness marks in ``--log``,
one file per lock) with adversarial work: at the start of each
tenure the work starts three children that ignore SIGTERM, one in the work's own group, one in
a new session and one double-forked, and each records ``LOCK TOKEN NODE PID`` in
``--escapees`` before it becomes ``sleep MARKER``. The harness checks that none of them outlives
its tenure, whatever the fault.

With ``--aio`` the node is an asyncio application instead (``gomaster.aio``): each name is a
``gomaster.aio.Master`` whose work is a task in the node's own event loop, and the election runs in
that Master's supervisor child. Its work writes the same witness marks, and starts no escapees
(children of in-process work are not contained: docs/asyncio.md). On SIGUSR1 the next mark
blocks the loop instead: a sync ``time.sleep`` loop that goes on writing marks for
``BLOCK_TTLS`` ttl, past the grace, so only the guard thread or the supervisor's kill can stop it.
A Master whose supervisor died is started again. Each start appends ``LOCK PID`` (its
supervisor's pid) to ``--pids``, for the harness's faults on a supervisor alone.

With ``--every SECONDS`` (process nodes), each name also runs a job on that schedule
(``gomaster.every``'s target, beside the witness work): every run it starts appends a ``run``
mark with its tick and token to ``--runs`` ({lock} becomes the lock name), for
:mod:`tests.chaos.ticks`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from gomaster import Leadership, Tick, Timing
from gomaster.cli.demo import MARK_EVERY, _work
from gomaster.testing import append_mark

#: One escapee: ignores SIGTERM, records who it is, then sleeps as long as nobody kills it. The
#: marker is written into the script, so the escapee's command line holds it from its first
#: instruction on (the harness tells escapees from recycled PIDs by it).
ESCAPEE = 'trap "" TERM; echo "$GM_LOCK $GM_TOKEN $GM_NODE $$" >> "$GM_ESCAPEES"; exec sleep {marker}'
#: The three ways out of a process group a child can take (see the module docstring).
ESCAPES = 'sh -c "$GM_ESCAPEE" &\nsetsid sh -c "$GM_ESCAPEE" &\n( sh -c "$GM_ESCAPEE" & )\n'


def escaping_work(args: argparse.Namespace, lock: str) -> Callable[[Leadership], None]:
    """Start the escapees of this tenure, then work as the demo's node does."""
    witness = _work(Path(args.log.replace("{lock}", lock)), args.node)

    def work(leadership: Leadership) -> None:
        env = {
            **os.environ,
            "GM_ESCAPEE": ESCAPEE.format(marker=args.marker),
            "GM_LOCK": lock,
            "GM_TOKEN": str(leadership.token),
            "GM_NODE": args.node,
            "GM_ESCAPEES": str(args.escapees),
        }
        subprocess.Popen(["sh", "-c", ESCAPES], env=env, stdin=subprocess.DEVNULL)
        witness(leadership)

    return work


@dataclass(frozen=True, slots=True)
class RunMark:
    """The scheduled job: one ``run`` mark per run started, with its tick and token."""

    log: Path
    node: str

    def __call__(self, tick: Tick) -> None:
        """Write the mark; the ledger already holds this run as started."""
        append_mark(self.log, "run", tick=tick.at, token=tick.token, node=self.node)


def scheduled(args: argparse.Namespace, lock: str) -> Callable[[Leadership], None]:
    """``lock``'s schedule target: :class:`RunMark` every ``--every`` seconds."""
    from gomaster.backends import connect
    from gomaster.core.schedule import Every, Policy
    from gomaster.runtime.scheduled import ScheduledTarget

    return ScheduledTarget(
        job=RunMark(Path(args.runs.replace("{lock}", lock)), args.node),
        schedule=Every(args.every),
        policy=Policy(),
        backend=connect(args.backend),
        timing=Timing.from_ttl(args.ttl),
    )


#: How long a blocked loop goes on writing marks, in ttls: far past ``renew_deadline + grace``.
BLOCK_TTLS = 3.0


@dataclass(slots=True)
class _Blocker:
    """Set by SIGUSR1; the next mark of any name's work blocks the loop (and clears it)."""

    asked: bool = False


def aio_work(
    args: argparse.Namespace, lock: str, blocker: _Blocker
) -> Callable[[Leadership], Awaitable[None]]:
    """The witness as a task: a mark every ``MARK_EVERY``; a loop blocked on request."""
    log = Path(args.log.replace("{lock}", lock))

    async def work(leadership: Leadership) -> None:
        append_mark(log, "start", token=leadership.token, node=args.node)
        while True:
            await asyncio.sleep(MARK_EVERY)
            append_mark(log, "alive", token=leadership.token, node=args.node)
            if blocker.asked:
                blocker.asked = False
                until = time.monotonic() + BLOCK_TTLS * args.ttl
                while time.monotonic() < until:  # never yields: the loop is blocked
                    time.sleep(MARK_EVERY)
                    append_mark(log, "alive", token=leadership.token, node=args.node)

    return work


async def keep_master(args: argparse.Namespace, lock: str, blocker: _Blocker) -> None:
    """One name's Master, started again whenever its supervisor process ends."""
    import gomaster.aio

    while True:
        master = gomaster.aio.Master(
            args.backend, name=lock, work=aio_work(args, lock, blocker), timing=Timing.from_ttl(args.ttl)
        )
        async with master:
            with args.pids.open("a") as pids:
                pids.write(f"{lock} {master.supervisor_pid}\n")
            async for _ in master.events():
                pass
        logging.getLogger("gomaster").warning("the supervisor of %s ended: starting it again", lock)


async def aio_main(args: argparse.Namespace) -> None:
    """Every name's Master in this loop, until the node is killed."""
    blocker = _Blocker()

    def block() -> None:
        blocker.asked = True

    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, block)
    async with asyncio.TaskGroup() as group:
        for lock in args.name:
            group.create_task(keep_master(args, lock, blocker))


def main() -> None:
    parser = argparse.ArgumentParser(prog="tests.chaos.node")
    parser.add_argument("--backend", required=True)
    parser.add_argument("--log", required=True, help="the witness log; {lock} becomes the lock name")
    parser.add_argument("--node", required=True)
    parser.add_argument("--ttl", type=float, required=True)
    parser.add_argument("--name", action="append", required=True, help="a lock name (repeat for more)")
    parser.add_argument("--escapees", type=Path, required=True)
    parser.add_argument("--marker", required=True)
    parser.add_argument("--aio", action="store_true", help="run the names as gomaster.aio tasks")
    parser.add_argument("--pids", type=Path, help="with --aio: where each Master's supervisor pid goes")
    parser.add_argument("--every", type=float, help="also run a job every SECONDS per name (process nodes)")
    parser.add_argument("--runs", help="with --every: the log of the runs; {lock} becomes the lock name")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format=f"%(created).3f {args.node} %(levelname)s %(message)s")
    if args.aio:
        asyncio.run(aio_main(args))
        return
    from gomaster.runtime.supervise import supervise

    jobs: dict[str, list[Callable[[Leadership], None]]] = {
        lock: [escaping_work(args, lock), *([scheduled(args, lock)] if args.every else [])]
        for lock in args.name
    }
    supervise(jobs, backend=args.backend, timing=Timing.from_ttl(args.ttl))


if __name__ == "__main__":
    main()
