"""The ``gomaster`` command: ``run``, ``status``, ``release``, ``repair`` and ``demo``.

Every option can also come from the environment (``GOMASTER_BACKEND``, ``GOMASTER_NAME``,
``GOMASTER_TTL``, ...), which keeps passwords out of ``ps``.
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
from datetime import UTC, datetime
from typing import NoReturn

from returns.result import Failure, Success

from gomaster.backends import ENV_BACKEND, LockBackend, force_release, parse_backend
from gomaster.core.errors import BackendError
from gomaster.core.record import MAX_TOKEN, MalformedRecord, check_name, check_version
from gomaster.core.timing import MAX_CALL_TIMEOUT, MAX_TTL, MIN_CALL_TIMEOUT, MIN_TTL, Timing, check_seconds
from gomaster.runner import EXIT_DEMOTED, RunOptions, find_command, run_command
from gomaster.runtime._io import performed
from gomaster.runtime.fds import hold_standard_fds
from gomaster.runtime.status import Status, status_from_record

EXIT_OK = 0
EXIT_UNREACHABLE = 1
EXIT_USAGE = 2
EXIT_NO_MASTER = 3
#: stdout's reader went away (``gomaster status | head -1``): what a shell reports for a
#: program killed by SIGPIPE, so pipelines and ``set -o pipefail`` treat us like cat or grep.
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE
DEFAULT_TIMEOUT = 5.0
#: Where a malformed record's message sends the reader.
REPAIR_DOC = "docs/operations.md, recovering from a corrupted record"

EXIT_CODES = f"""exit codes:
  run      CMD's own status (128+N if CMD died of signal N); {EXIT_DEMOTED} with --once when the
           node lost mastership while CMD ran; 127 when CMD does not exist; 2 for usage errors
  status   {EXIT_OK} a live master exists, {EXIT_NO_MASTER} none does, {EXIT_UNREACHABLE} the backend
           cannot be reached or the record is malformed, {EXIT_USAGE} usage error
  release  {EXIT_OK} done (or nothing to release), {EXIT_UNREACHABLE} the backend cannot be reached
           or the record is malformed (see repair), {EXIT_USAGE} usage error
  repair   {EXIT_OK} done (or no record), {EXIT_UNREACHABLE} the backend cannot be reached,
           {EXIT_USAGE} usage error
  all      {EXIT_BROKEN_PIPE} when the reader of the output went away (e.g. | head -1)
"""

EXAMPLES = """examples:
  export GOMASTER_BACKEND='mysql://app:secret@db:3306/app'
  gomaster run --name cron -- ./nightly-report.sh          # only one replica runs it
  gomaster run --name migrate --once -- alembic upgrade head
  gomaster status --name cron --json                       # readiness / health check
  gomaster release --name cron                              # force a handover
  gomaster repair --name cron --ttl 5                       # fix a corrupted record
  gomaster demo --duration 30
