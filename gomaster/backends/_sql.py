"""The SQL backends' statements, written once over what SQLite, MySQL/MariaDB and PostgreSQL
each say their own way.

Every step is ONE compare-and-set statement judged by the server's clock and sent in one round
trip, so a node that freezes between steps never holds a transaction or a row lock open:

- observe: the clock LEFT JOINed to the row, so the clock comes back when the row is absent
  (``observe_many``: to every named row there is);
- claim: an INSERT that an existing row refuses, or a takeover, an UPDATE while name, token and
  holder still equal the observation and the lease has expired by the server's clock;
- renew: an UPDATE while holder and token are ours and the lease is still live (``renew_many``:
  one UPDATE for many rows, each with its own holder and token);
- release clears the holder and pulls the expiry back to now; revoke (the operator's release)
  clears the holder only; both keep the token;
- repair: rewrites the row as released until ``hold`` from now, never lowering the token;
- start_run and finish_run: an UPDATE of the run ledger's columns (a schedule's last started
  and finished tick) while holder and token are ours, the lease is live and the ledger is as
  the caller saw it.

A table made before the ledger existed gains its columns when a node first connects (``ALTER
TABLE ... ADD COLUMN``, with defaults that mean "no run yet"); a user who may not alter it is
told the statements to run.

A write answers the row it wrote, and no row when its WHERE matched nothing. Each statement
reads the clock once, so ``acquired_at == renewed_at`` on a claim, exactly. A :class:`Dialect`
holds only the pieces that differ; the comments there say why each one must.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, Protocol, TypeVar

from returns.io import IOResult, IOSuccess
from returns.result import Failure, Result, Success

from gomaster.backends._session import Session
from gomaster.backends._settings import Configured, Settings
from gomaster.backends.base import Observations, Renewals, lost_unless_read
from gomaster.core.decide import Claim
from gomaster.core.errors import BackendError, Conflict, Lost
from gomaster.core.record import (
    LEDGER_FIELDS,
    MAX_TOKEN,
    SCHEDULE_FIELD,
    LockRecord,
    MalformedRecord,
    Observation,
    parse_record,
    tick_millis,
)

LEASE_FIELDS = ("holder", "version", "token", "acquired_at", "renewed_at", "expires_at", "host", "pid")
#: Every column a step returns: the lease, then the run ledger.
FIELDS = (*LEASE_FIELDS, *LEDGER_FIELDS, SCHEDULE_FIELD)
COLUMNS = ", ".join(LEASE_FIELDS)
#: What a ledger column holds in a row that never ran on a schedule (see ``Ledger.stored``), as SQL.
LEDGER_DEFAULTS = {**dict(zip(LEDGER_FIELDS, ("0", "0", "0", "1"), strict=True)), SCHEDULE_FIELD: "''"}
_TIMES = frozenset({"acquired_at", "renewed_at", "expires_at"})

Row = Sequence[Any]
_S = TypeVar("_S", bound=Settings)
_N = TypeVar("_N", bound="ServerSettings")
_T = TypeVar("_T")
_Refusal = TypeVar("_Refusal", Conflict, Lost)


def _shape(
    text: _T, token: _T, time: _T, pid: _T, name: _T | None = None, holder: _T | None = None
) -> dict[str, _T]:
    """Something for each column, in the table's order (``name`` first)."""
    name = text if name is None else name
    return {
        "name": name,
        "holder": name if holder is None else holder,
        "version": text,
        "token": token,
        "acquired_at": time,
        "renewed_at": time,
        "expires_at": time,
        "host": text,
        "pid": pid,
        **dict.fromkeys(LEDGER_FIELDS, token),
        SCHEDULE_FIELD: text,
    }


def _as_is(value: _T) -> _T:
    return value


def affinity(declared: str) -> str:
    """The type affinity SQLite gives a column declared as ``declared`` (its rules, in order)."""
    kind = declared.upper()
    if "INT" in kind:
        return "INTEGER"
    if any(word in kind for word in ("CHAR", "CLOB", "TEXT")):
        return "TEXT"
    if "BLOB" in kind or not kind:
        return "BLOB"
    if any(word in kind for word in ("REAL", "FLOA", "DOUB")):
        return "REAL"
    return "NUMERIC"


