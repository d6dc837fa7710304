"""The ``gomaster`` command: ``demo`` now; ``run``, ``status`` and ``release`` build on the library."""

from __future__ import annotations

import sys

from gomaster.demo import demo_command

USAGE = """usage: gomaster {demo} ...

  demo      run several nodes on a temporary SQLite file and kill the master now and then
"""


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "demo":
        return demo_command(rest)
    print(f"gomaster: unknown command {command!r}\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
