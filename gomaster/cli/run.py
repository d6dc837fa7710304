"""``gomaster run -- CMD``: a shell command as master work, with restart policies and ``--once``.

CMD replaces the target's process (``exec``), below the worker that keeps the tenure's process
tree: demotion ends CMD and everything CMD started, however it detached. The worker exits as
CMD did, which is how CMD's status reaches the supervisor.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias

from gomaster.backends import LockBackend
from gomaster.core.election import Config
from gomaster.core.events import Announcement, Demoted
from gomaster.core.timing import Timing
from gomaster.runtime.console import announce_holder
from gomaster.runtime.fds import close_all_but_standard_fds
from gomaster.runtime.lease import Leadership
from gomaster.runtime.supervise import new_identity
from gomaster.runtime.supervisor import Job, Supervisor, SupervisorOptions, Verdict

Restart: TypeAlias = Literal["on-failure", "always", "never"]

#: ``--once`` exit status when the node lost mastership while CMD ran (EX_TEMPFAIL: try again).
EXIT_DEMOTED = 75
#: Exit status when CMD cannot be found, as in the shell.
EXIT_NOT_FOUND = 127
#: Exit status when CMD exists but cannot be executed, as in the shell.
EXIT_NOT_EXECUTABLE = 126
SIGNAL_BASE = 128
#: Python ignores these at start; ignored signals stay ignored across exec, so CMD gets them back.
_RESTORED_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)


def shell_status(code: int | None) -> int:
    """A process exit code as a shell reports it: 128 + N for death by signal N."""
    if code is None:
        return 0
    return SIGNAL_BASE - code if code < 0 else code


def command_target(command: Sequence[str], name: str) -> Callable[[Leadership], None]:
    """The worker-side target: run CMD with the tenure in its environment, exit with its status."""
    argv = list(command)

    def run_command(leadership: Leadership) -> None:
        env = {
            **os.environ,
            "GOMASTER_TOKEN": str(leadership.token),
            "GOMASTER_NODE_ID": leadership.node_id,
            "GOMASTER_NAME": name,
        }
        env.pop("GOMASTER_BACKEND", None)
        for sig in _RESTORED_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        close_all_but_standard_fds()
        try:
            os.execvpe(argv[0], argv, env)
        except FileNotFoundError:
            os._exit(EXIT_NOT_FOUND)
        except OSError:
            os._exit(EXIT_NOT_EXECUTABLE)

    return run_command


@dataclass(frozen=True, slots=True)
class CommandProblem:
    """Why CMD cannot run, and the exit status ``gomaster run`` reports for it (as a shell would)."""

    message: str
    status: int


def find_command(command: Sequence[str]) -> CommandProblem | None:
    """Why CMD cannot run here, or None. Checked before joining the election."""
    if not command:
        return CommandProblem("missing command: give it after --, e.g. gomaster run -- ./migrate.sh", 2)
    program = command[0]
    if os.sep in program:
        if not os.path.exists(program):
            return CommandProblem(f"command not found: {program}", EXIT_NOT_FOUND)
        if os.path.isdir(program) or not os.access(program, os.X_OK):
            return CommandProblem(f"command is not executable: {program}", EXIT_NOT_EXECUTABLE)
        return None
    if shutil.which(program) is None:
        return CommandProblem(f"command not found: {program} (not on PATH)", EXIT_NOT_FOUND)
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class RunOptions:
    """How ``gomaster run`` treats CMD."""

    restart: Restart = "on-failure"
    once: bool = False


def _verdict(options: RunOptions) -> Callable[[int], Verdict]:
    def decide(code: int) -> Verdict:
        if options.once or options.restart == "never":
            return "stop"
        if options.restart == "always":
            return "restart"
        return "stop" if code == 0 else "restart"

    return decide


def run_command(
    command: Sequence[str],
    *,
    backend: LockBackend,
    name: str,
    timing: Timing,
    version: str,
    options: RunOptions,
) -> int:
    """Run CMD while master, per ``options``; returns the exit status for ``gomaster run``.

    While it waits, the node logs who the master is, once per change of holder.
    """
    demoted_while_running: list[Demoted] = []
    supervisors: list[Supervisor] = []

    def on_event(event: Announcement) -> None:
        # Losing mastership mid-run ends a --once node: its CMD was killed and must not rerun.
        if options.once and isinstance(event, Demoted) and event.reason != "stopped":
            demoted_while_running.append(event)
            supervisors[0].request_stop()

    me = new_identity(version)
    job = Job(
        config=Config(name=name, me=me, timing=timing),
        targets=[command_target(command, name)],
        labels=[os.path.basename(command[0])],
        on_event=on_event,
        watch=announce_holder(me.node_id),
    )
    supervisor = Supervisor(backend, [job], SupervisorOptions(on_exit=_verdict(options)))
    supervisors.append(supervisor)
    supervisor.run()
    if demoted_while_running:
        return EXIT_DEMOTED
    return shell_status(supervisor.exit_code)