def _mysql_value(value: object) -> object:
    """A MySQL value as ``parse_record`` takes it (anything odd passes, to be refused there). A
    DATETIME is read as UTC here: MySQL's ``UNIX_TIMESTAMP`` would apply the session's time zone."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC).timestamp()
    if isinstance(value, bytes | bytearray):
        with contextlib.suppress(UnicodeDecodeError):
            return bytes(value).decode("utf-8")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class Dialect:
    """What one SQL server says its own way; the statements themselves are :class:`Statements`'."""

    quote: str
    mark: str
    #: The server's clock, as a value the time columns store.
    clock: str
    #: Read the clock once per statement in a one-row CTE ``n``: needed where it moves on
    #: within a statement (PostgreSQL's ``clock_timestamp()``).
    once: bool = False
    #: ``{now}`` plus ``{p}`` seconds (the placeholder's value made by ``span``).
    later: str
    span: Callable[[float], object] = float
    least: str = "LEAST"
    greatest: str = "GREATEST"
    #: A time column as float epoch seconds in SQL; ``value`` finishes the job in Python.
    epoch: str = "{}"
    value: Callable[[object], object] = _as_is
    #: ``{now}`` as whole epoch milliseconds.
    millis: str
    #: More a stored integer column ``{}`` must satisfy to be kept by ``repair``.
    integer: str = ""
    #: Where a column's declared type does not bind what it holds (SQLite), what makes
    #: ``run_schedule`` text; ``repair`` empties it otherwise.
    text: str = ""
    #: How a missing column is added to the table ``{table}``, declared as ``{column}``.
    add_column: str = "ALTER TABLE {table} ADD COLUMN {column}"
    #: False where writes have no ``RETURNING``: the row is read back by a second statement
    #: in the same round trip (see :class:`Statement`).
    returning: bool = True
    #: Where writes have no ``RETURNING``, a batch renewal keeps its clock in this session
    #: variable, so the SELECT after it finds exactly the rows it renewed (``renewed_at`` equals it).
    session_now: str = ""
    #: How a first claim yields to an existing row; without it the driver's duplicate-key error
    #: must be read as "no row".
    on_conflict: str = " ON CONFLICT (name) DO NOTHING"
    #: A release notice sent by the release itself, as a SELECT over the released row.
    notify: str = ""
    types: Mapping[str, str]
    #: Column -> the kinds (as ``kind`` normalises a found type) it may have.
    accepted: Mapping[str, tuple[str, ...]]
    kind: Callable[[str], str] = _as_is
    engine: str = ""
    #: (column, type, unique on its own) for each column of the table named by the one parameter.
    columns: str


#: One machine, one clock: ``julianday('now')`` is fixed for a whole statement. Times are REAL
#: epoch seconds; a column's declared type only sets its affinity, and a value of another kind
#: is stored as it comes (a token as text), hence the ``typeof`` check and the affinity rules.
SQLITE = Dialect(
    quote='"',
    mark="?",
    clock="((julianday('now') - 2440587.5) * 86400.0)",
    later="{now} + {p}",
    least="MIN",
    greatest="MAX",
    millis="CAST({now} * 1000 AS INTEGER)",
    integer="typeof({}) = 'integer' AND ",
    text="typeof(run_schedule) = 'text'",
    types=_shape("TEXT", "INTEGER", "REAL", "INTEGER"),
    accepted=_shape(("TEXT",), ("INTEGER",), ("REAL",), ("INTEGER",)),
    kind=affinity,
    columns=(
        'SELECT c.name, c.type, EXISTS (SELECT 1 FROM pragma_index_list(?1) AS l WHERE l."unique" '
        "AND NOT l.partial AND (SELECT group_concat(i.name) FROM pragma_index_info(l.name) AS i) = c.name) "
        "FROM pragma_table_info(?1) AS c"
    ),
)

