"""MongoDB: one document per lock name (its ``_id``), every step one command on the server's clock.

Times are int64 milliseconds of ``{'$toLong': '$$NOW'}``, computed by the server inside pipeline
updates, and every ``$expr`` compares longs on both sides: comparing ``$$NOW`` with a stored
date misbehaves on some wire-compatible servers. Records carry them as float epoch seconds.

- observe: one aggregation whose ``$facet`` stage yields exactly one document, the record (if
  any) and ``$$NOW``, so an absent record needs no second round trip;
- claim: a ``findAndModify`` whose filter is the compare-and-set precondition; a new name is an
  upsert that can only insert, and losing that race is a duplicate ``_id``, a ``Conflict``;
- renew and repair: a ``findAndModify``; release and revoke: an ``update`` on holder and token;
- observe_many: observe's aggregation for many ``_id``; renew_many: one ``update`` of many
  documents, each under its own compare-and-set, then that aggregation (two round trips);
- start_run and finish_run: an ``update`` of the run ledger's fields (int64 ticks and token,
  ``run_ok`` 0 or 1; start_run also writes the schedule's text, ``run_schedule``, which the
  compare leaves out), its filter the compare-and-set (our live lease; the ledger as the caller
  saw it, or its own start). A document written before the ledger lacks them: a missing field
  means "no run yet".

Writes use majority write concern: with ``w=1`` a failover can roll back an acknowledged claim
and grant its token twice. Every call runs under :func:`pymongo.timeout` for what is left of the
session's deadline; that is a context manager, which ``Driver.arm`` cannot enter and leave, so
``arm`` notes the deadline on the link and the work enters it (:func:`_bounded`). Release
notices come from a change stream (:class:`_ChangeStream`) on the same client, within the same
deadline; where the server refuses one, followers poll. The operator's page is
docs/backends/mongodb.md.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import reprlib
import threading
import time
from collections import abc
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote, unquote

import pymongo
from bson.errors import BSONError
from bson.int64 import Int64
from pymongo import MongoClient, ReturnDocument
from pymongo.change_stream import ChangeStream
from pymongo.collection import Collection
from pymongo.errors import ConfigurationError, DuplicateKeyError, OperationFailure, PyMongoError
from pymongo.read_preferences import ReadPreference
from pymongo.server_description import ServerDescription
from pymongo.uri_parser import split_options
from returns.io import IOFailure, IOResult, IOSuccess
from returns.result import Failure, Result, Success

from gomaster.backends import _durability as durability
from gomaster.backends import _settings as read
from gomaster.backends._notices import Notices
from gomaster.backends._session import Fault, Kind, Session, seconds_left, session_for
from gomaster.backends._settings import Configured, SettingError, checked, or_raise
from gomaster.backends.base import Observations, Renewals, lost_unless_read
from gomaster.backends.url import REDACTED, BackendURL, scrub
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

Document = dict[str, Any]
#: A ``findAndModify`` on the lock collection: the document as it became, or None.
_Write = Callable[[Collection[Document]], Document | None]
T = TypeVar("T")
_Refusal = TypeVar("_Refusal", Conflict, Lost)

DEFAULT_HOST = "localhost:27017"
DEFAULT_DATABASE = "gomaster"
DEFAULT_COLLECTION = "masterlock"
#: Connecting and finding the primary give up after this long (the ``timeout`` keyword).
DEFAULT_CONNECT_TIMEOUT = 5.0
#: How often pymongo's monitor checks the server, in ms (500 is the least it accepts).
HEARTBEAT_MS = 500
_MS = 1000
#: Closing a client says goodbye to the server (endSessions); a hung server gets this long.
_CLOSE_TIMEOUT = 0.1
#: How often a call looks whether a server answers yet; a pymongo timeout that fails at once.
_LOOK, _NO_WAIT = 0.02, 1e-6
#: The longest one read of the change stream waits on the server: an idle follower asks this
#: often, and a name another thread starts to wait for is watched after at most this long.
_AWAIT = 1.0
#: A read's reply gets this long beyond the server's wait before the read counts as timed out.
_REPLY = 0.1
#: Reads of the stream per second, on average, and in a burst: SecantusDB ends a read early at
#: every write to any collection, so a busy cluster would otherwise make each follower a poller
#: (a quiet one never reaches the limit, nor should mongod, which waits for a matching change).
_READS, _BURST = 4.0, 2.0
#: What a server that cannot watch answers (not a replica set, no such stage, not allowed).
_WATCH_REFUSED = frozenset({13, 40324, 40573})
#: The server's clock, as int64 milliseconds: the same value throughout one command.
_NOW = {"$toLong": "$$NOW"}
_EXPIRES = {"$toLong": "$expires_at"}
#: Each ledger field's value where a document has none: "no run yet" (see ``Ledger.stored``).
_LEDGER_DEFAULTS = dict(zip(LEDGER_FIELDS, EMPTY_LEDGER.stored(), strict=True))
#: MongoDB refuses these in database names (the Unix set, plus NUL).
_DATABASE_FORBIDDEN = frozenset('/\\. "$\x00')
_MAX_DATABASE_BYTES = 63
#: Option values shown as *** in URLs and scrubbed from error messages.
_SECRET_OPTIONS = ("password", "authmechanismproperties")
#: Option values keep the ``:`` and ``,`` that tag lists are made of.
_OPTION_SAFE = ":,"
#: pymongo appends a dump of the topology to selection errors; the first line says it all.
_NOISE = re.compile(", Timeout: |, Topology Description:|, full error:")
#: Server error codes with a kind of their own: AuthenticationFailed, Unauthorized.
_CODES: Mapping[int, Kind] = {18: "login", 13: "denied"}

_log = logging.getLogger("gomaster")


def _secret(option: str) -> bool:
    return any(word in option.lower() for word in _SECRET_OPTIONS)


def _query(options: Iterable[tuple[str, str]]) -> str:
    """``options`` as the query string pymongo reads (no value hidden)."""
    return read.shown(options, lambda option: False, _OPTION_SAFE)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Settings:
    """Everything a process needs to reach the collection; what pickling carries."""

    scheme: str
    where: str  # the host list, as the URL gives it
    database: str | None
    collection: str
    username: str | None
    password: str | None = field(default=None, repr=False)
    options: tuple[tuple[str, str], ...] = ()

    @property
    def lock_database(self) -> str:
        return self.database or DEFAULT_DATABASE

    def secrets(self) -> tuple[str, ...]:
        return read.secrets_of(self.password, *(value for key, value in self.options if _secret(key)))

    @property
    def redacted_url(self) -> str:
        ours = () if self.collection == DEFAULT_COLLECTION else (("collection", self.collection),)
        query = read.shown((*ours, *self.options), _secret, _OPTION_SAFE)
        auth = read.credentials(self.username, self.password) if self.username is not None else ""
        return f"{self.scheme}://{auth}{self.where}/{self.database or ''}{query}"

    def client(self, connect: bool = False) -> MongoClient[Document]:
        """A client (connecting in the background if asked); credentials go as keywords, never in the URI."""
        given = {key.lower() for key, _ in self.options}
        defaults: dict[str, Any] = {
            "retryWrites": False,  # SecantusDB slows down with it on; no step needs it
            "w": "majority",
            "appName": "gomaster",
            "serverSelectionTimeoutMS": int(DEFAULT_CONNECT_TIMEOUT * _MS),
            "connectTimeoutMS": int(DEFAULT_CONNECT_TIMEOUT * _MS),
            # Not pymongo's 10 s: a call with less time left than the smallest round trip the
            # monitor saw lately is refused, so one slow check must age out fast (see the docs).
            "heartbeatFrequencyMS": HEARTBEAT_MS,
        }
        chosen = {key: value for key, value in defaults.items() if key.lower() not in given}
        uri = f"{self.scheme}://{self.where}/{quote(self.database or '', safe='')}{_query(self.options)}"
        return MongoClient(uri, connect=connect, username=self.username, password=self.password, **chosen)


def _read(url: BackendURL, given: Mapping[str, object]) -> _Settings:
    """The settings ``url`` and ``given`` (keywords) describe, or ``SettingError``. pymongo checks
    every option but ours one by one (inside a URI it only warns about a bad one), then all
    together by building a client with ``connect=False`` (no network, not even SRV)."""
    parts, options = read.merge(url, given, {"collection": DEFAULT_COLLECTION})
    text = {
        key: str(value).lower() if isinstance(value, bool) else str(value) for key, value in options.items()
    }
    hosts = url.host or ""
    if url.port is not None:
        hosts = f"[{hosts}]:{url.port}" if ":" in hosts else f"{hosts}:{url.port}"
    settings = _Settings(
        scheme=url.scheme,
        where=hosts,
        database=unquote(url.path.removeprefix("/")) or None,
        collection=read.identifier("collection", parts["collection"] or DEFAULT_COLLECTION),
        username=url.username,
        password=url.password,
        options=tuple(text.items()),
    )
    if not all(hosts.split(",")):
        raise SettingError(f"no MongoDB host given in {settings.redacted_url}")
    database = settings.database or ""
    if _DATABASE_FORBIDDEN.intersection(database) or len(database.encode()) > _MAX_DATABASE_BYTES:
        raise SettingError(
            f"database name {database!r} is not allowed: at most {_MAX_DATABASE_BYTES} "
            'bytes, with no / \\ . " $, space or NUL'
        )
    try:
        for key, value in settings.options:
            problem = f"bad MongoDB option {key}={REDACTED if _secret(key) else value!r}"
            split_options(_query([(key, value)]).removeprefix("?"), validate=True, warn=False)
        problem = f"bad MongoDB configuration in {settings.redacted_url}"
        settings.client().close()
    except (PyMongoError, ValueError, TypeError, OSError) as exc:
        raise SettingError(f"{problem}: {scrub(str(exc), *settings.secrets())}") from None
    return settings


@dataclass(slots=True)
class _Link:
    """A client, its lock collection, the call's deadline; a listener's stream, its names, and
    the reads it may make before it must wait (``credit``, as of ``counted``)."""

    client: MongoClient[Document]
    locks: Collection[Document]
    deadline: float = 0.0
    stream: ChangeStream[Document] | None = None
    names: list[str] = field(default_factory=list)
    credit: float = _BURST
    counted: float = 0.0


def _servers(client: MongoClient[Document]) -> Iterable[ServerDescription]:
    """What ``client`` learnt of each server when it last looked."""
    return client.topology_description.server_descriptions().values()


def _up(client: MongoClient[Document]) -> bool:
    return any(server.is_server_type_known for server in _servers(client))


@contextlib.contextmanager
def _bounded(link: _Link, least: float = 0.0) -> Iterator[None]:
    """pymongo's per-call timeout for what is left of the call the session armed (or ``least``).
    Waiting for a server to answer, pymongo looks again only every half second, and so fails up
    to that long late: the wait is done here, and a call still without a server fails at once."""
    until = max(link.deadline, time.monotonic() + least)
    while not _up(link.client) and time.monotonic() < until:
        time.sleep(_LOOK)
    with pymongo.timeout(seconds_left(until) if _up(link.client) else _NO_WAIT):
        yield


class _Client:
    """This process's one client for a backend, shared by the steps and the listener: a client
    is a pool that heals itself, and each client costs a monitor thread and its checks."""

    def __init__(self, settings: _Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._client: MongoClient[Document] | None = None
        self._pid = os.getpid()

    def get(self) -> MongoClient[Document]:
        """The client, made (connecting in the background) on first use in this process."""
        with self._lock:
            if self._client is None or self._pid != os.getpid():
                self._client, self._pid = self.settings.client(connect=True), os.getpid()
            return self._client

    def close(self) -> None:
        """Close the client of this process, if any; a forked child's inherited one is left alone."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None and self._pid == os.getpid():
            goodbye = _CLOSE_TIMEOUT if _up(client) else _NO_WAIT
            with contextlib.suppress(PyMongoError), pymongo.timeout(goodbye):
                client.close()


