"""The runtime's own messages on a connection, pickled by the standard library's C pickler.

A ``multiprocess`` connection's ``send`` pickles with dill, whose pickler is written in Python:
about 0.3 ms for a message of a few fields, more in a process just forked, which must first
copy every page that run touches. Each start of a target sends three such messages in a row
(the fork request, the zygote's answer, ``TargetStarted``). They are all plain frozen dataclasses,
which the C pickler handles in microseconds; a target still crosses as packed bytes inside them.
Both ends frame the bytes as ``multiprocess`` does, so a worker relays its target's messages
unchanged.

:class:`Channel` is that framing on a bare descriptor, for the zygote and the processes it
forks: importing ``multiprocess`` there (and ``dill`` with it) made every fork copy a larger
process and run more at-fork hooks, about 0.3 ms of each election's start.
"""

from __future__ import annotations

import contextlib
import math
import os
import pickle
import select
import socket
import struct
from typing import Any

#: A frame's length; the value ``-1`` says a 64-bit length follows (``multiprocess``'s framing).
_SHORT, _LONG = struct.Struct("!i"), struct.Struct("!Q")


def frame(data: bytes) -> bytes:
    """``data`` framed as a ``multiprocess`` connection frames it."""
    if len(data) > 0x7FFFFFFF:
        return _SHORT.pack(-1) + _LONG.pack(len(data)) + data
    return _SHORT.pack(len(data)) + data


def packed(message: object) -> bytes:
    """``message`` (a plain frozen dataclass of the runtime) pickled and framed, ready to write."""
    return frame(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))


def send(conn: Any, message: object) -> None:
    """Send one message (a plain frozen dataclass of the runtime) on ``conn``."""
    conn.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))


def receive(conn: Any) -> object:
    """The next message on ``conn``; ``EOFError`` or ``OSError`` once the other end is gone."""
    return pickle.loads(conn.recv_bytes())


class Channel:
    """One end of a socket or pipe that carries framed messages: the subset of a
    ``multiprocess`` connection the zygote and its forks use, over a blocking descriptor."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    def fileno(self) -> int:
        """The descriptor; ``OSError`` once closed."""
        if self._fd is None:
            raise OSError("the channel is closed")
        return self._fd

    def close(self) -> None:
        """Close the descriptor (again: nothing)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.close(fd)

    def send_bytes(self, data: bytes) -> None:
        """Write one frame of ``data``, however many writes that takes."""
        self.write(frame(data))

    def write(self, framed: bytes) -> None:
        """Write bytes already framed (see :func:`packed`)."""
        view = memoryview(framed)
        while view:
            view = view[os.write(self.fileno(), view) :]

    def recv_bytes(self) -> bytes:
        """The next frame's data; ``EOFError`` when the other end closed first."""
        (size,) = _SHORT.unpack(self._exactly(_SHORT.size))
        if size == -1:
            (size,) = _LONG.unpack(self._exactly(_LONG.size))
        return self._exactly(size)

    def poll(self, timeout: float | None = 0.0) -> bool:
        """True when a frame (or the end) can be read within ``timeout`` seconds (None: ever)."""
        waiting = select.poll()
        waiting.register(self.fileno(), select.POLLIN)
        millis = None if timeout is None else max(0, math.ceil(timeout * 1000))
        return bool(waiting.poll(millis))

    def _exactly(self, size: int) -> bytes:
        chunks, left = [], size
        while left:
            chunk = os.read(self.fileno(), left)
            if not chunk:
                raise EOFError("the other end closed")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)


def send_descriptors(conn: Any, fds: list[int]) -> None:
    """Pass ``fds`` over ``conn``, a Unix socket (SCM_RIGHTS), with one byte of data."""
    with socket.socket(fileno=os.dup(conn.fileno())) as raw:
        socket.send_fds(raw, [bytes([len(fds) % 256])], fds)


def receive_descriptors(conn: Any, count: int) -> list[int]:
    """The ``count`` descriptors :func:`send_descriptors` passed; ``EOFError`` when none came."""
    with socket.socket(fileno=os.dup(conn.fileno())) as raw:
        data, fds, _flags, _address = socket.recv_fds(raw, 1, count)
    if len(fds) != count or data != bytes([count % 256]):
        for fd in fds:
            os.close(fd)
        raise EOFError(f"expected {count} descriptors, got {len(fds)}")
    return list(fds)
