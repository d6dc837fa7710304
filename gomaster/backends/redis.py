"""Redis: a lease hash that Redis expires itself, a token counter that never expires, Lua for every step.

Keys of lock ``name`` under prefix ``P``, with ``H`` the hex of the name's UTF-8 bytes (so any
name makes a safe key): ``P:lease:H``, a hash whose times are integer milliseconds of the
server's ``TIME`` and whose key expires when the lease does (``PEXPIREAT``); ``P:token:H``, the
token counter, which never expires; ``P:runs:H``, the schedule's run ledger (``LEDGER_FIELDS``
as integer text, and ``SCHEDULE_FIELD``, the text of the schedule that started the last run),
a hash that never expires either, since a claim rewrites the lease and Redis drops it;
``P:names``, the set of every ``H`` claimed; and the channel ``P:released:H``.

Each step is one Lua script (``EVALSHA``; ``EVAL`` when the server does not know it yet) that
reads ``TIME`` itself, so it is atomic and one round trip. observe reads lease and counter
together: a lease Redis has dropped reads as released, with the counter's token. claim is a
compare-and-set on the counter: token ``t + 1`` only while the counter is ``t``, the holder is
the observed one and no lease is live, so one of any number of racing claimers wins. renew
extends our live lease. release and revoke (one script) clear the holder; a release also ends
the lease now and publishes on the channel. observe_many and renew_many do what observe and
renew do to each of many names (the same Lua), in one script at one ``TIME``. Every record read
or written carries the run ledger, read in the same script. start_run and finish_run write the
ledger only while the lease is the caller's and live: a script is atomic, so lease and ledger
in two keys are as safe as columns of one row.

The invariant that needs care: tokens never repeat, yet Redis can lose a counter (no
persistence, ``FLUSHALL``, eviction, ``DEL``). A claim that finds it missing while the name was
evidently used (its lease, a token in its run ledger, its entry in ``P:names``, an observed older
record), or below the lease's or the ledger's token, restarts it at ``max(TIME in ms, lease
token, ledger token, observed token)`` and reports a ``Conflict``, so the elector observes again
and claims the next token. ``first_token=clock`` starts every new counter that way too.

Each process has a command connection and a pub/sub connection that serves every name it waits
for (``Notices``), each in a ``Session`` that arms the socket with what is left of the call's
timeout. docs/backends/redis.md says what an operator needs: persistence, eviction, failover, TLS.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import reprlib
import socket
import ssl
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Never, Protocol, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, NoScriptError, ReadOnlyError, RedisError, ResponseError
from redis.retry import Retry
from returns.io import IOFailure, IOResult, IOSuccess
from returns.result import Failure, Result, Success

from gomaster.backends import _durability as durability
from gomaster.backends import _settings as read
from gomaster.backends._durability import UnconfirmedError
from gomaster.backends._notices import Notices
from gomaster.backends._session import Fault, seconds_left, session_for
from gomaster.backends._settings import Configured, SettingError, checked, merge, or_raise, refuse
from gomaster.backends.base import Observations, Renewals, lost_unless_read
from gomaster.backends.url import BackendURL, host_list, host_port
from gomaster.core.decide import Claim
from gomaster.core.errors import BackendError, Conflict, Lost
from gomaster.core.record import (
    EMPTY_LEDGER,
    LEDGER_FIELDS,
    MAX_TOKEN,
    SCHEDULE_FIELD,
    LockRecord,
    MalformedRecord,
    Observation,
    parse_record,
    tick_millis,
)

__all__ = ["DEFAULT_PORT", "DEFAULT_PREFIX", "RedisBackend", "from_url"]

DEFAULT_HOST = "localhost"
DEFAULT_PORT = 6379
DEFAULT_PREFIX = "gomaster"
#: Upper bound on one connection attempt; a call's own timeout lowers it further.
DEFAULT_CONNECT_TIMEOUT = 5.0
#: ``first_token`` values: new names start at 1, or at the server clock in milliseconds.
FIRST_TOKEN_ONE = "1"
FIRST_TOKEN_CLOCK = "clock"
SENTINEL = "redis+sentinel"
SCHEMES = ("redis", "rediss", SENTINEL)
#: The port of a Sentinel listed without one.
DEFAULT_SENTINEL_PORT = 26379
MAX_PREFIX_LENGTH = 100
#: How late a name that one thread begins to wait for while another reads is subscribed (the
#: reader cannot be woken, so it wakes this often). A supervisor has one listener thread for
#: all its names, which includes a name joined later in its next wait: this only delays a
#: second waiter in the same process, and each wake costs the listener CPU.
NOTICE_TURN = 0.25
_PREFIX = re.compile(r"^[A-Za-z0-9_.:-]+$")
_MS = 1000
_MAX_DB = 1 << 31
_FIELDS = ("holder", "version", "token", "acquired_at", "renewed_at", "expires_at", "host", "pid")
_NUMBERS = ("token", "pid", "acquired_at", "renewed_at", "expires_at")
_WHOLE = re.compile(r"^-?[0-9]+$")
_CANONICAL = re.compile(r"^(0|[1-9][0-9]*)$")
#: A ledger field as the scripts write it (at most 19 digits, as Lua's ``canonical``); anything
#: else stays text for ``parse_record`` to refuse, the same values ``repair`` replaces.
_LEDGER_VALUE = re.compile(r"^(0|[1-9][0-9]{0,18})$")

_T = TypeVar("_T")
_E = TypeVar("_E")
_log = logging.getLogger("gomaster")


# -- the scripts ---------------------------------------------------------------------------


def _lua_strings(values: Sequence[object]) -> str:
    """A Lua table of strings: the values a script compares with what Redis stores, as text."""
    return "{" + ", ".join(f"'{value}'" for value in values) + "}"


#: The Python constants the scripts share: the run ledger's numbers (``RUNS``), what a missing
#: one means (``NO_RUNS``, the empty ledger), its text (``SCHEDULE``, "" when missing), every
#: field a read returns (``READ``: the numbers, then the text), and the bound of a token or a tick.
_CONSTANTS = f"""
local RUNS, NO_RUNS = {_lua_strings(LEDGER_FIELDS)}, {_lua_strings(EMPTY_LEDGER.stored())}
local SCHEDULE, READ = '{SCHEDULE_FIELD}', {_lua_strings((*LEDGER_FIELDS, SCHEDULE_FIELD))}
local MAX_TOKEN = '{MAX_TOKEN}'"""

#: Helpers of every script. ``register`` and ``write`` take KEYS lease, counter, registry and
#: ARGV[1] the name's registry member. ``look`` is what observe reads of one name, ``extend`` a
#: renewal of one lease: the batches repeat them per name, with one ``TIME``.
_PREAMBLE = r"""
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function text(ms) return string.format('%d', ms) end
local function canonical(s)
  return type(s) == 'string' and #s <= 19 and (s == '0' or string.match(s, '^[1-9]%d*$') ~= nil)
