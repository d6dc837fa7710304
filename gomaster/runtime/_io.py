"""The runtime's one exit from ``IOResult``: the threads that did the I/O look at its outcome."""

from __future__ import annotations

from typing import TypeVar

from returns.io import IO, IOResult
from returns.result import Result
from returns.unsafe import unsafe_perform_io

_T = TypeVar("_T")
_E = TypeVar("_E")


def performed(io: IOResult[_T, _E]) -> Result[_T, _E]:
    """The ``Result`` inside an ``IOResult`` whose I/O has already happened."""
    return unsafe_perform_io(IO.from_ioresult(io))
