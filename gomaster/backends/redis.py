"""Redis: a lease hash that expires on its own, a token counter that never does, Lua for every step.

Keys
----
For lock ``name`` and key prefix ``P`` (``?prefix=``, default ``gomaster``), with ``H`` the
lower-case hex of the name's UTF-8 bytes (so any name, quotes, spaces, ``*``, braces or lone
surrogates included, becomes a safe key and can never collide with another prefix's keys):

- ``P:lease:H`` is a hash with ``holder``, ``version``, ``token``, ``acquired_at``,
  ``renewed_at``, ``expires_at`` (integer milliseconds of the server's ``TIME``), ``host`` and
  ``pid``. Every claim and renewal sets its expiry with ``PEXPIREAT expires_at``, so Redis drops
  it exactly when the lease ends by its own clock, and the key carries a TTL of ``ttl``.
- ``P:token:H`` is the token counter, a plain integer that never expires. It survives the lease's
  expiry and release, so the next holder still gets ``token + 1``.
- ``P:names`` is a set of every ``H`` ever claimed: ``names()`` reads it, and it is evidence that
  a name existed when its counter has vanished (see below).
- ``P:released:H`` is the pub/sub channel a release publishes on.

Steps
-----
Each step is ONE Lua script (``EVALSHA``, falling back to ``EVAL`` when the server does not know
the script yet), judged by ``TIME`` read inside it, so it is atomic and costs one round trip:

- observe returns ``TIME``, the lease hash and the counter. An absent or expired lease (Redis
  dropped it) is reported as a *released* record carrying the counter's token, with all times 0,
  so the core plans ``token + 1``; a name with neither key reads as no record at all.
- claim is a compare-and-set on the counter: token ``t + 1`` is granted iff the counter is still
  ``t`` (the observed token), the lease's holder is still the observed one (``""`` when it was
  released, revoked or is gone) and no unexpired lease exists by ``TIME``. A revoked lease keeps
  its expiry, so it is not claimable before then. The first claim of a new name (``expected``
  None) needs both keys absent. Since every grant moves the counter, at most one of any number
  of racing claimers for ``t + 1`` wins.
- renew extends our lease only while it is ours and unexpired by ``TIME``; release marks it
  released (holder ``""``, ``expires_at`` = now, the token kept) and ``PUBLISH``-es on the
  name's channel in the same script; revoke only clears the holder, keeping token, expiry and
  the key's TTL. Revoke is the one script that needs no clock.

A lost token counter
--------------------
A counter can vanish: a restart without persistence, ``FLUSHALL``, eviction, an operator's
``DEL``. Handing out token 1 again would break fencing, so a claim that finds the counter
missing while there is evidence that the name was used before (its lease hash, its entry in
``P:names``, or a claimant that observed an older record), or a counter smaller than the
lease's token, restarts the counter from the server clock: ``max(TIME in ms, lease token,
expected token)``. That claim reports a ``Conflict``; the elector observes again at once and
claims the next token. Tokens keep rising across such a loss only if the server's clock does:
the new counter must exceed every token issued since the counter was last seeded, which holds
as long as the clock has not stepped back and fewer than one acquisition per millisecond
happened on average since then.

When *everything* is gone (a restart without persistence, ``FLUSHALL``), a used name looks
exactly like a brand-new one, and by default a new name starts at token 1 as on every other
backend. ``?first_token=clock`` closes that gap: every counter then starts from the server
clock in milliseconds, so tokens keep rising even after a total loss (under the same clock
condition), at the price of large token numbers. Use it when Redis runs without AOF.

Persistence, eviction, replication and failover
-----------------------------------------------
What a restart keeps decides what survives it. Without persistence a restart drops every live
lease, so a successor can claim at once while the old holder works on until its next renewal
fails (up to a heartbeat, plus the grace its work needs to stop), and it drops every counter
(see above). RDB snapshots alone restore counters and leases as of the last snapshot: tokens
already handed out are handed out again, and a lease restored with an older expiry ends before
its holder's deadline. Mutual exclusion and fencing across restarts therefore need
``appendonly yes`` with ``appendfsync always`` (with ``everysec`` a crash of the host, not of
Redis alone, can lose the last second of writes). They also need ``maxmemory-policy
noeviction``: evicting a counter loses it, and evicting a *lease* (the ``volatile-*`` policies
prefer keys with a TTL) lets a second node claim while the holder still works. The backend
logs a warning on its first connection when the server's configuration (``CONFIG GET``, where
permitted) shows any of these risks.

Redis replication is asynchronous. A replica promoted by Sentinel or Cluster failover may lack
the last writes the old primary acknowledged: it can grant a lease that is still held (two
masters at once, until the old holder's renew deadline stops it) and it can grant a token that
was already granted. Mutual exclusion therefore holds only while the primary survives; across a
failover the fencing token is the defence, and it is reliable only if the promoted replica had
every counter update (``WAIT`` is not used: it narrows the window, but Redis does not promise
that a write acknowledged by replicas survives a failover). Each member's clock
must also agree with the others within the safety margin, as for any backend clock step. The
backend talks to exactly the server in its URL: a read-only replica refuses every write, which
is reported as an error. Redis Cluster is not supported (the scripts use keys of several slots).

Timeouts and connections
------------------------
A backend is picklable configuration. Each process makes its own connections on first use: one
for commands, used by one thread at a time under a lock, and one dedicated pub/sub connection
for ``wait_for_release``, with a lock of its own. Every call arms the socket's connect, write and
read timeouts with what is left of its own timeout (capped by ``socket_connect_timeout`` and
``socket_timeout`` when given), so a frozen server costs a call its timeout and no more. After
any error the connection is dropped; before reusing an idle one the backend checks that the
server has not closed it, so the first call after a restart already reconnects. Host name
resolution is the one part a socket timeout cannot bound. Every driver exception becomes a
``BackendError`` in ``_run``, and no message ever contains the password.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import socket
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast
from urllib.parse import quote

import redis
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, NoScriptError, ReadOnlyError, RedisError, ResponseError
from redis.retry import Retry
from returns.io import IOFailure, IOResult, IOSuccess
from returns.result import Failure, Result, Success

from gomaster.backends.url import REDACTED, BackendURL
from gomaster.core.decide import Claim
from gomaster.core.errors import BackendError, Conflict, Lost
from gomaster.core.record import MAX_TOKEN, LockRecord, MalformedRecord, Observation, parse_record

__all__ = ["DEFAULT_PORT", "DEFAULT_PREFIX", "RedisBackend", "from_url"]

DEFAULT_HOST = "localhost"
DEFAULT_PORT = 6379
DEFAULT_PREFIX = "gomaster"
#: Upper bound on one connection attempt; a call's own timeout lowers it further.
DEFAULT_CONNECT_TIMEOUT = 5.0
#: ``first_token`` values: new names start at 1, or at the server clock in milliseconds.
FIRST_TOKEN_ONE = "1"
FIRST_TOKEN_CLOCK = "clock"
SCHEMES = ("redis", "rediss")
MAX_PREFIX_LENGTH = 100
_PREFIX = re.compile(r"^[A-Za-z0-9_.:-]+$")
#: A socket timeout once the deadline has passed: enough to drain bytes already received.
_MIN_SOCKET_TIMEOUT = 0.001
#: Socket timeouts overflow on an infinite budget; no call needs more than a day.
_MAX_SECONDS = 86400.0
#: How long ``close()`` lets a connection's goodbye take.
_CLOSE_TIMEOUT = 0.5
_MS = 1000
_MAX_PORT = 65535
_MAX_DB = 1 << 31
_FIELDS = ("holder", "version", "token", "acquired_at", "renewed_at", "expires_at", "host", "pid")
_WHOLE = re.compile(r"^-?[0-9]+$")
_DIGITS = re.compile(r"^[0-9]{1,10}$")
_CANONICAL = re.compile(r"^(0|[1-9][0-9]*)$")
_SSL_REQS = ("none", "optional", "required")

_T = TypeVar("_T")
_log = logging.getLogger("gomaster")


# -- the scripts ---------------------------------------------------------------------------

_PREAMBLE = r"""
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function text(ms) return string.format('%d', ms) end
local function canonical(s)
  return type(s) == 'string' and #s <= 19 and (s == '0' or string.match(s, '^[1-9]%d*$') ~= nil)
