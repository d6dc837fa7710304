"""Backend settings, written once: option readers with one set of limits, one merge of a URL with
keyword arguments, and one base that makes a backend picklable configuration with a safe
``repr`` and ``url``.

A backend's settings are a frozen dataclass; the backend object holds nothing else that
pickling must carry. Readers raise :class:`SettingError`, whose message says what to write
instead; the backend's constructor turns it into ``ValueError`` and ``from_url`` into a
``Failure``, both through :func:`checked`.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import quote

from returns.pipeline import is_successful
from returns.result import Failure, Result, Success

from gomaster.backends.url import MAX_PORT, MIN_PORT, REDACTED, BackendURL, parse_url, scrub

#: The longest timeout any option accepts: a day, like the longest ttl (``core.timing``).
MAX_SECONDS = 86_400.0
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_DIGITS = re.compile(r"^[0-9]{1,10}$")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

_S = TypeVar("_S", bound="Settings")
_B = TypeVar("_B", bound="Configured[Any]")
_V = TypeVar("_V")


class SettingError(ValueError):
    """A configuration value that cannot work; its message says what to write instead."""


def text(key: str, value: object) -> str:
    """A text option."""
    if not isinstance(value, str):
        raise SettingError(f"option {key} must be text, not {type(value).__name__}")
    return value


def flag(key: str, value: object) -> bool:
    """A boolean option: ``True``/``False`` or true, yes, on, 1 / false, no, off, 0."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
        return value.lower() in _TRUE
    raise SettingError(f"option {key}={value!r} is not a boolean; use true or false")


def seconds(key: str, value: object) -> float:
    """A positive number of seconds, at most :data:`MAX_SECONDS` (every backend, every option)."""
    found = -1.0
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        with contextlib.suppress(ValueError):
            found = float(value)
    if not 0 < found <= MAX_SECONDS:
        raise SettingError(f"option {key}={value!r} must be a positive number of seconds, at most a day")
    return found


def whole(key: str, value: object, most: int, least: int = 0) -> int:
    """A whole number from ``least`` to ``most``, given as a number or as digits."""
    number = least - 1
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and _DIGITS.match(value):
        number = int(value)
    if not least <= number <= most:
        raise SettingError(f"{key} {value!r} must be a whole number from {least} to {most}")
    return number


def port(value: object) -> int:
    """A TCP port to connect to."""
    try:
        return whole("port", value, MAX_PORT, MIN_PORT)
    except SettingError:
        raise SettingError(f"port {value!r} is not a TCP port number") from None


def existing_file(key: str, value: object) -> str:
    """A path (text or ``Path``) that exists now, so a typo fails at start-up."""
    path = str(value) if isinstance(value, Path) else text(key, value)
    if not Path(path).exists():
        raise SettingError(f"option {key}: {path} does not exist")
    return path


def choice(key: str, value: object, choices: Iterable[str]) -> str:
    """One of a closed set of words."""
    found = text(key, value)
    allowed = tuple(choices)
    if found not in allowed:
        raise SettingError(f"option {key}={value!r} must be one of {', '.join(allowed)}")
    return found


def identifier(kind: str, value: object) -> str:
    """A table or collection name that is safe to splice into a statement."""
    found = text(kind, value)
    if not _IDENTIFIER.match(found):
        raise SettingError(
            f"{kind} name {found!r} is not allowed: use letters, digits and underscores, "
            "starting with a letter or underscore, at most 63 characters"
        )
    return found


def dsn_url(dsn: str, schemes: Iterable[str], names: str) -> BackendURL:
    """``dsn`` as a URL of one of ``schemes`` (``names`` says them), for a backend's ``dsn=``."""
    url = or_raise(parse_url(dsn), SettingError)
    if url.scheme not in schemes:
        raise SettingError(f"dsn must be a {names} URL, not {url.scheme}://")
    return url