class _Driver:
    """pymongo for the steps' session, on the shared client, which it keeps through errors."""

    errors: tuple[type[BaseException], ...] = (PyMongoError, BSONError, UnicodeEncodeError)
    #: Whether an error keeps the link.
    keep = True
    #: Whether opening says what a failover can lose (the steps' driver does, not the listener).
    reports = True

    def __init__(self, settings: _Settings, client: _Client) -> None:
        self.settings = settings
        self.client = client
        #: What a failover can lose, said once per process.
        self.report = durability.Report()

    def open(self, deadline: float) -> _Link:
        client = self.client.get()
        chosen = {key.lower(): value for key, value in self.settings.options}
        if self.reports:
            self.report.see(
                durability.mongodb(f"MongoDB at {self.settings.where}", str(chosen.get("w", "majority")))
            )
        locks = client[self.settings.lock_database][self.settings.collection]
        return _Link(client, locks.with_options(read_preference=ReadPreference.PRIMARY))

    def usable(self, link: _Link) -> bool:
        return True

    def arm(self, link: _Link, deadline: float) -> None:
        link.deadline = deadline

    def close(self, link: _Link) -> None:
        self.client.close()

    def classify(self, exc: BaseException) -> Fault:
        text = _NOISE.split(str(exc), maxsplit=1)[0]
        code = exc.code if isinstance(exc, OperationFailure) else None
        cause = f"{type(exc).__name__}: {text}" + ("" if code is None else f" (code {code})")
        kind: Kind = "other"
        if not isinstance(exc, PyMongoError):
            kind = "encoding"  # a value BSON cannot carry, e.g. a lone surrogate
        elif exc.timeout:
            kind = "timeout"
        elif isinstance(exc, ConfigurationError):
            kind = "unresolved"  # a mongodb+srv:// name without its DNS records
        elif code is not None:
            kind = _CODES.get(code, "other")
        detail = f"{self.settings.lock_database}.{self.settings.collection}"
        return Fault(kind, cause, self.settings.where if kind == "unresolved" else detail, keep=self.keep)