#: ``UTC_TIMESTAMP(6)`` is fixed for a statement and free of time zones; DATETIME(6) columns are
#: never converted between zones (TIMESTAMP would be). MySQL has no ``UPDATE ... RETURNING``
#: (MariaDB only for INSERT and DELETE), so rows are read back. Names are VARBINARY because even
#: ``utf8mb4_bin`` pads: ``'a'`` and ``'a '`` would be one key.
_MYSQL_TEXT = ("varchar", "varbinary", "char", "binary", "text", "tinytext", "mediumtext", "longtext")
MYSQL = Dialect(
    quote="`",
    mark="%s",
    clock="UTC_TIMESTAMP(6)",
    later="{now} + INTERVAL {p} MICROSECOND",
    span=lambda seconds: round(seconds * 1_000_000),
    value=_mysql_value,
    millis="UNIX_TIMESTAMP() * 1000",
    returning=False,
    session_now="@gomaster_now",
    on_conflict="",
    types=_shape(
        "VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
        "BIGINT",
        "DATETIME(6)",
        "BIGINT",
        name="VARBINARY(800)",
        holder="VARBINARY(255)",
    ),
    accepted=_shape(
        _MYSQL_TEXT, ("bigint",), ("datetime",), ("bigint", "int", "mediumint"), name=_MYSQL_TEXT[:4]
    ),
    engine=" ENGINE=InnoDB",
    # One scan of the table's own columns: a correlated subquery over information_schema makes
    # MariaDB 10.11 read every table of every database, and it crashed the server (signal 11)
    # doing so under load. A key is PRI (the primary key: alone when it is the only PRI column)
    # or UNI (a unique index of that column alone).
    columns=(
        "SELECT LOWER(column_name), LOWER(data_type), column_key = 'UNI' OR column_key = 'PRI' "
        "AND SUM(column_key = 'PRI') OVER () = 1 FROM information_schema.columns "
        "WHERE table_schema = DATABASE() AND table_name = %s"
    ),
)

#: TIMESTAMPTZ columns: exact to the microsecond and free of session time zones; sent back as
#: float8 epoch seconds, so a corrupted time ('infinity', NULL) arrives as a value that
#: ``parse_record`` refuses rather than as a driver error.
POSTGRESQL = Dialect(
    quote='"',
    mark="%s",
    clock="clock_timestamp()",
    once=True,
    later="{now} + make_interval(secs => {p})",
    epoch="date_part('epoch', {})",
    millis="floor(date_part('epoch', {now}) * 1000)::bigint",
    notify="pg_notify({p}, name)",
    add_column="ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column}",
    types=_shape("TEXT", "BIGINT", "TIMESTAMPTZ", "BIGINT"),
    accepted=_shape(
        ("text", "character varying"), ("bigint",), ("timestamp with time zone",), ("bigint", "integer")
    ),
    kind=lambda found: re.sub(r"\(.*\)", "", found),
    columns=(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod), EXISTS (SELECT 1 FROM pg_index i "
        "WHERE i.indrelid = a.attrelid AND i.indisunique AND i.indnatts = 1 AND i.indkey[0] = a.attnum "
        "AND i.indpred IS NULL AND i.indexprs IS NULL) FROM pg_attribute a "
        "WHERE a.attrelid = to_regclass(quote_ident(%s)) AND a.attnum > 0 AND NOT a.attisdropped"
    ),
)


class SetupError(Exception):
    """The server answered, but the database, file or lock table cannot be used as configured; the
    message says what to fix."""


@dataclass(frozen=True, slots=True)
class Statement:
    """One step's SQL and its values, sent in one round trip. With ``read_back`` the SQL is a write
    and then a SELECT of what it wrote, and the answer is the SELECT's rows when the write matched
    exactly one row (a first claim's duplicate key matched none), else none. SQL of several
    statements otherwise (MySQL's batch renewal) answers the rows of its last."""

    sql: str
    params: tuple[object, ...] = ()
    read_back: bool = False


