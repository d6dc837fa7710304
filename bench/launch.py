"""Nodes a benchmark starts and stops: their environment, their output, their whole process tree.

Each node runs in a session of its own, says what it has to say on stdout (collected line by line
on a thread) and logs to a file of its own. Stopping one is SIGTERM to the node, then SIGKILL
to its process group and to every process of its tree that is left (by PID and start time), so
nothing a benchmark started outlives it. ``settle`` waits for a node to reach its steady state;
``gomaster_from`` puts a given gomaster before this checkout on a node's ``PYTHONPATH``.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

from bench.proctree import identities, kill_all, tree

#: The checkout these benchmarks belong to, put on every node's ``PYTHONPATH``.
ROOT = Path(__file__).resolve().parent.parent
#: How often ``settle`` looks at the node's tree, and how often at who holds its names.
POLL = 0.25
HELD_POLL = 1.0
STOP_WAIT = 30.0
#: How much of a node's log an error message quotes.
TAIL = 2000


def with_option(url: str, key: str, value: str) -> str:
    """``url`` with the query option ``key=value`` added (or replaced); the rest is kept as written
    (``urlunsplit`` would turn ``sqlite:///path`` into ``sqlite:/path``)."""
    base, _, query = url.partition("?")
    kept = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != key]
    return f"{base}?{urlencode([*kept, (key, value)])}"


def node_env(gomaster_home: Path | None = None) -> dict[str, str]:
    """The environment of a node: this checkout on ``PYTHONPATH``, after ``gomaster_home`` (a
    directory holding another ``gomaster`` package) when given. A node must run in a directory
    without a ``gomaster`` of its own (``python -m`` puts the working directory first)."""
    paths = [str(path) for path in (gomaster_home, ROOT) if path is not None]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def gomaster_from(ref: str, into: Path) -> Path:
    """The ``gomaster`` package of commit ``ref`` of this checkout, extracted into ``into`` (only
    that package: ``bench`` still comes from this checkout); checks that a node would import it."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", ref, "gomaster"],
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        raise RuntimeError(f"git archive {ref} failed: {archive.stderr.decode(errors='replace').strip()}")
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    return check_home(into)


def check_home(home: Path) -> Path:
    """``home`` once a node given ``node_env(home)`` is seen to import its ``gomaster``."""
    found = subprocess.run(
        [sys.executable, "-c", "import gomaster; print(gomaster.__file__)"],
        cwd=home.parent,
        env=node_env(home),
        capture_output=True,
        text=True,
        check=False,
    )
    where = Path(found.stdout.strip() or "?").resolve()
    if found.returncode != 0 or not where.is_relative_to(home.resolve()):
        raise RuntimeError(f"a node given {home} imports gomaster from {where}: {found.stderr.strip()}")
    return home


class Launched:
    """One node: a process in a session of its own, its stdout lines, and its stderr in a file."""

    def __init__(self, command: Sequence[str], *, env: dict[str, str], log: Path) -> None:
        """Start ``command`` in ``log``'s directory (see ``node_env``), its stderr into ``log``."""
        self.command = list(command)
        self.log = log
        self.lines: list[str] = []
        self.started = time.monotonic()
        with log.open("wb") as stderr:
            self.process = subprocess.Popen(
                self.command,
                cwd=log.parent,
                env=env,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                start_new_session=True,
            )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def said(self, prefix: str) -> int:
        """How many lines the node has printed that start with ``prefix``."""
        return sum(line.startswith(prefix) for line in list(self.lines))

    def logged(self, text: str, since: int = 0) -> int:
        """How many lines of the node's log after byte ``since`` contain ``text``."""
        try:
            with self.log.open("rb") as handle:
                handle.seek(since)
                data = handle.read()
        except OSError:
            return 0
        return sum(text in line for line in data.decode(errors="replace").splitlines())

    def tail(self) -> str:
        """The end of the node's log."""
        try:
            return self.log.read_text(errors="replace")[-TAIL:]
        except OSError:
            return ""

    def check(self) -> None:
        """Raise if the node has exited, with its log's last line (its whole tail goes to stderr)."""
        code = self.process.poll()
        if code is not None:
            tail = self.tail()
            print(tail, file=sys.stderr, flush=True)
            last = next((line for line in reversed(tail.splitlines()) if line.strip()), "(no log)")
            what = " ".join([Path(self.command[0]).name, *self.command[1:3]])
            raise RuntimeError(f"{what} exited with {code}: {last.strip()}")

    def stop(self, timeout: float = STOP_WAIT) -> int | None:
        """SIGTERM, then after ``timeout`` SIGKILL for whatever is left of its group and tree;
        the node's exit code (None if it had to be killed)."""
        known = identities(tree(self.pid))
        code = self.process.poll()
        if code is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                code = self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                code = None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        kill_all(known)
        self.process.wait()
        self._reader.join(timeout)
        return code


def settle(
    node: Launched, *, held: Callable[[], bool], quiet: float, limit: float, what: str = "node"
) -> float:
    """Wait until ``held()`` and the node's tree has kept its number of processes for ``quiet``
    seconds; return the seconds from the node's start until it was so (the later of its last
    change of size and the first ``held()``, to ``HELD_POLL``). Raise after ``limit`` seconds."""
    size, changed_at, held_at, next_look = -1, node.started, None, 0.0
    while True:
        node.check()
        now = time.monotonic()
        found = len(tree(node.pid))
        if found != size:
            size, changed_at = found, now
        if held_at is None and now >= next_look:
            if held():
                held_at = now
            next_look = now + HELD_POLL
        if held_at is not None and now - changed_at >= quiet:
            return max(changed_at, held_at) - node.started
        if now - node.started > limit:
            state = "its names held" if held_at is not None else "its names not held"
            raise RuntimeError(f"{what} did not settle within {limit:g} s ({size} processes, {state})")
        time.sleep(POLL)
