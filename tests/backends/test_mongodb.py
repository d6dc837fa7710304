"""What the contract suite cannot see about MongoDB: storage format, configuration, faults.

Every test talks to a real server (the session's ``mongodb_url``, or a private SecantusDB that
it freezes, restarts or puts behind a password); nothing is mocked.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.collection import Collection
from returns.result import Failure, Success

from gomaster.backends import LockBackend, connect
from gomaster.backends.mongodb import DEFAULT_COLLECTION, DEFAULT_DATABASE, MongoBackend
from gomaster.core.decide import Claim
from gomaster.core.errors import Conflict
from gomaster.core.record import EMPTY_LEDGER, LockRecord, MalformedRecord, NodeIdentity, tick_millis
from tests.helpers import err, identity, ok, result
from tests.servers.mongodb import SecantusServer

pytestmark = pytest.mark.mongodb

TIMEOUT = 5.0
TTL = 5.0
#: A call that cannot reach the server must give up within its timeout plus this.
UNREACHABLE_SLACK = 1.0
#: A call to a hung server must give up within its timeout plus this.
FROZEN_SLACK = 0.5
SHORT_TIMEOUT = 1.0
SECRET = "pa55-w0rd:not/for@logs"
RACES = 10
#: A wait for a release notice that should end long before this.
NOTICE_WAIT = 10.0
#: SecantusDB delivers a change about 5 ms after the write; a woken wait comes well within this.
NOTICE_LATENCY = 0.5
#: A wait that no notice should end.
QUIET_WAIT = 0.5
#: An idle wait whose reads are counted (a read waits up to a second on the server).
IDLE_WAIT = 3.0
#: Writes a second to another name while a follower waits (SecantusDB ends a read at each).
BUSY_WRITES = 25
#: A tick the ledger tests record: whole milliseconds, as every schedule's ticks are.
TICK = 1_764_921_600.125
#: A schedule's text, as ``describe`` writes it.
SCHEDULE = "every 300000ms"

Document = dict[str, Any]


@pytest.fixture
def backend(mongodb_url: str) -> Iterator[MongoBackend]:
    made = connect(mongodb_url)
    assert isinstance(made, MongoBackend)
    yield made
    made.close()


@pytest.fixture
def raw(mongodb_url: str, backend: MongoBackend) -> Iterator[Collection[Document]]:
    """The lock collection through a plain client, to look at and spoil documents by hand."""
    client: MongoClient[Document] = MongoClient(mongodb_url)
    yield client[backend.database][backend.collection]
    client.close()


def _claim_first(backend: LockBackend, name: str, me: NodeIdentity | None = None) -> LockRecord:
    return ok(backend.claim(Claim.first(name, me or identity(), TTL), TIMEOUT))


def _seen(backend: LockBackend, name: str) -> LockRecord:
    record = ok(backend.observe(name, TIMEOUT)).record
    assert record is not None, f"{name} should have a record"
    return record


def _without_ledger(name: str, now_ms: int, expires_ms: int) -> Document:
    """Another node's lease (token 7) as a gomaster from before the run ledger wrote it."""
    return {
        "_id": name,
        "holder": "someone-else",
        "version": "",
        "token": 7,
        "acquired_at": now_ms,
        "renewed_at": now_ms,
        "expires_at": expires_ms,
        "host": "elsewhere",
        "pid": 1,
    }


def test_times_are_stored_as_int64_milliseconds_of_the_server_clock(
    backend: MongoBackend, raw: Collection[Document], lock_name: str
) -> None:
    before = ok(backend.observe(lock_name, TIMEOUT)).server_now
    record = _claim_first(backend, lock_name)
    after = ok(backend.observe(lock_name, TIMEOUT)).server_now
    stored = raw.find_one({"_id": lock_name, "acquired_at": {"$type": "long"}, "token": {"$type": "long"}})
    assert stored is not None, "times and token should be BSON int64"
    assert stored["expires_at"] - stored["acquired_at"] == TTL * 1000
    assert stored["acquired_at"] / 1000 == record.acquired_at
    assert before <= record.acquired_at <= after, "claim times come from the server's clock"
    assert after == pytest.approx(time.time(), abs=1.0)