class _ChangeStream(_Driver):
    """The listener's driver and its ``Listener``: release notices from a change stream on the
    lock collection, which any error drops (the shared client stays); or polling where the
    server refuses to watch (``notifies`` is then False, for this process)."""

    notifies = True
    keep = False
    reports = False

    def close(self, link: _Link) -> None:
        if link.stream is not None:
            with contextlib.suppress(PyMongoError), _bounded(link, _CLOSE_TIMEOUT):
                link.stream.close()

    def subscribe(self, link: _Link, channels: abc.Collection[str]) -> None:
        """Watch ``channels`` too: one new stream for all the names, resuming where the old one
        was, so no release between the two is missed."""
        link.names.extend(channels)
        if not self.notifies:
            return
        old = link.stream
        # A release (a pipeline update) is an ``update`` of holder and expiry on MongoDB, a
        # ``replace`` on SecantusDB; a revoke (a plain update) changes the holder alone.
        emptied = [
            {
                "updateDescription.updatedFields.holder": "",
                "updateDescription.updatedFields.expires_at": {"$exists": True},
            },
            {"operationType": "replace", "fullDocument.holder": ""},
        ]
        try:
            with _bounded(link):
                link.stream = link.locks.watch(
                    [{"$match": {"documentKey._id": {"$in": link.names}, "$or": emptied}}],
                    max_await_time_ms=round(_AWAIT * _MS),  # each read sets its own: _await
                    start_after=None if old is None else old.resume_token,
                )
                if old is not None:
                    old.close()
        except OperationFailure as exc:
            if exc.code not in _WATCH_REFUSED:
                raise
            self.notifies = False
            where = self.settings.where
            _log.warning("%s refuses change streams (code %s): followers poll instead", where, exc.code)

    def receive(self, link: _Link, timeout: float) -> Iterable[str]:
        """One read, waiting on the server up to ``timeout`` (at most :data:`_AWAIT`), so an idle
        wait costs one getMore a second; or, when this listener used up its reads
        (:data:`_READS`), a pause until the next, while the server keeps the changes. A silent
        server (frozen, cut off) sends nothing, a refusal fails."""
        if link.stream is None:
            time.sleep(min(timeout, read.MAX_SECONDS))
            return ()
        now = time.monotonic()
        link.credit = min(_BURST, link.credit + (now - link.counted) * _READS)
        link.counted = now
        paced = min((1 - link.credit) / _READS, timeout)
        if paced > 0:
            time.sleep(paced)
            return ()
        link.credit -= 1
        wait = min(timeout, _AWAIT)
        _await(link.stream, wait)
        heard: list[str] = []
        try:
            with _bounded(link, wait + _REPLY):
                change = link.stream.try_next()  # on its next call pymongo resumes a broken one
                while change is not None:
                    heard.append(str(change["documentKey"]["_id"]))
                    change = link.stream.try_next() if _buffered(link.stream) else None
        except PyMongoError as exc:
            if exc.timeout and all(getattr(known.error, "timeout", True) for known in _servers(link.client)):
                return heard
            raise
        return heard


