"""An asyncio application for tests: ``python -m tests.aio.app URL NAME MODE [OVERRUN]``.

It runs ``gomaster.aio.supervise`` with a work that prints ``started TOKEN`` when it starts
and ``cancelled TOKEN`` when cancelled, then, by MODE: ``cooperate`` awaits forever;
``sleep`` blocks the event loop with ``time.sleep`` (the GIL is released: the guard thread
runs); ``spin`` blocks it in one C call that keeps the GIL (nothing of the application runs).
"""

from __future__ import annotations

import asyncio
import sys
import time

import gomaster.aio
from gomaster import Leadership, Timing

TIMING = Timing.from_ttl(1.0)


def _say(text: str) -> None:
    print(text, flush=True)


async def main() -> None:
    url, name, mode = sys.argv[1:4]
    overrun = sys.argv[4] if len(sys.argv) > 4 else "kill"

    async def work(leadership: Leadership) -> None:
        _say(f"started {leadership.token}")
        try:
            if mode == "sleep":
                time.sleep(60)
            elif mode == "spin":
                sum(range(10**11))
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            _say(f"cancelled {leadership.token}")
            raise

    await gomaster.aio.supervise(work, backend=url, name=name, timing=TIMING, overrun=overrun)  # type: ignore[arg-type]


if __name__ == "__main__":
    asyncio.run(main())