def test_expiry_is_judged_by_the_server_clock_inside_the_claim(
    backend: MongoBackend, raw: Collection[Document], lock_name: str
) -> None:
    now_ms = round(ok(backend.observe(lock_name, TIMEOUT)).server_now * 1000)
    lease_ms = 300
    raw.insert_one(_without_ledger(lock_name, now_ms, now_ms + lease_ms))
    takeover = Claim.after(_seen(backend, lock_name), identity(), TTL)
    assert isinstance(err(backend.claim(takeover, TIMEOUT)), Conflict), "the live lease was taken"
    time.sleep(lease_ms / 1000 + 0.1)
    assert ok(backend.claim(takeover, TIMEOUT)).token == 8


def test_a_document_without_ledger_fields_reads_as_the_empty_ledger_and_its_next_tenure_starts_a_run(
    backend: MongoBackend, raw: Collection[Document], lock_name: str
) -> None:
    """No migration: the fields an earlier gomaster never wrote mean "no run yet"."""
    now_ms = round(ok(backend.observe(lock_name, TIMEOUT)).server_now * 1000)
    raw.insert_one(_without_ledger(lock_name, now_ms, now_ms - 1000))
    old = _seen(backend, lock_name)
    assert old.ledger == EMPTY_LEDGER
    record = ok(backend.claim(Claim.after(old, identity(), TTL), TIMEOUT))
    assert (record.token, record.ledger) == (8, EMPTY_LEDGER)
    assert ok(backend.start_run(record, TICK, TIMEOUT)) is True
    ledger = _seen(backend, lock_name).ledger
    assert (ledger.started, ledger.token, ledger.unfinished) == (TICK, 8, True)


def test_ledger_ticks_and_token_are_stored_as_int64_milliseconds(
    backend: MongoBackend, raw: Collection[Document], lock_name: str
) -> None:
    record = _claim_first(backend, lock_name)
    assert ok(backend.start_run(record, TICK, TIMEOUT)) is True
    assert ok(backend.finish_run(record, TICK, False, TIMEOUT)) is True
    longs = {field: {"$type": "long"} for field in ("run_started", "run_token", "run_finished")}
    stored = raw.find_one({"_id": lock_name, **longs})
    assert stored is not None, "the ledger's ticks and token should be BSON int64"
    fields = (stored["run_started"], stored["run_token"], stored["run_finished"], stored["run_ok"])
    assert fields == (tick_millis(TICK), record.token, tick_millis(TICK), 0)


def test_repair_judges_each_ledger_field_on_its_own(
    backend: MongoBackend, raw: Collection[Document], lock_name: str
) -> None:
    """A valid started tick and schedule stay; a corrupted token, end or outcome is reset (the end to now)."""
    record = _claim_first(backend, lock_name)
    assert ok(backend.start_run(record, TICK, TIMEOUT, SCHEDULE)) is True
    assert ok(backend.finish_run(record, TICK, True, TIMEOUT)) is True
    raw.update_one({"_id": lock_name}, {"$set": {"run_token": -1, "run_finished": 2.5, "run_ok": True}})
    before = time.time()
    assert ok(backend.repair(lock_name, 0.0, 0, TIMEOUT)) == record.token
    ledger = _seen(backend, lock_name).ledger
    assert (ledger.started, ledger.token, ledger.ok, ledger.schedule) == (TICK, 0, True, SCHEDULE)
    assert ledger.finished is not None and abs(ledger.finished - before) < TIMEOUT


def test_repair_turns_a_schedule_that_is_no_text_into_an_empty_one(
    backend: MongoBackend, raw: Collection[Document], lock_name: str
) -> None:
    """A hand-edited ``run_schedule`` would leave the record unreadable after repair; it becomes ""."""
    record = _claim_first(backend, lock_name)
    assert ok(backend.start_run(record, TICK, TIMEOUT, SCHEDULE)) is True
    raw.update_one({"_id": lock_name}, {"$set": {"run_schedule": 300}})
    assert isinstance(err(backend.observe(lock_name, TIMEOUT)), MalformedRecord)
    assert ok(backend.repair(lock_name, 0.0, 0, TIMEOUT)) == record.token
    ledger = _seen(backend, lock_name).ledger
    assert (ledger.started, ledger.token, ledger.schedule) == (TICK, record.token, "")


def test_a_schedule_starting_with_a_dollar_is_stored_as_text(
    backend: MongoBackend, raw: Collection[Document], lock_name: str
) -> None:
    record = _claim_first(backend, lock_name)
    assert ok(backend.start_run(record, TICK, TIMEOUT, "$run_token")) is True
    stored = raw.find_one({"_id": lock_name})
    assert stored is not None and stored["run_schedule"] == "$run_token"
    assert _seen(backend, lock_name).ledger.schedule == "$run_token"


