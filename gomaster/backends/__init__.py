"""Backends: one module per store, chosen by URL scheme and imported only when used."""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable
from typing import cast

from returns.io import IOResult, IOSuccess
from returns.result import Failure, Result, Success

from gomaster.backends._settings import or_raise
from gomaster.backends.base import LockBackend
from gomaster.backends.url import BackendURL, parse_url, redact
from gomaster.core.errors import BackendError
from gomaster.core.record import LockRecord, MalformedRecord, Observation

__all__ = [
    "ENV_BACKEND",
    "LockBackend",
    "connect",
    "default_backend",
    "default_sqlite_path",
    "force_release",
    "parse_backend",
    "parse_default_backend",
    "redact",
    "resolve_backend",
]

ENV_BACKEND = "GOMASTER_BACKEND"

#: scheme -> (module, extra that installs its driver)
_SCHEMES: dict[str, tuple[str, str | None]] = {
    "sqlite": ("gomaster.backends.sqlite", None),
    "mysql": ("gomaster.backends.mysql", "mysql"),
    "mariadb": ("gomaster.backends.mysql", "mysql"),
    "mongodb": ("gomaster.backends.mongodb", "mongodb"),
    "mongodb+srv": ("gomaster.backends.mongodb", "mongodb"),
    "postgresql": ("gomaster.backends.postgresql", "postgresql"),
    "postgres": ("gomaster.backends.postgresql", "postgresql"),
    "redis": ("gomaster.backends.redis", "redis"),
    "rediss": ("gomaster.backends.redis", "redis"),
    "redis+sentinel": ("gomaster.backends.redis", "redis"),
}

_log = logging.getLogger("gomaster")


def parse_backend(url: str) -> Result[LockBackend, str]:
    """Pick the backend module for ``url``'s scheme and let it validate the rest.

    The message of a ``Failure`` says what to fix and never contains the password.
    """
    return parse_url(url).bind(_from_url)


def _from_url(backend_url: BackendURL) -> Result[LockBackend, str]:
    """The backend module of ``backend_url``'s scheme, imported now, makes the backend."""
    if backend_url.scheme == "memory":
        from gomaster.backends.memory import MemoryBackend

        return Success(MemoryBackend(label=backend_url.redacted))
    known = _SCHEMES.get(backend_url.scheme)
    if known is None:
        schemes = ", ".join(sorted(_SCHEMES))
        return Failure(
            f"unknown backend scheme {backend_url.scheme!r} in {backend_url.redacted}; use one of {schemes}"
        )
    module_name, extra = known
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        hint = f"; install it with: pip install 'gomaster[{extra}]'" if extra else ""
        return Failure(f"the {backend_url.scheme} backend needs {exc.name}{hint}")
    from_url = cast(Callable[[BackendURL], Result[LockBackend, str]], module.from_url)
    return from_url(backend_url)


def connect(url: str) -> LockBackend:
    """The backend for ``url``, e.g. ``sqlite:////var/lib/app/locks.db`` or ``mysql://u:p@h/db``.

    Raises ``ValueError`` naming the problem for a URL that cannot work. No connection is made
    yet: backends connect lazily in the process that uses them.
    """
    return or_raise(parse_backend(url))


def default_sqlite_path() -> str:
    """Where the embedded default lives: ``~/.local/state/gomaster/locks.db``, one per user.

    ``~`` comes from the user database, never from the environment, so that every process of a
    user names the same file (see :mod:`gomaster.backends.sqlite_files`). Raises ``ValueError``
    when the user database has no usable home directory for this uid.
    """
    from gomaster.backends import sqlite_files

    return str(or_raise(sqlite_files.default_path()))


def parse_default_backend() -> Result[LockBackend, str]:
    """``$GOMASTER_BACKEND`` if set, else this user's private SQLite file (logging a warning
    that names it), or what makes either unusable.

    The private file and its directories are created here and refused when another user could
    tamper with them, so a bad default fails at start-up rather than at the first election.
    """
    configured = os.environ.get(ENV_BACKEND)
    if configured:
        return parse_backend(configured)
    from gomaster.backends.sqlite import SQLiteBackend, private_default

    def warned(backend: SQLiteBackend) -> LockBackend:
        _log.warning(
            "no backend given: using SQLite file %s, which only this user's processes on this "
            "machine share; set %s or pass backend= to elect across users or machines",
            backend.path,
            ENV_BACKEND,
        )
        return backend

    return private_default().alt(lambda problem: f"default SQLite backend: {problem}").map(warned)


def default_backend() -> LockBackend:
    """``$GOMASTER_BACKEND`` if set, else the per-user SQLite file (with a warning).

    Raises ``ValueError`` saying what to fix (see :func:`parse_default_backend`).
    """
    return or_raise(parse_default_backend())


def resolve_backend(backend: LockBackend | str | None) -> LockBackend:
    """Turn what a user passed as ``backend=`` into a backend object (raising on bad input)."""
    if backend is None:
        return default_backend()
    if isinstance(backend, str):
        return connect(backend)
    if isinstance(backend, LockBackend):
        return backend
    raise TypeError(f"backend must be a URL string or a backend object, not {type(backend).__name__}")


def force_release(
    backend: LockBackend, name: str, timeout: float
) -> IOResult[LockRecord | None, BackendError | MalformedRecord]:
    """The operator's release: take ``name`` from whoever holds it now, keeping the token.

    Returns the record as it was, or None when nobody held it. It is a compare-and-set on the
    holder and token just observed, so it never touches a lease granted after that look. The
    holder's next renewal fails, so it demotes itself; the lease stays unclaimable until its
    current expiry, so the successor never overlaps the old holder's work. A record that does
    not parse stays a ``MalformedRecord``: it needs ``repair``, not a reachable backend.
    """

    def release_holder(seen: Observation) -> IOResult[LockRecord | None, BackendError | MalformedRecord]:
        record = seen.record
        if record is None or record.released:
            return IOSuccess(None)
        return backend.revoke(record, timeout).map(lambda done: record if done else None)

    return backend.observe(name, timeout).bind(release_holder)
