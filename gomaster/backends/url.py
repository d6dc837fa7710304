"""Backend URLs: parsed once, with the password kept out of every printed form."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from returns.result import Failure, Result, Success

REDACTED = "***"
#: Query options whose values are credentials (matched case-insensitively, as substrings).
_SECRET_OPTIONS = ("password", "secret", "authmechanismproperties", "token", "passphrase")


def _secret(key: str) -> bool:
    lowered = key.lower()
    return any(word in lowered for word in _SECRET_OPTIONS)


def _query(raw: str) -> tuple[tuple[str, str], ...]:
    """Split a query string keeping ``+`` as it is (driver options are not form data)."""
    pairs = []
    for part in raw.split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        pairs.append((unquote(key), unquote(value)))
    return tuple(pairs)


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
        for k, v in reversed(self.query):
            if k == key:
                return v
        return default

    def options_except(self, *keys: str) -> dict[str, str]:
        """Query parameters other than ``keys``: what goes on to the driver."""
        return {k: v for k, v in self.query if k not in keys}

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


def parse_url(url: str) -> Result[BackendURL, str]:
    """Split a backend URL into its parts, or say what is wrong with it (never echoing a password)."""
    if not isinstance(url, str) or "://" not in url:
        return Failure("a backend URL looks like scheme://..., for example sqlite:///var/tmp/locks.db")
    try:
        parts = urlsplit(url)
        hosts = parts.netloc.rpartition("@")[2]
        host: str | None = hosts
        port: int | None = None
        if "," not in hosts:  # a MongoDB seed list (host:port,host:port) keeps its ports in host
            host, port = parts.hostname, parts.port
    except ValueError:
        # The driver's message would quote the text after the colon, which may be a password.
        return Failure(
            "cannot parse backend URL: the port is not a number; percent-encode special "
            "characters in the user name and password (for example / as %2F and @ as %40)"
        )
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