def test_holder_version_and_host_starting_with_a_dollar_are_stored_as_text(
    backend: MongoBackend, lock_name: str
) -> None:
    me = NodeIdentity(node_id="$holder", host="$$NOW", pid=1, version="$token")
    record = _claim_first(backend, f"${lock_name}", me)
    assert (record.holder, record.host, record.version) == ("$holder", "$$NOW", "$token")
    assert ok(backend.observe(f"${lock_name}", TIMEOUT)).record == record


def test_url_options_choose_database_and_collection_and_reach_the_driver(
    mongodb_url: str, lock_name: str
) -> None:
    separator = "&" if "?" in mongodb_url else "?"
    made = connect(f"{mongodb_url}{separator}collection=other_locks&maxPoolSize=3&appName=gomaster-test")
    assert isinstance(made, MongoBackend)
    assert made.collection == "other_locks"
    assert "collection=other_locks" in made.url
    assert "maxPoolSize=3" in made.url
    record = _claim_first(made, lock_name)
    assert ok(made.observe(lock_name, TIMEOUT)).record == record
    made.close()


def test_the_monitor_checks_twice_a_second_unless_the_url_says_otherwise(mongodb_url: str) -> None:
    separator = "&" if "?" in mongodb_url else "?"
    for url, every in [(mongodb_url, 0.5), (f"{mongodb_url}{separator}heartbeatFrequencyMS=2000", 2.0)]:
        made = connect(url)
        assert isinstance(made, MongoBackend)
        ok(made.observe("heartbeat", TIMEOUT))
        link = made._session.conn
        assert link is not None
        assert link.client.options.heartbeat_frequency == every
        made.close()


def test_a_url_without_database_or_collection_uses_the_defaults() -> None:
    made = connect("mongodb://127.0.0.1:27017")
    assert isinstance(made, MongoBackend)
    assert (made.database, made.collection) == (DEFAULT_DATABASE, DEFAULT_COLLECTION)


def test_two_first_claims_racing_give_one_record_and_one_conflict(mongodb_url: str) -> None:
    racers = [connect(mongodb_url) for _ in range(2)]
    for _ in range(RACES):
        name = f"race-{uuid.uuid4().hex[:12]}"
        barrier = threading.Barrier(len(racers))
        outcomes: list[object] = [None] * len(racers)

        def race(
            i: int, name: str = name, barrier: threading.Barrier = barrier, outcomes: list[object] = outcomes
        ) -> None:
            barrier.wait()
            outcomes[i] = result(racers[i].claim(Claim.first(name, identity(), TTL), TIMEOUT))

        threads = [threading.Thread(target=race, args=(i,)) for i in range(len(racers))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT * 2)
        won = [o for o in outcomes if isinstance(o, Success)]
        lost = [o.failure() for o in outcomes if isinstance(o, Failure)]
        assert len(won) == 1, outcomes
        assert len(lost) == 1 and isinstance(lost[0], Conflict), outcomes
    for made in racers:
        made.close()


def test_release_keeps_the_document_and_its_token(
    backend: MongoBackend, raw: Collection[Document], lock_name: str
) -> None:
    record = _claim_first(backend, lock_name)
    assert ok(backend.release(record, TIMEOUT)) is True
    stored = raw.find_one({"_id": lock_name})
    assert stored is not None
    assert (stored["holder"], stored["token"]) == ("", record.token)
    assert lock_name in ok(backend.names(TIMEOUT))


def test_a_release_wakes_another_backends_wait_within_milliseconds(mongodb_url: str, lock_name: str) -> None:
    holder, follower = connect(mongodb_url), connect(mongodb_url)
    record = _claim_first(holder, lock_name)
    # The first wait opens the change stream; from then on no release of the name is missed.
    assert ok(follower.wait_for_release(lock_name, 0.05)) is False
    if not follower.notifies:
        pytest.skip("this server refuses change streams (not a replica set)")
    woke: list[tuple[bool, float]] = []
    waiter = threading.Thread(
        target=lambda: woke.append((ok(follower.wait_for_release(lock_name, NOTICE_WAIT)), time.monotonic()))
    )
    waiter.start()
    time.sleep(0.1)
    released_at = time.monotonic()
    assert ok(holder.release(record, TIMEOUT)) is True
    waiter.join(NOTICE_WAIT + 1)
    [(came, at)] = woke
    assert came is True, "the wait ran out instead of being woken"
    assert at - released_at < NOTICE_LATENCY, f"woken {at - released_at:.3f} s after the release"
    for made in (holder, follower):
        made.close()