def _buffered(stream: ChangeStream[Document]) -> bool:
    """Whether the stream's last read brought more changes than were taken: a burst of releases
    is handed out in one turn, not one per paced read (see ``_READS``)."""
    return bool(stream._cursor._data)


def _await(stream: ChangeStream[Document], seconds: float) -> None:
    """Let the stream's next read wait up to ``seconds`` on the server. pymongo takes
    maxAwaitTimeMS once, at ``watch()``, and keeps it on the stream (for a resume) and on its
    cursor (for each getMore), where this sets it; tests/backends/test_mongodb.py checks that an
    idle wait costs one read."""
    wait = max(1, round(seconds * _MS))
    stream._max_await_time_ms = wait
    stream._cursor._max_await_time_ms = wait


def _fields(document: Mapping[str, Any]) -> dict[str, object]:
    """A stored document as ``parse_record`` fields: milliseconds become seconds, garbage stays."""
    fields: dict[str, object] = dict(document)
    for key in ("acquired_at", "renewed_at", "expires_at"):
        value = fields.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            fields[key] = value / _MS
    return fields


def _until(seconds: float) -> Document:
    """The server's clock ``seconds`` from now, in int64 milliseconds."""
    return {"$add": [_NOW, Int64(round(seconds * _MS))]}


def _lease(
    token: object, ttl: float, holder: str = "", version: str = "", host: str = "", pid: int = 0
) -> Document:
    """A whole lease as a pipeline ``$set``, taken now; ``$literal`` keeps a holder named ``$x`` text."""
    return {
        "holder": {"$literal": holder},
        "version": {"$literal": version},
        "token": token,
        "acquired_at": _NOW,
        "renewed_at": _NOW,
        "expires_at": _until(ttl),
        "host": {"$literal": host},
        "pid": Int64(pid),
    }


