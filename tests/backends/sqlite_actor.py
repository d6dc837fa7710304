"""One user's side of the SQLite file attacks in ``test_sqlite_security``, run as that user.

python -m tests.backends.sqlite_actor default
python -m tests.backends.sqlite_actor claim NAME [--hold]
python -m tests.backends.sqlite_actor hold URL NAME TTL [--release] [--wait]
python -m tests.backends.sqlite_actor lock-shm PATH

Each prints one JSON line on stdout. ``--hold``, ``--wait`` and a successful ``lock-shm`` then
keep their connection (or lock) until stdin closes; ``claim --hold`` renews once per line
``renew`` read from stdin and prints the outcome.
"""

from __future__ import annotations

import fcntl
import json
import os
import stat
import sys
from dataclasses import replace
from pathlib import Path

from returns.result import Failure

from gomaster.backends import LockBackend, connect, default_backend
from gomaster.backends.sqlite import SQLiteBackend
from gomaster.core.decide import plan_acquire
from gomaster.core.record import LockRecord
from gomaster.core.timing import Timing
from tests.helpers import identity, result

TIMEOUT = 2.0
#: Where SQLite's WAL index keeps its write lock: a reader lock there stops every writer.
WAL_WRITE_LOCK = 120


def _say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def _modes(directory: Path) -> dict[str, str]:
    modes = {".": f"{stat.S_IMODE(os.lstat(directory).st_mode):04o}"}
    for entry in sorted(directory.iterdir()):
        modes[entry.name] = f"{stat.S_IMODE(os.lstat(entry).st_mode):04o}"
    return modes


def _claim(backend: LockBackend, name: str, ttl: float) -> LockRecord | str:
    seen = result(backend.observe(name, TIMEOUT))
    if isinstance(seen, Failure):
        return str(seen.failure())
    plan = plan_acquire(seen.unwrap(), name, identity(), Timing())
    if isinstance(plan, Failure):
        return f"held: {plan.failure()}"
    # Any ttl, even one no Timing allows: an attacker writes what it likes.
    claimed = result(backend.claim(replace(plan.unwrap(), ttl=ttl), TIMEOUT))
    if isinstance(claimed, Failure):
        return str(claimed.failure())
    record: LockRecord = claimed.unwrap()
    return record


def _default_backend() -> SQLiteBackend | str:
    """The backend a node given no backend would use, or why there is none."""
    try:
        backend = default_backend()
    except ValueError as exc:
        return str(exc)
    assert isinstance(backend, SQLiteBackend)
    return backend


def _default(args: list[str]) -> None:
    backend = _default_backend()
    if isinstance(backend, str):
        _say(ok=False, error=backend)
    else:
        _say(ok=True, path=backend.path)


def _claim_default(args: list[str]) -> None:
    name = args[0]
    backend = _default_backend()
    if isinstance(backend, str):
        _say(ok=False, error=backend)
        return
    got = _claim(backend, name, Timing().ttl)
    if isinstance(got, str):
        _say(ok=False, path=backend.path, error=got)
        return
    _say(ok=True, path=backend.path, token=got.token, modes=_modes(Path(backend.path).parent))
    if "--hold" not in args:
        return
    for line in sys.stdin:
        if line.strip() == "renew":
            renewed = result(backend.renew(got, Timing().ttl, TIMEOUT))
            if isinstance(renewed, Failure):
                _say(ok=False, error=str(renewed.failure()))
            else:
                _say(ok=True)


def _hold(args: list[str]) -> None:
    url, name, ttl = args[0], args[1], float(args[2])
    backend = connect(url)
    got = _claim(backend, name, ttl)
    if isinstance(got, str):
        _say(ok=False, error=got)
        return
    if "--release" in args:
        result(backend.release(got, TIMEOUT))
    _say(ok=True, token=got.token)
    if "--wait" in args:
        sys.stdin.read()
    backend.close()  # a clean close folds the WAL back into the file, as a stopped node's does


def _lock_shm(args: list[str]) -> None:
    try:
        descriptor = os.open(args[0], os.O_RDONLY)
        fcntl.lockf(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB, 1, WAL_WRITE_LOCK)
    except OSError as exc:
        _say(ok=False, error=f"{type(exc).__name__}: {exc}")
        return
    _say(ok=True)
    sys.stdin.read()


ACTIONS = {"default": _default, "claim": _claim_default, "hold": _hold, "lock-shm": _lock_shm}

if __name__ == "__main__":
    ACTIONS[sys.argv[1]](sys.argv[2:])