def test_only_a_release_of_a_watched_name_wakes_a_wait(mongodb_url: str, lock_name: str) -> None:
    holder, follower = connect(mongodb_url), connect(mongodb_url)
    other = f"{lock_name}-other"
    record, elsewhere = _claim_first(holder, lock_name), _claim_first(holder, other)
    # Watching a second name widens the stream without losing the first.
    assert ok(follower.wait_for_release(other, 0.05)) is False
    if not follower.notifies:
        pytest.skip("this server refuses change streams (not a replica set)")
    assert ok(follower.wait_for_release(lock_name, 0.05)) is False
    renewed = ok(holder.renew(record, TTL, TIMEOUT))
    assert ok(follower.wait_for_release(lock_name, QUIET_WAIT)) is False, "a renewal is not a release"
    assert ok(holder.release(elsewhere, TIMEOUT)) is True
    assert ok(follower.wait_for_release(lock_name, QUIET_WAIT)) is False, "another name's release woke it"
    assert ok(follower.wait_for_release(other, 0.05)) is True, "the other name's notice was kept for it"
    assert ok(holder.release(renewed, TIMEOUT)) is True
    assert ok(follower.wait_for_release(lock_name, NOTICE_WAIT)) is True
    for made in (holder, follower):
        made.close()


def _reads(server: SecantusServer) -> int:
    """getMore commands the server has answered so far (the listener's reads of its stream)."""
    with server.client() as client:
        return int(client.admin.command("serverStatus")["opcounters"]["getmore"])


def test_an_idle_wait_reads_the_stream_about_once_a_second(
    private_mongodb: SecantusServer, lock_name: str
) -> None:
    follower = connect(private_mongodb.url)
    assert ok(follower.wait_for_release(lock_name, 0.05)) is False  # opens the stream
    before = _reads(private_mongodb)
    assert ok(follower.wait_for_release(lock_name, IDLE_WAIT)) is False
    reads = _reads(private_mongodb) - before
    assert 1 <= reads <= IDLE_WAIT + 1, f"{reads} reads in an idle {IDLE_WAIT} s wait"
    follower.close()


def test_a_busy_server_does_not_make_a_follower_poll(private_mongodb: SecantusServer, lock_name: str) -> None:
    """SecantusDB ends every read at any write; the listener still reads at most 4 a second."""
    holder, follower = connect(private_mongodb.url), connect(private_mongodb.url)
    record = _claim_first(holder, f"{lock_name}-busy")
    assert ok(follower.wait_for_release(lock_name, 0.05)) is False
    writes = threading.Event()

    def write() -> None:
        renewed = record
        while not writes.is_set():
            renewed = ok(holder.renew(renewed, TTL, TIMEOUT))
            time.sleep(1 / BUSY_WRITES)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        before = _reads(private_mongodb)
        assert ok(follower.wait_for_release(lock_name, IDLE_WAIT)) is False
        reads = _reads(private_mongodb) - before
    finally:
        writes.set()
        writer.join(TIMEOUT)
    assert reads <= 4 * IDLE_WAIT + 2, f"{reads} reads in {IDLE_WAIT} s under {BUSY_WRITES} writes a second"
    for made in (holder, follower):
        made.close()


def test_a_server_that_refuses_change_streams_leaves_followers_polling(
    tmp_path_factory: pytest.TempPathFactory, caplog: pytest.LogCaptureFixture, lock_name: str
) -> None:
    server = SecantusServer(tmp_path_factory.mktemp("secantus-standalone"), extra_args=["--standalone"])
    server.start()
    try:
        made = connect(server.url)
        assert made.notifies, "a backend expects notices until the server says otherwise"
        for _ in range(2):
            started = time.monotonic()
            assert ok(made.wait_for_release(lock_name, QUIET_WAIT)) is False
            waited = time.monotonic() - started
            assert QUIET_WAIT <= waited < QUIET_WAIT + 1.0, (
                f"a poller sleeps out its wait, not {waited:.2f} s"
            )
        assert not made.notifies
        refusals = [entry for entry in caplog.records if "refuses change streams" in entry.getMessage()]
        assert len(refusals) == 1, "the fallback is logged once"
        assert ok(made.release(_claim_first(made, lock_name), TIMEOUT)) is True
        made.close()
    finally:
        server.stop()