class Statements:
    """The steps' statements for one table in one dialect; ``label`` names the table in messages."""

    def __init__(self, dialect: Dialect, table: str, label: str | None = None) -> None:
        q, self.p = dialect.quote, dialect.mark
        self.dialect = dialect
        self.name, self.table = table, f"{q}{table}{q}"
        self.label = label or self.table
        self.now = "n.now" if dialect.once else dialect.clock
        self.head = f"WITH n AS (SELECT {dialect.clock} AS now) " if dialect.once else ""
        self.source = " FROM n" if dialect.once else ""
        self.later = dialect.later.format(now=self.now, p=self.p)
        self.held = f"WHERE name = {self.p} AND holder = {self.p} AND token = {self.p} AND holder <> ''"
        columns = [f"    {self._declared(c, t)}" for c, t in dialect.types.items()]
        self.schema = (
            f"CREATE TABLE IF NOT EXISTS {self.table} (\n" + ",\n".join(columns) + f"\n){dialect.engine}"
        )
        self.columns = Statement(dialect.columns, (table,))
        #: What a claim or a renewal returns: the whole record.
        self.back = self.returned()

    def _declared(self, column: str, kind: str) -> str:
        """A column as the table declares it; the ledger's have defaults, so rows written by a
        gomaster that knew no ledger read as "no run yet"."""
        default = f" DEFAULT {LEDGER_DEFAULTS[column]}" if column in LEDGER_DEFAULTS else ""
        key = " PRIMARY KEY" if column == "name" else ""
        return f"{column:<11} {kind} NOT NULL{default}{key}"

    def additions(self, missing: Collection[str]) -> list[Statement]:
        """The statements that give a table of an earlier gomaster the ledger columns it lacks."""
        return [
            Statement(
                self.dialect.add_column.format(
                    table=self.table, column=self._declared(column, self.dialect.types[column])
                )
            )
            for column in LEDGER_DEFAULTS
            if column in missing
        ]

    def returned(self, alias: str = "") -> str:
        """The record's columns as statements return them."""
        epoch = self.dialect.epoch
        return ", ".join(epoch.format(alias + c) if c in _TIMES else alias + c for c in FIELDS)

    def _written(self, sql: str, params: tuple[object, ...], back: str, **key: object) -> Statement:
        if self.dialect.returning:
            return Statement(f"{sql} RETURNING {back}", params)
        where = " AND ".join(f"{column} = {self.p}" for column in key)
        read = f"SELECT {back} FROM {self.table} WHERE {where}"
        return Statement(f"{sql}; {read}", (*params, *key.values()), read_back=True)

    def _marks(self, count: int) -> str:
        return ", ".join([self.p] * count)

    def observe(self, name: str) -> Statement:
        return self.observe_many((name,))

    def observe_many(self, names: Sequence[str]) -> Statement:
        """The clock, and each named row there is beside it: one row per record found, or one
        row of NULLs beside the clock when none is; ``IN`` finds each row by the key."""
        sql = (
            f"SELECT {self.dialect.epoch.format('n.now')}, t.name, {self.returned('t.')} "
            f"FROM (SELECT {self.dialect.clock} AS now) AS n LEFT JOIN {self.table} AS t "
            f"ON t.name IN ({self._marks(len(names))})"
        )
        return Statement(sql, tuple(names))

    @cached_property
    def _first(self) -> str:
        """A first claim: an INSERT that a present name turns into nothing."""
        p, now = self.p, self.now
        values = ", ".join((p, p, p, p, now, now, self.later, p, p))
        return (
            f"{self.head}INSERT INTO {self.table} (name, {COLUMNS}) "
            f"SELECT {values}{self.source}{self.dialect.on_conflict}"
        )

    @cached_property
    def _takeover(self) -> str:
        """A claim after an expected record: an UPDATE of exactly that row, once expired."""
        p, now = self.p, self.now
        return (
            f"{self.head}UPDATE {self.table} SET holder = {p}, version = {p}, token = {p}, "
            f"acquired_at = {now}, renewed_at = {now}, expires_at = {self.later}, host = {p}, pid = {p}"
            f"{self.source} WHERE name = {p} AND token = {p} AND holder = {p} AND expires_at <= {now}"
        )

    def _renewing(self, now: str) -> str:
        """A renewal's UPDATE up to its WHERE, on the clock ``now``."""
        later = self.dialect.later.format(now=now, p=self.p)
        return f"UPDATE {self.table} SET renewed_at = {now}, expires_at = {later}"

    @cached_property
    def _renewal(self) -> str:
        p, now = self.p, self.now
        return (
            f"{self.head}{self._renewing(now)}{self.source} "
            f"WHERE name = {p} AND holder = {p} AND token = {p} AND expires_at > {now}"
        )

    def claim(self, claim: Claim) -> Statement:
        """INSERT when absent, else UPDATE only the exact expected row once it has expired by server
        time (a graceful release expires it at once; an operator's revoke keeps the expiry)."""
        me, expected = claim.node, claim.expected
        mine = (me.node_id, me.version, claim.token, self.dialect.span(claim.ttl), me.host, me.pid)
        params: tuple[object, ...]
        if expected is None:
            sql, params = self._first, (claim.name, *mine)
        else:
            sql, params = self._takeover, (*mine, claim.name, expected.token, expected.holder)
        return self._written(sql, params, self.back, name=claim.name, holder=me.node_id, token=claim.token)

    def renew(self, record: LockRecord, ttl: float) -> Statement:
        params = (self.dialect.span(ttl), record.name, record.holder, record.token)
        if self.dialect.returning:  # the common case, spared _written's keywords
            return Statement(f"{self._renewal} RETURNING {self.back}", params)
        mine = {"name": record.name, "holder": record.holder, "token": record.token}
        return self._written(self._renewal, params, self.back, **mine)

    def renew_many(self, records: Sequence[LockRecord], ttl: float) -> Statement:
        """Every record's renewal as ONE UPDATE, answering the name and record of each row it
        renewed. ``name IN`` finds the rows by the key, and a CASE on the name holds each row's own
        compare-and-set, holder and token (a chain of ORs would do, but SQLite refuses expressions
        more than 1,000 deep); the lease must still be live, as in :meth:`renew`. Without
        ``RETURNING`` (MySQL) the clock goes into a session variable first and a SELECT in the
        same round trip reads the rows whose ``renewed_at`` the UPDATE set to it."""
        p, d, count = self.p, self.dialect, len(records)
        cases = " ".join([f"WHEN {p} THEN holder = {p} AND token = {p}"] * count)
        mine = f"name IN ({self._marks(count)}) AND CASE name {cases} END"
        cas = (*(r.name for r in records), *(v for r in records for v in (r.name, r.holder, r.token)))
        if d.returning:
            sql = (
                f"{self.head}{self._renewing(self.now)}{self.source} WHERE {mine} "
                f"AND expires_at > {self.now} RETURNING name, {self.back}"
            )
            return Statement(sql, (d.span(ttl), *cas))
        now = d.session_now
        sql = (
            f"SET {now} = {d.clock}; {self._renewing(now)} WHERE {mine} AND expires_at > {now}; "
            f"SELECT name, {self.back} FROM {self.table} WHERE {mine} AND renewed_at = {now}"
        )
        return Statement(sql, (d.span(ttl), *cas, *cas))

    def release(self, record: LockRecord, channel: str) -> Statement:
        """Clear the holder if the lease is still exactly ``record``'s, expiring it now; where the
        dialect notifies, the notice goes out on ``channel`` when the statement commits."""
        sql = (
            f"UPDATE {self.table} SET holder = '', expires_at = {self.dialect.least}(expires_at, {self.now})"
            f"{self.source} {self.held}"
        )
        params = (record.name, record.holder, record.token)
        notify = self.dialect.notify
        if notify:
            released = f"{self.head.rstrip()}, released AS ({sql} RETURNING name)"
            return Statement(f"{released} SELECT {notify.format(p=self.p)} FROM released", (*params, channel))
        return self._written(self.head + sql, params, "token", name=record.name)

    def revoke(self, record: LockRecord) -> Statement:
        sql = f"UPDATE {self.table} SET holder = '' {self.held}"
        return self._written(sql, (record.name, record.holder, record.token), "token", name=record.name)

    def repair(self, name: str, hold: float, token_floor: int) -> Statement:
        """``token`` is assigned first: MySQL evaluates assignments in order, and it reads the old token."""
        d, p, now = self.dialect, self.p, self.now
        millis = d.millis.format(now=now)

        def valid(column: str) -> str:
            return f"{d.integer.format(column)}{column} >= 0 AND {column} < {MAX_TOKEN}"

        kept = f"CASE WHEN {valid('token')} THEN token ELSE {millis} END"
        started, finished = valid("run_started"), valid("run_finished")
        # A corrupted ledger becomes "the run of now has finished": never a second run of a tick
        # that may have run. run_finished is assigned before run_started, whose old value it reads.
        ledger = (
            f"run_finished = CASE WHEN {started} AND {finished} THEN run_finished ELSE {millis} END, "
            f"run_started = CASE WHEN {started} THEN run_started ELSE {millis} END, "
            f"run_token = CASE WHEN {valid('run_token')} THEN run_token ELSE 0 END, "
            f"run_ok = CASE WHEN {d.integer.format('run_ok')}run_ok IN (0, 1) THEN run_ok ELSE 1 END"
            + (f", run_schedule = CASE WHEN {d.text} THEN run_schedule ELSE '' END" if d.text else "")
        )
        sql = (
            f"{self.head}UPDATE {self.table} SET token = {d.greatest}({p}, {kept}), holder = '', "
            f"version = '', host = '', pid = 0, acquired_at = {now}, renewed_at = {now}, "
            f"expires_at = {self.later}, {ledger}{self.source} WHERE name = {p}"
        )
        return self._written(sql, (token_floor, d.span(hold), name), "token", name=name)

    def _ours_live(self) -> str:
        """The WHERE of a ledger write: name, holder and token are the caller's, the lease live."""
        return f"{self.held} AND expires_at > {self.now}"

    def start_run(self, record: LockRecord, tick: float, schedule: str = "") -> Statement:
        """Record ``tick`` of ``schedule`` as started by ``record``'s token, while the lease is ours
        and live and the ledger holds exactly what ``record`` saw."""
        p = self.p
        sql = (
            f"{self.head}UPDATE {self.table} SET run_started = {p}, run_token = {p}, "
            f"run_schedule = {p}{self.source} "
            f"{self._ours_live()} AND run_started = {p} AND run_token = {p} AND run_finished = {p} "
            f"AND run_ok = {p}"
        )
        params = (tick_millis(tick), record.token, schedule, record.name, record.holder, record.token)
        return self._written(sql, (*params, *record.ledger.stored()), "token", name=record.name)

    def finish_run(self, record: LockRecord, tick: float, ok: bool) -> Statement:
        """Record the end of ``tick``'s run, while the lease is ours and live and the ledger's last
        start is ``tick`` by our token."""
        p = self.p
        sql = (
            f"{self.head}UPDATE {self.table} SET run_finished = {p}, run_ok = {p}{self.source} "
            f"{self._ours_live()} AND run_started = {p} AND run_token = {p}"
        )
        millis = tick_millis(tick)
        params = (millis, int(ok), record.name, record.holder, record.token, millis, record.token)
        return self._written(sql, params, "token", name=record.name)

    def names(self) -> Statement:
        return Statement(f"SELECT name FROM {self.table} ORDER BY name")

    def problem(self, rows: Sequence[Row]) -> str | None:
        """Why the table, as the ``columns`` statement found it, cannot hold lock records, or None."""
        found = {str(column): str(kind) for column, kind, _ in rows}
        unique_name = any(column == "name" and unique for column, _, unique in rows)
        label, ddl, d = self.label, " ".join(self.schema.split()), self.dialect
        if not found:
            return (
                f"lock table {label} does not exist and this user may not create it; "
                f"grant CREATE, or create it once as: {ddl}"
            )
        missing = [column for column in d.accepted if column not in found]
        if any(column not in LEDGER_DEFAULTS for column in missing):
            return (
                f"table {label} is not a gomaster lock table: it lacks the columns "
                f"{', '.join(missing)}; use another ?table= or create it as: {ddl}"
            )
        if missing:
            statements = "; ".join(statement.sql for statement in self.additions(missing))
            return (
                f"lock table {label} was made by an earlier gomaster and lacks the schedule ledger's "
                f"columns, which this user may not add; run once: {statements}"
            )
        wrong = [
            f"{column} is {found[column] or 'untyped'}, expected {' or '.join(kinds)}"
            for column, kinds in d.accepted.items()
            if d.kind(found[column]) not in kinds
        ]
        if wrong:
            return f"table {label} has columns of the wrong type: {'; '.join(wrong)}"
        if not unique_name:
            return f"table {label} needs a primary key (or unique index) on name alone; create it as: {ddl}"
        return None

    @staticmethod
    def _try(
        run: Callable[[Statement], Sequence[Row]],
        statements: Sequence[Statement],
        tolerated: Callable[[Exception], bool],
    ) -> None:
        """Run DDL that may be denied or lose a race; the check after it has the last word."""
        for statement in statements:
            try:
                run(statement)
            except Exception as exc:
                if not tolerated(exc):
                    raise

    def prepare(
        self, run: Callable[[Statement], Sequence[Row]], tolerated: Callable[[Exception], bool]
    ) -> None:
        """Create the table if absent, then check it; a :class:`SetupError` says why it cannot be used.
        Looking first spares a user without CREATE once the table exists; a CREATE that was denied
        or lost a race is ``tolerated``, since the check that follows has the last word."""
        found = run(self.columns)
        if not found:
            self._try(run, [Statement(self.schema)], tolerated)
            found = run(self.columns)
        present = {str(row[0]) for row in found}
        if all(column in present for column in LEASE_FIELDS):
            additions = self.additions([column for column in LEDGER_DEFAULTS if column not in present])
            if additions:  # a table of an earlier gomaster: give it the ledger
                self._try(run, additions, tolerated)
                found = run(self.columns)
        problem = self.problem(found)
        if problem is not None:
            raise SetupError(problem)


