"""The SQLite database's files: where the default one lives, and who may touch them.

A lease is only as trustworthy as the file that holds it. Whoever can write the file, or put a
file of their own where gomaster looks, can keep a node from ever becoming master, and whoever
can read its ``-shm`` file can hold a lock on it that stops the master from renewing. So there
are two policies:

Private (the default file, used when no backend is given)
    ``~/.local/state/gomaster/locks.db``, where ``~`` is the home directory that the user
    database gives for this process's uid, never ``$HOME`` or ``$XDG_*``: cron, systemd
    services and login shells set those differently (or not at all), and two nodes of one user
    that opened different files would be two masters. The XDG state directory is meant for
    state that outlives a restart, which suits a lease whose fencing token must keep rising
    across reboots (a temp directory is wiped at boot). gomaster creates the directories it
    needs with mode 0700 and the database with 0600 whatever the umask, and SQLite gives the
    ``-wal``, ``-shm`` and ``-journal`` files the database's own mode. It refuses a symbolic
    link at the file or its directory, a file or directory owned by another user, and a
    directory writable by group or others. Like OpenSSH's ``StrictModes``, every directory from
    the gomaster directory up to the home directory must belong to the user or root and not be
    writable by group or others, so nobody else can swap the file after it was checked.

Shared (an explicit ``sqlite:///path``)
    The operator chose the file, perhaps for several users on purpose, so ownership is not
    checked. A symbolic link at the file (or at its ``-wal``, ``-shm`` or ``-journal``) is still
    refused: a shared directory is exactly where another user can plant one, and the remedy (put
    the link's target in the URL) costs nothing. A missing file is created with mode 0660 less
    the umask, and 0600 unless that left the group both read and write: read access alone is
    of no use to a node but lets its holder lock the ``-shm`` file. Others never get access.
    SQLite gives the side files the database's mode.
"""

from __future__ import annotations

import os
import pwd
import stat
import tempfile
from pathlib import Path

from returns.result import Failure, Result, Success

__all__ = [
    "DEFAULT_FILE",
    "DEFAULT_SUBDIR",
    "PRIVATE_DIR_MODE",
    "PRIVATE_FILE_MODE",
    "SHARED_FILE_MODE",
    "SIDE_SUFFIXES",
    "default_path",
    "has_default_shape",
    "legacy_default_path",
    "prepare_private",
    "prepare_shared",
    "private_problem",
    "shared_problem",
    "shared_warnings",
    "trusted_legacy_file",
]

#: Below the home directory: the XDG state directory's default place, then gomaster's own.
DEFAULT_SUBDIR = (".local", "state", "gomaster")
DEFAULT_FILE = "locks.db"
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
#: Requested for a new explicit file; the umask may take more away, and "others" get nothing.
SHARED_FILE_MODE = 0o660
#: Files SQLite keeps beside the database; each gets the database file's mode.
SIDE_SUFFIXES = ("-wal", "-shm", "-journal")
_GROUP_OR_OTHER = 0o077
_GROUP_OR_OTHER_WRITE = 0o022
_GROUP_READ_WRITE = 0o060
_ROOT = 0
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_OTHER_WAY = "or set GOMASTER_BACKEND (or pass backend=) to use another file"