end
local function larger(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end
local function kind(key) return redis.call('TYPE', key)['ok'] end
local function lease_of(key)
  local k = kind(key)
  if k == 'none' then return false end
  if k ~= 'hash' then return nil, 'lease key ' .. key .. ' holds a ' .. k .. ', not a hash' end
  local f = redis.call('HMGET', key, 'holder', 'token', 'expires_at')
  local expires = tonumber(f[3])
  if not canonical(f[2]) then return nil, 'lease ' .. key .. ' has no valid token' end
  if not expires or expires ~= expires or math.abs(expires) == math.huge then
    return nil, 'lease ' .. key .. ' has no valid expires_at'
  end
  return {holder = f[1] or '', token = f[2], expires = expires}
end
"""

#: KEYS: lease, counter. Returns {now ms, lease type, counter type, counter or nil, lease fields}.
_OBSERVE = r"""
local now = now_ms()
local lease_kind, counter_kind = kind(KEYS[1]), kind(KEYS[2])
local counter = false
if counter_kind == 'string' then counter = redis.call('GET', KEYS[2]) end
local fields = {}
if lease_kind == 'hash' then fields = redis.call('HGETALL', KEYS[1]) end
return {now, lease_kind, counter_kind, counter, fields}
"""

#: KEYS: lease, counter, registry. ARGV: member, expected token ('' for a first claim), expected
#: holder, new token, holder, version, host, pid, ttl ms, '1' to start new counters at the clock.
_CLAIM = r"""
local now = now_ms()
local lease, problem = lease_of(KEYS[1])
if problem then return {'corrupt', problem} end
local counter_kind = kind(KEYS[2])
local counter = false
if counter_kind == 'string' then
  counter = redis.call('GET', KEYS[2])
  if not canonical(counter) then
    return {'corrupt', 'token counter ' .. KEYS[2] .. ' is not a whole number'}
  end
elseif counter_kind ~= 'none' then
  return {'corrupt', 'token counter ' .. KEYS[2] .. ' holds a ' .. counter_kind .. ', not a string'}
end
local registry_kind = kind(KEYS[3])
local registry_ok = registry_kind == 'set' or registry_kind == 'none'
local first = ARGV[2] == ''
local why = false
if counter then
  if lease and larger(lease.token, counter) then why = 'behind' end
elseif lease then why = 'lease'
elseif registry_kind == 'set' and redis.call('SISMEMBER', KEYS[3], ARGV[1]) == 1 then why = 'registered'
elseif not first then why = 'expected'
elseif ARGV[10] == '1' then why = 'clock'
end
if why then
  local seed = text(now)
  if lease and larger(lease.token, seed) then seed = lease.token end
  if counter and larger(counter, seed) then seed = counter end
  if not first and canonical(ARGV[2]) and larger(ARGV[2], seed) then seed = ARGV[2] end
  redis.call('SET', KEYS[2], seed)
  if registry_ok then redis.call('SADD', KEYS[3], ARGV[1]) end
  return {'seeded', seed, why}
end
if first then
  if counter then return {'conflict'} end
else
  if counter ~= ARGV[2] then return {'conflict'} end
  local holder = ''
  if lease then holder = lease.holder end
  if holder ~= ARGV[3] then return {'conflict'} end
  if lease and lease.expires > now then return {'conflict'} end
end
local expires = now + tonumber(ARGV[9])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'holder', ARGV[5], 'version', ARGV[6], 'token', ARGV[4],
  'acquired_at', text(now), 'renewed_at', text(now), 'expires_at', text(expires),
  'host', ARGV[7], 'pid', ARGV[8])
redis.call('PEXPIREAT', KEYS[1], text(expires))
redis.call('SET', KEYS[2], ARGV[4])
if registry_ok then redis.call('SADD', KEYS[3], ARGV[1]) end
return {'ok', now, expires}
"""

#: KEYS: lease. ARGV: holder, token, ttl ms. Returns {'ok', now, lease fields} or {'lost'}.
_RENEW = r"""
local now = now_ms()
local lease, problem = lease_of(KEYS[1])
if problem then return {'corrupt', problem} end
if not lease or lease.holder == '' or lease.holder ~= ARGV[1] or lease.token ~= ARGV[2]
    or lease.expires <= now then
  return {'lost'}
end
local expires = now + tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'renewed_at', text(now), 'expires_at', text(expires))
redis.call('PEXPIREAT', KEYS[1], text(expires))
return {'ok', now, redis.call('HGETALL', KEYS[1])}
"""

#: KEYS: lease. ARGV: holder, token, channel. The lease stays (released) until its old expiry.
_RELEASE = r"""
local now = now_ms()
local lease, problem = lease_of(KEYS[1])
if problem then return {'corrupt', problem} end
if not lease or lease.holder == '' or lease.holder ~= ARGV[1] or lease.token ~= ARGV[2] then
  return {'unchanged'}
end
redis.call('HSET', KEYS[1], 'holder', '', 'expires_at', text(math.min(lease.expires, now)))
redis.call('PUBLISH', ARGV[3], ARGV[2])
return {'done'}
"""

#: KEYS: lease. ARGV: holder, token. Token, expiry and the key's TTL stay.
_REVOKE = r"""
local lease, problem = lease_of(KEYS[1])
if problem then return {'corrupt', problem} end
if not lease or lease.holder == '' or lease.holder ~= ARGV[1] or lease.token ~= ARGV[2] then
  return {'unchanged'}
