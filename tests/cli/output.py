"""A running command's stdout and stderr, collected line by line as they come."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Literal

Stream = Literal["stdout", "stderr"]


class Output:
    """Reads both pipes of ``process`` on threads of their own, so neither can fill up and block it."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self._lines: dict[Stream, list[str]] = {"stdout": [], "stderr": []}
        self._threads = [
            threading.Thread(target=self._read, args=(name, pipe), daemon=True)
            for name, pipe in (("stdout", process.stdout), ("stderr", process.stderr))
            if pipe is not None
        ]
        for thread in self._threads:
            thread.start()

    def _read(self, name: Stream, pipe: IO[str]) -> None:
        for line in pipe:
            self._lines[name].append(line)

    def text(self, name: Stream) -> str:
        """Everything read from ``name`` so far."""
        return "".join(list(self._lines[name]))

    def wait_for(self, text: str, name: Stream = "stdout", timeout: float = 30.0) -> None:
        """Wait until ``text`` has appeared on ``name``; fail, showing both streams, if it does not."""
        deadline = time.monotonic() + timeout
        while text not in self.text(name):
            if time.monotonic() >= deadline or (self.process.poll() is not None and not self._reading()):
                raise AssertionError(
                    f"{text!r} not on {name} within {timeout} s (exit {self.process.poll()});\n"
                    f"stdout:\n{self.text('stdout')}\nstderr:\n{self.text('stderr')}"
                )
            time.sleep(0.01)

    def _reading(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    def finish(self, timeout: float) -> int:
        """Wait for the process to exit and for its output to be read; its exit status."""
        code = self.process.wait(timeout)
        for thread in self._threads:
            thread.join(timeout)
        return code


def start(argv: list[str], *, cwd: Path, env: Mapping[str, str]) -> Output:
    """Start ``argv`` in a session of its own, with both streams collected."""
    process = subprocess.Popen(
        argv,
        cwd=cwd,
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    return Output(process)


def kill_sessions(outputs: Iterable[Output]) -> None:
    """SIGKILL the session of every one still running (each was started by ``start``)."""
    for output in outputs:
        if output.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(output.process.pid, signal.SIGKILL)
            output.process.wait()