end
local function highest(...)
  local best = false
  for i = 1, select('#', ...) do
    local s = select(i, ...)
    if canonical(s) and (not best or #s > #best or #s == #best and s > best) then best = s end
  end
  return best
end
local function whole(s) return canonical(s) and (#s < #MAX_TOKEN or s < MAX_TOKEN) end
local function kind(key) return redis.call('TYPE', key)['ok'] end
-- The run ledger's values of READ (false where missing), or why they cannot be read: one HMGET,
-- since followers of many names read it on every observe.
local function runs_of(key)
  local values = redis.pcall('HMGET', key, unpack(READ))
  if values.err then return 'run ledger ' .. key .. ' holds a ' .. kind(key) .. ', not a hash' end
  return values
end
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
local function ours(lease, holder, token)
  return lease and lease.holder ~= '' and lease.holder == holder and lease.token == token
end
local function look(lease, counter, runs)
  local lease_kind, counter_kind = kind(lease), kind(counter)
  local value = counter_kind == 'string' and redis.call('GET', counter)
  local values = lease_kind == 'hash' and redis.call('HMGET', lease, unpack(ARGV)) or {}
  return {lease_kind, counter_kind, value, values, runs_of(runs)}
end
local function extend(key, runs, holder, token, now, ttl)
  local lease, problem = lease_of(key)
  if problem then return {'corrupt', problem} end
  if not ours(lease, holder, token) or lease.expires <= now then return {'lost'} end
  local expires = now + ttl
  redis.call('HSET', key, 'renewed_at', text(now), 'expires_at', text(expires))
  redis.call('PEXPIREAT', key, text(expires))
  return {'ok', redis.call('HGETALL', key), runs_of(runs)}
end
-- The run ledger (KEYS[2]) with a missing field as its default, while the lease (KEYS[1]) is
-- live and held by holder ARGV[1] with token ARGV[2]; false when it is not; nil and a problem
-- when a key cannot be read.
local function ledger_if_ours()
  local lease, problem = lease_of(KEYS[1])
  if problem then return nil, problem end
  if not ours(lease, ARGV[1], ARGV[2]) or lease.expires <= now_ms() then return false end
  local runs = runs_of(KEYS[2])
  if type(runs) == 'string' then return nil, runs end
  for i, default in ipairs(NO_RUNS) do runs[i] = runs[i] or default end
  return runs
end
-- Whether s reads as text (UTF-8 as ``_decode`` reads it: Python's 'surrogatepass' lets the
-- encoded surrogates ED A0..BF through).
local function readable(s)
  local i = 1
  while i <= #s do
    local c, more, low, high = string.byte(s, i), 0, 0x80, 0xBF
    if c < 0x80 then more = 0
    elseif c >= 0xC2 and c <= 0xDF then more = 1
    elseif c == 0xE0 then more, low = 2, 0xA0
    elseif c >= 0xE1 and c <= 0xEF then more = 2
    elseif c == 0xF0 then more, low = 3, 0x90
    elseif c >= 0xF1 and c <= 0xF3 then more = 3
    elseif c == 0xF4 then more, high = 3, 0x8F
    else return false end
    for j = 1, more do
      local b = string.byte(s, i + j)
      if not b or b < low or b > high then return false end
      low, high = 0x80, 0xBF
    end
    i = i + more + 1
  end
  return true
end
-- Repair of a run ledger: a number that is no valid value makes it "the run of now, finished"
-- (never a second run of a tick that may have run); a valid one is kept. The schedule is kept
-- unless it is no text (bytes a hand edit wrote), which becomes "".
local function mend_runs(key, now)
  local k = kind(key)
  if k == 'none' then return end
  local f = {}
  if k == 'hash' then
    f = redis.call('HMGET', key, unpack(RUNS))
    for i, default in ipairs(NO_RUNS) do f[i] = f[i] or default end
  else
    redis.call('DEL', key)
  end
  local started, clock = whole(f[1]), text(now)
  redis.call('HSET', key, RUNS[1], started and f[1] or clock,
    RUNS[2], whole(f[2]) and f[2] or NO_RUNS[2],
    RUNS[3], started and whole(f[3]) and f[3] or clock,
    RUNS[4], (f[4] == '0' or f[4] == '1') and f[4] or NO_RUNS[4])
  local schedule = redis.call('HGET', key, SCHEDULE)
  if schedule and not readable(schedule) then redis.call('HSET', key, SCHEDULE, '') end
end
local function register()
  local k = kind(KEYS[3])
  if k == 'set' or k == 'none' then redis.call('SADD', KEYS[3], ARGV[1]) end
end
local function write(token, now, expires, holder, version, host, pid)
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'holder', holder, 'version', version, 'token', token,
    'acquired_at', text(now), 'renewed_at', text(now), 'expires_at', text(expires), 'host', host, 'pid', pid)
  redis.call('PEXPIREAT', KEYS[1], text(expires))
  redis.call('SET', KEYS[2], token)
  register()
end
"""

#: KEYS: lease, counter, runs; ARGV: the record's fields (``_FIELDS``). Returns {now ms, lease
#: type, counter type, counter or nil, the lease's values of those fields (nil where missing), the
#: ledger's values or why it cannot be read}. Values by field rather than ``HGETALL``'s names and
#: values: half the reply to parse, which is most of what a follower of many names spends its
#: CPU on.
_OBSERVE = r"""
return {now_ms(), unpack(look(KEYS[1], KEYS[2], KEYS[3]))}
"""

#: KEYS: lease, counter and runs of each name in turn; ARGV: ``_FIELDS``. Returns {now ms,
#: {``look`` of each name}}.
_OBSERVE_MANY = r"""
local seen = {}
for i = 1, #KEYS, 3 do seen[#seen + 1] = look(KEYS[i], KEYS[i + 1], KEYS[i + 2]) end
return {now_ms(), seen}
"""

#: KEYS: lease, counter, registry, runs. ARGV: member, expected token ('' for a first claim),
#: expected holder, new token, holder, version, host, pid, ttl ms, '1' to start new counters at
#: the clock. Returns {'ok', the lease's fields, the ledger's values}; the ledger stays as it was.
_CLAIM = r"""
local now = now_ms()
local lease, problem = lease_of(KEYS[1])
if problem then return {'corrupt', problem} end
local counter_kind = kind(KEYS[2])
local counter = counter_kind == 'string' and redis.call('GET', KEYS[2])
if counter_kind ~= 'string' and counter_kind ~= 'none' then
  return {'corrupt', 'token counter ' .. KEYS[2] .. ' holds a ' .. counter_kind .. ', not a string'}
elseif counter and not canonical(counter) then
  return {'corrupt', 'token counter ' .. KEYS[2] .. ' is not a whole number'}
end
local runs = runs_of(KEYS[4])
if type(runs) == 'string' then return {'corrupt', runs} end
local first = ARGV[2] == ''
local ran = runs[2] ~= NO_RUNS[2] and runs[2]
local why = false
if counter then
  if highest(lease and lease.token, ran, counter) ~= counter then
    why = "it was below the lease's or the run ledger's token"
  end
elseif lease then why = 'its lease still exists'
elseif ran then why = 'its run ledger names token ' .. ran
elseif kind(KEYS[3]) == 'set' and redis.call('SISMEMBER', KEYS[3], ARGV[1]) == 1 then
  why = 'it is listed in ' .. KEYS[3]
elseif not first then why = 'a claimant had observed an earlier record'
elseif ARGV[10] == '1' then why = 'clock'
end
if why then
  local seed = highest(text(now), lease and lease.token, ran, counter, ARGV[2])
  redis.call('SET', KEYS[2], seed)
  register()
  return {'seeded', seed, why}
end
if first then
  if counter then return {'conflict'} end
elseif counter ~= ARGV[2] or (lease and lease.holder or '') ~= ARGV[3] or (lease and lease.expires > now) then
  return {'conflict'}
end
write(ARGV[4], now, now + tonumber(ARGV[9]), ARGV[5], ARGV[6], ARGV[7], ARGV[8])
return {'ok', redis.call('HGETALL', KEYS[1]), runs}
"""

#: KEYS: lease, runs. ARGV: holder, token, ttl ms. Returns {'ok', lease fields, the ledger's
#: values} or {'lost'}.
_RENEW = r"""
return extend(KEYS[1], KEYS[2], ARGV[1], ARGV[2], now_ms(), tonumber(ARGV[3]))
"""

#: KEYS: lease and runs of each name in turn. ARGV: ttl ms, then holder and token of each lease
#: in turn. Returns what ``_RENEW`` would of each, all at one ``TIME``.
_RENEW_MANY = r"""
local now, ttl, answers = now_ms(), tonumber(ARGV[1]), {}
for i = 1, #KEYS / 2 do
  answers[i] = extend(KEYS[2 * i - 1], KEYS[2 * i], ARGV[2 * i], ARGV[2 * i + 1], now, ttl)
end
return answers
"""

#: KEYS: lease. ARGV: holder, token, the channel to publish a release on ('' to revoke, which
#: keeps expiry and TTL and reads no clock). Either keeps the token; a release ends the lease now.
_LET_GO = r"""
local lease, problem = lease_of(KEYS[1])
if problem then return {'corrupt', problem} end
if not ours(lease, ARGV[1], ARGV[2]) then return {'unchanged'} end
if ARGV[3] == '' then
  redis.call('HSET', KEYS[1], 'holder', '')
else
  redis.call('HSET', KEYS[1], 'holder', '', 'expires_at', text(math.min(lease.expires, now_ms())))
  redis.call('PUBLISH', ARGV[3], ARGV[2])
end
return {'done'}
"""

#: KEYS: lease, counter, registry, runs. ARGV: member, hold ms, token floor. Whatever the keys
#: held, a released lease until now + hold, with the largest valid token of lease and counter
#: (the clock in ms when neither has one, at least the floor), which the counter then holds too;
#: and the run ledger's valid fields, the others replaced (``mend_runs``).
_REPAIR = r"""
local now = now_ms()
local lease_kind, counter_kind = kind(KEYS[1]), kind(KEYS[2])
if lease_kind == 'none' and counter_kind == 'none' and kind(KEYS[4]) == 'none' then return {'absent'} end
local found = highest(lease_kind == 'hash' and redis.call('HMGET', KEYS[1], 'token')[1],
  counter_kind == 'string' and redis.call('GET', KEYS[2]))
local token = highest(found or text(now), ARGV[3])
write(token, now, now + tonumber(ARGV[2]), '', '', '', '0')
mend_runs(KEYS[4], now)
return {'done', token}
"""

#: KEYS: lease, runs. ARGV: holder, token, tick ms, the ledger the caller saw (``RUNS``), the
#: schedule. Records the tick as started by the token, and the schedule, while the lease is ours
#: and live and the ledger's numbers are still the ones seen (the schedule is not compared);
#: {'done'} when written, {'unchanged'} when refused.
_START_RUN = r"""
local runs, problem = ledger_if_ours()
if problem then return {'corrupt', problem} end
if not runs then return {'unchanged'} end
for i = 1, #RUNS do
  if runs[i] ~= ARGV[3 + i] then return {'unchanged'} end
end
redis.call('HSET', KEYS[2], RUNS[1], ARGV[3], RUNS[2], ARGV[2], RUNS[3], runs[3], RUNS[4], runs[4],
  SCHEDULE, ARGV[4 + #RUNS])
return {'done'}
"""

#: KEYS: lease, runs. ARGV: holder, token, tick ms, '1' or '0' (ok). Records the end of the
#: tick's run while the lease is ours and live and the ledger's last start is that tick by our
#: token; answers as ``_START_RUN``.
_FINISH_RUN = r"""
local runs, problem = ledger_if_ours()
if problem then return {'corrupt', problem} end
if not runs or runs[1] ~= ARGV[3] or runs[2] ~= ARGV[2] then return {'unchanged'} end
redis.call('HSET', KEYS[2], RUNS[3], ARGV[3], RUNS[4], ARGV[4])
return {'done'}
"""


@dataclass(frozen=True, slots=True)
class _Script:
    """A step's Lua script, its keys (fields of ``RedisKeys``) and the SHA1 ``EVALSHA`` names."""

    step: str
    keys: tuple[str, ...]
    text: str
    sha: str
    #: Whether it may write (so ``wait_replicas`` waits for the replicas after it).
    writes: bool

    @classmethod
    def of(cls, step: str, body: str, *keys: str, writes: bool = True) -> _Script:
        source = _CONSTANTS + _PREAMBLE + body
        sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
        return cls(step, keys, source, sha, writes)


OBSERVE = _Script.of("observe", _OBSERVE, "lease", "counter", "runs", writes=False)
OBSERVE_MANY = _Script.of("observe_many", _OBSERVE_MANY, writes=False)
CLAIM = _Script.of("claim", _CLAIM, "lease", "counter", "registry", "runs")
RENEW = _Script.of("renew", _RENEW, "lease", "runs")
RENEW_MANY = _Script.of("renew_many", _RENEW_MANY)
RELEASE = _Script.of("release", _LET_GO, "lease")
REVOKE = _Script.of("revoke", _LET_GO, "lease")
REPAIR = _Script.of("repair", _REPAIR, "lease", "counter", "registry", "runs")
START_RUN = _Script.of("start_run", _START_RUN, "lease", "runs")
FINISH_RUN = _Script.of("finish_run", _FINISH_RUN, "lease", "runs")


# -- configuration -------------------------------------------------------------------------


def _cert_reqs(key: str, value: object) -> str:
    return read.choice(key, read.text(key, value).lower(), ("none", "optional", "required"))


#: Query parameters passed on to redis-py, with how to read each from a URL.
DRIVER_OPTIONS: dict[str, Callable[[str, object], object]] = {
    "client_name": read.text,
    "socket_keepalive": read.flag,
}
#: TLS options, for ``rediss://`` only.
TLS_OPTIONS: dict[str, Callable[[str, object], object]] = {
    "ssl_cert_reqs": _cert_reqs,
    **dict.fromkeys(("ssl_ca_certs", "ssl_ca_path", "ssl_certfile", "ssl_keyfile"), read.existing_file),
    "ssl_password": read.text,
    "ssl_check_hostname": read.flag,
}
#: gomaster's own query parameters (fields of ``_Settings`` of the same names).
OWN_OPTIONS = ("prefix", "first_token", "socket_connect_timeout", "socket_timeout", "wait_replicas")
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
#: More replicas than anyone runs: a larger ``wait_replicas`` is a typo.
_MAX_WAIT_REPLICAS = 100
#: The part of a write step's time left that its ``WAIT`` may take: the rest is for the reply.
_WAIT_SHARE = 0.8


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
    socket_connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    socket_timeout: float | None = None
    options: tuple[tuple[str, object], ...] = field(default=(), repr=False)
    #: Sentinels to ask for the primary of ``service`` (``redis+sentinel://``); empty: none,
    #: the server is ``host`` and ``port``.
    sentinels: tuple[tuple[str, int], ...] = ()
    service: str = ""
    #: Replicas that must confirm each write step (``WAIT``); 0: none.
    wait_replicas: int = 0

    @property
    def where(self) -> str:
        """``host:port`` for messages (IPv6 hosts in brackets); with Sentinel, the service and
        its sentinels."""
        if self.sentinels:
            return f"{self.service!r} via Sentinel {','.join(host_port(*each) for each in self.sentinels)}"
        return host_port(self.host, self.port)

    def secrets(self) -> tuple[str, ...]:
        return read.secrets_of(self.password, *(str(v) for k, v in self.options if k in _SECRET_OPTIONS))

    @property
    def redacted_url(self) -> str:
        tail = read.shown([*read.changed(self, OWN_OPTIONS), *self.options], _SECRET_OPTIONS.__contains__)
        auth = read.credentials(self.username, self.password)
        if self.sentinels:
            hosts = ",".join(host_port(*each) for each in self.sentinels)
            return f"{SENTINEL}://{auth}{hosts}/{self.service}/{self.db}{tail}"
        return f"{'rediss' if self.tls else 'redis'}://{auth}{self.where}/{self.db}{tail}"


def _sentinel_parts(url: BackendURL) -> tuple[tuple[tuple[str, int], ...], str, str | None]:
    """The sentinels, the service name and the database number (or None) of a
    ``redis+sentinel://h1:26379,h2:26379/service[/db]`` URL."""
    host = url.host or ""
    given = host if "," in host else host_port(host, url.port)  # one IPv6 sentinel: [::1]
    pairs = host_list(given or "")
    if any(not host for host, _ in pairs):
        raise SettingError(f"sentinel list {given!r} has an empty host: write h1:26379,h2:26379")
    sentinels = tuple((host, read.port(port or DEFAULT_SENTINEL_PORT)) for host, port in pairs)
    service, _, db = url.path.removeprefix("/").partition("/")
    if not service:
        raise SettingError(
            "a Sentinel URL names the service after the sentinels, e.g. redis+sentinel://h1:26379,h2:26379/mymaster"
        )
    return sentinels, service, db or None


def _settings(url: BackendURL, given: Mapping[str, object]) -> _Settings:
    """A URL with keyword overrides as checked settings, or ``SettingError``. The database number
    is the URL's path or the ``db`` keyword, never a query parameter."""
    refuse(dict(url.query), _MANAGED)
    sentinels, service, path = _sentinel_parts(url) if url.scheme == SENTINEL else ((), "", None)
    path = path if sentinels else url.path.removeprefix("/") or None
    host, port = (None, None) if sentinels else (url.host, url.port)
    found = dict(host=host, port=port, db=path, username=url.username, password=url.password)
    parts, options = merge(url, given, found)
    own = {key: options.pop(key) for key in OWN_OPTIONS if key in options}
    refuse(options, _MANAGED)
    prefix = read.text("prefix", own.get("prefix", DEFAULT_PREFIX))
    if not _PREFIX.match(prefix) or len(prefix) > MAX_PREFIX_LENGTH:
        raise SettingError(
            f"key prefix {prefix!r} is not allowed: use letters, digits, '_', '-', ':' and '.', "
            f"1 to {MAX_PREFIX_LENGTH} characters"
        )
    tls = url.scheme == "rediss"
    driver: list[tuple[str, object]] = []
    for key, value in options.items():
        reader = DRIVER_OPTIONS.get(key) or (TLS_OPTIONS.get(key) if tls else None)
        if reader is None:
            if key in TLS_OPTIONS:
                raise SettingError(f"option {key} needs TLS: use a rediss:// URL (or tls=True)")
            known = ", ".join((*OWN_OPTIONS, *DRIVER_OPTIONS, *TLS_OPTIONS))
            raise SettingError(f"unknown Redis option {key!r}; known options: {known}")
        driver.append((key, reader(key, value)))
    username, password, timeout = parts["username"], parts["password"], own.get("socket_timeout")
    first_token = str(own.get("first_token", FIRST_TOKEN_ONE)).lower()
    return _Settings(
        tls=tls,
        host=read.text("host", parts["host"] or DEFAULT_HOST),
        port=read.port(parts["port"] or DEFAULT_PORT),
        db=read.whole("database number", parts["db"] or 0, _MAX_DB),
        username=None if username is None else read.text("username", username) or None,
        password=None if password is None else read.text("password", password),
        prefix=prefix,
        first_token=read.choice("first_token", first_token, (FIRST_TOKEN_ONE, FIRST_TOKEN_CLOCK)),
        socket_connect_timeout=read.seconds(
            "socket_connect_timeout", own.get("socket_connect_timeout", DEFAULT_CONNECT_TIMEOUT)
        ),
        socket_timeout=None if timeout is None else read.seconds("socket_timeout", timeout),
        options=tuple(driver),
        sentinels=sentinels,
        service=service,
        wait_replicas=read.whole("wait_replicas", own.get("wait_replicas", 0), _MAX_WAIT_REPLICAS),
    )


# -- keys and values -------------------------------------------------------------------------


def _encode(value: str) -> bytes:
    """Text as stored: UTF-8, with lone surrogates kept (a name is never refused late)."""
    return value.encode("utf-8", "surrogatepass")


def _decode(value: object) -> object:
    """Stored bytes as text; anything that is not valid UTF-8 stays bytes for the parser to refuse."""
    with contextlib.suppress(UnicodeDecodeError):
        return value.decode("utf-8", "surrogatepass") if isinstance(value, bytes) else value
    return value


@dataclass(frozen=True, slots=True)
class RedisKeys:
    """Where one lock name lives on the server (see the module documentation)."""

    lease: str
    counter: str
    registry: str
    channel: str
    member: str
    runs: str


def _registry(prefix: str) -> str:
    return f"{prefix}:names"


def _fields(flat: list[Any]) -> dict[str, object]:
    """An ``HGETALL`` reply as ``parse_record`` fields (times in seconds); garbage stays as found."""
    return _parsed({_decode(key): _decode(value) for key, value in zip(flat[::2], flat[1::2], strict=True)})


def _listed(values: list[Any]) -> dict[str, object]:
    """An ``HMGET`` of ``_FIELDS`` as ``parse_record`` fields, like :func:`_fields`."""
    return _parsed(dict(zip(_FIELDS, map(_decode, values), strict=True)))


def _parsed(found: dict[object, object]) -> dict[str, object]:
    """Stored field values as ``parse_record`` fields: numbers as numbers, times in seconds."""
    fields: dict[str, object] = {}
    for key in _FIELDS:
        value = found.get(key)
        if key in _NUMBERS and isinstance(value, str) and _WHOLE.match(value):
            value = int(value) / _MS if key.endswith("_at") else int(value)
        fields[key] = value
    return fields


def _ledger_fields(name: str, runs: object) -> Result[dict[str, object], MalformedRecord]:
    """The scripts' ``runs_of`` (the ledger's values, nil where missing, or why the key cannot be
    read) as ``parse_record`` fields; a missing hash is the empty ledger. The schedule stays text
    (bytes that are no UTF-8 stay bytes, for ``parse_record`` to refuse)."""
    match runs:
        case [*numbers, schedule] if len(numbers) == len(LEDGER_FIELDS):
            found = map(_decode, numbers)
            fields: dict[str, object] = {
                key: int(value) if isinstance(value, str) and _LEDGER_VALUE.match(value) else value
                for key, value in zip(LEDGER_FIELDS, found, strict=True)
            }
            return Success(fields | {SCHEDULE_FIELD: _decode(schedule)})
        case bytes() | str():
            return Failure(MalformedRecord(name, str(_decode(runs))))
    return Failure(MalformedRecord(name, f"the run ledger came back as {reprlib.repr(runs)}"))


def _record(name: str, lease: dict[str, object], runs: object) -> Result[LockRecord, MalformedRecord]:
    """A lease's fields and its run ledger's (two keys, one record)."""
    return _ledger_fields(name, runs).bind(lambda ledger: parse_record(name, lease | ledger))


def _observation(
    name: str, keys: RedisKeys, answer: list[object]
) -> Result[Observation, MalformedRecord] | None:
    """The observe script's answer as an observation; None for an answer it never gives."""
    match answer:
        case [int(now_ms), lease_kind, counter_kind, counter, list(flat), runs]:
            server_now = now_ms / _MS
        case _:
            return None
    if lease_kind not in ("none", "hash"):
        return Failure(MalformedRecord(name, f"lease key {keys.lease} holds a {lease_kind}, not a hash"))
    if counter_kind not in ("none", "string"):
        return Failure(
            MalformedRecord(name, f"token counter {keys.counter} holds a {counter_kind}, not a string")
        )
    if counter is not None and not (
        isinstance(counter, str) and _CANONICAL.match(counter) and int(counter) < MAX_TOKEN
    ):
        return Failure(MalformedRecord(name, f"token counter {keys.counter} holds {counter!r}, not a token"))
    token = None if counter is None else int(counter)
    if lease_kind == "hash":
        fields = _listed(flat)
    elif token is not None:  # the lease is gone: released, with the counter's token, times unknown
        fields = {"token": token, "pid": 0, **dict.fromkeys(("acquired_at", "renewed_at", "expires_at"), 0.0)}
    else:  # a ledger alone is no record, but a spoiled one is still reported
        return _ledger_fields(name, runs).map(lambda _: Observation(None, server_now))
    return _record(name, fields, runs).map(
        lambda record: Observation(
            replace(record, token=token)
            if token is not None and token > record.token and not record.live_at(server_now)
            else record,
            server_now,
        )
    )


def _names(members: object) -> list[str]:
    """Registry members (hex) back as lock names; anything that is not one is skipped."""
    found: list[str] = []
    for member in members if isinstance(members, list) else ():
        with contextlib.suppress(ValueError, AttributeError):
            found.append(bytes.fromhex(member.decode("ascii")).decode("utf-8", "surrogatepass"))
    return sorted(found)


def _changed(answer: list[object]) -> Result[bool, Never] | None:
    """What release, revoke, start_run and finish_run answer: whether they wrote (the lease, and
    the ledger, were still as the record saw them)."""
    return Success(answer == ["done"]) if answer in (["done"], ["unchanged"]) else None


def _repaired(answer: list[object]) -> Result[int | None, Never] | None:
    """What repair answers: the token it left, or None when there was nothing to repair."""
    match answer:
        case ["absent"]:
            return Success(None)
        case ["done", str(token)] if _CANONICAL.match(token):
            return Success(int(token))
    return None


def _milliseconds(duration: float) -> int:
    """A ttl as whole milliseconds, at least one (``PEXPIREAT`` now would delete the lease)."""
    return max(1, round(duration * _MS))


# -- the driver ------------------------------------------------------------------------------


class _Wire(Protocol):
    """The part of a redis-py ``Connection`` the backend uses, with the types redis-py leaves out."""

    def connect(self) -> None: ...
    def disconnect(self) -> None: ...
    def can_read(self, timeout: float = 0) -> bool: ...
    def send_command(self, *args: object) -> None: ...
    def send_packed_command(self, command: object) -> None: ...
    def pack_commands(self, commands: Sequence[tuple[object, ...]]) -> object: ...
    def read_response(self) -> Any: ...


def _socket(conn: _Wire) -> socket.socket | None:
    sock = getattr(conn, "_sock", None)
    return sock if isinstance(sock, socket.socket) else None


def _call(conn: _Wire, *args: object) -> Any:
    """One command and its reply: one round trip."""
    conn.send_command(*args)
    return conn.read_response()


def _waited(conn: _Wire, command: tuple[object, ...], replicas: int, deadline: float) -> Any:
    """``command``'s reply, in one round trip; with ``replicas``, sent together with ``WAIT``
    (which cannot run inside a script) and raising ``UnconfirmedError`` when fewer replicas
    than that confirm within most of the time left. ``WAIT`` 0 would wait forever: never sent."""
    if not replicas:
        return _call(conn, *command)
    wait = max(1, int((deadline - time.monotonic()) * _WAIT_SHARE * _MS))
    conn.send_packed_command(conn.pack_commands([command, ("WAIT", replicas, wait)]))
    try:
        reply = conn.read_response()
    except ResponseError:
        conn.read_response()  # WAIT's answer: the connection stays in step for a retry
        raise
    confirmed = conn.read_response()
    if not isinstance(confirmed, int) or confirmed < replicas:
        raise UnconfirmedError(f"WAIT {replicas}: {confirmed} replica(s) confirmed within {wait} ms")
    return reply


def _interrupt(conn: _Wire) -> None:
    """Wake a thread blocked reading ``conn`` (it then sees the connection closed)."""
    sock = _socket(conn)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


class _Unreachable(redis.ConnectionError):
    """No connection could be made at all (redis-py's message; the OSError is its cause)."""


class _NoPrimaryError(RedisError):
    """The sentinels name no primary for the service, or the server they name is not one."""


class _Redis:
    """redis-py for a :class:`Session`. With ``listens`` it is the pub/sub side (a ``Listener``
    too), where replies waiting on an idle connection are messages, not the server's goodbye."""

    errors: tuple[type[BaseException], ...] = (RedisError, OSError, UnicodeError)

    def __init__(self, settings: _Settings, *, listens: bool = False) -> None:
        self.settings = settings
        self.listens = listens
        self.checked_in: int | None = None

    def open(self, deadline: float) -> _Wire:
        """Connect (with AUTH and SELECT) before ``deadline``; the first command connection of a
        process also checks the server's configuration. With Sentinel, to the primary the
        sentinels name, once it says it is one."""
        settings = self.settings
        host, port = self._primary(deadline) if settings.sentinels else (settings.host, settings.port)
        conn = self._connect(host, port, deadline)
        if settings.sentinels and not self.listens:
            try:
                _check_role(conn, host_port(host, port), settings.service)
            except BaseException:
                self.close(conn)
                raise
        if not self.listens and self.checked_in != os.getpid():
            try:
                _check_configuration(conn, settings, host_port(host, port))
            except BaseException:
                self.close(conn)
                raise
            self.checked_in = os.getpid()
        return conn

    def _primary(self, deadline: float) -> tuple[str, int]:
        """The primary of the service as the first sentinel that knows it says; each sentinel
        gets an equal share of what is left of the time."""
        settings, said = self.settings, []
        sentinels = settings.sentinels
        for left, (host, port) in zip(range(len(sentinels), 0, -1), sentinels, strict=True):
            share = max(deadline - time.monotonic(), 0.0) / left
            sentinel: _Wire = redis.Connection(  # type: ignore[no-untyped-call]
                host=host,
                port=port,
                socket_timeout=max(share, 0.001),
                socket_connect_timeout=max(share, 0.001),
                retry=Retry(NoBackoff(), 0),
                protocol=2,
            )
            try:
                sentinel.connect()
                answer = _call(sentinel, "SENTINEL", "get-master-addr-by-name", settings.service)
            except (RedisError, OSError) as exc:
                said.append(f"{host_port(host, port)} {' '.join(str(exc).split()) or type(exc).__name__}")
                continue
            finally:
                self.close(sentinel)
            match answer:
                case [bytes(primary), bytes(number)] if number.isdigit():
                    return primary.decode(), int(number)
            said.append(f"{host_port(host, port)} names none")
        raise _NoPrimaryError(
            f"no sentinel names a primary for service {settings.service!r} ({'; '.join(said)}): "
            "check the service name and that the sentinels monitor it"
        )

    def _connect(self, host: str, port: int, deadline: float) -> _Wire:
        settings = self.settings
        options: dict[str, Any] = dict(settings.options)
        conn: _Wire = (redis.SSLConnection if settings.tls else redis.Connection)(
            host=host,
            port=port,
            db=settings.db,
            username=settings.username,
            password=settings.password,
            socket_timeout=seconds_left(deadline, settings.socket_timeout),
            socket_connect_timeout=seconds_left(deadline, settings.socket_connect_timeout),
            retry=Retry(NoBackoff(), 0),
            protocol=2,
            **options,
        )
        try:
            conn.connect()
        except AuthenticationError:
            raise
        except redis.ConnectionError as exc:
            raise _Unreachable(str(exc)) from exc.__cause__
        return conn

    def usable(self, conn: _Wire) -> bool:
        """False when the server has closed the idle connection (a restart, ``CLIENT KILL``, an
        idle timeout): the parser then reads end of file, or a goodbye a command would take for
        its reply."""
        if _socket(conn) is None:
            return False
        try:
            waiting = conn.can_read(0)
        except (RedisError, OSError):
            return False
        return self.listens or not waiting

    def arm(self, conn: _Wire, deadline: float) -> None:
        sock = _socket(conn)
        if sock is not None:
            sock.settimeout(seconds_left(deadline, self.settings.socket_timeout))

    def close(self, conn: _Wire) -> None:
        """Close the socket without a goodbye: after an error the protocol state is unknown."""
        with contextlib.suppress(RedisError, OSError):
            conn.disconnect()

    def classify(self, exc: BaseException) -> Fault:
        cause = str(exc)
        match exc:
            case redis.TimeoutError() | TimeoutError():
                return Fault("timeout", cause)
            case AuthenticationError():
                return Fault("login", cause)
            case ReadOnlyError():
                return Fault("read_only", cause)
            case _NoPrimaryError():
                return Fault("setup", cause)
            case _Unreachable() if isinstance(exc.__cause__, socket.gaierror):
                return Fault("unresolved", cause, self.settings.host)
            case _Unreachable() if isinstance(exc.__cause__, ssl.SSLError):
                return Fault("tls", cause)
            case _Unreachable():
                return Fault("unreachable", cause)
            case redis.ConnectionError() | ConnectionError():
                return Fault("lost", cause)
            case UnicodeError():
                return Fault("encoding", cause)
            case ResponseError():
                return Fault("other", cause)
        return Fault("other", f"{type(exc).__name__}: {cause}")

    def subscribe(self, conn: _Wire, channels: Collection[str]) -> None:
        """One SUBSCRIBE without waiting for the confirmations (``receive`` skips them): Redis
        orders it before any PUBLISH that reaches the server later."""
        conn.send_command("SUBSCRIBE", *channels)

    def receive(self, conn: _Wire, timeout: float) -> list[str]:
        """The channels of the release messages that arrive first, within ``timeout``, and of
        those already read from the socket with them (a burst of releases is one turn)."""
        deadline = time.monotonic() + timeout
        heard: list[str] = []
        while time.monotonic() < deadline and conn.can_read(timeout=0 if heard else seconds_left(deadline)):
            self.arm(conn, deadline)  # a timed can_read leaves the socket's timeout at redis-py's
            match conn.read_response():
                case [b"message", bytes(channel), _]:
                    heard.append(channel.decode())
        return heard


def _check_role(conn: _Wire, where: str, service: str) -> None:
    """Raise unless the server is a primary: a sentinel's answer can be stale for the moments
    of a failover, and a step on a replica would only be refused anyway."""
    match _call(conn, "ROLE"):
        case [b"master", *_]:
            return
        case [bytes(role), *_]:
            raise _NoPrimaryError(
                f"the sentinels name {where} as the primary of {service!r}, but it is a {role.decode()}"
            )
    raise _NoPrimaryError(
        f"the sentinels name {where} as the primary of {service!r}, and ROLE says nothing of it"
    )


def _check_configuration(conn: _Wire, settings: _Settings, where: str) -> None:
    """Warn when the server can lose or roll back counters, or evict leases, and say what a
    failover can lose (:mod:`gomaster.backends._durability`). Where ``CONFIG`` is renamed,
    disabled or denied by ACL, nothing is said of it; connection errors fail the call."""
    keys = ("appendonly", "save", "maxmemory-policy", "min-replicas-to-write")
    commands: list[tuple[object, ...]] = [("CONFIG", "GET", key) for key in keys]
    conn.send_packed_command(conn.pack_commands([*commands, ("INFO", "replication")]))
    found: dict[str, str] = {}
    for key in keys:
        with contextlib.suppress(ResponseError):
            match conn.read_response():
                case [_, bytes(value)]:
                    found[key] = value.decode("utf-8", "replace")
    info: object = b""
    with contextlib.suppress(ResponseError):  # INFO renamed or denied: replicas unknown, taken as none
        info = conn.read_response()
    replicas = re.search(rb"^connected_slaves:(\d+)", info if isinstance(info, bytes) else b"", re.M)
    durability.Report().see(
        durability.redis(
            f"Redis at {where}",
            int(replicas[1]) if replicas else 0,
            int(found.get("min-replicas-to-write") or 0),
            settings.wait_replicas,
            bool(settings.sentinels),
        )
    )
    appendonly, save, policy = (found.get(key) for key in keys[:3])
    counters = (
        "restarts token counters from the server clock"
        if settings.first_token == FIRST_TOKEN_CLOCK
        else "loses the token counters, so tokens start again at 1 (unless ?first_token=clock)"
    )
    if appendonly is not None and save is not None and appendonly != "yes":
        risk = (
            f"keeps only RDB snapshots (save {save!r}): a restart rolls leases and token counters "
            "back to the last snapshot, so fencing tokens can repeat"
            if save.strip()
            else "has no persistence (appendonly no, save ''): a restart drops live leases, so a "
            f"successor may start before the old holder stops, and {counters}"
        )
        _log.warning("Redis at %s %s; use appendonly yes with appendfsync always", settings.where, risk)
    if policy is not None and policy != "noeviction":
        _log.warning(
            "Redis at %s evicts keys (maxmemory-policy %s): a lease can vanish while its holder "
            "still works, or a token counter can be lost; set maxmemory-policy noeviction",
            settings.where,
            policy,
        )


# -- the backend -----------------------------------------------------------------------------


class RedisBackend(Configured[_Settings]):
    """Lock records in Redis; picklable configuration that connects lazily in each process.

    Keywords are the URL's parts and options (docs/backends/redis.md); ``tls=True`` is
    ``rediss://``. Bad settings raise ``ValueError`` here, so a typo fails at start-up.
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
        given: dict[str, object] = dict(host=host, port=port, db=db, username=username, password=password)
        given |= dict(prefix=prefix, first_token=first_token, socket_connect_timeout=socket_connect_timeout)
        given |= dict(socket_timeout=socket_timeout, **driver_options)
        url = BackendURL(scheme="rediss" if tls else "redis")
        self._setup(or_raise(checked(lambda: _settings(url, given))))

    def _start(self) -> None:
        settings = self._settings
        self._session = session_for(_Redis(settings), settings)
        listener = _Redis(settings, listens=True)
        self._notices = Notices(session_for(listener, settings), listener, turn=NOTICE_TURN)

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
        prefix, member = self._settings.prefix, _encode(name).hex()
        return RedisKeys(
            lease=f"{prefix}:lease:{member}",
            counter=f"{prefix}:token:{member}",
            registry=_registry(prefix),
            channel=f"{prefix}:released:{member}",
            member=member,
            runs=f"{prefix}:runs:{member}",
        )

    def _script(
        self,
        script: _Script,
        name: str,
        timeout: float,
        args: Sequence[object],
        then: Callable[[list[object]], Result[_T, _E] | None],
    ) -> IOResult[_T, _E | BackendError]:
        """Run ``script`` for lock ``name`` in one round trip (``EVAL`` only when the server does
        not know it yet) and read its answer with ``then`` (None: an answer it does not expect).
        A ``corrupt`` answer (a key the script refused to touch) is a failure naming the problem."""
        keys = [getattr(self.keys(name), key) for key in script.keys]
        step = script.step

        def answer(found: object) -> Result[_T, _E | BackendError]:
            match found:
                case [b"corrupt", bytes(problem)]:
                    return Failure(BackendError(self.url, f"{step} of {name!r} refused: {problem.decode()}"))
                case [_, *_]:
                    got = then([_decode(item) for item in found])
                    if got is not None:
                        return got
            return Failure(self._unexpected(step, found))

        ran: Result[object, _E | BackendError] = self._eval(script, keys, args, timeout)
        return IOResult.from_result(ran.bind(answer))

    def _eval(
        self, script: _Script, keys: Sequence[str], args: Sequence[object], timeout: float
    ) -> Result[object, BackendError]:
        """``script``'s raw reply, in one round trip (``EVAL`` only when the server does not know
        it yet)."""

        wait = self._settings.wait_replicas if script.writes else 0
        deadline = time.monotonic() + timeout

        def run(conn: _Wire) -> object:
            try:
                return _waited(conn, ("EVALSHA", script.sha, len(keys), *keys, *args), wait, deadline)
            except NoScriptError:
                return _waited(conn, ("EVAL", script.text, len(keys), *keys, *args), wait, deadline)

        return self._session.run(script.step, timeout, run)

    def _unexpected(self, step: str, found: object) -> BackendError:
        return BackendError(self.url, f"{step} got an unexpected reply: {reprlib.repr(found)}")

    def _written(
        self, step: str, name: str, flat: list[Any], runs: object
    ) -> Result[LockRecord, BackendError]:
        """The lease a claim or renewal wrote and the run ledger, as the script read them back in
        the same round trip."""
        return _record(name, _fields(flat), runs).alt(
            lambda problem: BackendError(self.url, f"{step} wrote a record that reads back wrong: {problem}")
        )

    # -- the steps --------------------------------------------------------------------------

    def observe(self, name: str, timeout: float) -> IOResult[Observation, BackendError | MalformedRecord]:
        """``TIME``, lease, counter and run ledger, read together; a key or field that is not what
        it should be is a ``MalformedRecord``."""
        keys = self.keys(name)
        return self._script(OBSERVE, name, timeout, _FIELDS, lambda answer: _observation(name, keys, answer))

    def observe_many(self, names: Sequence[str], timeout: float) -> IOResult[Observations, BackendError]:
        """Every name's lease, counter and run ledger and one ``TIME``, in one script; each name's
        answer is what :meth:`observe` makes of its part."""
        wanted = list(dict.fromkeys(names))
        if not wanted:
            return IOSuccess({})
        keys = [self.keys(name) for name in wanted]

        def observations(found: object) -> Result[Observations, BackendError]:
            seen: Observations = {}
            match found:
                case [int(now_ms), list(parts)] if len(parts) == len(wanted):
                    for name, where, part in zip(wanted, keys, parts, strict=True):
                        answer = [now_ms, *map(_decode, part)] if isinstance(part, list) else []
                        got = _observation(name, where, answer)
                        if got is None:
                            break
                        seen[name] = got
                    else:
                        return Success(seen)
            return Failure(self._unexpected("observe_many", found))

        read = [key for where in keys for key in (where.lease, where.counter, where.runs)]
        return IOResult.from_result(self._eval(OBSERVE_MANY, read, _FIELDS, timeout).bind(observations))

    def claim(self, claim: Claim, timeout: float) -> IOResult[LockRecord, Conflict | BackendError]:
        """Compare-and-set on the counter; a claim that finds the counter lost restarts it from
        the server clock and reports a ``Conflict`` (see the module doc)."""
        expected, me = claim.expected, claim.node
        if (expected is not None and claim.token != expected.token + 1) or not 0 < claim.token < MAX_TOKEN:
            return IOFailure(Conflict(claim.name))
        seen = ("", b"") if expected is None else (str(expected.token), _encode(expected.holder))
        node = (_encode(me.node_id), _encode(me.version), _encode(me.host), str(me.pid))
        clock = "1" if self._settings.first_token == FIRST_TOKEN_CLOCK else "0"
        ttl = str(_milliseconds(claim.ttl))
        args = (self.keys(claim.name).member, *seen, str(claim.token), *node, ttl, clock)

        def claimed(answer: list[object]) -> Result[LockRecord, Conflict | BackendError] | None:
            match answer:
                case ["ok", list(flat), runs]:
                    return self._written("claim", claim.name, flat, runs)
                case ["conflict"]:
                    return Failure(Conflict(claim.name))
                case ["seeded", str(seed), str(why)]:
                    self._report_seed(claim.name, seed, why)
                    return Failure(Conflict(claim.name))
            return None

        return self._script(CLAIM, claim.name, timeout, args, claimed)

    def _report_seed(self, name: str, seed: str, why: str) -> None:
        """Log a restarted counter; ``why`` is the script's evidence that the name was used before."""
        if why == "clock":
            _log.debug("token counter of lock %r starts at the server clock: %s", name, seed)
            return
        _log.warning(
            "token counter of lock %r on %s was lost (%s: a restart without persistence, a flush, "
            "eviction or a manual change); restarted it from the server clock at %s so tokens keep rising",
            name,
            self._settings.where,
            why,
            seed,
        )

    def renew(
        self, record: LockRecord, ttl: float, timeout: float
    ) -> IOResult[LockRecord, Lost | BackendError]:
        """Extend only our own lease, and only while it is unexpired by ``TIME``."""

        def renewed(answer: list[object]) -> Result[LockRecord, Lost | BackendError] | None:
            match answer:
                case ["ok", list(flat), runs]:
                    return self._written("renew", record.name, flat, runs)
                case ["lost"]:
                    return Failure(Lost(record))
            return None

        args = (_encode(record.holder), str(record.token), str(_milliseconds(ttl)))
        return self._script(RENEW, record.name, timeout, args, renewed)

    def renew_many(
        self, records: Sequence[LockRecord], ttl: float, timeout: float
    ) -> IOResult[Renewals, BackendError]:
        """Every renewal in one script, each what :meth:`renew` does to its lease, all at one
        ``TIME``. A lease the script refused to touch (not a hash) is ``Lost``, and logged."""
        if not records:
            return IOSuccess({})

        def renewed(record: LockRecord, answer: object) -> Result[LockRecord, Lost]:
            written: Result[LockRecord, Lost | MalformedRecord | str]
            match answer:
                case [b"ok", list(flat), runs]:
                    written = _record(record.name, _fields(flat), runs)
                case [b"lost"]:
                    written = Failure(Lost(record))
                case [b"corrupt", bytes(problem)]:
                    written = Failure(problem.decode("utf-8", "replace"))
                case _:
                    written = Failure(f"unexpected reply {reprlib.repr(answer)}")
            return lost_unless_read(record, written)

        def renewals(found: object) -> Result[Renewals, BackendError]:
            if not isinstance(found, list) or len(found) != len(records):
                return Failure(self._unexpected("renew_many", found))
            return Success(
                {record.name: renewed(record, answer) for record, answer in zip(records, found, strict=True)}
            )

        names = [self.keys(record.name) for record in records]
        keys = [key for where in names for key in (where.lease, where.runs)]
        mine = [part for record in records for part in (_encode(record.holder), str(record.token))]
        ran = self._eval(RENEW_MANY, keys, (str(_milliseconds(ttl)), *mine), timeout)
        return IOResult.from_result(ran.bind(renewals))

    def _let_go(self, script: _Script, record: LockRecord, timeout: float) -> IOResult[bool, BackendError]:
        channel = self.keys(record.name).channel if script is RELEASE else ""
        args = (_encode(record.holder), str(record.token), channel)
        return self._script(script, record.name, timeout, args, _changed)

    def release(self, record: LockRecord, timeout: float) -> IOResult[bool, BackendError]:
        """Mark the lease released if it is still exactly ``record``'s, and publish the release.
        The released lease (and its token) stays readable until its old expiry."""
        return self._let_go(RELEASE, record, timeout)

    def revoke(self, record: LockRecord, timeout: float) -> IOResult[bool, BackendError]:
        """The operator's release: clear the holder if it is still ``record``'s, keeping token,
        expiry and the key's TTL, so nobody claims before the holder's own deadline has passed."""
        return self._let_go(REVOKE, record, timeout)

    def repair(
        self, name: str, hold: float, token_floor: int, timeout: float
    ) -> IOResult[int | None, BackendError]:
        """Rewrite lease and counter as released until ``hold`` from now, and mend the run
        ledger, in one script (see ``LockBackend.repair``); a key of the wrong type is replaced
        too."""
        args = (self.keys(name).member, str(round(hold * _MS)), str(max(token_floor, 0)))
        return self._script(REPAIR, name, timeout, args, _repaired)

    def start_run(
        self, record: LockRecord, tick: float, timeout: float, schedule: str = ""
    ) -> IOResult[bool, BackendError]:
        """Record the start of ``tick``'s run of ``schedule`` if the lease and the ledger's numbers
        are as ``record`` saw them."""
        seen = (str(value) for value in record.ledger.stored())
        args = (_encode(record.holder), str(record.token), str(tick_millis(tick)), *seen, _encode(schedule))
        return self._script(START_RUN, record.name, timeout, args, _changed)

    def finish_run(
        self, record: LockRecord, tick: float, ok: bool, timeout: float
    ) -> IOResult[bool, BackendError]:
        """Record the end of ``tick``'s run if this tenure started it and still holds the lease."""
        args = (_encode(record.holder), str(record.token), str(tick_millis(tick)), str(int(ok)))
        return self._script(FINISH_RUN, record.name, timeout, args, _changed)

    def wait_for_release(self, name: str, timeout: float) -> IOResult[bool, BackendError]:
        """:meth:`wait_for_releases` of ``name`` alone: True when a release came."""
        return self.wait_for_releases((name,), timeout).map(bool)

    def wait_for_releases(
        self, names: Collection[str], timeout: float
    ) -> IOResult[frozenset[str], BackendError]:
        """Block up to ``timeout`` until any of ``names`` is released: the names released (perhaps
        between two waits: subscriptions are kept), empty when none was, a failure when the
        connection broke. New names are subscribed in one SUBSCRIBE."""
        return IOResult.from_result(
            self._notices.wait_for(names, timeout, lambda name: self.keys(name).channel)
        )

    def names(self, timeout: float) -> IOResult[list[str], BackendError]:
        """Every lock name ever claimed under this prefix, sorted."""
        registry = _registry(self._settings.prefix)
        members = self._session.run("names", timeout, lambda conn: _call(conn, "SMEMBERS", registry))
        return IOResult.from_result(members.map(_names))

    def close(self) -> None:
        """Close this process's connections, ending every wait at once; they reopen on demand."""
        self._session.close()
        self._notices.close(_interrupt)


def from_url(url: BackendURL) -> Result[RedisBackend, str]:
    """``redis://[user][:password]@host:port/db?prefix=gomaster&<options>``, ``rediss://`` for TLS,
    ``redis+sentinel://s1:26379,s2:26379/service[/db]`` for the primary Sentinel names (the
    options: docs/backends/redis.md)."""
    if url.scheme not in SCHEMES:
        return Failure(
            f"a Redis URL starts with redis://, rediss:// or redis+sentinel://, not {url.scheme}://"
        )
    if "," in (url.host or "") and url.scheme != SENTINEL:
        return Failure(
            "a Redis URL names one server, e.g. redis://localhost:6379/0; for a primary that "
            "Sentinel fails over, name the sentinels: redis+sentinel://h1:26379,h2:26379/mymaster"
        )
    return checked(lambda: RedisBackend._of(_settings(url, {})))