"""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``gomaster run: error: ...`` and exit status 2."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {printable(message)} (see --help)", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def printable(text: str) -> str:
    """``text`` with every character a terminal would act on written as a Python escape (``\\x1b``).

    Holders, hosts, versions and names are read from the backend, where anyone who can write a
    row can plant an escape sequence that rewrites the screen of whoever runs ``status``; shown
    escaped, they are inert and still identifiable. Printable text, the usual case, is unchanged.
    """
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def _env(key: str, default: str | None = None) -> str | None:
    return os.environ.get(f"GOMASTER_{key}", default)


def _env_float(key: str) -> float | None:
    value = _env(key)
    if value is None or value == "":
        return None
    try:
        return float(value)
    except ValueError:
        _fail_usage(f"GOMASTER_{key}={value!r} is not a number of seconds")


def _fail_usage(message: str) -> NoReturn:
    print(f"gomaster: error: {printable(message)}", file=sys.stderr)
    sys.exit(EXIT_USAGE)


def _seconds(option: str, value: float, least: float, most: float) -> float:
    """``value`` if it is a number of seconds in ``[least, most]``, else a usage error naming them."""
    checked = check_seconds(option, value, least, most)
    if isinstance(checked, Failure):
        _fail_usage(str(checked.failure()))
    return checked.unwrap()


def _common(parser: argparse.ArgumentParser, *, name_required: bool = False, timeout: bool = True) -> None:
    parser.add_argument(
        "--backend",
        default=_env("BACKEND"),
        help=f"backend URL (env {ENV_BACKEND}); default: the local SQLite file",
    )
    parser.add_argument(
        "--name",
        default=_env("NAME", None if name_required else "default"),
        help="lock name (env GOMASTER_NAME)",
    )
    if timeout:
        parser.add_argument(
            "--timeout",
            type=float,
            default=_env_float("TIMEOUT") or DEFAULT_TIMEOUT,
            help="seconds per backend call",
        )


def build_parser() -> argparse.ArgumentParser:
    """The whole command line, with examples and exit codes in ``--help``."""
    parser = _Parser(
        prog="gomaster",
        description="Run master-only work on exactly one node, through a lease in a backend you have.",
        epilog=EXAMPLES + "\n" + EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser(
        "run",
        help="run CMD only while this node is master",
        usage="gomaster run [options] -- CMD [ARGS...]",
        epilog=EXAMPLES + "\n" + EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(run, timeout=False)
    run.add_argument(
        "--ttl", type=float, default=_env_float("TTL"), help="lease ttl; derives the other timings"
    )
    for field in ("heartbeat", "renew-deadline", "retry", "grace"):
        run.add_argument(f"--{field}", type=float, default=_env_float(field.upper().replace("-", "_")))
    run.add_argument("--once", action="store_true", default=_env("ONCE", "") in ("1", "true", "yes"))
    run.add_argument(
        "--restart",
        choices=["on-failure", "always", "never"],
        default=_env("RESTART", "on-failure"),
        help="what to do when CMD exits (default on-failure)",
    )
    run.add_argument("--app-version", default=_env("VERSION", ""), help="this node's application version")

    status = commands.add_parser("status", help="show who is master", epilog=EXIT_CODES)
    _common(status)
    status.add_argument("--all", action="store_true", help="every lock name in the backend")
    status.add_argument("--json", action="store_true", help="machine-readable output")

    release = commands.add_parser(
        "release", help="force-release a lock (its token is kept)", epilog=EXIT_CODES
    )
    _common(release, name_required=True)

    repair = commands.add_parser(
        "repair",
        help="rewrite a corrupted lock record as released (the token never goes down)",
        epilog=EXIT_CODES,
    )
    _common(repair, name_required=True)
    repair.add_argument(
        "--ttl",
        type=float,
        default=_env_float("TTL") or Timing().ttl,
        help="the longest ttl any node uses: nobody can claim for this long after the repair",
    )
    repair.add_argument(
        "--token",
        type=int,
        default=0,
        help="the least token to write, e.g. the highest one your fenced stores have seen",
    )

    demo = commands.add_parser(
        "demo", help="several local nodes on SQLite; the master is killed now and then"
    )
    demo.add_argument("--duration", type=float, default=30.0)
    demo.add_argument("--nodes", type=int, default=3)
    demo.add_argument("--ttl", type=float, default=2.0)
    demo.add_argument("--kill-every", type=float, default=5.0)
    return parser


def _backend(url: str | None) -> LockBackend:
    if not url:
        from gomaster.backends import parse_default_backend

        parsed = parse_default_backend()
    else:
        parsed = parse_backend(url)
    if isinstance(parsed, Failure):
        _fail_usage(str(parsed.failure()))
    backend: LockBackend = parsed.unwrap()
    return backend


def _timing(args: argparse.Namespace) -> Timing:
    try:
        base = Timing.from_ttl(args.ttl) if args.ttl is not None else Timing()
        changes = {
            key: value
            for key, value in (
                ("heartbeat", args.heartbeat),
                ("renew_deadline", args.renew_deadline),
                ("retry", args.retry),
                ("grace", args.grace),
            )
            if value is not None
        }
        return base.replace(**changes) if changes else base
    except ValueError as exc:
        _fail_usage(str(exc))


def _check_name(name: str | None) -> str:
    if name is None:
        _fail_usage("--name is required (or set GOMASTER_NAME)")
    checked = check_name(name)
    if isinstance(checked, Failure):
        _fail_usage(str(checked.failure()))
    return name


def _check_version(version: str) -> str:
    checked = check_version(version)
    if isinstance(checked, Failure):
        _fail_usage(f"--app-version: {checked.failure()}")
    return version


def _split_command(argv: list[str]) -> tuple[list[str], list[str]]:
    if "--" not in argv:
        _fail_usage("run needs -- before the command, e.g. gomaster run --name cron -- ./job.sh")
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
    backend = _backend(args.backend)
    options = RunOptions(restart=args.restart, once=args.once)
    return run_command(command, backend=backend, name=name, timing=timing, version=version, options=options)


def _malformed(problem: MalformedRecord) -> str:
    """A malformed record's message, with the command that fixes it."""
    command = f"gomaster repair --name {shlex.quote(problem.name)}"
    return f"{problem}; rewrite it with `{command}` (see {REPAIR_DOC})"


