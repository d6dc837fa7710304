"""``gomaster run -- CMD``: a shell command as master work, with restart policies, ``--once``
and ``--once-per`` (:mod:`gomaster.cli.periods`).

CMD replaces the target's process (``exec``), below the worker that keeps the tenure's process
tree: demotion ends CMD and everything CMD started, however it detached. The worker exits as
CMD did, which is how CMD's status reaches the supervisor.
"""

from __future__ import annotations

import logging
import os
import pickle
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias

from returns.result import Failure, Result, Success

from gomaster.backends import LockBackend
from gomaster.cli.periods import AlreadyRun, PeriodGate, finish_period, look
from gomaster.core.election import Config
from gomaster.core.events import Announcement, Demoted, Elected
from gomaster.core.schedule import Every, Policy, Schedule
from gomaster.core.timing import Timing
from gomaster.runtime.console import announce_holder
from gomaster.runtime.fds import close_all_but_standard_fds
from gomaster.runtime.lease import Leadership
from gomaster.runtime.scheduled import JobFailedError, ScheduledTarget, Tick
from gomaster.runtime.supervise import new_identity
from gomaster.runtime.supervisor import Job, Supervisor, SupervisorOptions, Verdict

Restart: TypeAlias = Literal["on-failure", "always", "never"]

#: ``--once`` exit status when the node lost mastership while CMD ran (EX_TEMPFAIL: try again).
EXIT_DEMOTED = 75
#: Exit status when ``--wait-timeout`` ran out before this node became master, as timeout(1)'s.
EXIT_WAIT_TIMEOUT = 124
#: Exit status when CMD cannot be found, as in the shell.
EXIT_NOT_FOUND = 127
#: Exit status when CMD exists but cannot be executed, as in the shell.
EXIT_NOT_EXECUTABLE = 126
SIGNAL_BASE = 128
#: Python ignores these at start; ignored signals stay ignored across exec, so CMD gets them back.
_RESTORED_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)
#: What a target asks before CMD replaces it: CMD's extra environment, or a message and the
#: status to exit with instead.
Gate: TypeAlias = Callable[[str, int], Result[dict[str, str], tuple[str, int]]]
_log = logging.getLogger("gomaster")


def shell_status(code: int | None) -> int:
    """A process exit code as a shell reports it: 128 + N for death by signal N."""
    if code is None:
        return 0
    return SIGNAL_BASE - code if code < 0 else code


def cmd_environment(leadership: Leadership, name: str, extra: dict[str, str]) -> dict[str, str]:
    """CMD's environment: gomaster run's, with the tenure (and ``extra``) in, the backend's URL
    (and its password) out."""
    env = {
        **os.environ,
        "GOMASTER_TOKEN": str(leadership.token),
        "GOMASTER_NODE_ID": leadership.node_id,
        "GOMASTER_NAME": name,
        **extra,
    }
    env.pop("GOMASTER_BACKEND", None)
    return env


def command_target(
    command: Sequence[str], name: str, gate: Gate | None = None
) -> Callable[[Leadership], None]:
    """The worker-side target: run CMD with the tenure in its environment, exit with its status.
    A ``gate`` may end the target first, without CMD."""
    argv = list(command)

    def run_command(leadership: Leadership) -> None:
        extra: dict[str, str] = {}
        if gate is not None:
            match gate(leadership.node_id, leadership.token):
                case Success(found):
                    extra = found
                case Failure((message, status)):
                    print(f"gomaster run: {name}: {message}", file=sys.stderr, flush=True)
                    os._exit(status)
        env = cmd_environment(leadership, name, extra)
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
    #: ``--once-per``: run CMD at most once per period of this schedule, across nodes (implies once).
    once_per: Every | None = None
    #: ``--every`` or ``--cron``: run CMD at each tick of this schedule while master.
    schedule: Schedule | None = None
    #: ``--wait-timeout``: how long a once node waits to become master (None: for ever).
    wait_timeout: float | None = None
    #: Seconds per backend call of the period's ledger.
    timeout: float = 5.0

    @property
    def single(self) -> bool:
        """The node runs CMD (at most) once, then exits."""
        return self.once or self.once_per is not None


@dataclass(frozen=True, slots=True)
class CommandJob:
    """``--every``/``--cron``'s job: CMD as a child of the schedule's process, once per tick, with
    the tenure and the tick in its environment; a non-zero status counts the run as failed."""

    command: tuple[str, ...]
    name: str

    def __call__(self, tick: Tick) -> None:
        """Run CMD to its end (demotion ends it with the schedule's whole process group)."""
        env = cmd_environment(tick.leadership, self.name, {"GOMASTER_TICK": f"{tick.at:.3f}"})
        try:
            status = subprocess.run(self.command, env=env, check=False).returncode
        except OSError as exc:
            raise JobFailedError(f"CMD could not start: {exc}") from None
        if status != 0:
            raise JobFailedError(f"CMD exited with status {shell_status(status)}")