def _exactly(record: LockRecord, compare: str) -> Document:
    """``record``'s document, while its expiry ``compare``s to the server's clock as asked:
    ``$lte`` when the lease must have expired (a takeover), ``$gt`` while it lasts (a renewal)."""
    expiry = {compare: [_EXPIRES, _NOW]}
    return {"_id": record.name, "holder": record.holder, "token": record.token, "$expr": expiry}


def _ledger(field: str) -> Document:
    """A ledger field as stored, or its default where the document has none (or null)."""
    return {"$ifNull": [f"${field}", Int64(_LEDGER_DEFAULTS[field])]}


def _running(record: LockRecord, ledger: Mapping[str, int]) -> Document:
    """``record``'s live lease (a revoked one, live but without a holder, is nobody's), while each
    ledger field of ``ledger`` holds its value. In ``$expr``, unlike a query's equality, a missing
    field can stand for its default and an array never matches."""
    query = _exactly(record, "$gt")
    held = [{"$eq": [_ledger(field), Int64(value)]} for field, value in ledger.items()]
    holder = {"$eq": record.holder, "$ne": ""}
    return query | {"holder": holder, "$expr": {"$and": [query["$expr"], *held]}}


def _whole(value: object, bound: int = MAX_TOKEN) -> Document:
    """True when ``value`` is a whole number (int or long) in ``[0, bound)``: a field that
    ``repair`` keeps and ``parse_record`` accepts."""
    whole = {"$in": [{"$type": value}, ["int", "long"]]}
    return {"$and": [whole, {"$gte": [value, 0]}, {"$lt": [value, Int64(bound)]}]}


def _repaired_ledger() -> Document:
    """The ledger as ``repair`` leaves it: each valid field kept, each corrupted one rewritten as
    "the run of now has finished", never a second run of a tick that may have run. Every
    expression reads the document as it was before the update. A schedule that is no text (a
    hand edit) becomes "" (unknown); text is kept."""
    started, token, finished, ok = (_ledger(field) for field in LEDGER_FIELDS)
    schedule = f"${SCHEDULE_FIELD}"
    return {
        "run_started": {"$cond": [_whole(started), {"$toLong": started}, _NOW]},
        "run_token": {"$cond": [_whole(token), {"$toLong": token}, Int64(0)]},
        "run_finished": {
            "$cond": [{"$and": [_whole(started), _whole(finished)]}, {"$toLong": finished}, _NOW]
        },
        "run_ok": {"$cond": [_whole(ok, bound=2), ok, _LEDGER_DEFAULTS["run_ok"]]},
        SCHEDULE_FIELD: {"$cond": [{"$eq": [{"$type": schedule}, "string"]}, schedule, {"$literal": ""}]},
    }


def _set(query: Document, fields: Document, upsert: bool = False) -> _Write:
    """A ``findAndModify`` that sets ``fields`` on the document ``query`` matches and returns it
    as it became; None when nothing matched, or when another claimer inserted the name first."""

    def write(locks: Collection[Document]) -> Document | None:
        try:
            return locks.find_one_and_update(
                query, [{"$set": fields}], upsert=upsert, return_document=ReturnDocument.AFTER
            )
        except DuplicateKeyError:
            return None

    return write


#: An observation's answer: the server's clock in seconds and the documents found.
_Seen = tuple[float, list[Document]]


