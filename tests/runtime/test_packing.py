"""A target travels by reference when its process can import it, and by value otherwise; the
runtime's framed channel reads and writes what a ``multiprocess`` connection does."""

from __future__ import annotations

import functools
import os
import sys
import threading
from collections.abc import Iterator

import pytest
from multiprocess.connection import Connection

from gomaster.runtime.packing import pack, unpack
from gomaster.runtime.wire import Channel, packed, receive, send
from gomaster.runtime.worker import TargetStarted


def _double(value: int) -> int:
    return 2 * value


def _times(factor: int, value: int) -> int:
    return factor * value


class _Callable:
    def __init__(self, factor: int) -> None:
        self.factor = factor

    def __call__(self, value: int) -> int:
        return self.factor * value


def test_a_module_level_function_travels_by_reference_and_loads_as_itself() -> None:
    data = pack(_double)
    assert data.startswith(b"R")
    assert b"_double" in data and len(data) < 200, "by reference: a name, not the code"
    assert unpack(data) is _double


def test_a_partial_and_an_instance_of_a_module_level_class_travel_by_reference() -> None:
    for target in (functools.partial(_times, 3), _Callable(5)):
        data = pack(target)
        assert data.startswith(b"R")
        assert unpack(data)(7) == target(7)


def test_a_lambda_and_a_closure_travel_by_value_and_still_run() -> None:
    factor = 4

    def closure(value: int) -> int:
        return factor * value

    for target in (lambda value: value + 1, closure):
        data = pack(target)
        assert data.startswith(b"V")
        assert unpack(data)(5) == target(5)


@pytest.fixture
def main_function(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """A function the application's ``__main__`` holds by name, which the C pickler would happily
    name by reference, and which a zygote (never importing ``__main__``) could not find."""

    def triple(value: int) -> int:
        return 3 * value

    triple.__module__ = "__main__"
    triple.__qualname__ = triple.__name__ = "gomaster_test_triple"
    monkeypatch.setattr(sys.modules["__main__"], "gomaster_test_triple", triple, raising=False)
    yield triple


def test_a_function_of_main_and_a_partial_of_one_travel_by_value(main_function: object) -> None:
    assert callable(main_function)
    for target in (functools.partial(main_function, 2), functools.partial(main_function, value=2)):
        data = pack(target)
        assert data.startswith(b"V"), "a reference into __main__ would not load in the zygote"
        assert unpack(data)() == 6
    data = pack(main_function)
    assert data.startswith(b"V")
    assert unpack(data)(2) == 6


def test_bytes_not_made_by_pack_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="not a packed target"):
        unpack(b"\x80\x05N.")


def test_a_channel_and_a_multiprocess_connection_read_each_others_frames_small_and_large() -> None:
    big = os.urandom(200_000)  # larger than a pipe's buffer: written and read in parts
    for payload in (b"", b"x", big):
        ours, theirs = os.pipe()
        channel, reader = Channel(theirs), Connection(ours, writable=False)
        writing = threading.Thread(target=channel.send_bytes, args=(payload,))
        writing.start()
        assert reader.recv_bytes() == payload
        writing.join()
        channel.close()
        reader.close()
        ours, theirs = os.pipe()
        writer, channel = Connection(theirs, readable=False), Channel(ours)
        writing = threading.Thread(target=writer.send_bytes, args=(payload,))
        writing.start()
        assert channel.poll(5.0) and channel.recv_bytes() == payload
        writing.join()
        writer.close()
        channel.close()


def test_messages_framed_ahead_read_as_messages_sent() -> None:
    ours, theirs = os.pipe()
    channel, reader = Channel(theirs), Connection(ours, writable=False)
    channel.write(packed(TargetStarted(9)))
    send(channel, TargetStarted(3))
    assert receive(reader) == TargetStarted(9)
    assert receive(reader) == TargetStarted(3)
    assert not reader.poll(0.0), "nothing more was sent"
    channel.close()
    reader.close()


def test_a_channel_says_eof_when_the_other_end_closed_mid_frame() -> None:
    ours, theirs = os.pipe()
    channel = Channel(ours)
    os.write(theirs, (100).to_bytes(4, "big") + b"only part")
    os.close(theirs)
    with pytest.raises(EOFError):
        channel.recv_bytes()
    channel.close()
    channel.close()  # closing twice is harmless
    with pytest.raises(OSError):
        channel.fileno()
