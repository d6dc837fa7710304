"""The lines a person expects on stderr: elected, demoted, and who the master is while waiting.

A library must not configure logging behind an application's back, and a newcomer who runs
``supervise()`` must not stare at a silent terminal either. So the decision is taken once, at
start: when the application has set up no logging at all (no handler on the root logger nor on
``gomaster``), gomaster's INFO lines go to stderr for as long as it runs; otherwise records only
go where the application sends them.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator

from gomaster.runtime.elector import HolderChanged, Watched

#: One line per record: when, who says it, how bad, what.
FORMAT = "%(asctime)s gomaster %(levelname)s %(message)s"

_log = logging.getLogger("gomaster")


def printable(text: str) -> str:
    """``text`` with every character a terminal would act on written as a Python escape (``\\x1b``).

    Holders, hosts, versions and names are read from the backend, where anyone who can write a
    row can plant an escape sequence that rewrites the screen of whoever reads the output; shown
    escaped, they are inert and still identifiable. Printable text, the usual case, is unchanged.
    """
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def logging_configured() -> bool:
    """True when the application has set up logging (a handler on the root or ``gomaster`` logger)."""
    return bool(logging.getLogger().handlers or _log.handlers)


@contextlib.contextmanager
def console_logging(enabled: bool) -> Iterator[None]:
    """While inside, and only if ``enabled``, gomaster's INFO and above go to stderr.

    A level the application set on the ``gomaster`` logger is kept; only an unset one is
    lowered to INFO (it would otherwise inherit the root's WARNING). Both are undone on leaving.
    """
    if not enabled:
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    level = _log.level
    _log.addHandler(handler)
    if level == logging.NOTSET:
        _log.setLevel(logging.INFO)
    try:
        yield
    finally:
        _log.removeHandler(handler)
        _log.setLevel(level)


def announce_holder(me: str) -> Callable[[Watched], None]:
    """A watcher that logs ``waiting: master is HOST pid N (token T)`` once per holder change.

    Nothing is said when this node (``me``) is the holder, where the elected line says it, nor
    when the lease is free, where a claim follows at once.
    """

    def watch(seen: Watched) -> None:
        if not isinstance(seen, HolderChanged):
            return
        record = seen.record
        if record is None or record.released or record.holder == me:
            return
        _log.info(
            "waiting: master is %s pid %d (token %d)",
            printable(record.host),
            record.pid,
            record.token,
            extra={"lock": record.name, "token": record.token},
        )

    return watch


def chain(*watchers: Callable[[Watched], None] | None) -> Callable[[Watched], None] | None:
    """One watcher that calls each of ``watchers`` given (None when none is); one that raises
    is logged and does not keep the others from seeing the observation."""
    present = [w for w in watchers if w is not None]
    if not present:
        return None
    if len(present) == 1:
        return present[0]

    def watch(seen: Watched) -> None:
        for each in present:
            try:
                each(seen)
            except Exception:
                _log.exception("an observer of the election raised")

    return watch
