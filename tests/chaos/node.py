"""A chaos node whose work tries to outlive its tenure: ``python -m tests.chaos.node ...``.

It carries every ``--name`` in one supervisor. It is the demo's node (witness marks in ``--log``,
one file per lock) with adversarial work: at the start of each
tenure the work starts three children that ignore SIGTERM, one in the work's own group, one in
a new session and one double-forked, and each records ``LOCK TOKEN NODE PID`` in
``--escapees`` before it becomes ``sleep MARKER``. The harness checks that none of them outlives
its tenure, whatever the fault.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from gomaster import Leadership, Timing
from gomaster.cli.demo import _work

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


def main() -> None:
    parser = argparse.ArgumentParser(prog="tests.chaos.node")
    parser.add_argument("--backend", required=True)
    parser.add_argument("--log", required=True, help="the witness log; {lock} becomes the lock name")
    parser.add_argument("--node", required=True)
    parser.add_argument("--ttl", type=float, required=True)
    parser.add_argument("--name", action="append", required=True, help="a lock name (repeat for more)")
    parser.add_argument("--escapees", type=Path, required=True)
    parser.add_argument("--marker", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format=f"%(created).3f {args.node} %(levelname)s %(message)s")
    from gomaster.runtime.supervise import supervise

    jobs = {lock: escaping_work(args, lock) for lock in args.name}
    supervise(jobs, backend=args.backend, timing=Timing.from_ttl(args.ttl))


if __name__ == "__main__":
    main()