def _verdict(options: RunOptions) -> Callable[[int], Verdict]:
    def decide(code: int) -> Verdict:
        if options.single or options.restart == "never":
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
    period = options.once_per
    if period is not None:
        done = look(backend, name, period, options.timeout).value_or(None)
        if done is not None:
            _log.info("%s: %s", name, done)
            return 0
    demoted_while_running: list[Demoted] = []
    supervisors: list[Supervisor] = []
    elected = threading.Event()

    def on_event(event: Announcement) -> None:
        if isinstance(event, Elected):
            elected.set()
        # Losing mastership mid-run ends a --once node: its CMD was killed and must not rerun.
        if options.single and isinstance(event, Demoted) and event.reason != "stopped":
            demoted_while_running.append(event)
            supervisors[0].request_stop()

    me = new_identity(version)
    gate = None if period is None else PeriodGate(_own(backend), name, period, options.timeout)
    verdict = _verdict(options)
    if period is not None:
        verdict = _recording(verdict, _own(backend), name, me.node_id, options.timeout)
    target: Callable[[Leadership], None] = command_target(command, name, gate)
    if options.schedule is not None:
        job_of_tick = CommandJob(tuple(command), name)
        target = ScheduledTarget(
            job=job_of_tick, schedule=options.schedule, policy=Policy(), backend=_own(backend), timing=timing
        )
    job = Job(
        config=Config(name=name, me=me, timing=timing),
        targets=[target],
        labels=[os.path.basename(command[0])],
        on_event=on_event,
        watch=announce_holder(me.node_id),
    )
    supervisor = Supervisor(backend, [job], SupervisorOptions(on_exit=verdict))
    supervisors.append(supervisor)
    waiting = _Waiting(supervisor, elected, backend, name, options, every=timing.retry)
    if options.single:
        waiting.start()
    supervisor.run()
    waiting.end()
    if waiting.outcome is not None:
        _log.info("%s: %s", name, waiting.outcome)
        return 0 if isinstance(waiting.outcome, AlreadyRun) else EXIT_WAIT_TIMEOUT
    if demoted_while_running:
        return EXIT_DEMOTED
    return shell_status(supervisor.exit_code)


def _own(backend: LockBackend) -> LockBackend:
    """A copy of ``backend`` with a connection of its own (the elector's stays the elector's)."""
    copy: LockBackend = pickle.loads(pickle.dumps(backend))
    return copy


def _recording(
    verdict: Callable[[int], Verdict], backend: LockBackend, name: str, node_id: str, timeout: float
) -> Callable[[int], Verdict]:
    """``verdict``, after recording in the ledger how CMD's period ended (while still master)."""

    def decide(code: int) -> Verdict:
        finish_period(backend, name, node_id, code == 0, timeout).alt(
            lambda problem: _log.warning(
                "%s: the end of the period's run was not recorded: %s", name, problem
            )
        )
        return verdict(code)

    return decide


class _Waiting:
    """While a ``--once`` node waits to become master: end it when ``--wait-timeout`` runs out,
    or (``--once-per``) when the ledger shows the period run elsewhere. Looks every ``every``
    seconds on a thread of its own, with a backend connection of its own."""

    def __init__(
        self,
        supervisor: Supervisor,
        elected: threading.Event,
        backend: LockBackend,
        name: str,
        options: RunOptions,
        *,
        every: float,
    ) -> None:
        self._supervisor, self._elected, self._name, self._options = supervisor, elected, name, options
        self._backend = _own(backend) if options.once_per is not None else None
        self._every = every
        self._ended = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="gomaster-waiting", daemon=True)
        #: Why the node ended without running CMD, if it did.
        self.outcome: AlreadyRun | WaitTimedOut | None = None

    def start(self) -> None:
        """Start looking."""
        self._thread.start()

    def end(self) -> None:
        """Stop looking (the supervisor has returned) and close the connection."""
        self._ended.set()
        if self._thread.is_alive():
            self._thread.join()
        if self._backend is not None:
            self._backend.close()

    def _watch(self) -> None:
        limit = self._options.wait_timeout
        deadline = None if limit is None else time.monotonic() + limit
        while not self._ended.wait(
            self._every if deadline is None else min(self._every, max(0.0, deadline - time.monotonic()))
        ):
            if self._elected.is_set():
                return
            found: AlreadyRun | WaitTimedOut | None = self._look()
            if found is None and deadline is not None and time.monotonic() >= deadline:
                found = WaitTimedOut(limit or 0.0)
            if found is not None:
                self.outcome = found
                self._supervisor.request_stop()
                return

    def _pause(self, deadline: float | None) -> float:
        return self._every if deadline is None else min(self._every, max(0.0, deadline - time.monotonic()))

    def _look(self) -> AlreadyRun | None:
        period = self._options.once_per
        if self._backend is None or period is None:
            return None
        return look(self._backend, self._name, period, self._options.timeout).value_or(None)


@dataclass(frozen=True, slots=True)
class WaitTimedOut:
    """``--wait-timeout`` ran out before this node became master."""

    seconds: float

    def __str__(self) -> str:
        return f"not master after --wait-timeout {self.seconds:g} s: giving up without running CMD"