def merge(
    url: BackendURL, given: Mapping[str, object], parts: Mapping[str, object], aliases: Mapping[str, str] = {}
) -> tuple[dict[str, object], dict[str, object]]:
    """The URL's parts and options with keyword arguments over them, split into the two.

    ``parts`` are the URL's own (host, port, ...), ``aliases`` query parameters that name a part
    (libpq's ``dbname`` for ``database``). A keyword or query parameter that is None is unset.
    Returns ``(parts, options)``: the options are everything else, for the backend to read or refuse.
    """
    merged = dict(parts)
    options: dict[str, object] = {}
    for key, value in (*url.query, *given.items()):
        if value is None:
            continue
        target = aliases.get(key, key if key in merged else None)
        if target is not None:
            merged[target] = value
        else:
            options[key] = value
    return merged, options


def refuse(options: Mapping[str, object], managed: Mapping[str, str]) -> None:
    """Raise for the first option the backend sets itself, saying why."""
    for key in options:
        if key in managed:
            raise SettingError(f"option {key} cannot be set: {managed[key]}")


def shown(query: Iterable[tuple[str, object]], secret: Callable[[str], bool], safe: str = "/:") -> str:
    """A query string as a user may see it: secret options as ``***``, the rest percent-encoded."""
    pairs = [(k, REDACTED if secret(k) else quote(str(v), safe=safe)) for k, v in query]
    tail = "&".join(f"{k}={v}" for k, v in pairs)
    return f"?{tail}" if tail else ""


def changed(settings: Any, keys: Iterable[str]) -> list[tuple[str, object]]:
    """The options among ``keys`` that differ from their defaults, as a printed URL lists them."""
    defaults = {each.name: each.default for each in fields(settings)}
    return [(key, getattr(settings, key)) for key in keys if getattr(settings, key) != defaults[key]]


def credentials(username: str | None, password: str | None) -> str:
    """The ``user:***@`` part of a printed URL (empty when there is no user or password)."""
    if username is None and password is None:
        return ""
    return quote(username or "", safe="") + (f":{REDACTED}" if password is not None else "") + "@"


class Settings(Protocol):
    """What every backend's settings dataclass offers the shared base."""

    @property
    def redacted_url(self) -> str:
        """The settings as a URL a user may see, with every secret as ``***``."""
        ...

    @property
    def where(self) -> str:
        """The server (``host:port``, a host list, a file) as messages name it."""
        ...

    def secrets(self) -> tuple[str, ...]:
        """Every string that must never be shown: passwords, secret options, their encodings."""
        ...


def secrets_of(*found: str | None) -> tuple[str, ...]:
    """``found``'s non-empty strings, each also percent-encoded (as it may be echoed in a URL)."""
    plain = [value for value in found if value]
    return tuple(dict.fromkeys([*plain, *(quote(value, safe="") for value in plain)]))


class Configured(Generic[_S]):
    """The base of every backend object: picklable configuration, never printed with a secret.

    Pickling carries the settings alone; :meth:`_start` (the backend's) makes the per-process
    parts afresh wherever the object lands.
    """

    _settings: _S

    @classmethod
    def _of(cls: type[_B], settings: Any) -> _B:
        backend = cls.__new__(cls)
        backend._setup(settings)
        return backend

    def _setup(self, settings: _S) -> None:
        self._settings = settings
        self._start()

    def _start(self) -> None:
        """Make this process's parts (sessions); the backend overrides it."""

    def __getstate__(self) -> _S:
        return self._settings

    def __setstate__(self, state: _S) -> None:
        self._setup(state)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    @property
    def url(self) -> str:
        """The configuration as a URL, with the password (and password-like options) as ``***``."""
        return self._settings.redacted_url

    def scrub(self, message: str) -> str:
        """``message`` without any of this backend's secrets."""
        return scrub(message, *self._settings.secrets())


def checked(build: Callable[[], _V], where: str = "") -> Result[_V, str]:
    """``build()``'s value, or its ``SettingError`` as a message (naming ``where``, if given)."""
    try:
        return Success(build())
    except SettingError as exc:
        return Failure(f"{exc} (in {where})" if where else str(exc))


def or_raise(result: Result[_V, str], error: Callable[[str], Exception] = ValueError) -> _V:
    """The value of a check a constructor made, or ``error`` (``ValueError``) with its message.

    The one place a backend's ``Result`` becomes an exception, for the public facade.
    """
    if not is_successful(result):
        raise error(result.failure())
    return result.unwrap()
