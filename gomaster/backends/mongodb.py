"""MongoDB: one document per lock name, every step one command judged by the server's clock.

The document's ``_id`` is the lock name. Times are int64 milliseconds from ``{'$toLong':
'$$NOW'}``, computed by the server inside pipeline updates, and every ``$expr`` comparison
compares longs on both sides. (Comparing ``$$NOW`` with a stored *date* misbehaves on some
wire-compatible servers; longs compare the same everywhere.) Records carry them as float epoch
seconds.

Each step is one command, so a node frozen between steps holds nothing:

- observe: one aggregation whose ``$facet`` stage always yields exactly one document, holding
  the record (if any) and ``$$NOW``;
- claim: a ``findAndModify`` whose filter is the compare-and-set precondition (an upsert that
  can only insert, for a new name);
- renew and release: one ``findAndModify`` / ``update`` each, filtered on holder and token.

Writes use majority write concern by default. With ``w=1`` an acknowledged claim can be rolled
back by a failover and the same token granted twice, which breaks fencing. Reads go to the
primary. A failover hands the clock to another member, so members' clocks must agree to within
the safety margin (NTP), like any backend clock step.

Every call runs inside :func:`pymongo.timeout`, pymongo's client-side operation timeout, which
bounds server selection, connection set-up and the socket reads, and sends ``maxTimeMS`` so the
server gives up too.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote, unquote, urlsplit

import pymongo
from bson.errors import BSONError
from bson.int64 import Int64
from pymongo import MongoClient, ReturnDocument
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError, OperationFailure, PyMongoError
from pymongo.read_preferences import ReadPreference
from pymongo.uri_parser import split_options
from returns.io import IOFailure, IOResult, IOSuccess
from returns.result import Failure, Result, Success

from gomaster.backends.base import check_identifier, timeout_error
from gomaster.backends.url import REDACTED, BackendURL, scrub
from gomaster.core.decide import Claim
from gomaster.core.errors import BackendError, Conflict, Lost
from gomaster.core.record import MAX_TOKEN, LockRecord, MalformedRecord, Observation, parse_record

Document = dict[str, Any]
T = TypeVar("T")
_Refusal = TypeVar("_Refusal", Conflict, Lost)

DEFAULT_HOST = "localhost:27017"
DEFAULT_DATABASE = "gomaster"
DEFAULT_COLLECTION = "masterlock"
#: Connecting and finding the primary give up after this long (the ``timeout`` keyword).
DEFAULT_CONNECT_TIMEOUT = 5.0
#: How often pymongo's monitor checks the server, in ms (500 is the least it accepts).
HEARTBEAT_MS = 500
SCHEMES = ("mongodb", "mongodb+srv")
_MS = 1000
#: pymongo.timeout(0) would fail before sending anything; a caller with no time left gets this.
_MIN_CALL_TIMEOUT = 0.001
#: Socket timeouts overflow on an infinite budget; no step needs more than a day.
_MAX_CALL_TIMEOUT = 86400.0
#: The server's clock, as int64 milliseconds: the same value throughout one command.
_NOW = {"$toLong": "$$NOW"}
_TIME_FIELDS = ("acquired_at", "renewed_at", "expires_at")
#: MongoDB refuses these in database names (the Unix set, plus NUL).
_DATABASE_FORBIDDEN = frozenset('/\\. "$\x00')
_MAX_DATABASE_BYTES = 63
#: Option values shown as *** in URLs and scrubbed from error messages.
_SECRET_OPTIONS = ("password", "authmechanismproperties")
#: pymongo appends a dump of the topology to selection errors; the first line says it all.
_NOISE = (", Topology Description:", ", full error:")


@dataclass(frozen=True, slots=True, kw_only=True)
class _Config:
    """Everything a process needs to reach the collection; what pickling carries."""

    scheme: str
    hosts: tuple[str, ...]
    database: str | None
    collection: str
    username: str | None
    password: str | None = field(default=None, repr=False)
    options: tuple[tuple[str, str], ...] = ()

    @property
    def lock_database(self) -> str:
        return self.database or DEFAULT_DATABASE

    def option_names(self) -> set[str]:
        return {key.lower() for key, _ in self.options}

    def secrets(self) -> list[str]:
        """Strings that must never appear in a URL, repr or message."""
        found = [self.password] if self.password else []
        found += [value for key, value in self.options if _secret(key) and value]
        return found + [quote(value, safe="") for value in found]

    def connection_string(self) -> str:
        """The URI handed to pymongo, without credentials (those go as keywords)."""
        database = quote(self.database or "", safe="")
        query = "&".join(f"{key}={_quote_option(value)}" for key, value in self.options)
        return f"{self.scheme}://{','.join(self.hosts)}/{database}" + (f"?{query}" if query else "")

    def client_arguments(self) -> dict[str, Any]:
        """Keywords for ``MongoClient``: our defaults wherever the user did not choose."""
        given = self.option_names()
        defaults: dict[str, Any] = {
            # Off, because SecantusDB slows down with it on. Correctness does not depend on it:
            # a retried claim is a compare-and-set on the token, so it cannot grant a lease
            # twice, and a retried renew or release is idempotent.
            "retryWrites": False,
            "w": "majority",
            "appName": "gomaster",
            "serverSelectionTimeoutMS": int(DEFAULT_CONNECT_TIMEOUT * _MS),
            "connectTimeoutMS": int(DEFAULT_CONNECT_TIMEOUT * _MS),
            # pymongo's least (default 10 s). Under a per-call timeout pymongo refuses to start
            # an operation when the time left is below the server's smallest recent round trip,
            # and that figure comes from the monitor's checks: one slow check (a loaded host, a
            # slow network) kept a node failing every call for tens of seconds in the chaos
            # harness. Checking twice a second lets such a figure age out within seconds.
            "heartbeatFrequencyMS": HEARTBEAT_MS,
        }
        chosen = {key: value for key, value in defaults.items() if key.lower() not in given}
        if self.username is not None:
            chosen["username"] = self.username
        if self.password is not None:
            chosen["password"] = self.password
        return chosen

    def redacted(self) -> str:
        """The URL as users may see it: the password and secret options shown as ***."""
        auth = ""
        if self.username is not None:
            auth = quote(self.username, safe="") + (f":{REDACTED}" if self.password is not None else "") + "@"
        shown = [] if self.collection == DEFAULT_COLLECTION else [("collection", self.collection)]
        shown += [(key, REDACTED if _secret(key) else value) for key, value in self.options]
        query = "&".join(f"{key}={value}" for key, value in shown)
        database = self.database or ""
        return f"{self.scheme}://{auth}{','.join(self.hosts)}/{database}" + (f"?{query}" if query else "")


def _quote_option(value: str) -> str:
    """Percent-encode an option value, leaving the ``:`` and ``,`` that tag lists are made of."""
    return quote(value, safe=":,")


def _secret(option: str) -> bool:
    return any(word in option.lower() for word in _SECRET_OPTIONS)


def _scrub(text: str, secrets: Sequence[str]) -> str:
    return scrub(text, *secrets)


def _check_config(config: _Config) -> Result[_Config, str]:
    """Refuse a configuration that cannot work, naming the problem and never the password.

    Building a ``MongoClient`` with ``connect=False`` runs pymongo's own validation of every
    option without touching the network (not even for SRV lookups).
    """
    if config.scheme not in SCHEMES:
        return Failure(f"a MongoDB URL starts with mongodb:// or mongodb+srv://, not {config.scheme}://")
    if not config.hosts or not all(config.hosts):
        return Failure(f"no MongoDB host given in {config.redacted()}")
    if config.database is not None:
        bad = sorted(_DATABASE_FORBIDDEN.intersection(config.database))
        if bad or len(config.database.encode()) > _MAX_DATABASE_BYTES:
            return Failure(
                f"database name {config.database!r} is not allowed: at most {_MAX_DATABASE_BYTES} "
                'bytes, with no / \\ . " $, space or NUL'
            )
    named = check_identifier("collection", config.collection)
    if isinstance(named, Failure):
        return Failure(named.failure())
    secrets = config.secrets()
    for key, value in config.options:
        try:
            # Only warns about a bad option inside a URI; asked this way, it raises.
            split_options(f"{key}={_quote_option(value)}", validate=True, warn=False)
        except (PyMongoError, ValueError, TypeError, OSError) as exc:
            shown = REDACTED if _secret(key) else value
            return Failure(f"bad MongoDB option {key}={shown!r}: {_scrub(str(exc), secrets)}")
    try:
        MongoClient[Document](config.connection_string(), connect=False, **config.client_arguments()).close()
    except (PyMongoError, ValueError, TypeError, OSError) as exc:
        return Failure(f"bad MongoDB configuration in {config.redacted()}: {_scrub(str(exc), secrets)}")
    return Success(config)


def _fields(document: Mapping[str, Any]) -> dict[str, object]:
    """A stored document as ``parse_record`` fields: milliseconds become seconds, garbage stays."""
    fields: dict[str, object] = dict(document)
    for key in _TIME_FIELDS:
        value = fields.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            fields[key] = value / _MS
    return fields


def _literal(value: str) -> dict[str, object]:
    """Values in a pipeline ``$set`` are expressions: keep a holder named ``$x`` plain text."""
    return {"$literal": value}


def _lease_fields(claim: Claim) -> dict[str, object]:
    me = claim.node
    return {
        "holder": _literal(me.node_id),
        "version": _literal(me.version),
        "token": Int64(claim.token),
        "acquired_at": _NOW,
        "renewed_at": _NOW,
        "expires_at": {"$add": [_NOW, _milliseconds(claim.ttl)]},
        "host": _literal(me.host),
        "pid": Int64(me.pid),
    }


def _budget(timeout: float) -> float:
    """The caller's timeout as pymongo can take it (NaN and negatives become the minimum)."""
    if not timeout > _MIN_CALL_TIMEOUT:
        return _MIN_CALL_TIMEOUT
    return min(timeout, _MAX_CALL_TIMEOUT)


