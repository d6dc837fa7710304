"""The ``gomaster`` command: ``run``, ``status``, ``release``, ``repair`` and ``demo``.

Every option can also come from the environment (``GOMASTER_BACKEND``, ``GOMASTER_NAME``,
``GOMASTER_TTL``, ...), which keeps passwords out of ``ps``. ``run`` and ``status`` use the lock
name ``default`` when given none, as ``supervise()`` and ``Master`` do; ``release`` and
``repair`` change a record, so they act only on a name the operator gave.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import signal
import sys
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import NoReturn, TypeVar

from returns.methods import unwrap_or_failure
from returns.pipeline import is_successful
from returns.result import Failure, Result, Success

from gomaster._version import __version__
from gomaster.backends import (
    ENV_BACKEND,
    LockBackend,
    force_release,
    parse_backend,
    parse_default_backend,
    redact,
)
from gomaster.cli.periods import EXIT_UNSURE
from gomaster.cli.run import (
    EXIT_DEMOTED,
    EXIT_NOT_EXECUTABLE,
    EXIT_NOT_FOUND,
    EXIT_WAIT_TIMEOUT,
    RunOptions,
    find_command,
    run_command,
)
from gomaster.core.errors import BackendError
from gomaster.core.record import MAX_TOKEN, MalformedRecord, Observation, check_name, check_version
from gomaster.core.schedule import Every, Schedule, cron, every, parse_duration
from gomaster.core.timing import (
    DEFAULT_TTL,
    MAX_CALL_TIMEOUT,
    MAX_TTL,
    MIN_CALL_TIMEOUT,
    MIN_TTL,
    Timing,
    TimingError,
    check_seconds,
    validate_timing,
)
from gomaster.runtime._io import performed
from gomaster.runtime.console import FORMAT, printable
from gomaster.runtime.fds import hold_standard_fds
from gomaster.runtime.status import Status, status_from_record

EXIT_OK = 0
EXIT_UNREACHABLE = 1
EXIT_USAGE = 2
EXIT_NO_MASTER = 3
#: The demo saw two tenures overlap.
EXIT_OVERLAP = 1
#: Ctrl-C before a command could handle it, as a shell reports it.
EXIT_INTERRUPTED = 128 + signal.SIGINT
#: stdout's reader went away (``gomaster status | head -1``): what a shell reports for a
#: program killed by SIGPIPE, so pipelines and ``set -o pipefail`` treat us like cat or grep.
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE
DEFAULT_TIMEOUT = 5.0
_T = TypeVar("_T")
#: The lock name ``run`` and ``status`` use when given none: the one ``supervise()`` and
#: ``Master`` use. ``release`` and ``repair`` act on no name the operator did not give.
DEFAULT_NAME = "default"
#: Where a malformed record's message sends the reader.
REPAIR_DOC = "docs/operations.md, recovering from a corrupted record"
#: ``gomaster demo``'s bounds: at least one node, a kill interval a master can be seen in.
DEMO_MIN_NODES = 1
DEMO_MAX_NODES = 50
DEMO_MIN_KILL_EVERY = 0.1


def _exit_table(rows: Sequence[tuple[object, str]]) -> str:
    """An ``exit codes:`` table for an epilog: each status, then what it means."""
    width = max(len(str(code)) for code, _ in rows)
    return "exit codes:\n" + "".join(f"  {str(code).ljust(width)}  {meaning}\n" for code, meaning in rows)


_READER_GONE = (EXIT_BROKEN_PIPE, "the reader of the output went away (e.g. | head -1)")

RUN_EXIT_CODES = _exit_table(
    [
        ("N", "CMD's own last status; 128+S if CMD died of signal S (143 after SIGTERM);"),
        ("", "0 if CMD never ran (the node was stopped while it waited)"),
        (0, "--once-per: this period already ran, on this node or another; CMD was not run"),
        (EXIT_UNSURE, "--once-per: the backend could not say whether this period ran; CMD was not run"),
        (EXIT_DEMOTED, "--once: this node lost mastership while CMD ran; CMD was stopped; try again"),
        (EXIT_WAIT_TIMEOUT, "--once: not master within --wait-timeout; CMD was not run"),
        (EXIT_NOT_EXECUTABLE, "CMD exists but is not executable"),
        (EXIT_NOT_FOUND, "CMD does not exist (looked up before joining the election)"),
        (EXIT_USAGE, "usage error, e.g. no -- before CMD"),
    ]
)
STATUS_EXIT_CODES = _exit_table(
    [
        (EXIT_OK, "a live master exists (--all: for at least one name)"),
        (EXIT_NO_MASTER, "no master: never held, released, or the lease expired"),
        (EXIT_UNREACHABLE, "the backend cannot be reached, or the record is malformed (see repair)"),
        (EXIT_USAGE, "usage error"),
        _READER_GONE,
    ]
)
RELEASE_EXIT_CODES = _exit_table(
    [
        (EXIT_OK, "released, or nobody held the lock"),
        (EXIT_UNREACHABLE, "the backend cannot be reached, or the record is malformed (see repair)"),
        (EXIT_USAGE, "usage error, e.g. neither --name nor GOMASTER_NAME"),
        _READER_GONE,
    ]
)
REPAIR_EXIT_CODES = _exit_table(
    [
        (EXIT_OK, "repaired, or there was no record"),
        (EXIT_UNREACHABLE, "the backend cannot be reached"),
        (EXIT_USAGE, "usage error, e.g. neither --name nor GOMASTER_NAME"),
        _READER_GONE,
    ]
)
DEMO_EXIT_CODES = _exit_table(
    [
        (EXIT_OK, "no two masters ever worked at once (also when Ctrl-C, SIGTERM or SIGHUP ended it)"),
        (EXIT_OVERLAP, "two tenures overlapped"),
        (EXIT_USAGE, "usage error"),
    ]
)

ENVIRONMENT = f"""environment (a flag wins over its variable):
  {ENV_BACKEND}    backend URL; keeps the password out of ps. With neither it nor
                      --backend: the SQLite file ~/.local/state/gomaster/locks.db,
                      shared only by this user's processes on this machine
  GOMASTER_NAME       lock name (--name)
  GOMASTER_TIMEOUT    seconds per backend call of status, release, repair (--timeout)
  GOMASTER_TTL        run's and repair's --ttl
  GOMASTER_HEARTBEAT, GOMASTER_RENEW_DEADLINE, GOMASTER_RETRY, GOMASTER_GRACE
                      run's other timings
  GOMASTER_ONCE=1, GOMASTER_ONCE_PER, GOMASTER_WAIT_TIMEOUT, GOMASTER_RESTART, GOMASTER_VERSION
                      run's --once, --once-per, --wait-timeout, --restart and --app-version
  GOMASTER_EVERY, GOMASTER_CRON, GOMASTER_TZ_CRON
                      run's --every, --cron and --tz