def name_text(value: object) -> str:
    """A stored lock name as text (MySQL's VARBINARY arrives as bytes)."""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="backslashreplace")
    return str(value)


class ServerSettings(Settings, Protocol):
    """A server backend's settings, which name the database that holds the lock table."""

    @property
    def database(self) -> str: ...


class SQLBackend(Configured[_S]):
    """The lock steps of an SQL backend, given its :class:`Statements` (``_sql``), its session, and
    how a statement runs on a connection (``_execute``; the session words every driver error)."""

    _sql: Statements
    _session: Session[Any]

    def _execute(self, conn: Any, statement: Statement) -> list[Row]:
        """``statement``'s rows, from one round trip on ``conn``."""
        raise NotImplementedError

    def _rows(self, step: str, timeout: float, statement: Statement) -> IOResult[list[Row], BackendError]:
        found = self._session.run(step, timeout, lambda conn: self._execute(conn, statement))
        return IOResult.from_result(found)

    def _channel(self, name: str) -> str:
        """Where a release of ``name`` is announced (only dialects that notify use it)."""
        return ""

    @property
    def table(self) -> str:
        """The lock table's name."""
        return self._sql.name

    def close(self) -> None:
        """Close this process's connection; the object reconnects if used again."""
        self._session.close()

    @property
    def notifies(self) -> bool:
        """True when a release wakes waiting followers; otherwise they poll."""
        return bool(self._sql.dialect.notify)

    def _record(self, name: str, row: Row) -> Result[LockRecord, MalformedRecord]:
        value = self._sql.dialect.value
        if value is _as_is:
            return parse_record(name, dict(zip(FIELDS, row, strict=True)))
        return parse_record(name, {key: value(found) for key, found in zip(FIELDS, row, strict=True)})

    def _clock(self, rows: list[Row]) -> Result[float, BackendError]:
        """The server's clock, the first column of an observation's rows."""
        now = self._sql.dialect.value(rows[0][0])
        if not isinstance(now, float) or not math.isfinite(now):
            return Failure(BackendError(self.url, f"server clock returned {now!r}"))
        return Success(now)

    def _observed(self, name: str, now: float, row: Row) -> Result[Observation, MalformedRecord]:
        """``name``'s part of an observation's row (after the clock): the name found, or None
        when the row is not there, and its record."""
        if row[0] is None:
            return Success(Observation(None, now))
        return self._record(name, row[1:]).map(lambda record: Observation(record, now))

    def observe(self, name: str, timeout: float) -> IOResult[Observation, BackendError | MalformedRecord]:
        """One SELECT returning the row (if any) and the server's clock at the same moment."""
        rows: IOResult[list[Row], BackendError | MalformedRecord] = self._rows(
            "observe", timeout, self._sql.observe(name)
        )

        def observed(found: list[Row]) -> Result[Observation, BackendError | MalformedRecord]:
            clock: Result[float, BackendError | MalformedRecord] = self._clock(found)
            return clock.bind(lambda now: self._observed(name, now, found[0][1:]))

        return rows.bind_result(observed)

    def observe_many(self, names: Sequence[str], timeout: float) -> IOResult[Observations, BackendError]:
        """One SELECT returning every named row there is and the server's clock at the same moment.
        SQLite takes at most 32,766 values per statement (its default): 32,766 names per batch."""
        wanted = list(dict.fromkeys(names))
        if not wanted:
            return IOSuccess({})

        def observed(rows: list[Row]) -> Result[Observations, BackendError]:
            def each(now: float) -> Observations:
                seen: Observations = dict.fromkeys(wanted, Success(Observation(None, now)))
                for row in rows:
                    name = None if row[1] is None else name_text(row[1])
                    if name in seen:
                        seen[name] = self._observed(name, now, row[1:])
                return seen

            return self._clock(rows).map(each)

        return self._rows("observe_many", timeout, self._sql.observe_many(wanted)).bind_result(observed)

    def _wrote(
        self, step: str, name: str, statement: Statement, timeout: float, missing: _Refusal
    ) -> IOResult[LockRecord, _Refusal | BackendError]:
        """The record a claim or renewal wrote; ``missing`` when its WHERE matched nothing."""

        def parsed(rows: list[Row]) -> Result[LockRecord, _Refusal | BackendError]:
            if not rows:
                return Failure(missing)
            return self._record(name, rows[0]).alt(lambda problem: BackendError(self.url, str(problem)))

        found: Result[list[Row], _Refusal | BackendError] = self._session.run(
            step, timeout, lambda conn: self._execute(conn, statement)
        )
        return IOResult.from_result(found.bind(parsed))  # not _rows: one IOResult less per step

    def claim(self, claim: Claim, timeout: float) -> IOResult[LockRecord, Conflict | BackendError]:
        """Take the lease if the row still equals ``claim.expected`` and is free by server time."""
        return self._wrote("claim", claim.name, self._sql.claim(claim), timeout, Conflict(claim.name))

    def renew(
        self, record: LockRecord, ttl: float, timeout: float
    ) -> IOResult[LockRecord, Lost | BackendError]:
        """Extend only our own, still-live lease."""
        return self._wrote("renew", record.name, self._sql.renew(record, ttl), timeout, Lost(record))

    def renew_many(
        self, records: Sequence[LockRecord], ttl: float, timeout: float
    ) -> IOResult[Renewals, BackendError]:
        """Every renewal in ONE statement (see :meth:`Statements.renew_many`), on SQLite too; on
        MySQL with the clock set before it and the rows read after it, in the same round trip.
        SQLite takes at most 32,766 values per statement (its default): 8,191 records per batch."""
        if not records:
            return IOSuccess({})

        def renewed(rows: list[Row]) -> Renewals:
            written = {name_text(row[0]): row[1:] for row in rows}
            return {
                record.name: lost_unless_read(record, self._wrote_row(record, written.get(record.name)))
                for record in records
            }

        return self._rows("renew_many", timeout, self._sql.renew_many(records, ttl)).map(renewed)

    def _wrote_row(self, record: LockRecord, row: Row | None) -> Result[LockRecord, Lost | MalformedRecord]:
        return Failure(Lost(record)) if row is None else self._record(record.name, row)

    def release(self, record: LockRecord, timeout: float) -> IOResult[bool, BackendError]:
        """Mark the lease released if it is still exactly this holder's; the token stays."""
        statement = self._sql.release(record, self._channel(record.name))
        return self._rows("release", timeout, statement).map(lambda rows: len(rows) == 1)

    def revoke(self, record: LockRecord, timeout: float) -> IOResult[bool, BackendError]:
        """The operator's release: clear the holder if it is still ``record``'s, keeping token and
        expiry, so nobody claims before the holder's own deadline has stopped its work."""
        return self._rows("revoke", timeout, self._sql.revoke(record)).map(lambda rows: len(rows) == 1)

    def repair(
        self, name: str, hold: float, token_floor: int, timeout: float
    ) -> IOResult[int | None, BackendError]:
        """Rewrite the row as released until ``hold`` from now (see ``LockBackend.repair``)."""
        rows = self._rows("repair", timeout, self._sql.repair(name, hold, token_floor))
        return rows.map(lambda found: int(str(found[0][0])) if found else None)

    def start_run(
        self, record: LockRecord, tick: float, timeout: float, schedule: str = ""
    ) -> IOResult[bool, BackendError]:
        """Record the start of ``tick``'s run if the lease and the ledger are as ``record`` saw them."""
        statement = self._sql.start_run(record, tick, schedule)
        return self._rows("start_run", timeout, statement).map(lambda rows: len(rows) == 1)

    def finish_run(
        self, record: LockRecord, tick: float, ok: bool, timeout: float
    ) -> IOResult[bool, BackendError]:
        """Record the end of ``tick``'s run if this tenure started it and still holds the lease."""
        statement = self._sql.finish_run(record, tick, ok)
        return self._rows("finish_run", timeout, statement).map(lambda rows: len(rows) == 1)

    def wait_for_release(self, name: str, timeout: float) -> IOResult[bool, BackendError]:
        """No notices here: report at once that none came, and let the elector poll."""
        return IOSuccess(False)

    def wait_for_releases(
        self, names: Collection[str], timeout: float
    ) -> IOResult[frozenset[str], BackendError]:
        """No notices here: report at once that none came, and let the elector poll."""
        return IOSuccess(frozenset())

    def names(self, timeout: float) -> IOResult[list[str], BackendError]:
        """Every lock name in the table."""
        return self._rows("names", timeout, self._sql.names()).map(
            lambda rows: [name_text(r[0]) for r in rows]
        )


class ServerBackend(SQLBackend[_N]):
    """An SQL backend on a server, where a database holds the lock table."""

    @property
    def database(self) -> str:
        """The database that holds the lock table."""
        return self._settings.database