def _who(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _mode(status: os.stat_result) -> str:
    return f"mode {stat.S_IMODE(status.st_mode):04o}"


def _home() -> Result[Path, str]:
    uid = os.getuid()
    try:
        home = pwd.getpwuid(uid).pw_dir
    except KeyError:
        return Failure(
            f"uid {uid} has no entry in the user database, so gomaster has no home directory for "
            f"its default SQLite file; {_OTHER_WAY}"
        )
    if not home or not os.path.isabs(home):
        return Failure(
            f"the user database gives {_who(uid)} no usable home directory ({home!r}); {_OTHER_WAY}"
        )
    return Success(Path(home))


def default_path() -> Result[Path, str]:
    """The private default database of this process's user (nothing is created here).

    Derived from the user database only, so every process of one user on this machine, started
    from a shell, cron or systemd alike, names the same file.
    """
    return _home().map(lambda home: home.joinpath(*DEFAULT_SUBDIR, DEFAULT_FILE))


def has_default_shape(database: Path) -> bool:
    """True for an absolute ``<home>/.local/state/gomaster/locks.db``, the one path the private
    rules are written for (they check the directories between it and the home directory)."""
    tail = (*DEFAULT_SUBDIR, DEFAULT_FILE)
    return database.is_absolute() and database.parts[-len(tail) :] == tail


def legacy_default_path() -> Path | None:
    """Where earlier versions put the default file: ``$TMPDIR/gomaster-<uid>.db`` (None without a
    usable temp directory, where no older node could have kept one either).

    Only read, to keep a rolling upgrade from electing a second master beside older nodes.
    """
    try:
        directory = tempfile.gettempdir()
    except FileNotFoundError:
        return None
    return Path(directory) / f"gomaster-{os.getuid()}.db"


# -- private: the default file -----------------------------------------------------------------


def _private_entry(path: Path, *, directory: bool) -> str | None:
    """Why ``path`` (which must exist) may not hold or contain this user's default database."""
    kind = "directory" if directory else "file"
    try:
        status = os.lstat(path)
    except FileNotFoundError:
        return f"{kind} {path} vanished while gomaster checked it; try again"
    if stat.S_ISLNK(status.st_mode):
        return (
            f"{path} is a symbolic link; gomaster does not follow links for its default SQLite "
            f"{kind}, since another user may have planted it: remove the link"
        )
    expected = stat.S_ISDIR if directory else stat.S_ISREG
    if not expected(status.st_mode):
        return f"{path} is not a {'directory' if directory else 'regular file'}; remove it"
    if status.st_uid != os.getuid():
        return (
            f"{path} is owned by {_who(status.st_uid)}, not by {_who(os.getuid())}: another user "
            f"may have planted it to control this user's leases; remove it (gomaster creates its own)"
        )
    if directory and status.st_mode & _GROUP_OR_OTHER_WRITE:
        return (
            f"directory {path} is writable by group or others ({_mode(status)}), so another user "
            f"could replace gomaster's default SQLite file in it; run: chmod go-w {path}"
        )
    if not directory and status.st_mode & _GROUP_OR_OTHER:
        return (
            f"{path} is open to group or others ({_mode(status)}): a user who can read it can lock "
            f"it and stop the master from renewing; run: chmod 600 {path}"
        )
    return None


def _ancestor_problem(path: Path) -> str | None:
    """Why a directory between the home directory and gomaster's could let others swap files."""
    try:
        status = os.stat(path)
    except OSError as exc:
        return f"cannot check directory {path}: {exc.strerror}; {_OTHER_WAY}"
    if status.st_uid not in (os.getuid(), _ROOT):
        return (
            f"directory {path} is owned by {_who(status.st_uid)}, not by {_who(os.getuid())} or "
            f"root, so its owner could replace gomaster's default SQLite file; {_OTHER_WAY}"
        )
    if status.st_mode & _GROUP_OR_OTHER_WRITE:
        return (
            f"directory {path} is writable by group or others ({_mode(status)}), so another user "
            f"could replace gomaster's default SQLite file below it; run: chmod go-w {path}"
        )
    return None


def _home_of(database: Path) -> Path:
    return database.parents[len(DEFAULT_SUBDIR)]


def private_problem(database: Path) -> str | None:
    """Why the default ``database`` is unsafe as it stands now, or None (missing parts are fine).

    Checks without creating anything, so it can run before any process opens the file.
    """
    directory = database.parent
    home = _home_of(database)
    chain = [home.joinpath(*DEFAULT_SUBDIR[:depth]) for depth in range(len(DEFAULT_SUBDIR))]
    for ancestor in chain:
        if ancestor.exists():
            problem = _ancestor_problem(ancestor)
            if problem is not None:
                return problem
    for entry, is_directory in ((directory, True), (database, False)):
        if os.path.lexists(entry):
            problem = _private_entry(entry, directory=is_directory)
            if problem is not None:
                return problem
    for suffix in SIDE_SUFFIXES:
        side = Path(f"{database}{suffix}")
        if os.path.lexists(side):
            problem = _private_entry(side, directory=False)
            if problem is not None:
                return problem
    return None


def _make_private_dir(path: Path) -> str | None:
    try:
        os.mkdir(path, PRIVATE_DIR_MODE)
    except FileExistsError:
        return None
    except OSError as exc:
        return (
            f"cannot create directory {path} for gomaster's default SQLite file ({exc.strerror}); "
            f"{_OTHER_WAY}"
        )
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        return f"directory {path} changed while gomaster created it ({exc.strerror}); try again"
    try:
        os.fchmod(descriptor, PRIVATE_DIR_MODE)  # the umask may have taken bits the owner needs
    finally:
        os.close(descriptor)
    return None


def prepare_private(database: Path) -> Result[Path, str]:
    """Create the default database's directories (0700) and file (0600), then check them all.

    The file is created before SQLite opens it, without following a link and with its mode set
    explicitly, because SQLite would create it 0644 less the umask; SQLite then copies that mode
    to the side files it makes. Safe to call from many processes at once.
    """
    home = _home_of(database)
    if not home.is_dir():
        return Failure(
            f"home directory {home} of {_who(os.getuid())} (from the user database) does not exist, "
            f"so gomaster cannot keep its default SQLite file there; {_OTHER_WAY}"
        )
    for depth in range(1, len(DEFAULT_SUBDIR) + 1):
        problem = _make_private_dir(home.joinpath(*DEFAULT_SUBDIR[:depth]))
        if problem is not None:
            return Failure(problem)
    problem = private_problem(database)  # the directories first: the file goes only into a safe one
    if problem is not None:
        return Failure(problem)
    try:
        descriptor = os.open(database, _CREATE, PRIVATE_FILE_MODE)
    except FileExistsError:
        pass
    except OSError as exc:
        return Failure(f"cannot create {database}: {exc.strerror}; {_OTHER_WAY}")
    else:
        try:
            os.fchmod(descriptor, PRIVATE_FILE_MODE)
        finally:
            os.close(descriptor)
    problem = private_problem(database)
    return Success(database) if problem is None else Failure(problem)


# -- shared: an explicit path ------------------------------------------------------------------


def shared_problem(database: Path) -> str | None:
    """Why an explicit database path cannot be used safely, or None.

    Only symbolic links are refused: at the file itself and at the side files SQLite would open
    (and create or truncate) through them.
    """
    for entry in (database, *(Path(f"{database}{suffix}") for suffix in SIDE_SUFFIXES)):
        if entry.is_symlink():
            return (
                f"SQLite file {entry} is a symbolic link; gomaster does not write through links, "
                f"which another user can plant in a shared directory: put the link's target "
                f"({os.readlink(entry)}) in the URL instead, or remove the link"
            )
    return None


def prepare_shared(database: Path) -> Result[Path, str]:
    """Create a missing explicit database without following a link, then apply
    :func:`shared_problem`.

    SQLite alone would create it 0644, letting every local user read it and lock its ``-shm``
    file. Here it gets 0660 less the umask, so a umask that shares with the group (002, in a
    setgid directory) lets several users share it on purpose, and 0600 when the umask left the
    group only read access.
    """
    try:
        descriptor = os.open(database, _CREATE, SHARED_FILE_MODE)
    except FileExistsError:
        pass
    except OSError as exc:
        return Failure(f"cannot create SQLite file {database}: {exc.strerror}")
    else:
        try:
            if stat.S_IMODE(os.fstat(descriptor).st_mode) & _GROUP_READ_WRITE != _GROUP_READ_WRITE:
                os.fchmod(descriptor, PRIVATE_FILE_MODE)
        finally:
            os.close(descriptor)
    problem = shared_problem(database)
    return Success(database) if problem is None else Failure(problem)


def shared_warnings(database: Path) -> list[str]:
    """What makes an explicit database usable but open to interference by other local users."""
    warnings = []
    directory = Path(os.path.abspath(database)).parent
    try:
        status = os.stat(directory)
    except OSError:
        return []
    if status.st_mode & stat.S_IWOTH:
        warnings.append(
            f"SQLite file {database} is in {directory}, which every local user can write: any of "
            f"them could create the file first and hold its leases; use a directory only the "
            f"sharing users can write"
        )
    try:
        status = os.stat(database)
    except OSError:
        return warnings
    if status.st_mode & stat.S_IRWXO:
        warnings.append(
            f"SQLite file {database} is open to other users ({_mode(status)}): any of them can lock "
            f"its -shm file and stop the master from renewing; run: chmod o-rwx {database}*"
        )
    return warnings


# -- the legacy default ------------------------------------------------------------------------


def trusted_legacy_file(database: Path) -> bool:
    """True when the earlier default file and its side files are this user's own regular files.

    Such a file was written by this user's older gomaster nodes. Anything else in the temp
    directory (another user's file, a link) is ignored: it must not keep this user's nodes from
    becoming master.
    """
    for entry in (database, *(Path(f"{database}{suffix}") for suffix in SIDE_SUFFIXES)):
        try:
            status = os.lstat(entry)
        except FileNotFoundError:
            if entry == database:
                return False
            continue
        except OSError:
            return False
        if not stat.S_ISREG(status.st_mode) or status.st_uid != os.getuid():
            return False
    return True