end
redis.call('HSET', KEYS[1], 'holder', '')
return {'done'}
"""


#: KEYS: lease, counter, registry. ARGV: member, hold ms, token floor. Rewrites the lease as
#: released until now + hold whatever it held (wrong type, garbage fields); the token is the
#: largest valid one of lease and counter, the clock in ms when neither is valid, and at least
#: the floor; the counter is set to it, so the next claim counts on from there.
_REPAIR = r"""
local now = now_ms()
local lease_kind, counter_kind = kind(KEYS[1]), kind(KEYS[2])
if lease_kind == 'none' and counter_kind == 'none' then return {'absent'} end
local best = false
local function consider(s)
  if canonical(s) and (not best or larger(s, best)) then best = s end
end
if lease_kind == 'hash' then consider(redis.call('HGET', KEYS[1], 'token')) end
if counter_kind == 'string' then consider(redis.call('GET', KEYS[2])) end
if not best then best = text(now) end
if larger(ARGV[3], best) then best = ARGV[3] end
local expires = now + tonumber(ARGV[2])
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('HSET', KEYS[1], 'holder', '', 'version', '', 'token', best, 'acquired_at', text(now),
  'renewed_at', text(now), 'expires_at', text(expires), 'host', '', 'pid', '0')
redis.call('PEXPIREAT', KEYS[1], text(expires))
redis.call('SET', KEYS[2], best)
local registry_kind = kind(KEYS[3])
if registry_kind == 'set' or registry_kind == 'none' then redis.call('SADD', KEYS[3], ARGV[1]) end
return {'done', best}
"""


@dataclass(frozen=True, slots=True)
class _Script:
    """A Lua script with the SHA1 that ``EVALSHA`` names it by."""

    text: str
    sha: str

    @classmethod
    def of(cls, body: str) -> _Script:
        text = _PREAMBLE + body
        return cls(text, hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest())


OBSERVE = _Script.of(_OBSERVE)
CLAIM = _Script.of(_CLAIM)
RENEW = _Script.of(_RENEW)
RELEASE = _Script.of(_RELEASE)
REVOKE = _Script.of(_REVOKE)
REPAIR = _Script.of(_REPAIR)


# -- configuration -------------------------------------------------------------------------


class _SettingError(ValueError):
    """A configuration value that cannot work; its message says what to write instead."""


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _text_option(key: str, value: object) -> str:
    if not isinstance(value, str):
        raise _SettingError(f"option {key} must be text, not {type(value).__name__}")
    return value


def _bool_option(key: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
        return value.lower() in _TRUE
    raise _SettingError(f"option {key}={value!r} is not a boolean; use true or false")


def _seconds_option(key: str, value: object) -> float:
    seconds = -1.0
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        with contextlib.suppress(ValueError):
            seconds = float(value)
    if not 0 < seconds <= _MAX_SECONDS:
        raise _SettingError(f"option {key}={value!r} must be a positive number of seconds, at most a day")
    return seconds


def _file_option(key: str, value: object) -> str:
    path = _text_option(key, value)
    if not Path(path).exists():
        raise _SettingError(f"option {key}: {path} does not exist")
    return path


def _cert_reqs_option(key: str, value: object) -> str:
    reqs = _text_option(key, value).lower()
    if reqs not in _SSL_REQS:
        raise _SettingError(f"option {key}={value!r} must be one of {', '.join(_SSL_REQS)}")
    return reqs


#: Query parameters passed on to redis-py, with how to read each from a URL.
DRIVER_OPTIONS: dict[str, Callable[[str, object], object]] = {
    "client_name": _text_option,
    "socket_keepalive": _bool_option,
}
#: TLS options, for ``rediss://`` only.
TLS_OPTIONS: dict[str, Callable[[str, object], object]] = {
    "ssl_cert_reqs": _cert_reqs_option,
    "ssl_ca_certs": _file_option,
    "ssl_ca_path": _file_option,
    "ssl_certfile": _file_option,
    "ssl_keyfile": _file_option,
    "ssl_password": _text_option,
    "ssl_check_hostname": _bool_option,
}
#: gomaster's own query parameters.
OWN_OPTIONS = ("prefix", "first_token", "socket_connect_timeout", "socket_timeout")
#: redis-py options this backend decides itself, and why.
_MANAGED = {
    "db": "give the database number as the URL's path, e.g. redis://host:6379/2",
    "decode_responses": "the backend decodes replies itself",
    "protocol": "the backend speaks RESP2",
    "health_check_interval": "an idle connection is checked before every call anyway",
    "retry_on_timeout": "the driver never retries a step; the elector decides what to do next",
    "retry_on_error": "the driver never retries a step; the elector decides what to do next",
    "max_connections": "each process uses one command connection and one pub/sub connection",
    "single_connection_client": "each process uses one command connection already",
}
_SECRET_OPTIONS = ("ssl_password",)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Settings:
    """Everything a process needs to reach the server: plain, picklable, printed without secrets."""

    tls: bool = False
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    prefix: str = DEFAULT_PREFIX
    first_token: str = FIRST_TOKEN_ONE
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    read_timeout: float | None = None
    options: tuple[tuple[str, object], ...] = field(default=(), repr=False)

    @property
    def where(self) -> str:
        """``host:port`` for messages (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def secrets(self) -> list[str]:
        """Strings that must never appear in a URL, repr or message."""
        found = [self.password] if self.password else []
        found += [str(v) for k, v in self.options if k in _SECRET_OPTIONS and v]
        return found + [quote(s, safe="") for s in found if quote(s, safe="") != s]

    @property
    def redacted_url(self) -> str:
        """The settings as a URL a user may see: the password and secret options as ``***``."""
        auth = ""
        if self.username or self.password is not None:
            auth = quote(self.username or "", safe="") + (f":{REDACTED}" if self.password is not None else "")
            auth += "@"
        query: list[tuple[str, object]] = []
        if self.prefix != DEFAULT_PREFIX:
            query.append(("prefix", self.prefix))
        if self.first_token != FIRST_TOKEN_ONE:
            query.append(("first_token", self.first_token))
        if self.connect_timeout != DEFAULT_CONNECT_TIMEOUT:
            query.append(("socket_connect_timeout", self.connect_timeout))
        if self.read_timeout is not None:
            query.append(("socket_timeout", self.read_timeout))
        query += [(k, REDACTED if k in _SECRET_OPTIONS else v) for k, v in self.options]
        tail = "&".join(f"{k}={quote(str(v), safe='/:.')}" for k, v in query)
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{auth}{self.where}/{self.db}" + (f"?{tail}" if tail else "")


def _whole_option(key: str, value: object, limit: int) -> int:
    number = -1
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and _DIGITS.match(value):
        number = int(value)
    if not 0 <= number <= limit:
        raise _SettingError(f"{key} {value!r} must be a whole number from 0 to {limit}")
    return number


def _settings(url: BackendURL, given: Mapping[str, object]) -> _Settings:
    """Merge a URL with keyword overrides into checked settings, or raise ``_SettingError``."""
    db_text = url.path.removeprefix("/")
    parts: dict[str, object] = {
        "host": url.host,
        "port": url.port,
        "db": db_text or None,
        "username": url.username or None,
        "password": url.password,
    }
    options: dict[str, object] = dict(url.query)
    for key, value in given.items():
        if value is None:
            continue
        if key in parts:
            parts[key] = value
        else:
            options[key] = value
    tls = url.scheme == "rediss"
    prefix = _text_option("prefix", options.pop("prefix", DEFAULT_PREFIX))
    if not _PREFIX.match(prefix) or len(prefix) > MAX_PREFIX_LENGTH:
        raise _SettingError(
            f"key prefix {prefix!r} is not allowed: use letters, digits, '_', '-', ':' and '.', "
            f"1 to {MAX_PREFIX_LENGTH} characters"
        )
    first_token = str(options.pop("first_token", FIRST_TOKEN_ONE)).lower()
    if first_token not in (FIRST_TOKEN_ONE, FIRST_TOKEN_CLOCK):
        raise _SettingError(
            f"option first_token={first_token!r} must be 1 (new names start at token 1) or clock "
            "(every counter starts at the server clock in milliseconds)"
        )
    read_timeout = options.pop("socket_timeout", None)
    username, password = parts["username"], parts["password"]
    settings = _Settings(
        tls=tls,
        host=_text_option("host", parts["host"] or DEFAULT_HOST),
        port=_whole_option("port", parts["port"] or DEFAULT_PORT, _MAX_PORT),
        db=_whole_option("database number", parts["db"] or 0, _MAX_DB),
        username=None if username is None else _text_option("username", username),
        password=None if password is None else _text_option("password", password),
        prefix=prefix,
        first_token=first_token,
        connect_timeout=_seconds_option(
            "socket_connect_timeout", options.pop("socket_connect_timeout", DEFAULT_CONNECT_TIMEOUT)
        ),
        read_timeout=None if read_timeout is None else _seconds_option("socket_timeout", read_timeout),
    )
    driver: list[tuple[str, object]] = []
    for key, value in options.items():
        if key in _MANAGED:
            raise _SettingError(f"option {key} cannot be set: {_MANAGED[key]}")
        reader = DRIVER_OPTIONS.get(key) or (TLS_OPTIONS.get(key) if tls else None)
        if reader is None:
            if key in TLS_OPTIONS:
                raise _SettingError(f"option {key} needs TLS: use a rediss:// URL (or tls=True)")
            known = ", ".join((*OWN_OPTIONS, *DRIVER_OPTIONS, *TLS_OPTIONS))
            raise _SettingError(f"unknown Redis option {key!r}; known options: {known}")
        driver.append((key, reader(key, value)))
    return replace(settings, options=tuple(driver))


# -- keys and values -------------------------------------------------------------------------


def _encode(text: str) -> bytes:
    """Text as stored: UTF-8, with lone surrogates kept (a name is never refused late)."""
    return text.encode("utf-8", "surrogatepass")


def _decode(value: object) -> object:
    """Stored bytes as text; anything that is not valid UTF-8 stays bytes for the parser to refuse."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            return value
    return value


@dataclass(frozen=True, slots=True)
class RedisKeys:
    """Where one lock name lives on the server (see the module documentation)."""

    lease: str
    counter: str
    registry: str
    channel: str
    member: str


def _registry(prefix: str) -> str:
    return f"{prefix}:names"


def _keys(prefix: str, name: str) -> RedisKeys:
    member = _encode(name).hex()
    return RedisKeys(
        lease=f"{prefix}:lease:{member}",
        counter=f"{prefix}:token:{member}",
        registry=_registry(prefix),
        channel=f"{prefix}:released:{member}",
        member=member,
    )


def _whole(value: object) -> object:
    """A stored integer as ``int``; anything else passes through for ``parse_record`` to refuse."""
    text = _decode(value)
    if isinstance(text, str) and _WHOLE.match(text):
        return int(text)
    return text


def _fields(flat: object) -> dict[str, object]:
    """A flat ``HGETALL`` reply as the fields ``parse_record`` expects (times in seconds)."""
    fields: dict[str, object] = {}
    if not isinstance(flat, list):
        return fields
    for raw_key, raw_value in zip(flat[::2], flat[1::2], strict=True):
        key = _decode(raw_key)
        if key in ("token", "pid"):
            fields[str(key)] = _whole(raw_value)
        elif key in ("acquired_at", "renewed_at", "expires_at"):
            ms = _whole(raw_value)
            fields[str(key)] = ms / _MS if isinstance(ms, int) else ms
        elif key in _FIELDS:
            fields[str(key)] = _decode(raw_value)
    return fields


def _counter(name: str, key: str, raw: object) -> Result[int | None, MalformedRecord]:
    """The counter's value: None when absent, a failure when it is not a token."""
    if raw is None:
        return Success(None)
    text = _decode(raw)
    if not isinstance(text, str) or not _CANONICAL.match(text) or int(text) >= MAX_TOKEN:
        return Failure(MalformedRecord(name, f"token counter {key} holds {raw!r}, not a token"))
    return Success(int(text))


def _released(token: int) -> dict[str, object]:
    """The record of a lease Redis has dropped: released, with the counter's token, times unknown."""
    return {
        "holder": "",
        "version": "",
        "token": token,
        "acquired_at": 0.0,
        "renewed_at": 0.0,
        "expires_at": 0.0,
        "host": "",
        "pid": 0,
    }


def _milliseconds(seconds: float) -> int:
    """A ttl as whole milliseconds, at least one (``PEXPIREAT`` now would delete the lease)."""
    return max(1, round(seconds * _MS))


# -- connections -----------------------------------------------------------------------------


def _deadline(timeout: float) -> float:
    """The monotonic time a call with ``timeout`` must end by (NaN and negatives: now)."""
    budget = timeout if timeout > 0 else 0.0
    return time.monotonic() + min(budget, _MAX_SECONDS)


def _left(deadline: float, cap: float | None = None) -> float:
    """Seconds until ``deadline`` for a socket timeout, never more than ``cap`` nor less than a ms."""
    left = max(deadline - time.monotonic(), _MIN_SOCKET_TIMEOUT)
    return left if cap is None else min(left, cap)


class _Wire(Protocol):
    """The part of a redis-py ``Connection`` the backend uses, with the types redis-py leaves out."""

    socket_timeout: float | None
    socket_connect_timeout: float | None

    def connect(self) -> None: ...
    def disconnect(self) -> None: ...
    def can_read(self, timeout: float = 0) -> bool: ...
    def send_command(self, *args: object) -> None: ...
    def send_packed_command(self, command: object) -> None: ...
    def pack_commands(self, commands: Sequence[tuple[object, ...]]) -> object: ...
    def read_response(self) -> Any: ...


class _Link:
    """One connection to the server for one process, used by one thread at a time.

    Every call passes a deadline: connecting, writing and reading are all bounded by what is left
    of it. After an error the caller drops the link's connection; the next call reconnects.
    """

    def __init__(self, settings: _Settings) -> None:
        self._settings = settings
        arguments: dict[str, Any] = {
            "host": settings.host,
            "port": settings.port,
            "db": settings.db,
            "username": settings.username,
            "password": settings.password,
            "socket_timeout": settings.read_timeout,
            "socket_connect_timeout": settings.connect_timeout,
            "retry": Retry(NoBackoff(), 0),
            "protocol": 2,
            **dict(settings.options),
        }
        kind = redis.SSLConnection if settings.tls else redis.Connection
        self.conn = cast(_Wire, kind(**arguments))

    def _socket(self) -> socket.socket | None:
        sock = getattr(self.conn, "_sock", None)
        return sock if isinstance(sock, socket.socket) else None

    @property
    def connected(self) -> bool:
        """True while a socket is open (the server may still have closed its end)."""
        return self._socket() is not None

    def ready(self, deadline: float) -> bool:
        """Make sure the connection is open and armed for ``deadline``; True if it is a new one.

        An idle connection with anything to read has been closed by the server (a restart, a
        ``CLIENT KILL``, an idle timeout): it is replaced before a command goes down it.
        """
        if self.connected:
            try:
                stale = self.conn.can_read(0)
            except (RedisError, OSError):
                stale = True
            if not stale:
                self.arm(deadline)
                return False
            self.drop()
        self.open(deadline)
        return True

    def open(self, deadline: float) -> None:
        """Connect (including AUTH and SELECT) before ``deadline``."""
        settings = self._settings
        self.conn.socket_connect_timeout = _left(deadline, settings.connect_timeout)
        self.conn.socket_timeout = _left(deadline, settings.read_timeout)
        self.conn.connect()
        self.arm(deadline)

    def arm(self, deadline: float) -> None:
        """Bound the socket's next writes and reads by ``deadline``."""
        sock = self._socket()
        if sock is not None:
            sock.settimeout(_left(deadline, self._settings.read_timeout))

    def call(self, deadline: float, *args: object) -> Any:
        """Send one command and read its reply, all before ``deadline``."""
        self.ready(deadline)
        self.conn.send_command(*args)
        return self.conn.read_response()

    def calls(self, deadline: float, commands: Sequence[tuple[object, ...]]) -> list[object]:
        """Send several commands in one write; each reply is its value or its error."""
        self.ready(deadline)
        self.conn.send_packed_command(self.conn.pack_commands(commands))
        replies: list[object] = []
        for _ in commands:
            try:
                replies.append(self.conn.read_response())
            except ResponseError as exc:
                replies.append(exc)
        return replies

    def shutdown(self) -> None:
        """Wake a thread blocked reading this connection, which then sees it closed."""
        sock = self._socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def drop(self) -> None:
        """Close the socket without a goodbye: after an error the protocol state is unknown."""
        with contextlib.suppress(RedisError, OSError):
            self.conn.disconnect()


# -- the backend -----------------------------------------------------------------------------

_LIVE: weakref.WeakSet[RedisBackend] = weakref.WeakSet()


def _forget_after_fork() -> None:
    for backend in list(_LIVE):
        backend._after_fork()


os.register_at_fork(after_in_child=_forget_after_fork)


class RedisBackend:
    """Lock records in Redis; picklable configuration that connects lazily in each process.

    Build it from a URL with :func:`from_url` (``connect("redis://:pass@host:6379/0")``) or with
    keywords: ``host``, ``port``, ``db``, ``username``, ``password``, ``tls``, ``prefix`` (of
    every key), ``first_token`` (``1``, or ``"clock"`` to start every counter at the server
    clock), ``socket_connect_timeout``/``socket_timeout`` (caps on every call's own timeout), and
    redis-py options such as ``client_name`` or ``ssl_ca_certs``. Bad settings raise
    ``ValueError`` here, so a typo fails at start-up rather than at the first election.
    """

    def __init__(
        self,
        host: str | None = None,
        port: int | None = None,
        *,
        db: int | None = None,
        username: str | None = None,
        password: str | None = None,
        tls: bool = False,
        prefix: str | None = None,
        first_token: int | str | None = None,
        socket_connect_timeout: float | None = None,
        socket_timeout: float | None = None,
        **driver_options: object,
    ) -> None:
        given: dict[str, object] = {
            "host": host,
            "port": port,
            "db": db,
            "username": username,
            "password": password,
            "prefix": prefix,
            "first_token": None if first_token is None else str(first_token),
            "socket_connect_timeout": socket_connect_timeout,
            "socket_timeout": socket_timeout,
            **driver_options,
        }
        try:
            settings = _settings(BackendURL(scheme="rediss" if tls else "redis"), given)
        except _SettingError as exc:
            raise ValueError(str(exc)) from None
        self._setup(settings)

    @classmethod
    def _of(cls, settings: _Settings) -> RedisBackend:
        backend = cls.__new__(cls)
        backend._setup(settings)
        return backend

    def _setup(self, settings: _Settings) -> None:
        self._settings = settings
        self._url = settings.redacted_url
        self._lock = threading.Lock()
        self._listen_lock = threading.Lock()
        self._link: _Link | None = None
        self._listener: _Listener | None = None
        self._pid = os.getpid()
        self._checked = False
        _LIVE.add(self)

    def __getstate__(self) -> _Settings:
        return self._settings

    def __setstate__(self, state: _Settings) -> None:
        self._setup(state)

    def __repr__(self) -> str:
        return f"RedisBackend({self.url!r})"

    @property
    def url(self) -> str:
        """The configuration as a URL, with the password (and secret options) as ``***``."""
        return self._url

    @property
    def prefix(self) -> str:
        """The prefix of every key this backend uses."""
        return self._settings.prefix

    @property
    def notifies(self) -> bool:
        """Releases are published, so waiters wake at once."""
        return True

    def keys(self, name: str) -> RedisKeys:
        """The keys and channel of lock ``name``, for operators inspecting the server by hand."""
        return _keys(self._settings.prefix, name)

    # -- connection -------------------------------------------------------------------------

    def _after_fork(self) -> None:
        """In a forked child only the forking thread survives, so a lock another thread held
        would stay locked forever: the child gets fresh locks and no connections. Dropping the
        parent's connection objects never closes the parent's sockets (redis-py only closes its
        own process's copy)."""
        self._lock = threading.Lock()
        self._listen_lock = threading.Lock()
        self._link = None
        self._listener = None
        self._pid = os.getpid()
        self._checked = False

    def _run(self, step: str, timeout: float, work: Callable[[_Link, float], _T]) -> Result[_T, BackendError]:
        """Do ``work`` on this process's link within ``timeout``: the one place where driver errors
        become ``BackendError``. Any error drops the connection, so the next call reconnects."""
        deadline = _deadline(timeout)
        if not self._lock.acquire(timeout=max(deadline - time.monotonic(), 0.0)):
            return Failure(self._error(step, timeout, TimeoutError("another thread's call is still running")))
        link: _Link | None = None
        try:
            if self._pid != os.getpid():
                self._after_fork_in_place()
            link = self._link if self._link is not None else _Link(self._settings)
            self._link = link
            if link.ready(deadline) and not self._checked:
                self._check_configuration(link, deadline)
            return Success(work(link, deadline))
        except (RedisError, OSError, UnicodeError) as exc:
            if link is not None:
                link.drop()
            return Failure(self._error(step, timeout, exc))
        except BaseException:
            if link is not None:
                link.drop()
            raise
        finally:
            self._lock.release()

    def _after_fork_in_place(self) -> None:
        """A backend unpickled or copied into another process without a fork hook: forget the link."""
        self._link, self._listener, self._pid, self._checked = None, None, os.getpid(), False

    def _error(self, step: str, timeout: float, exc: BaseException) -> BackendError:
        """What went wrong, naming the server and the cause, and never the password."""
        where = self._settings.where
        if isinstance(exc, redis.TimeoutError | TimeoutError | socket.timeout):
            message = (
                f"{step} did not finish within {timeout:.3f} s on {where} ({exc}); the connection was dropped"
            )
        elif isinstance(exc, AuthenticationError):
            message = f"authentication failed on {where}: check the user name and password ({exc})"
        elif isinstance(exc, ReadOnlyError):
            message = f"{step} refused by {where}, a read-only replica: point the URL at the primary ({exc})"
        elif isinstance(exc, redis.ConnectionError):
            message = f"cannot reach {where} during {step}: {exc}"
        elif isinstance(exc, ResponseError):
            message = f"{step} failed on {where}: {exc}"
        else:
            message = f"{step} failed on {where}: {type(exc).__name__}: {exc}"
        for secret in self._settings.secrets():
            message = message.replace(secret, REDACTED)
        return BackendError(self.url, message)

    def _check_configuration(self, link: _Link, deadline: float) -> None:
        """Warn once when the server can lose or roll back counters or evict leases.

        ``CONFIG`` may be renamed, disabled or denied by ACL: then nothing is known and nothing
        is said. Connection errors propagate, failing the call that connected.
        """
        replies = link.calls(
            deadline,
            [
                ("CONFIG", "GET", "appendonly"),
                ("CONFIG", "GET", "save"),
                ("CONFIG", "GET", "maxmemory-policy"),
            ],
        )
        self._checked = True
        values: list[str | None] = []
        for reply in replies:
            found = _decode(reply[1]) if isinstance(reply, list) and len(reply) == 2 else None
            values.append(found if isinstance(found, str) else None)
        appendonly, save, policy = values
        where = self._settings.where
        counters = (
            "restarts token counters from the server clock"
            if self._settings.first_token == FIRST_TOKEN_CLOCK
            else "loses the token counters, so tokens start again at 1 (unless ?first_token=clock)"
        )
        if appendonly is not None and save is not None and appendonly != "yes":
            if not save.strip():
                _log.warning(
                    "Redis at %s has no persistence (appendonly no, save ''): a restart drops live "
                    "leases, so a successor may start before the old holder stops, and %s; "
                    "use appendonly yes with appendfsync always",
                    where,
                    counters,
                )
            else:
                _log.warning(
                    "Redis at %s keeps only RDB snapshots (save %r): a restart rolls leases and token "
                    "counters back to the last snapshot, so fencing tokens can repeat; use appendonly "
                    "yes with appendfsync always",
                    where,
                    save,
                )
        if policy is not None and policy != "noeviction":
            _log.warning(
                "Redis at %s evicts keys (maxmemory-policy %s): a lease can vanish while its holder "
                "still works, or a token counter can be lost; set maxmemory-policy noeviction",
                where,
                policy,
            )

    def _script(
        self, step: str, timeout: float, script: _Script, keys: Sequence[str], args: Sequence[object]
    ) -> Result[list[object], BackendError]:
        """Run ``script`` in one round trip (``EVAL`` only when the server does not know it yet)."""

        def run(link: _Link, deadline: float) -> object:
            try:
                return link.call(deadline, "EVALSHA", script.sha, len(keys), *keys, *args)
            except NoScriptError:
                return link.call(deadline, "EVAL", script.text, len(keys), *keys, *args)

        reply = self._run(step, timeout, run)
        if isinstance(reply, Failure):
            return Failure(reply.failure())
        found = reply.unwrap()
        if not isinstance(found, list) or not found:
            return Failure(BackendError(self.url, f"{step} got an unexpected reply: {found!r}"))
        return Success([_decode(item) if isinstance(item, bytes) else item for item in found])

    # -- the steps --------------------------------------------------------------------------

    def observe(self, name: str, timeout: float) -> IOResult[Observation, BackendError | MalformedRecord]:
        """One script: ``TIME``, the lease hash and the counter, read together.

        A lease Redis has dropped (expired) reads as released with the counter's token, and a
        released or expired lease carries the counter's token, so the next claim is always
        ``counter + 1``. A key of the wrong type or a field that is not what it should be is a
        ``MalformedRecord``, never an exception.
        """
        keys = self.keys(name)
        reply = self._script("observe", timeout, OBSERVE, (keys.lease, keys.counter), ())
        if isinstance(reply, Failure):
            return IOFailure(reply.failure())
        answer = reply.unwrap()
        if len(answer) != 5 or isinstance(answer[0], bool) or not isinstance(answer[0], int):
            return IOFailure(BackendError(self.url, f"observe got an unexpected reply: {answer!r}"))
        now_ms: int = answer[0]
        lease_kind, counter_kind, raw_counter, flat = answer[1:]
        server_now = now_ms / _MS
        if lease_kind not in ("none", "hash"):
            return IOFailure(
                MalformedRecord(name, f"lease key {keys.lease} holds a {lease_kind}, not a hash")
            )
        if counter_kind not in ("none", "string"):
            return IOFailure(
                MalformedRecord(name, f"token counter {keys.counter} holds a {counter_kind}, not a string")
            )
        counter = _counter(name, keys.counter, raw_counter)
        if isinstance(counter, Failure):
            return IOFailure(counter.failure())
        token = counter.unwrap()
        if lease_kind == "none":
            if token is None:
                return IOSuccess(Observation(None, server_now))
            fields = _released(token)
        else:
            fields = _fields(flat)
        parsed = parse_record(name, fields)
        if isinstance(parsed, Failure):
            return IOFailure(parsed.failure())
        record = parsed.unwrap()
        if token is not None and token > record.token and not record.live_at(server_now):
            record = replace(record, token=token)
        return IOSuccess(Observation(record, server_now))

    def claim(self, claim: Claim, timeout: float) -> IOResult[LockRecord, Conflict | BackendError]:
        """Compare-and-set on the counter, in one script judged by ``TIME`` (see the module doc).

        A claim that finds the counter lost restarts it from the server clock and reports a
        ``Conflict``, so the elector observes the restarted counter and claims the next token.
        """
        expected = claim.expected
        if expected is not None and claim.token != expected.token + 1:
            return IOFailure(Conflict(claim.name))
        if not 0 < claim.token < MAX_TOKEN:
            return IOFailure(Conflict(claim.name))
        me = claim.node
        keys = self.keys(claim.name)
        ttl_ms = _milliseconds(claim.ttl)
        args: list[object] = [
            keys.member,
            "" if expected is None else str(expected.token),
            b"" if expected is None else _encode(expected.holder),
            str(claim.token),
            _encode(me.node_id),
            _encode(me.version),
            _encode(me.host),
            str(me.pid),
            str(ttl_ms),
            "1" if self._settings.first_token == FIRST_TOKEN_CLOCK else "0",
        ]
        reply = self._script("claim", timeout, CLAIM, (keys.lease, keys.counter, keys.registry), args)
        if isinstance(reply, Failure):
            return IOFailure(reply.failure())
        answer = reply.unwrap()
        match answer:
            case ["ok", int(now), int(expires)]:
                return IOSuccess(
                    LockRecord(
                        name=claim.name,
                        holder=me.node_id,
                        version=me.version,
                        token=claim.token,
                        acquired_at=now / _MS,
                        renewed_at=now / _MS,
                        expires_at=expires / _MS,
                        host=me.host,
                        pid=me.pid,
                    )
                )
            case ["conflict"]:
                return IOFailure(Conflict(claim.name))
            case ["seeded", str(seed), str(why)]:
                self._report_seed(claim.name, seed, why)
                return IOFailure(Conflict(claim.name))
            case ["corrupt", str(problem)]:
                return IOFailure(BackendError(self.url, f"claim of {claim.name!r} refused: {problem}"))
        return IOFailure(BackendError(self.url, f"claim got an unexpected reply: {answer!r}"))

    def _report_seed(self, name: str, seed: str, why: str) -> None:
        if why == "clock":
            _log.debug("token counter of lock %r starts at the server clock: %s", name, seed)
            return
        evidence = {
            "lease": "its lease still exists",
            "registered": f"it is listed in {_registry(self._settings.prefix)}",
            "expected": "a claimant had observed an earlier record",
            "behind": "it was below the lease's token",
        }.get(why, why)
        _log.warning(
            "token counter of lock %r on %s was lost (%s: a restart without persistence, a flush, "
            "eviction or a manual change); restarted it from the server clock at %s so tokens keep rising",
            name,
            self._settings.where,
            evidence,
            seed,
        )

    def renew(
        self, record: LockRecord, ttl: float, timeout: float
    ) -> IOResult[LockRecord, Lost | BackendError]:
        """Extend only our own lease, and only while it is unexpired by ``TIME``."""
        keys = self.keys(record.name)
        args = (_encode(record.holder), str(record.token), str(_milliseconds(ttl)))
        reply = self._script("renew", timeout, RENEW, (keys.lease,), args)
        if isinstance(reply, Failure):
            return IOFailure(reply.failure())
        answer = reply.unwrap()
        match answer:
            case ["ok", int(), list(flat)]:
                parsed = parse_record(record.name, _fields(flat))
                if isinstance(parsed, Failure):
                    return IOFailure(
                        BackendError(
                            self.url, f"renew wrote a record that reads back wrong: {parsed.failure()}"
                        )
                    )
                return IOSuccess(parsed.unwrap())
            case ["lost"]:
                return IOFailure(Lost(record))
            case ["corrupt", str(problem)]:
                return IOFailure(BackendError(self.url, f"renew of {record.name!r} refused: {problem}"))
        return IOFailure(BackendError(self.url, f"renew got an unexpected reply: {answer!r}"))

    def _change(
        self, step: str, script: _Script, record: LockRecord, timeout: float
    ) -> IOResult[bool, BackendError]:
        keys = self.keys(record.name)
        args: tuple[object, ...] = (_encode(record.holder), str(record.token))
        if script is RELEASE:
            args += (keys.channel,)
        reply = self._script(step, timeout, script, (keys.lease,), args)
        if isinstance(reply, Failure):
            return IOFailure(reply.failure())
        answer = reply.unwrap()
        match answer:
            case ["done"]:
                return IOSuccess(True)
            case ["unchanged"]:
                return IOSuccess(False)
            case ["corrupt", str(problem)]:
                return IOFailure(BackendError(self.url, f"{step} of {record.name!r} refused: {problem}"))
        return IOFailure(BackendError(self.url, f"{step} got an unexpected reply: {answer!r}"))

    def release(self, record: LockRecord, timeout: float) -> IOResult[bool, BackendError]:
        """Mark the lease released if it is still exactly ``record``'s, and publish the release.

        The token stays (in the lease and the counter); the released lease stays readable until
        its old expiry, after which observe reports the same token from the counter.
        """
        return self._change("release", RELEASE, record, timeout)

    def revoke(self, record: LockRecord, timeout: float) -> IOResult[bool, BackendError]:
        """The operator's release: clear the holder if it is still ``record``'s, keeping token,
        expiry and the key's TTL, so nobody claims before the holder's own deadline has passed."""
        return self._change("revoke", REVOKE, record, timeout)

    def repair(
        self, name: str, hold: float, token_floor: int, timeout: float
    ) -> IOResult[int | None, BackendError]:
        """Rewrite lease and counter as released until ``hold`` from now, in one script (see
        ``LockBackend.repair``); a lease key of the wrong type is replaced too."""
        keys = self.keys(name)
        args = (keys.member, str(round(hold * _MS)), str(max(token_floor, 0)))
        reply = self._script("repair", timeout, REPAIR, (keys.lease, keys.counter, keys.registry), args)
        if isinstance(reply, Failure):
            return IOFailure(reply.failure())
        match reply.unwrap():
            case ["absent"]:
                return IOSuccess(None)
            case ["done", str(token)] if _CANONICAL.match(token):
                return IOSuccess(int(token))
            case answer:
                return IOFailure(BackendError(self.url, f"repair got an unexpected reply: {answer!r}"))

    def wait_for_release(self, name: str, timeout: float) -> IOResult[bool, BackendError]:
        """Block up to ``timeout`` on this process's pub/sub connection for ``name``'s release.

        The first wait for a name subscribes to its channel, and the subscription is kept, so a
        release published between two waits still wakes the next one. True when a release
        message came, False on timeout, a failure when the connection broke.
        """
        with self._listen_lock:
            if self._pid != os.getpid():
                self._after_fork_in_place()
            listener = self._listener
            if listener is None:
                listener = self._listener = _Listener(self._settings, self._error)
        return IOResult.from_result(listener.wait(self.keys(name).channel, timeout))

    def names(self, timeout: float) -> IOResult[list[str], BackendError]:
        """Every lock name ever claimed under this prefix, sorted."""
        registry = _registry(self._settings.prefix)
        members = self._run(
            "names", timeout, lambda link, deadline: link.call(deadline, "SMEMBERS", registry)
        )
        return IOResult.from_result(members.map(_names))

    def close(self) -> None:
        """Close this process's connections; the object reconnects if used again."""
        with self._lock:
            link, listener, self._link, self._listener = self._link, self._listener, None, None
            mine = self._pid == os.getpid()
        if not mine:
            return
        if link is not None:
            link.arm(time.monotonic() + _CLOSE_TIMEOUT)
            link.drop()
        if listener is not None:
            listener.close()


def _names(members: object) -> list[str]:
    """Registry members (hex) back as lock names; anything that is not one is skipped."""
    found: list[str] = []
    for member in members if isinstance(members, list) else ():
        if not isinstance(member, bytes):
            continue
        try:
            found.append(bytes.fromhex(member.decode("ascii")).decode("utf-8", "surrogatepass"))
        except ValueError:
            continue
    return sorted(found)


class _Listener:
    """This process's pub/sub connection: one waiter reads it while the others wait for what it reads.

    ``released`` counts the release messages seen per channel. A waiter notes its channel's
    count, then either reads the socket itself (when no one else is) or waits for the reader to
    signal; it returns True as soon as the count moves. Subscriptions are kept for the life of
    the connection and renewed after a reconnect.
    """

    def __init__(
        self, settings: _Settings, error: Callable[[str, float, BaseException], BackendError]
    ) -> None:
        self._link = _Link(settings)
        self._error = error
        self._cond = threading.Condition()
        self._wanted: set[str] = set()
        self._live = False
        self._released: dict[bytes, int] = {}
        self._reading = False
        self._closed = False

    def wait(self, channel: str, timeout: float) -> Result[bool, BackendError]:
        """True once a release is published on ``channel``; False when ``timeout`` runs out.

        The count is noted before anything is read, so a release that arrived since the last
        wait (still buffered, or drained while checking the connection) wakes this one at once.
        """
        deadline = _deadline(timeout)
        key = channel.encode()
        with self._cond:
            seen = self._released.get(key, 0)
            if self._closed:
                return Success(False)
            try:
                self._subscribe(channel, deadline)
            except (RedisError, OSError) as exc:
                self._broken()
                return Failure(self._error("wait_for_release", timeout, exc))
            while self._released.get(key, 0) == seen:
                if time.monotonic() >= deadline or not self._live:
                    return Success(False)
                if self._reading:
                    self._cond.wait(deadline - time.monotonic())
                    continue
                self._reading = True
                try:
                    self._cond.release()
                    try:
                        heard = self._read(deadline)
                    finally:
                        self._cond.acquire()
                except (RedisError, OSError) as exc:
                    self._broken()
                    if self._closed:
                        return Success(False)
                    return Failure(self._error("wait_for_release", timeout, exc))
                finally:
                    self._reading = False
                    self._cond.notify_all()
                self._count(heard)
            return Success(True)

    def _subscribe(self, channel: str, deadline: float) -> None:
        """Subscribe without waiting for the confirmation (the reader skips it): Redis orders the
        SUBSCRIBE before any PUBLISH that reaches it later. An idle connection is drained first,
        which also finds one the server has closed; a new connection subscribes to every channel
        wanted so far."""
        new = channel not in self._wanted
        self._wanted.add(channel)
        if self._live and self._link.connected and not self._reading:
            try:
                self._drain(deadline)
            except (RedisError, OSError):
                self._live = False
        if self._live and self._link.connected:
            if new:
                self._link.conn.send_command("SUBSCRIBE", channel)
            return
        self._link.drop()
        self._link.open(deadline)
        self._link.conn.send_command("SUBSCRIBE", *sorted(self._wanted))
        self._live = True

    def _drain(self, deadline: float) -> None:
        """Count every reply already waiting on the idle connection; raise if it was closed."""
        conn = self._link.conn
        while conn.can_read(0):
            self._link.arm(deadline)
            self._count([channel for channel in [_release_channel(conn.read_response())] if channel])

    def _read(self, deadline: float) -> list[bytes]:
        """The channels of the release messages that arrive first, before ``deadline``."""
        conn = self._link.conn
        heard: list[bytes] = []
        while not heard and conn.can_read(timeout=_left(deadline)):
            self._link.arm(deadline)
            channel = _release_channel(conn.read_response())
            if channel is not None:
                heard.append(channel)
            if time.monotonic() >= deadline:
                break
        return heard

    def _count(self, channels: list[bytes]) -> None:
        for channel in channels:
            self._released[channel] = self._released.get(channel, 0) + 1

    def _broken(self) -> None:
        self._link.drop()
        self._live = False

    def close(self) -> None:
        """End every wait (each returns False) and drop the connection.

        A waiter blocked reading the socket is woken by shutting the socket down, and drops the
        connection itself, so no thread ever closes a socket another thread is reading.
        """
        with self._cond:
            self._closed = True
            self._live = False
            self._cond.notify_all()
            if self._reading:
                self._link.shutdown()
            else:
                self._link.drop()


def _release_channel(reply: object) -> bytes | None:
    """The channel of a published message; None for subscription confirmations and the like."""
    match reply:
        case [b"message", bytes(channel), _]:
            return channel
    return None


def from_url(url: BackendURL) -> Result[RedisBackend, str]:
    """``redis://[user][:password]@host:port/db?prefix=gomaster&<redis-py options>``, ``rediss://`` for TLS.

    ``prefix`` and ``first_token`` are ours, ``socket_connect_timeout``/``socket_timeout`` cap
    every call's timeout, and the rest (``client_name``, ``socket_keepalive``, ``ssl_*``) go to
    redis-py after being checked here.
    """
    if url.scheme not in SCHEMES:
        return Failure(f"a Redis URL starts with redis:// or rediss://, not {url.scheme}://")
    if "," in (url.host or ""):
        return Failure("a Redis URL names one server, e.g. redis://localhost:6379/0")
    try:
        return Success(RedisBackend._of(_settings(url, {})))
    except _SettingError as exc:
        return Failure(str(exc))
