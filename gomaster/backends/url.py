"""Backend URLs: parsed once, with the password kept out of every printed form."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from returns.result import Failure, Result, Success

REDACTED = "***"
#: TCP ports: 0 is "any port" to bind, never one to connect to.
MIN_PORT = 1
MAX_PORT = 65535
#: The advice for a URL that does not split: a password with an unescaped delimiter in it.
_ENCODE = (
    "percent-encode special characters in the user name and password "
    "(for example / as %2F, @ as %40 and [ as %5B)"
)
#: Query options whose values are credentials (matched case-insensitively, as substrings).
_SECRET_OPTIONS = ("password", "secret", "authmechanismproperties", "token", "passphrase")


def _secret(key: str) -> bool:
    return any(word in key.lower() for word in _SECRET_OPTIONS)


def _query(raw: str) -> tuple[tuple[str, str], ...]:
    """Split a query string keeping ``+`` as it is (driver options are not form data)."""
    pairs = (part.partition("=") for part in raw.split("&") if part)
    return tuple((unquote(key), unquote(value)) for key, _, value in pairs)


@dataclass(frozen=True, slots=True, kw_only=True)
class BackendURL:
    """A parsed backend URL. ``str()`` and ``repr()`` never show the password."""

    scheme: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    host: str | None = None
    port: int | None = None
    path: str = ""
    query: tuple[tuple[str, str], ...] = ()
    raw: str = field(default="", repr=False)

    @property
    def redacted(self) -> str:
        """The URL as a user may see it in logs, status and errors."""
        auth = ""
        if self.username is not None:
            auth = self.username + (f":{REDACTED}" if self.password is not None else "") + "@"
        host = self.host or ""
        port = f":{self.port}" if self.port is not None else ""
        query = "&".join(f"{k}={REDACTED if _secret(k) else v}" for k, v in self.query)
        return f"{self.scheme}://{auth}{host}{port}{self.path}" + (f"?{query}" if query else "")

    def option(self, key: str, default: str | None = None) -> str | None:
        """The last value given for query parameter ``key``."""
        return next((v for k, v in reversed(self.query) if k == key), default)

    def __str__(self) -> str:
        return self.redacted


def scrub(text: str, *secrets: str | None) -> str:
    """Replace each secret where it stands as a token of its own in ``text``.

    A secret glued to letters or digits on either side is left alone, so a short password
    such as ``y`` neither mangles "MySQL" nor reveals itself by the gap it leaves; a secret
    echoed inside a URL or a quoted DSN is delimited and is replaced.
    """
    for secret in secrets:
        if secret:
            text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", REDACTED, text)
    return text


def redact(url: str) -> str:
    """Best-effort redaction of a URL that may not even parse."""
    return parse_url(url).map(lambda parsed: parsed.redacted).value_or("<unparseable backend URL>")


def _port_problem(hosts: str) -> str:
    """What is wrong with the port in ``hosts`` (``host:port``), without quoting it.

    Text after the colon that is not digits is most likely part of a password with an unescaped
    ``/`` or ``@`` in it, so the advice then is to percent-encode; digits are a port out of range.
    """
    after_host = hosts.partition("[")[2].partition("]")[2] if "[" in hosts else hosts
    text = after_host.partition(":")[2]
    problem = f"cannot parse backend URL: the port must be a number from {MIN_PORT} to {MAX_PORT}"
    return problem if text.isascii() and text.isdigit() else f"{problem}; {_ENCODE}"


def host_port(host: str, port: int | str | None = None) -> str:
    """``host:port`` as a URL writes it: an IPv6 host in brackets, no ``:`` without a port."""
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None or port == "" else f"{shown}:{port}"


def host_list(hosts: str) -> tuple[tuple[str, str], ...]:
    """``h1:5432,h2,[::1]:5433`` (a URL's list of hosts) as (host, port text) pairs, IPv6 hosts
    without their brackets and ``""`` where no port is given."""
    found = []
    for part in hosts.split(","):
        host, colon, port = part.rpartition(":") if not part.endswith("]") else (part, "", "")
        if not colon:
            host, port = part, ""
        found.append((host.strip("[]"), port))
    return tuple(found)


def parse_url(url: str) -> Result[BackendURL, str]:
    """Split a backend URL into its parts, or say what is wrong with it (never echoing a password)."""
    if not isinstance(url, str) or "://" not in url:
        return Failure(
            "a backend URL looks like scheme://..., for example sqlite:////var/tmp/locks.db "
            "(four slashes: an absolute path)"
        )
    try:
        parts = urlsplit(url)
    except ValueError:
        # An unbalanced [ or ]: in an IPv6 address, or more likely in a password.
        return Failure(f"cannot parse backend URL: {_ENCODE}")
    hosts = parts.netloc.rpartition("@")[2]
    host: str | None = hosts
    port: int | None = None
    try:
        if "," not in hosts:  # a MongoDB seed list (host:port,host:port) keeps its ports in host
            host, port = parts.hostname, parts.port
    except ValueError:
        # The driver's message would quote the text after the colon, which may be a password.
        return Failure(_port_problem(hosts))
    if port is not None and not MIN_PORT <= port <= MAX_PORT:
        return Failure(_port_problem(hosts))
    return Success(
        BackendURL(
            scheme=parts.scheme.lower(),
            username=unquote(parts.username) if parts.username is not None else None,
            password=unquote(parts.password) if parts.password is not None else None,
            host=host,
            port=port,
            path=parts.path,
            query=_query(parts.query),
            raw=url,
        )
    )
