"""Of the hosts a URL lists, the one primary: asked of every host on each connect.

A driver's own multi-host logic (libpq's ``target_session_attrs=read-write``) takes the first
writable host it meets. After a failover, an old primary that comes back writable beside the
promoted replica is a split brain of the database: a lease claimed on one is unknown to the
other, so two nodes could each hold it. Asking every listed host whether it accepts writes, and
refusing unless exactly one does, keeps the node off both; the message says what each host said.
Each host gets an equal share of the time left, so one that does not answer cannot take it all.

A node that stays connected would never see an old primary come back, so a connection chosen
from a list is used for :data:`RESURVEY` seconds and then replaced by a new survey.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from gomaster.backends._sql import SetupError

#: Seconds a connection chosen from a list of hosts serves before every host is asked again.
RESURVEY = 5.0

_C = TypeVar("_C")
_H = TypeVar("_H")


def only_writable(
    hosts: Sequence[_H],
    deadline: float,
    ask: Callable[[_H, float], tuple[_C | None, str]],
    close: Callable[[_C], None],
    *,
    promote: str,
    demote: str,
) -> _C:
    """The connection to the one host of ``hosts`` that accepts writes, by ``ask(host,
    until)``; ``close`` closes the others. None or several raise ``SetupError`` with ``promote``
    or ``demote`` (how to fix it, in the server's terms)."""
    writable: list[_C] = []
    said: list[str] = []
    try:
        for left, host in zip(range(len(hosts), 0, -1), hosts, strict=True):
            now = time.monotonic()
            conn, word = ask(host, now + max(deadline - now, 0.0) / left)
            said.append(word)
            if conn is not None:
                writable.append(conn)
    except BaseException:
        for conn in writable:
            close(conn)
        raise
    if len(writable) == 1:
        return writable[0]
    for conn in writable:
        close(conn)
    if writable:
        raise SetupError(
            f"more than one listed host accepts writes ({'; '.join(said)}): a split brain of the "
            f"database, so no lease is claimed or renewed on any of them; {demote}"
        )
    raise SetupError(f"none of the listed hosts accepts writes ({'; '.join(said)}): {promote}")