def _observing(names: list[str]) -> list[Document]:
    """An aggregation whose ``$facet`` stage yields exactly one document: the records of
    ``names`` found and ``$$NOW``, so absent records need no second round trip."""
    return [
        {"$match": {"_id": {"$in": names}}},
        {"$facet": {"found": [{"$limit": len(names)}]}},
        {"$addFields": {"now": _NOW}},
    ]


def _seen(documents: list[Document]) -> Result[_Seen, str]:
    """What :func:`_observing` answered, or what was wrong with it."""
    first = documents[0] if len(documents) == 1 else {}
    now, found = first.get("now"), first.get("found")
    if isinstance(now, bool) or not isinstance(now, int) or not isinstance(found, list):
        return Failure(f"an unexpected answer: {reprlib.repr(documents)}")
    return Success((now / _MS, found))


def _renewed(
    record: LockRecord, document: Document | None, now: float
) -> Result[LockRecord, Lost | MalformedRecord]:
    """``record`` as a batch renewal left it, read back at ``now``, or ``Lost``."""

    def still_ours(found: LockRecord) -> Result[LockRecord, Lost | MalformedRecord]:
        ours = (found.holder, found.token) == (record.holder, record.token)
        if ours and found.renewed_at > record.renewed_at and found.live_at(now):
            return Success(found)
        return Failure(Lost(record))

    if document is None:
        return Failure(Lost(record))
    parsed: Result[LockRecord, Lost | MalformedRecord] = parse_record(record.name, _fields(document))
    return parsed.bind(still_ours)


