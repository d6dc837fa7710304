"""How a target travels to the process that runs it: by reference when it can, else by value.

A target defined at the top of an importable module (and a ``functools.partial`` or bound
method built from such things) travels by reference through the standard library's C pickler:
the process that runs it imports the module and looks the name up. Loading it touches a few
pages of a freshly forked process, where ``dill``'s Python unpickler touched about 0.8 MiB of
them (each one copied from the zygote) and took the best part of a millisecond.

Everything else (a lambda, a closure, a function or class of the application's ``__main__``,
which the zygote never imports) travels by value through ``dill``, as before. The first byte
says which, so loading never guesses.
"""

from __future__ import annotations

import io
import pickle
import types
from collections.abc import Iterable
from typing import Any

_BY_REFERENCE, _BY_VALUE = b"R", b"V"


class _MainReferenceError(Exception):
    """The object refers to ``__main__`` by name: the zygote has no such module to look in."""


class _ReferencePickler(pickle.Pickler):
    """The C pickler, refusing anything it would name in ``__main__``."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, type | types.FunctionType | types.BuiltinFunctionType) and (
            getattr(obj, "__module__", None) == "__main__"
        ):
            raise _MainReferenceError
        return NotImplemented


def _by_reference(target: object) -> bytes | None:
    """``target`` pickled by reference, or None when some part of it cannot be."""
    out = io.BytesIO()
    try:
        _ReferencePickler(out, protocol=pickle.HIGHEST_PROTOCOL).dump(target)
    except (_MainReferenceError, pickle.PicklingError, TypeError, AttributeError, RecursionError):
        return None
    return out.getvalue()


def pack(target: object) -> bytes:
    """``target`` as the bytes its process loads it from (:func:`unpack`); raises what ``dill``
    raises for a target that cannot travel at all."""
    reference = _by_reference(target)
    if reference is not None:
        return _BY_REFERENCE + reference
    import dill

    packed: bytes = dill.dumps(target, recurse=True)
    return _BY_VALUE + packed


def modules_for(packed: Iterable[bytes]) -> tuple[str, ...]:
    """The modules that loading these targets will import whatever the targets are: ``dill``
    when one travels by value. The zygote imports them at boot, so that each start finds them
    in its fork rather than importing them itself (``dill`` is tens of milliseconds of CPU)."""
    return ("dill",) if any(data[:1] == _BY_VALUE for data in packed) else ()


def unpack(data: bytes) -> Any:
    """The target :func:`pack` made ``data`` from. ``dill`` is imported only for a target that
    travelled by value."""
    kind, payload = data[:1], data[1:]
    if kind == _BY_REFERENCE:
        return pickle.loads(payload)
    if kind == _BY_VALUE:
        import dill

        return dill.loads(payload)
    raise ValueError(f"not a packed target (starts with {kind!r})")
