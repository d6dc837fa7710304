"""The CMD that CLI tests run under ``gomaster run``: witness marks from its environment.

python -m tests.cli.cmd LOG [--child] [--exit N]
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from gomaster.testing import append_mark


def main() -> None:
    log = Path(sys.argv[1])
    token = int(os.environ["GOMASTER_TOKEN"])
    node = os.environ["GOMASTER_NODE_ID"]
    append_mark(log, "start", token=token, node=node, name=os.environ["GOMASTER_NAME"])
    if "--child" in sys.argv:
        child = subprocess.Popen(["sleep", "1000"])
        append_mark(log, "child", token=token, node=node, child=child.pid)
    if "--exit" in sys.argv:
        code = int(sys.argv[sys.argv.index("--exit") + 1])
        append_mark(log, "stop", token=token, node=node)
        sys.exit(code)
    while True:
        append_mark(log, "alive", token=token, node=node)
        time.sleep(0.02)


if __name__ == "__main__":
    main()