class MongoBackend(Configured[_Settings]):
    """Lock records in a MongoDB collection. The keywords follow go-master's Mongo options
    (docs/migration.md); ``options`` passes any other connection-string option on to pymongo.
    Raises ``ValueError`` for a configuration that cannot work."""

    def __init__(
        self,
        hosts: str | Sequence[str] = DEFAULT_HOST,
        *,
        database: str | None = None,
        collection: str = DEFAULT_COLLECTION,
        replica_set: str | None = None,
        auth_source: str | None = None,
        user: str | None = None,
        password: str | None = None,
        timeout: float | None = None,
        tls: bool | None = None,
        pool_limit: int | None = None,
        srv: bool = False,
        options: Mapping[str, object] | None = None,
    ) -> None:
        wait = None if timeout is None else round(read.seconds("timeout", timeout) * _MS)
        flag = None if tls is None else read.flag("tls", tls)
        given: dict[str, object] = dict(collection=collection, replicaSet=replica_set, authSource=auth_source)
        given |= dict(tls=flag, maxPoolSize=pool_limit, connectTimeoutMS=wait, serverSelectionTimeoutMS=wait)
        given |= options or {}
        url = BackendURL(
            scheme="mongodb+srv" if srv else "mongodb",
            username=user,
            password=password,
            host=hosts if isinstance(hosts, str) else ",".join(hosts),
            path=f"/{quote(database, safe='')}" if database else "",
        )
        self._setup(or_raise(checked(lambda: _read(url, given))))

    def _start(self) -> None:
        settings = self._settings
        client = _Client(settings)
        self._session: Session[_Link] = session_for(_Driver(settings, client), settings)
        self._listener = _ChangeStream(settings, client)
        self._notices: Notices[_Link] = Notices(session_for(self._listener, settings), self._listener)

    @property
    def database(self) -> str:
        """The database holding the lock collection."""
        return self._settings.lock_database

    @property
    def collection(self) -> str:
        """The collection holding one document per lock name."""
        return self._settings.collection

    @property
    def notifies(self) -> bool:
        """True until the server refuses a change stream (not a replica set): then followers poll."""
        return self._listener.notifies

    def _run(
        self, step: str, timeout: float, work: Callable[[Collection[Document]], T]
    ) -> IOResult[T, BackendError]:
        def bounded(link: _Link) -> T:
            with _bounded(link):
                return work(link.locks)

        return IOResult.from_result(self._session.run(step, timeout, bounded))

    def _observe(self, step: str, names: list[str], timeout: float) -> IOResult[_Seen, BackendError]:
        """The server's clock and the documents of ``names`` found, in one aggregation."""
        found = self._run(step, timeout, lambda locks: list(locks.aggregate(_observing(names))))
        return found.bind_result(lambda documents: self._seen(step, documents))

    def _seen(self, step: str, documents: list[Document]) -> Result[_Seen, BackendError]:
        return _seen(documents).alt(lambda problem: BackendError(self.url, f"{step} got {problem}"))

    def observe(self, name: str, timeout: float) -> IOResult[Observation, BackendError | MalformedRecord]:
        def observation(seen: _Seen) -> Result[Observation, BackendError | MalformedRecord]:
            now, found = seen
            if not found:
                return Success(Observation(None, now))
            return parse_record(name, _fields(found[0])).map(lambda parsed: Observation(parsed, now))

        looked: IOResult[_Seen, BackendError | MalformedRecord] = self._observe("observe", [name], timeout)
        return looked.bind_result(observation)

    def observe_many(self, names: Sequence[str], timeout: float) -> IOResult[Observations, BackendError]:
        """Every named document and ``$$NOW``, in one aggregation."""
        wanted = list(dict.fromkeys(names))
        if not wanted:
            return IOSuccess({})

        def observations(seen: _Seen) -> Observations:
            now, found = seen
            answer: Observations = dict.fromkeys(wanted, Success(Observation(None, now)))
            for document in found:
                name = document.get("_id")
                if isinstance(name, str) and name in answer:
                    parsed = parse_record(name, _fields(document))
                    answer[name] = parsed.map(lambda got: Observation(got, now))
            return answer

        return self._observe("observe_many", wanted, timeout).map(observations)

    def claim(self, claim: Claim, timeout: float) -> IOResult[LockRecord, Conflict | BackendError]:
        """A new name's filter matches no stored document, so its upsert can only insert. A
        takeover matches only the observed holder and token, once expired by the server's clock."""
        expected = claim.expected
        if expected is not None and claim.token != expected.token + 1:
            return IOFailure(Conflict(claim.name))
        new: Document = {"_id": claim.name, "$expr": {"$literal": False}}
        query = new if expected is None else _exactly(expected, "$lte")
        me = claim.node
        lease = _lease(Int64(claim.token), claim.ttl, me.node_id, me.version, me.host, me.pid)
        take = _set(query, lease, upsert=expected is None)
        return self._record("claim", claim.name, timeout, take, missing=Conflict(claim.name))

    def renew(
        self, record: LockRecord, ttl: float, timeout: float
    ) -> IOResult[LockRecord, Lost | BackendError]:
        extend = _set(_exactly(record, "$gt"), {"renewed_at": _NOW, "expires_at": _until(ttl)})
        return self._record("renew", record.name, timeout, extend, missing=Lost(record))

    def renew_many(
        self, records: Sequence[LockRecord], ttl: float, timeout: float
    ) -> IOResult[Renewals, BackendError]:
        """TWO round trips: no MongoDB command both updates many documents and answers them. One
        ``update`` holds every record's compare-and-set (its ``_id``, holder and token, and live
        by ``$$NOW``, as :meth:`renew`), then an observation of the names reads them back. A name
        was renewed when its document is still ours, renewed since ``record.renewed_at`` and live
        by the second ``$$NOW``: one the update did not match had expired, stays so, and only its
        holder could renew it."""
        if not records:
            return IOSuccess({})
        mine = [{"_id": record.name, "holder": record.holder, "token": record.token} for record in records]
        query = {"$or": mine, "$expr": {"$gt": [_EXPIRES, _NOW]}}
        extend = [{"$set": {"renewed_at": _NOW, "expires_at": _until(ttl)}}]
        names = [record.name for record in records]

        def renew_and_read(locks: Collection[Document]) -> list[Document]:
            locks.update_many(query, extend)
            return list(locks.aggregate(_observing(names)))

        def renewals(seen: _Seen) -> Renewals:
            now, found = seen
            by_name = {document.get("_id"): document for document in found}
            return {
                record.name: lost_unless_read(record, _renewed(record, by_name.get(record.name), now))
                for record in records
            }

        read = self._run("renew_many", timeout, renew_and_read)
        return read.bind_result(lambda documents: self._seen("renew_many", documents)).map(renewals)

    def _record(
        self, step: str, name: str, timeout: float, work: _Write, *, missing: _Refusal
    ) -> IOResult[LockRecord, _Refusal | BackendError]:
        """The record ``work`` wrote, or ``missing`` when it wrote none."""

        def record(document: Document | None) -> Result[LockRecord, _Refusal | BackendError]:
            if document is None:
                return Failure(missing)
            return parse_record(name, _fields(document)).alt(
                lambda bad: BackendError(self.url, f"{step} wrote a record that reads back wrong: {bad}")
            )

        answer: IOResult[Document | None, _Refusal | BackendError] = self._run(step, timeout, work)
        return answer.bind_result(record)

    def release(self, record: LockRecord, timeout: float) -> IOResult[bool, BackendError]:
        released = [{"$set": {"holder": "", "expires_at": {"$min": [_EXPIRES, _NOW]}}}]
        return self._clear("release", record, released, timeout)

    def revoke(self, record: LockRecord, timeout: float) -> IOResult[bool, BackendError]:
        """A plain update, not a pipeline, so its change event says only the holder changed and
        wakes no follower: nobody may claim before the kept expiry anyway."""
        return self._clear("revoke", record, {"$set": {"holder": ""}}, timeout)

    def _clear(
        self, step: str, record: LockRecord, update: Document | list[Document], timeout: float
    ) -> IOResult[bool, BackendError]:
        """Apply ``update`` if the document is still exactly ``record``'s; True when it was."""
        query = {"_id": record.name, "token": record.token, "holder": {"$eq": record.holder, "$ne": ""}}
        return self._update(step, query, update, timeout)

    def _update(
        self, step: str, query: Document, update: Document | list[Document], timeout: float
    ) -> IOResult[bool, BackendError]:
        """One ``update`` of the document ``query`` matches; True when one matched (a write of
        the values it already holds counts: the compare-and-set succeeded)."""
        return self._run(step, timeout, lambda locks: locks.update_one(query, update).matched_count == 1)

    def start_run(
        self, record: LockRecord, tick: float, timeout: float, schedule: str = ""
    ) -> IOResult[bool, BackendError]:
        """Record the start of ``tick``'s run of ``schedule`` if the lease and the ledger's numbers
        are as ``record`` saw them. A plain update, not a pipeline: a schedule starting with ``$``
        is stored as text."""
        seen = dict(zip(LEDGER_FIELDS, record.ledger.stored(), strict=True))
        started: Document = {"run_started": Int64(tick_millis(tick)), "run_token": Int64(record.token)}
        started[SCHEDULE_FIELD] = schedule
        return self._update("start_run", _running(record, seen), {"$set": started}, timeout)

    def finish_run(
        self, record: LockRecord, tick: float, ok: bool, timeout: float
    ) -> IOResult[bool, BackendError]:
        """Record the end of ``tick``'s run if this tenure started it and still holds the lease."""
        millis = tick_millis(tick)
        ours = _running(record, {"run_started": millis, "run_token": record.token})
        finished = {"run_finished": Int64(millis), "run_ok": int(ok)}
        return self._update("finish_run", ours, {"$set": finished}, timeout)

    def repair(
        self, name: str, hold: float, token_floor: int, timeout: float
    ) -> IOResult[int | None, BackendError]:
        """A whole-number token in range is kept; anything else (a string, a double, a missing
        field) is replaced by the server clock in milliseconds. The ledger: :func:`_repaired_ledger`."""
        token = "$token"
        kept = {"$max": [Int64(token_floor), {"$cond": [_whole(token), {"$toLong": token}, _NOW]}]}
        repaired = _lease(kept, hold) | _repaired_ledger()
        return self._run("repair", timeout, _set({"_id": name}, repaired)).map(
            lambda found: None if found is None else int(found["token"])
        )

    def wait_for_release(self, name: str, timeout: float) -> IOResult[bool, BackendError]:
        """:meth:`wait_for_releases` of ``name`` alone: True when its release came."""
        return self.wait_for_releases((name,), timeout).map(bool)

    def wait_for_releases(
        self, names: abc.Collection[str], timeout: float
    ) -> IOResult[frozenset[str], BackendError]:
        """The names among ``names`` released (kept while nobody waited), from the change stream,
        which watches every name ever waited for; new names cost one new stream, resumed where
        the old one was. Ends by ``timeout``, or a reply's allowance (0.1 s) later."""
        return IOResult.from_result(self._notices.wait_for(names, timeout, str))

    def names(self, timeout: float) -> IOResult[list[str], BackendError]:
        """Every lock name in the collection, sorted."""

        def ids(locks: Collection[Document]) -> list[str]:
            found = locks.find({}, {"_id": 1}).sort("_id", pymongo.ASCENDING)
            return [doc["_id"] for doc in found if isinstance(doc.get("_id"), str)]

        return self._run("names", timeout, ids)

    def close(self) -> None:
        """Close this process's client; the next call makes a new one."""
        self._notices.session.close()
        self._session.close()


def from_url(url: BackendURL) -> Result[MongoBackend, str]:
    """``mongodb://user:pass@host:port/db?collection=masterlock&<pymongo options>``."""
    return checked(lambda: _read(url, {})).map(MongoBackend._of)
