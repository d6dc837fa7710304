"""The ``gomaster`` command: :mod:`~gomaster.cli.commands` (the parser, ``status``, ``release``,
``repair``), :mod:`~gomaster.cli.run` (``run -- CMD``) and :mod:`~gomaster.cli.demo`.

Kept empty of them: a demo node's workers import :mod:`gomaster.cli.demo`, and must not pay
for the supervisor's machinery at every start.
"""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script (see :func:`gomaster.cli.commands.main`)."""
    from gomaster.cli.commands import main as run

    return run(argv)
