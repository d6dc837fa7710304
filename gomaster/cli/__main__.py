"""``python -m gomaster.cli``: the console script without an installed script."""

import sys

from gomaster.cli.commands import main

if __name__ == "__main__":
    sys.exit(main())
