"""The ``gomaster`` command line, the top of the package: it may use every layer below.

- :mod:`gomaster.cli.commands`: the parser and ``status``, ``release`` and ``repair``;
- :mod:`gomaster.cli.run`: ``run -- CMD``, a shell command as master work;
- :mod:`gomaster.cli.demo`: ``demo``, and the node processes it starts.

This module stays empty of them: a demo node's workers import :mod:`gomaster.cli.demo` (their
work lives there), and must not pay for the supervisor's machinery at every start.
"""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script (see :func:`gomaster.cli.commands.main`)."""
    from gomaster.cli.commands import main as run

    return run(argv)