def _snapshot(backend: LockBackend, name: str, timeout: float) -> Status | str:
    """The lock's status, or what stopped us reading it (unreachable, or a malformed record)."""
    match performed(backend.observe(name, timeout)):
        case Failure(BackendError() as problem):
            return f"cannot reach the backend: {problem}"
        case Failure(problem):
            return _malformed(problem)
        case outcome:
            seen = outcome.unwrap()
    return status_from_record(
        name=name,
        node_id="",
        is_master=False,
        backend=backend.url,
        record=seen.record,
        server_now=seen.server_now,
    )


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _describe(status: Status) -> str:
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


def _cmd_status(args: argparse.Namespace) -> int:
    backend = _backend(args.backend)
    if args.all:
        listed = performed(backend.names(args.timeout))
        if isinstance(listed, Failure):
            return _unreachable("status", listed.failure())
        names: list[str] = listed.unwrap()
    else:
        names = [_check_name(args.name)]
    snapshots: list[Status] = []
    for name in names:
        snapshot = _snapshot(backend, name, args.timeout)
        if isinstance(snapshot, str):
            print(f"gomaster status: {printable(snapshot)}", file=sys.stderr)
            return EXIT_UNREACHABLE
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
        _fail_usage(f"--token must be a whole number from 0 to {MAX_TOKEN - 1}, not {args.token}")
    backend = _backend(args.backend)
    before = performed(backend.observe(name, args.timeout))
    if isinstance(before, Failure) and isinstance(before.failure(), MalformedRecord):
        print(f"{name}: was {printable(str(before.failure()))}")
    outcome = performed(backend.repair(name, hold, args.token, args.timeout))
    if isinstance(outcome, Failure):
        return _unreachable("repair", outcome.failure())
    token = outcome.unwrap()
    if token is None:
        print(f"{name}: no record; nothing to repair")
    else:
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


def _answer(args: argparse.Namespace) -> int:
    """Run a command that answers on stdout (all but ``run``), with its output flushed."""
    match args.command:
        case "status":
            code = _cmd_status(args)
        case "release":
            code = _cmd_release(args)
        case "repair":
            code = _cmd_repair(args)
        case "demo":
            from gomaster.demo import run_demo

            try:
                Timing.from_ttl(args.ttl)
            except ValueError as exc:
                _fail_usage(f"--ttl: {exc}")
            code = run_demo(
                duration=args.duration, nodes=args.nodes, ttl=args.ttl, kill_every=args.kill_every
            )
        case _:
            code = EXIT_USAGE
    sys.stdout.flush()
    return code


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
    logging.basicConfig(
        level=logging.ERROR if quiet else logging.INFO, format="gomaster: %(levelname)s %(message)s"
    )
    parser = build_parser()
    command: list[str] = []
    try:
        if raw[:1] == ["run"] and not ({"-h", "--help"} & set(raw) and "--" not in raw):
            raw, command = _split_command(raw)
        try:
            args = parser.parse_args(raw)
        except SystemExit:
            sys.stdout.flush()  # --help's text, so that a reader gone ends quietly here too
            raise
        if "timeout" in args:
            args.timeout = _seconds("--timeout", args.timeout, MIN_CALL_TIMEOUT, MAX_CALL_TIMEOUT)
        if args.command != "run":
            return _answer(args)
    except BrokenPipeError:
        return _reader_gone()
    return _cmd_run(args, command)


if __name__ == "__main__":
    sys.exit(main())
