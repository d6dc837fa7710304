"""The runtime's own messages on a connection, pickled by the standard library's C pickler.

A ``multiprocess`` connection's ``send`` pickles with dill, whose pickler is written in Python:
about 0.3 ms for a message of a few fields, more in a process just forked, which must first
copy every page that run touches. Each start of a target sends three such messages in a row
(the fork request, the zygote's answer, ``TargetStarted``). They are all plain frozen dataclasses,
which the C pickler handles in microseconds; a target still crosses as dill bytes inside them.
Both ends frame the bytes as ``multiprocess`` does, so a worker relays its target's messages
unchanged.
"""

from __future__ import annotations

import pickle
from typing import Any


def send(conn: Any, message: object) -> None:
    """Send one message (a plain frozen dataclass of the runtime) on ``conn``."""
    conn.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))


def receive(conn: Any) -> object:
    """The next message on ``conn``; ``EOFError`` or ``OSError`` once the other end is gone."""
    return pickle.loads(conn.recv_bytes())