def _milliseconds(seconds: float) -> Int64:
    return Int64(round(seconds * _MS))


class MongoBackend:
    """Lock records in a MongoDB collection; picklable, connects lazily in each process.

    The keywords follow go-master's Mongo options: ``hosts`` (``"host:port"`` strings),
    ``database``, ``replica_set``, ``auth_source``, ``user``, ``password``, ``timeout`` (seconds
    to connect and find the primary), ``tls``, ``pool_limit`` and ``collection``. ``options``
    passes any other connection-string option on to pymongo. Raises ``ValueError`` for a
    configuration that cannot work.
    """

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
        chosen: list[tuple[str, object]] = [
            ("replicaSet", replica_set),
            ("authSource", auth_source),
            ("tls", tls),
            ("maxPoolSize", pool_limit),
        ]
        if timeout is not None:
            if not timeout > 0:
                raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
            chosen += [
                ("connectTimeoutMS", round(timeout * _MS)),
                ("serverSelectionTimeoutMS", round(timeout * _MS)),
            ]
        chosen += list((options or {}).items())
        config = _Config(
            scheme="mongodb+srv" if srv else "mongodb",
            hosts=(hosts,) if isinstance(hosts, str) else tuple(hosts),
            database=database,
            collection=collection,
            username=user,
            password=password,
            options=tuple((key, _option_text(value)) for key, value in chosen if value is not None),
        )
        checked = _check_config(config)
        if isinstance(checked, Failure):
            raise ValueError(checked.failure())
        self._adopt(checked.unwrap())

    @classmethod
    def _from_config(cls, config: _Config) -> MongoBackend:
        backend = cls.__new__(cls)
        backend._adopt(config)
        return backend

    def _adopt(self, config: _Config) -> None:
        self._config = config
        self._url = config.redacted()
        self._secrets = config.secrets()
        self._client: MongoClient[Document] | None = None
        self._locks: Collection[Document] | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, _Config]:
        return {"config": self._config}

    def __setstate__(self, state: dict[str, _Config]) -> None:
        self._adopt(state["config"])

    def __repr__(self) -> str:
        return f"MongoBackend({self.url!r})"

    @property
    def url(self) -> str:
        """The connection URL with the password (and any secret option) replaced by ``***``."""
        return self._url

    @property
    def database(self) -> str:
        """The database holding the lock collection."""
        return self._config.lock_database

    @property
    def collection(self) -> str:
        """The collection holding one document per lock name."""
        return self._config.collection

    @property
    def notifies(self) -> bool:
        """Not yet: followers poll (a change stream could wake them later)."""
        return False

    # -- connection ---------------------------------------------------------------------

    def _collection(self) -> Collection[Document]:
        """This process's client, made on first use, and the lock collection reading the primary.

        A client inherited through ``fork`` is left alone (closing it could disturb the parent's
        sockets) and a new one made, so no connection is ever shared across processes.
        """
        with self._lock:
            if self._locks is None or self._pid != os.getpid():
                config = self._config
                self._client = MongoClient(
                    config.connection_string(), connect=False, **config.client_arguments()
                )
                self._locks = self._client[config.lock_database].get_collection(
                    config.collection, read_preference=ReadPreference.PRIMARY
                )
                self._pid = os.getpid()
            return self._locks

    def _run(
        self, step: str, timeout: float, operation: Callable[[Collection[Document]], T]
    ) -> Result[T, BackendError]:
        """The one place where driver exceptions become ``BackendError`` values."""
        try:
            with pymongo.timeout(_budget(timeout)):
                return Success(operation(self._collection()))
        except PyMongoError as exc:
            return Failure(self._error(step, timeout, exc, timed_out=exc.timeout))
        except (BSONError, UnicodeEncodeError) as exc:  # a value BSON cannot carry, e.g. a lone surrogate
            return Failure(self._error(step, timeout, exc, timed_out=False))

    def _error(self, step: str, timeout: float, exc: Exception, *, timed_out: bool) -> BackendError:
        text = str(exc)
        for noise in _NOISE:
            text = text.split(noise, 1)[0]
        if isinstance(exc, OperationFailure) and exc.code is not None:
            text += f" (code {exc.code})"
        cause = f"{type(exc).__name__}: {_scrub(text, self._secrets)}"
        if timed_out:
            return BackendError(self.url, f"{timeout_error(self.url, step, timeout).message}: {cause}")
        return BackendError(self.url, f"{step} failed: {cause}")

    # -- the steps ----------------------------------------------------------------------

    def observe(self, name: str, timeout: float) -> IOResult[Observation, BackendError | MalformedRecord]:
        """One aggregation: the record (if any) and the server's clock from the same command.

        ``$facet`` emits exactly one document even when ``$match`` finds nothing, so an absent
        record still comes back with ``$$NOW`` and no second round trip is ever needed.
        """
        pipeline: list[Document] = [
            {"$match": {"_id": name}},
            {"$facet": {"found": [{"$limit": 1}]}},
            {"$addFields": {"now": _NOW}},
        ]
        answer = self._run("observe", timeout, lambda coll: list(coll.aggregate(pipeline)))
        if isinstance(answer, Failure):
            return IOFailure(answer.failure())
        documents = answer.unwrap()
        now = documents[0].get("now") if len(documents) == 1 else None
        found = documents[0].get("found") if len(documents) == 1 else None
        if isinstance(now, bool) or not isinstance(now, int) or not isinstance(found, list):
            return IOFailure(BackendError(self.url, f"observe got an unexpected answer: {documents!r}"))
        server_now = now / _MS
        if not found:
            return IOSuccess(Observation(None, server_now))
        record = parse_record(name, _fields(found[0]))
        return IOResult.from_result(record.map(lambda parsed: Observation(parsed, server_now)))

    def claim(self, claim: Claim, timeout: float) -> IOResult[LockRecord, Conflict | BackendError]:
        """Create the document, or take over exactly the expected one once it is free.

        A new name is an upsert whose filter never matches a stored document, so it can only
        insert; losing a race to create it is a duplicate ``_id`` (code 11000), a ``Conflict``.
        A takeover matches only the observed holder and token and only once the lease has
        expired by the server's clock (a release expires it at once), so of all contenders for token ``t + 1``
        exactly one finds the document still at ``t``.
        """
        expected = claim.expected
        if expected is None:
            query: Document = {"_id": claim.name, "$expr": {"$literal": False}}
        elif claim.token != expected.token + 1:
            return IOFailure(Conflict(claim.name))
        else:
            query = {
                "_id": claim.name,
                "holder": expected.holder,
                "token": expected.token,
                "$expr": {"$lte": [{"$toLong": "$expires_at"}, _NOW]},
            }
        pipeline = [{"$set": _lease_fields(claim)}]

        def take(coll: Collection[Document]) -> Document | None:
            try:
                return coll.find_one_and_update(
                    query, pipeline, upsert=expected is None, return_document=ReturnDocument.AFTER
                )
            except DuplicateKeyError:
                return None

        return self._one("claim", claim.name, timeout, take, missing=Conflict(claim.name))

    def renew(
        self, record: LockRecord, ttl: float, timeout: float
    ) -> IOResult[LockRecord, Lost | BackendError]:
        """Extend our own lease to server now + ttl, only while it has not expired by that clock."""
        query: Document = {
            "_id": record.name,
            "holder": record.holder,
            "token": record.token,
            "$expr": {"$gt": [{"$toLong": "$expires_at"}, _NOW]},
        }
        pipeline = [{"$set": {"renewed_at": _NOW, "expires_at": {"$add": [_NOW, _milliseconds(ttl)]}}}]

        def extend(coll: Collection[Document]) -> Document | None:
            return coll.find_one_and_update(query, pipeline, return_document=ReturnDocument.AFTER)

        return self._one("renew", record.name, timeout, extend, missing=Lost(record))

    def _one(
        self,
        step: str,
        name: str,
        timeout: float,
        operation: Callable[[Collection[Document]], Document | None],
        *,
        missing: _Refusal,
    ) -> IOResult[LockRecord, _Refusal | BackendError]:
        answer = self._run(step, timeout, operation)
        if isinstance(answer, Failure):
            return IOFailure(answer.failure())
        document = answer.unwrap()
        if document is None:
            return IOFailure(missing)
        parsed = parse_record(name, _fields(document))
        if isinstance(parsed, Failure):
            return IOFailure(
                BackendError(self.url, f"{step} wrote a record that reads back wrong: {parsed.failure()}")
            )
        return IOSuccess(parsed.unwrap())

    def release(self, record: LockRecord, timeout: float) -> IOResult[bool, BackendError]:
        """Mark the lease released if it is still exactly this holder's. Never deletes: the token stays."""
        query: Document = {
            "_id": record.name,
            "token": record.token,
            "holder": {"$eq": record.holder, "$ne": ""},
        }
        pipeline = [{"$set": {"holder": "", "expires_at": {"$min": [{"$toLong": "$expires_at"}, _NOW]}}}]
        answer = self._run("release", timeout, lambda coll: coll.update_one(query, pipeline).matched_count)
        return IOResult.from_result(answer).map(lambda matched: matched == 1)

    def revoke(self, record: LockRecord, timeout: float) -> IOResult[bool, BackendError]:
        """Clear the holder, keeping token and expiry (see ``LockBackend.revoke``)."""
        query: Document = {
            "_id": record.name,
            "token": record.token,
            "holder": {"$eq": record.holder, "$ne": ""},
        }
        answer = self._run(
            "revoke", timeout, lambda coll: coll.update_one(query, {"$set": {"holder": ""}}).matched_count
        )
        return IOResult.from_result(answer).map(lambda matched: matched == 1)

    def repair(
        self, name: str, hold: float, token_floor: int, timeout: float
    ) -> IOResult[int | None, BackendError]:
        """Rewrite the document as released until ``hold`` from now (see ``LockBackend.repair``).

        One pipeline update: a whole-number token in range is kept, anything else (a string, a
        double, a missing field) is replaced by the server clock in milliseconds.
        """
        token = "$token"
        valid = {
            "$and": [
                {"$in": [{"$type": token}, ["int", "long"]]},
                {"$gte": [token, 0]},
                {"$lt": [token, Int64(MAX_TOKEN)]},
            ]
        }
        fields = {
            "token": {"$max": [Int64(token_floor), {"$cond": [valid, {"$toLong": token}, _NOW]}]},
            "holder": "",
            "version": "",
            "host": "",
            "pid": Int64(0),
            "acquired_at": _NOW,
            "renewed_at": _NOW,
            "expires_at": {"$add": [_NOW, _milliseconds(hold)]},
        }

        def rewrite(coll: Collection[Document]) -> Document | None:
            pipeline = [{"$set": fields}]
            after = ReturnDocument.AFTER
            return coll.find_one_and_update({"_id": name}, pipeline, {"token": 1}, return_document=after)

        answer = self._run("repair", timeout, rewrite)
        return IOResult.from_result(answer).map(lambda found: None if found is None else int(found["token"]))

    def wait_for_release(self, name: str, timeout: float) -> IOResult[bool, BackendError]:
        """No notifications yet: report at once that none came, so the caller polls."""
        return IOSuccess(False)

    def names(self, timeout: float) -> IOResult[list[str], BackendError]:
        """Every lock name in the collection, sorted."""

        def ids(coll: Collection[Document]) -> list[str]:
            found = coll.find({}, {"_id": 1}).sort("_id", pymongo.ASCENDING)
            return [doc["_id"] for doc in found if isinstance(doc.get("_id"), str)]

        return IOResult.from_result(self._run("names", timeout, ids))

    def close(self) -> None:
        """Close this process's client; the next call makes a new one."""
        with self._lock:
            client, self._client, self._locks = self._client, None, None
            mine = self._pid == os.getpid()
        if client is not None and mine:
            client.close()


def _option_text(value: object) -> str:
    """A keyword option as connection-string text (``True`` is ``true``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def from_url(url: BackendURL) -> Result[MongoBackend, str]:
    """``mongodb://user:pass@host:port/db?collection=masterlock&<pymongo options>``.

    ``collection`` is ours; every other query option goes to ``MongoClient``. The locks live in
    the URL's database (``gomaster`` when it names none). As in any MongoDB URL, credentials are
    checked in that database, or in ``admin`` when the URL names none, unless ``authSource``
    says otherwise.
    """
    netloc = urlsplit(url.raw).netloc if url.raw else ""
    hostlist = netloc.rpartition("@")[2]
    if not hostlist and url.host:
        hostlist = url.host + (f":{url.port}" if url.port is not None else "")
    database = unquote(url.path.removeprefix("/")) or None
    config = _Config(
        scheme=url.scheme,
        hosts=tuple(hostlist.split(",")) if hostlist else (),
        database=database,
        collection=url.option("collection", DEFAULT_COLLECTION) or DEFAULT_COLLECTION,
        username=url.username,
        password=url.password,
        options=tuple((key, value) for key, value in url.query if key != "collection"),
    )
    return _check_config(config).map(MongoBackend._from_config)