"""

CMD_ENVIRONMENT = f"""CMD's environment is gomaster run's, without {ENV_BACKEND} (CMD never sees the
backend's password), plus:
  GOMASTER_TOKEN      the fencing token of this tenure, greater than every earlier one
  GOMASTER_NODE_ID    this node's id, fresh for every start
  GOMASTER_NAME       the lock name
  GOMASTER_TICK       --every, --cron, --once-per: the tick (or period start) CMD runs for,
                      epoch seconds by the backend's clock
"""

EXAMPLES = """examples:
  export GOMASTER_BACKEND=sqlite:////var/tmp/locks.db    # four slashes: an absolute path
  gomaster run --name cron -- ./nightly-report.sh       # one node at a time runs it
  gomaster run --name migrate --once -- alembic upgrade head
  gomaster run --name nightly --once-per 24h -- ./report.sh   # in every replica's crontab
  gomaster run --name sweep --every 5m -- ./sweep.sh           # gomaster keeps the time
  gomaster run --name report --cron '0 3 * * *' --tz Europe/Paris -- ./report.sh
  gomaster status --name cron --json                    # readiness / health check
  gomaster release --name cron                          # force a handover
  gomaster repair --name cron --ttl 5                   # fix a corrupted record
  GOMASTER_BACKEND='mysql://app:secret@db:3306/app' gomaster status --all
  gomaster demo --duration 10                           # no server needed
"""

DESCRIPTION = """Run master-only work on exactly one node, through a lease in a backend you have.

commands (gomaster COMMAND --help for each one's flags and exit codes):
  run      run CMD only while this node is master
  status   show who is master
  release  force-release a lock (its token is kept)
  repair   rewrite a corrupted lock record (its token never goes down)
  demo     local nodes on SQLite; the master is killed now and then
"""

RUN_DESCRIPTION = f"""Run CMD only while this node is master of the lock --name ({DEFAULT_NAME!r} if none).

CMD runs below a worker process that keeps its whole process tree: demotion, a stop (SIGTERM
or SIGINT to gomaster run) or CMD's own exit end everything CMD started, SIGTERM at once and
SIGKILL after --grace. Only then is the lease released, so the next node takes over at once.
While it waits, the node logs who the master is.
"""

STATUS_DESCRIPTION = f"""Show who is master of the lock --name ({DEFAULT_NAME!r} if none), every time
by the backend's clock.

--json prints one JSON object (with --all, a list of them). When the backend cannot be read
or the command line is wrong, it still prints one object, with "error" set and "has_master"
false, and the exit status says which.
"""

RELEASE_DESCRIPTION = """Force-release a lock: its holder fails its next renewal and stops its work.
The token and the lease's expiry are kept, so nobody claims the lock before the old holder
has stopped. Acts only on a name given by --name or GOMASTER_NAME, never on a default.
"""

REPAIR_DESCRIPTION = """Rewrite a lock record that no longer parses as released, claimable --ttl
seconds from the backend's now; the token never goes down. Acts only on a name given by
--name or GOMASTER_NAME, never on a default.
"""

DEMO_DESCRIPTION = """Several real nodes (supervise() processes) elect one master on a temporary
SQLite file. The master is SIGKILLed now and then, and each failover is timed from the kill to
the new master's first witnessed work. No server is needed. Ctrl-C, SIGTERM or SIGHUP end it
early with its summary; its nodes end with it, even when it is SIGKILLed.
"""


class UsageError(Exception):
    """A usage error: ``main`` prints it as one line on stderr and exits 2."""

    def __init__(self, message: str, prog: str = "gomaster", hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.line = f"{prog}: error: {printable(message)}{hint}"


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``gomaster run: error: ...`` and exit status 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, self.prog, " (see --help)")


def _env(key: str, default: str | None = None) -> str | None:
    return os.environ.get(f"GOMASTER_{key}", default)


def _env_float(key: str) -> float | None:
    value = _env(key)
    if value is None or value == "":
        return None
    try:
        return float(value)
    except ValueError:
        raise UsageError(f"GOMASTER_{key}={value!r} is not a number of seconds") from None


def _usable(checked: Result[_T, object], prefix: str = "") -> _T:
    """The value of a check, or a usage error with its message: where a ``Result`` meets the user."""
    if not is_successful(checked):
        raise UsageError(f"{prefix}{checked.failure()}")
    return checked.unwrap()


def _seconds(option: str, value: float, least: float, most: float) -> float:
    """``value`` if it is a number of seconds in ``[least, most]``, else a usage error naming them."""
    return _usable(check_seconds(option, value, least, most))


def _subparser(
    commands: argparse._SubParsersAction[_Parser], name: str, summary: str, description: str, epilog: str
) -> argparse.ArgumentParser:
    return commands.add_parser(
        name,
        help=summary,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _common(parser: argparse.ArgumentParser, *, name_required: bool = False, timeout: bool = True) -> None:
    parser.add_argument(
        "--backend",
        metavar="URL",
        default=_env("BACKEND"),
        help=f"backend URL, e.g. sqlite:////var/lib/app/locks.db or mysql://user:pass@host/db "
        f"(env {ENV_BACKEND}; default: this user's SQLite file, with a warning)",
    )
    if name_required:
        name_help = "the lock to act on; required, here or as GOMASTER_NAME"
    else:
        name_help = (
            f"lock name (env GOMASTER_NAME; default {DEFAULT_NAME!r}, "
            "the name supervise() and Master use when given none)"
        )
    parser.add_argument(
        "--name", default=_env("NAME", None if name_required else DEFAULT_NAME), help=name_help
    )
    if timeout:
        parser.add_argument(
            "--timeout",
            type=float,
            metavar="S",
            default=_env_float("TIMEOUT") or DEFAULT_TIMEOUT,
            help=f"seconds to wait for each backend call, {MIN_CALL_TIMEOUT:g} to {MAX_CALL_TIMEOUT:g} "
            f"(env GOMASTER_TIMEOUT; default {DEFAULT_TIMEOUT:g})",
        )


def _add_run(commands: argparse._SubParsersAction[_Parser]) -> None:
    run = _subparser(
        commands,
        "run",
        "run CMD only while this node is master",
        RUN_DESCRIPTION,
        "\n".join([CMD_ENVIRONMENT, EXAMPLES, ENVIRONMENT, RUN_EXIT_CODES]),
    )
    run.usage = "gomaster run [options] -- CMD [ARGS...]"
    _common(run, timeout=False)
    run.add_argument(
        "--ttl",
        type=float,
        metavar="S",
        default=_env_float("TTL"),
        help=f"lease length in seconds, {MIN_TTL:g} to {MAX_TTL:g}; the timings below are derived "
        f"from it in proportion, as Timing.from_ttl does (env GOMASTER_TTL; default {DEFAULT_TTL:g})",
    )
    periods = {
        "heartbeat": "seconds between the master's renewals (default ttl/5)",
        "renew-deadline": "the master demotes itself, stopping CMD, when no renewal has succeeded "
        "for this long (default 3/5 of ttl)",
        "retry": "seconds between a follower's looks at a lease it cannot see expire (default ttl/5)",
        "grace": "seconds CMD's processes get between SIGTERM and SIGKILL (default ttl/5)",
    }
    for field, text in periods.items():
        key = field.upper().replace("-", "_")
        run.add_argument(
            f"--{field}", type=float, metavar="S", default=_env_float(key), help=f"{text}; env GOMASTER_{key}"
        )
    run.add_argument(
        "--once",
        action="store_true",
        default=_env("ONCE", "") in ("1", "true", "yes"),
        help="wait to become master, run CMD once, release the lock and exit with CMD's status "
        "(env GOMASTER_ONCE=1)",
    )
    run.add_argument(
        "--every",
        metavar="PERIOD",
        default=_env("EVERY"),
        help="gomaster keeping the time: run CMD at every multiple of PERIOD since 1970 (90s, 5m, "
        "24h...) by the backend's clock, on whichever node is master, once per tick across nodes "
        "and failovers; see docs/schedules.md (env GOMASTER_EVERY)",
    )
    run.add_argument(
        "--cron",
        metavar="EXPR",
        default=_env("CRON"),
        help="like --every, at the instants of a five-field cron expression, e.g. '0 3 * * *' "
        "(env GOMASTER_CRON)",
    )
    run.add_argument(
        "--tz",
        metavar="ZONE",
        default=_env("TZ_CRON"),
        help="the time zone of --cron, e.g. Europe/Paris (env GOMASTER_TZ_CRON; default UTC)",
    )
    run.add_argument(
        "--once-per",
        metavar="PERIOD",
        default=_env("ONCE_PER"),
        help="for a CMD that every replica's own cron fires: run it on one node once per PERIOD "
        "(90s, 5m, 24h...; periods start at multiples of PERIOD since 1970 by the backend's clock, "
        "so 24h starts at 00:00 UTC: fire cron well inside a period). The first node to become "
        "master runs it and records the period in the lock record; every other node, before or "
        "after, exits 0 without running it. Implies --once (env GOMASTER_ONCE_PER)",
    )
    run.add_argument(
        "--wait-timeout",
        type=float,
        metavar="S",
        default=_env_float("WAIT_TIMEOUT"),
        help=f"--once, --once-per: give up after S seconds without becoming master, exiting "
        f"{EXIT_WAIT_TIMEOUT} (env GOMASTER_WAIT_TIMEOUT; default: wait for ever)",
    )
    run.add_argument(
        "--restart",
        choices=["on-failure", "always", "never"],
        default=_env("RESTART", "on-failure"),
        help="when CMD exits by itself: on-failure restarts it unless it exited 0 (then the node "
        "releases and exits 0); always restarts it; never releases and exits with CMD's status. "
        "Restarts back off from 0.1 s to 10 s (env GOMASTER_RESTART; default on-failure)",
    )
    run.add_argument(
        "--app-version",
        metavar="V",
        default=_env("VERSION", ""),
        help="this node's application version, shown by status (env GOMASTER_VERSION)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The whole command line, with its environment, examples and exit codes in ``--help``."""
    parser = _Parser(
        prog="gomaster",
        description=DESCRIPTION,
        epilog="\n".join([EXAMPLES, ENVIRONMENT]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"gomaster {__version__}")
    commands = parser.add_subparsers(
        dest="command", required=True, parser_class=_Parser, metavar="COMMAND", help=argparse.SUPPRESS
    )
    # The commands are listed once, in DESCRIPTION; set after the subparsers took their prefix.
    parser.usage = "%(prog)s [-h] [--version] COMMAND ..."
    _add_run(commands)

    status = _subparser(
        commands,
        "status",
        "show who is master",
        STATUS_DESCRIPTION,
        "\n".join([EXAMPLES, ENVIRONMENT, STATUS_EXIT_CODES]),
    )
    _common(status)
    status.add_argument("--all", action="store_true", help="every lock name in the backend")
    status.add_argument(
        "--json",
        action="store_true",
        help="one JSON object (a list with --all), also when something went wrong ('error' set)",
    )

    release = _subparser(
        commands,
        "release",
        "force-release a lock (its token is kept)",
        RELEASE_DESCRIPTION,
        "\n".join([ENVIRONMENT, RELEASE_EXIT_CODES]),
    )
    _common(release, name_required=True)

    repair = _subparser(
        commands,
        "repair",
        "rewrite a corrupted lock record as released (the token never goes down)",
        REPAIR_DESCRIPTION,
        "\n".join([ENVIRONMENT, REPAIR_EXIT_CODES]),
    )
    _common(repair, name_required=True)
    repair.add_argument(
        "--ttl",
        type=float,
        metavar="S",
        default=_env_float("TTL") or DEFAULT_TTL,
        help="the longest ttl any node uses: nobody can claim for this long after the repair "
        f"(env GOMASTER_TTL; default {DEFAULT_TTL:g})",
    )
    repair.add_argument(
        "--token",
        type=int,
        default=0,
        metavar="N",
        help="the least token to write, e.g. the highest one your fenced stores have seen",
    )

    demo = _subparser(
        commands,
        "demo",
        "local nodes on SQLite; the master is killed now and then",
        DEMO_DESCRIPTION,
        DEMO_EXIT_CODES,
    )
    demo.add_argument("--duration", type=float, default=30.0, metavar="S", help="seconds to run (default 30)")
    demo.add_argument(
        "--nodes",
        type=int,
        default=3,
        metavar="N",
        help=f"nodes at a time, {DEMO_MIN_NODES} to {DEMO_MAX_NODES}; a killed one is replaced (default 3)",
    )
    demo.add_argument(
        "--ttl", type=float, default=2.0, metavar="S", help="every node's lease length (default 2)"
    )
    demo.add_argument(
        "--kill-every",
        type=float,
        default=None,
        metavar="S",
        help="seconds from a new master to its SIGKILL, varied by up to 40 %% "
        "(default: a quarter of --duration, from 0.5 to 5)",
    )
    return parser


def _backend(url: str | None) -> LockBackend:
    """The backend for ``url``, else ``GOMASTER_BACKEND``'s, else the default file's."""
    return _usable(parse_backend(url) if url else parse_default_backend())


def _timing(args: argparse.Namespace) -> Timing:
    """``--ttl`` scaled as ``Timing.from_ttl`` does, with the periods given on top.

    A refusal names the rule, and the fix in flags, not in the Python API's words.
    """
    try:
        base = Timing.from_ttl(args.ttl) if args.ttl is not None else Timing()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    given = {
        flag: value
        for flag, value in (
            ("--heartbeat", args.heartbeat),
            ("--renew-deadline", args.renew_deadline),
            ("--retry", args.retry),
            ("--grace", args.grace),
        )
        if value is not None
    }
    changed = {flag[2:].replace("-", "_"): value for flag, value in given.items()}

    def in_flags(problem: TimingError) -> str:
        fix = ""
        if problem.fix:
            fix = f". Fix: change {', '.join(given)}, or leave {'it' if len(given) == 1 else 'them'} out "
            fix += f"to derive every timing from --ttl {base.ttl:g}"
        return f"impossible timing: {problem.rule}{fix}"

    return _usable(validate_timing(**{**asdict(base), **changed}).alt(in_flags))


def _check_name(name: str | None) -> str:
    if name is None:
        raise UsageError("--name is required (or set GOMASTER_NAME): this command acts on no default lock")
    return _usable(check_name(name))


def _check_version(version: str) -> str:
    return _usable(check_version(version), "--app-version: ")


def _split_command(argv: list[str]) -> tuple[list[str], list[str]]:
    if "--" not in argv:
        raise UsageError("run needs -- before the command, e.g. gomaster run --name cron -- ./job.sh")
    cut = argv.index("--")
    return argv[:cut], argv[cut + 1 :]


def _cmd_run(args: argparse.Namespace, command: list[str]) -> int:
    problem = find_command(command)
    if problem is not None:
        print(f"gomaster run: error: {problem.message}", file=sys.stderr)
        return problem.status
    name = _check_name(args.name)
    timing = _timing(args)
    version = _check_version(args.app_version)
    options = RunOptions(
        restart=args.restart,
        once=args.once,
        once_per=_once_per(args.once_per, timing),
        schedule=_schedule(args, timing),
        wait_timeout=_wait_timeout(args),
    )
    backend = _backend(args.backend)
    return run_command(command, backend=backend, name=name, timing=timing, version=version, options=options)


def _once_per(period: str | None, timing: Timing) -> Every | None:
    """``--once-per``'s schedule: a duration no shorter than the heartbeat."""
    if period is None:
        return None
    return _usable(every(period, shortest=timing.heartbeat), "--once-per: ")


def _schedule(args: argparse.Namespace, timing: Timing) -> Schedule | None:
    """``--every`` or ``--cron`` (with ``--tz``), alone: a node runs CMD once or on a schedule."""
    if args.every is not None and args.cron is not None:
        raise UsageError("give --every or --cron, not both: one schedule per lock name")
    if args.tz is not None and args.cron is None:
        raise UsageError(
            "--tz is the time zone of --cron: add --cron, or drop --tz (--every counts from 1970 UTC)"
        )
    if args.every is None and args.cron is None:
        return None
    if args.once or args.once_per is not None:
        used = "--every" if args.every is not None else "--cron"
        raise UsageError(f"{used} runs CMD at every tick while master, --once or --once-per once: choose one")
    if args.every is not None:
        return _usable(every(args.every, shortest=timing.heartbeat), "--every: ")
    return _usable(cron(args.cron, args.tz or "UTC"), "--cron: ")


def _wait_timeout(args: argparse.Namespace) -> float | None:
    """``--wait-timeout``, positive, and only where a node waits once."""
    seconds: float | None = args.wait_timeout
    if seconds is None:
        return None
    if not (args.once or args.once_per is not None):
        raise UsageError("--wait-timeout bounds the wait of --once or --once-per: add one of them")
    return _usable(parse_duration(seconds), "--wait-timeout: ")


def _malformed(problem: MalformedRecord) -> str:
    """A malformed record's message, with the command that fixes it."""
    command = f"gomaster repair --name {shlex.quote(problem.name)}"
    return f"{problem}; rewrite it with `{command}` (see {REPAIR_DOC})"


def _snapshot(backend: LockBackend, name: str, timeout: float) -> Status | str:
    """The lock's status, or what stopped us reading it (unreachable, or a malformed record)."""

    def status(seen: Observation) -> Status:
        return status_from_record(
            name=name,
            node_id="",
            is_master=False,
            backend=backend.url,
            record=seen.record,
            server_now=seen.server_now,
        )

    def problem(error: BackendError | MalformedRecord) -> str:
        if isinstance(error, MalformedRecord):
            return _malformed(error)
        return f"cannot reach the backend: {error}"

    return unwrap_or_failure(performed(backend.observe(name, timeout).map(status).alt(problem)))


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _describe(status: Status) -> str:
    return "\n".join([_who(status), *_last_run(status)])


def _last_run(status: Status) -> list[str]:
    """The schedule ledger's line, for a name that ever ran on one."""
    if status.last_run is None:
        return []
    lines = [
        f"  last run    {_when(status.last_run)}, token {status.last_run_token}: {status.last_run_state}"
    ]
    if status.schedule:
        lines.append(f"  schedule    {printable(status.schedule)}, next tick {_when(status.next_run)}")
    return lines


def _who(status: Status) -> str:
    name, holder = printable(status.name), printable(status.holder)
    if not status.holder:
        state = "released" if status.token else "never held"
        return f"{name}: no master ({state}, last token {status.token})"
    if not status.has_master:
        return f"{name}: no master (lease of {holder} expired, token {status.token})"
    return "\n".join(
        [
            f"{name}: master {holder}",
            f"  host        {printable(status.host)} (pid {status.pid})",
            f"  version     {printable(status.version) or '-'}",
            f"  token       {status.token}",
            f"  since       {_when(status.since)}",
            f"  renewed     {status.renewed_ago or 0.0:.3f} s ago",
            f"  expires in  {status.expires_in or 0.0:.3f} s",
        ]
    )


def _json_failure(name: str, backend: str, error: str) -> None:
    """What ``status --json`` prints when it cannot say: one object, with ``error`` set."""
    failed = Status(name=name, node_id="", is_master=False, backend=backend, error=error)
    print(json.dumps(failed.as_dict(), indent=2))


def _cmd_status(args: argparse.Namespace) -> int:
    backend = _backend(args.backend)

    def cannot_read(name: str, problem: str) -> int:
        print(f"gomaster status: {printable(problem)}", file=sys.stderr)
        if args.json:
            _json_failure(name, backend.url, problem)
        return EXIT_UNREACHABLE

    if args.all:
        listed = backend.names(args.timeout).alt(lambda error: f"cannot reach the backend: {error}")
        names = unwrap_or_failure(performed(listed))
        if isinstance(names, str):
            return cannot_read("", names)
    else:
        names = [_check_name(args.name)]
    snapshots: list[Status] = []
    for name in names:
        snapshot = _snapshot(backend, name, args.timeout)
        if isinstance(snapshot, str):
            return cannot_read(name, snapshot)
        snapshots.append(snapshot)
    if args.json:
        payload: object = [s.as_dict() for s in snapshots] if args.all else snapshots[0].as_dict()
        print(json.dumps(payload, indent=2))
    else:
        if not args.backend:  # the default file differs per user: say which one this was
            print(f"backend {backend.url} (the default: only this user's processes on this machine)")
        print("\n".join(_describe(s) for s in snapshots) if snapshots else "no locks")
    return EXIT_OK if any(s.has_master for s in snapshots) else EXIT_NO_MASTER


def _unreachable(command: str, error: object) -> int:
    """Say on stderr that ``command`` could not reach the backend, and give its exit status."""
    print(f"gomaster {command}: cannot reach the backend: {printable(str(error))}", file=sys.stderr)
    return EXIT_UNREACHABLE


def _cmd_release(args: argparse.Namespace) -> int:
    backend = _backend(args.backend)
    name = _check_name(args.name)
    match performed(force_release(backend, name, args.timeout)):
        case Failure(MalformedRecord() as problem):
            print(f"gomaster release: {printable(_malformed(problem))}", file=sys.stderr)
            return EXIT_UNREACHABLE
        case Failure(problem):
            return _unreachable("release", problem)
        case Success(None):
            print(f"{name}: nobody held it; nothing released")
        case Success(released):
            where = f"host {printable(released.host)}, pid {released.pid}, token {released.token}"
            print(f"{name}: released {printable(released.holder)} ({where})")
    return EXIT_OK


def _cmd_repair(args: argparse.Namespace) -> int:
    name = _check_name(args.name)
    hold = _seconds("--ttl", args.ttl, MIN_TTL, MAX_TTL)
    if not 0 <= args.token < MAX_TOKEN:
        raise UsageError(f"--token must be a whole number from 0 to {MAX_TOKEN - 1}, not {args.token}")
    backend = _backend(args.backend)
    match performed(backend.observe(name, args.timeout)):
        case Failure(MalformedRecord() as problem):
            print(f"{name}: was {printable(str(problem))}")
    match performed(backend.repair(name, hold, args.token, args.timeout)):
        case Failure(problem):
            return _unreachable("repair", problem)
        case Success(None):
            print(f"{name}: no record; nothing to repair")
        case Success(token):
            print(f"{name}: repaired: released with token {token}; claimable in {hold:g} s")
    return EXIT_OK


def _reader_gone() -> int:
    """stdout's reader has gone: send what is still buffered to /dev/null and say so by status.

    Restoring SIGPIPE's default action instead would also kill the process when a backend's
    socket breaks mid-write; catching ``BrokenPipeError`` touches only this one case.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_BROKEN_PIPE


def _demo(args: argparse.Namespace) -> int:
    from gomaster.cli.demo import run_demo

    try:
        Timing.from_ttl(args.ttl)
    except ValueError as exc:
        raise UsageError(f"--ttl: {exc}") from None
    duration = _seconds("--duration", args.duration, 0.0, MAX_TTL)
    if not DEMO_MIN_NODES <= args.nodes <= DEMO_MAX_NODES:
        raise UsageError(f"--nodes must be from {DEMO_MIN_NODES} to {DEMO_MAX_NODES}, not {args.nodes}")
    kill_every = args.kill_every
    if kill_every is not None:
        kill_every = _seconds("--kill-every", kill_every, DEMO_MIN_KILL_EVERY, MAX_TTL)
    return run_demo(duration=duration, nodes=args.nodes, ttl=args.ttl, kill_every=kill_every)


def _answer(args: argparse.Namespace) -> int:
    """Run a command that answers on stdout (all but ``run``), with its output flushed."""
    answering = {"status": _cmd_status, "release": _cmd_release, "repair": _cmd_repair, "demo": _demo}
    code = answering[args.command](args) if args.command in answering else EXIT_USAGE
    sys.stdout.flush()
    return code


def _refuse(error: UsageError, raw: list[str], args: argparse.Namespace | None) -> int:
    """Say what is wrong in one line on stderr; ``status --json`` also answers with its object."""
    print(error.line, file=sys.stderr)
    if raw[:1] == ["status"] and "--json" in raw:
        name = getattr(args, "name", None) or ""
        url = getattr(args, "backend", None)
        _json_failure(name, redact(url) if url else "", error.message)
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script.

    A reader that leaves early (``gomaster status | head -1``) ends the command quietly with
    :data:`EXIT_BROKEN_PIPE`, not with a traceback. ``run`` is left out once it runs: its
    stdout is CMD's, so a broken pipe inside it would be a bug to see, not a reader gone.
    """
    # A closed stdin/stdout/stderr is /dev/null from here on: nothing gomaster opens may take
    # its number, and CMD gets /dev/null for it.
    hold_standard_fds()
    raw = list(sys.argv[1:] if argv is None else argv)
    # status and release are read by health checks: backend advice (e.g. Redis persistence)
    # belongs to the nodes' logs, not to every probe's stderr.
    quiet = raw[:1] in (["status"], ["release"], ["repair"])
    logging.basicConfig(level=logging.ERROR if quiet else logging.INFO, format=FORMAT)
    args: argparse.Namespace | None = None
    try:
        parser = build_parser()
        command: list[str] = []
        try:
            if raw[:1] == ["run"] and not ({"-h", "--help"} & set(raw) and "--" not in raw):
                raw_options, command = _split_command(raw)
            else:
                raw_options = raw
            try:
                args = parser.parse_args(raw_options)
            except SystemExit:
                sys.stdout.flush()  # --help's text, so that a reader gone ends quietly here too
                raise
            if "timeout" in args:
                args.timeout = _seconds("--timeout", args.timeout, MIN_CALL_TIMEOUT, MAX_CALL_TIMEOUT)
            if args.command != "run":
                return _answer(args)
        except BrokenPipeError:
            return _reader_gone()
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED
        return _cmd_run(args, command)
    except UsageError as error:
        return _refuse(error, raw, args)
