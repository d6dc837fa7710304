"""The SQLite database's files: where the default one lives, and who may touch them.

A lease is only as trustworthy as its file: whoever can write it, or put a file of their own
where gomaster looks, can keep a node from ever becoming master, and whoever can read its
``-shm`` file can stop the master from renewing. Hence two policies (docs/backends/sqlite.md
gives the operator's side and the reasons):

- private, the default ``~/.local/state/gomaster/locks.db`` (``~`` from the user database, never
  the environment): directories 0700 and file 0600 whatever the umask, all the user's own, no
  links, and no directory up to the home directory that others could write (``StrictModes``);
- shared, an explicit ``sqlite:///path``: owners are the operator's choice, but no links at the
  file or its side files; a new file gets 0660 less the umask, 0600 unless that left the group
  both read and write.
"""

from __future__ import annotations

import os
import pwd
import stat
import tempfile
from collections.abc import Iterable
from itertools import chain
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
    """The private default database of this process's user (nothing is created here), from the
    user database only: every process of the user, from a shell, cron or systemd, names one file."""
    return _home().map(lambda home: home.joinpath(*DEFAULT_SUBDIR, DEFAULT_FILE))


def has_default_shape(database: Path) -> bool:
    """True for an absolute ``<home>/.local/state/gomaster/locks.db``, the one path the private
    rules are written for (they check the directories between it and the home directory)."""
    tail = (*DEFAULT_SUBDIR, DEFAULT_FILE)
    return database.is_absolute() and database.parts[-len(tail) :] == tail


def legacy_default_path() -> Path | None:
    """Where earlier versions put the default file, ``$TMPDIR/gomaster-<uid>.db`` (None without a
    usable temp directory); only read, so a rolling upgrade elects no second master beside them."""
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


def _first(problems: Iterable[str | None]) -> str | None:
    """The first problem that the (lazily run) checks find, or None."""
    return next((problem for problem in problems if problem is not None), None)


def _with_sides(database: Path) -> tuple[Path, ...]:
    """The database file and the side files SQLite keeps beside it."""
    return (database, *(Path(f"{database}{suffix}") for suffix in SIDE_SUFFIXES))


def _create(database: Path, *, shared: bool) -> str | None:
    """Create a missing ``database``, never through a link: 0600, or when ``shared`` 0660 less the
    umask unless that left the group less than read and write (then 0600); why not, or None."""
    try:
        descriptor = os.open(database, _CREATE, SHARED_FILE_MODE if shared else PRIVATE_FILE_MODE)
    except FileExistsError:
        return None
    except OSError as exc:
        return exc.strerror or str(exc)
    try:
        got = stat.S_IMODE(os.fstat(descriptor).st_mode)
        if not shared or got & _GROUP_READ_WRITE != _GROUP_READ_WRITE:
            os.fchmod(descriptor, PRIVATE_FILE_MODE)
    finally:
        os.close(descriptor)
    return None


def _home_of(database: Path) -> Path:
    return database.parents[len(DEFAULT_SUBDIR)]


def private_problem(database: Path) -> str | None:
    """Why the default ``database`` is unsafe as it stands now, or None (missing parts are fine);
    it creates nothing, so it can run before any process opens the file."""
    home = _home_of(database)
    ancestors = [home.joinpath(*DEFAULT_SUBDIR[:depth]) for depth in range(len(DEFAULT_SUBDIR))]
    entries = [(database.parent, True), *((entry, False) for entry in _with_sides(database))]
    return _first(
        chain(
            (_ancestor_problem(ancestor) for ancestor in ancestors if ancestor.exists()),
            (_private_entry(entry, directory=is_dir) for entry, is_dir in entries if os.path.lexists(entry)),
        )
    )


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
    """Create the default database's directories (0700) and file (0600), then check them all;
    safe from many processes at once. SQLite copies the file's mode to the side files it makes."""
    home = _home_of(database)
    if not home.is_dir():
        return Failure(
            f"home directory {home} of {_who(os.getuid())} (from the user database) does not exist, "
            f"so gomaster cannot keep its default SQLite file there; {_OTHER_WAY}"
        )
    directories = (home.joinpath(*DEFAULT_SUBDIR[:depth]) for depth in range(1, len(DEFAULT_SUBDIR) + 1))
    # The directories first, checked: the file goes only into a safe one.
    problem = _first(map(_make_private_dir, directories)) or private_problem(database)
    if problem is not None:
        return Failure(problem)
    failed = _create(database, shared=False)
    if failed is not None:
        return Failure(f"cannot create {database}: {failed}; {_OTHER_WAY}")
    problem = private_problem(database)
    return Success(database) if problem is None else Failure(problem)


# -- shared: an explicit path ------------------------------------------------------------------


def shared_problem(database: Path) -> str | None:
    """Why an explicit database path cannot be used safely, or None: a symbolic link at the file
    or at a side file, which SQLite would open (and create or truncate) through it."""
    for entry in _with_sides(database):
        if entry.is_symlink():
            return (
                f"SQLite file {entry} is a symbolic link; gomaster does not write through links, "
                f"which another user can plant in a shared directory: put the link's target "
                f"({os.readlink(entry)}) in the URL instead, or remove the link"
            )
    return None


def prepare_shared(database: Path) -> Result[Path, str]:
    """Create a missing explicit database (SQLite would make it 0644, so every local user could
    lock its ``-shm`` file), then apply :func:`shared_problem`."""
    failed = _create(database, shared=True)
    if failed is not None:
        return Failure(f"cannot create SQLite file {database}: {failed}")
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
    """True when the earlier default file and its side files are this user's own regular files;
    anything else there (another user's file, a link) must not keep this user's nodes from master."""
    for entry in _with_sides(database):
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
