"""What the contract suite cannot see about MongoDB: storage format, configuration, faults.

Every test talks to a real server (the session's ``mongodb_url``, or a private SecantusDB that
it freezes, restarts or puts behind a password); nothing is mocked.
"""

from __future__ import annotations

import pickle
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import multiprocess
import pytest
from pymongo import MongoClient
from pymongo.collection import Collection
from returns.result import Failure, Success

from gomaster.backends import LockBackend, connect
from gomaster.backends.mongodb import DEFAULT_COLLECTION, DEFAULT_DATABASE, MongoBackend
from gomaster.backends.url import parse_url
from gomaster.core.decide import Claim
from gomaster.core.errors import BackendError, Conflict
from gomaster.core.record import MAX_TOKEN, LockRecord, MalformedRecord, NodeIdentity
from tests.helpers import err, free_port, identity, ok, result
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
    raw.insert_one(
        {
            "_id": lock_name,
            "holder": "someone-else",
            "version": "",
            "token": 7,
            "acquired_at": now_ms,
            "renewed_at": now_ms,
            "expires_at": now_ms + lease_ms,
            "host": "elsewhere",
            "pid": 1,
        }
    )
    held = ok(backend.observe(lock_name, TIMEOUT)).record
    assert held is not None
    takeover = Claim.after(held, identity(), TTL)
    assert isinstance(err(backend.claim(takeover, TIMEOUT)), Conflict), "the live lease was taken"
    time.sleep(lease_ms / 1000 + 0.1)
    assert ok(backend.claim(takeover, TIMEOUT)).token == 8


def test_holder_version_and_host_starting_with_a_dollar_are_stored_as_text(
    backend: MongoBackend, lock_name: str
) -> None:
    me = NodeIdentity(node_id="$holder", host="$$NOW", pid=1, version="$token")
    record = _claim_first(backend, f"${lock_name}", me)
    assert (record.holder, record.host, record.version) == ("$holder", "$$NOW", "$token")
    assert ok(backend.observe(f"${lock_name}", TIMEOUT)).record == record


@pytest.mark.parametrize(
    ("spoil", "problem"),
    [
        (lambda doc: doc.pop("token"), "token"),
        (lambda doc: doc.pop("expires_at"), "expires_at"),
        (lambda doc: doc.update(token="12"), "token"),
        (lambda doc: doc.update(token=-1), "out of range"),
        (lambda doc: doc.update(token=MAX_TOKEN), "out of range"),
        (lambda doc: doc.update(holder=42), "holder"),
        (lambda doc: doc.update(expires_at="tomorrow"), "expires_at"),
        (lambda doc: doc.update(pid=True), "pid"),
    ],
    ids=[
        "no-token",
        "no-expiry",
        "string-token",
        "negative-token",
        "huge-token",
        "number-holder",
        "text-time",
        "bool-pid",
    ],
)
def test_a_garbage_document_is_a_malformed_record_not_an_exception(
    backend: MongoBackend, raw: Collection[Document], lock_name: str, spoil: Any, problem: str
) -> None:
    _claim_first(backend, lock_name)
    document = raw.find_one({"_id": lock_name})
    assert document is not None
    spoil(document)
    raw.replace_one({"_id": lock_name}, document)
    failure = err(backend.observe(lock_name, TIMEOUT))
    assert isinstance(failure, MalformedRecord)
    assert problem in str(failure)


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


def test_keyword_configuration_reaches_the_same_server(
    mongodb_url: str, backend: MongoBackend, lock_name: str
) -> None:
    url = parse_url(mongodb_url).unwrap()
    made = MongoBackend(
        hosts=[f"{url.host}:{url.port}"],
        database=backend.database,
        collection=backend.collection,
        user=url.username,
        password=url.password,
        timeout=2.0,
        pool_limit=4,
        options=dict(url.query),
    )
    record = _claim_first(made, lock_name)
    assert ok(backend.observe(lock_name, TIMEOUT)).record == record
    made.close()


@pytest.mark.parametrize("collection", ["locks;drop", "system.users", "$cmd", "a b", "x" * 64, "lock-name"])
def test_a_collection_name_that_is_not_an_identifier_is_refused(collection: str) -> None:
    with pytest.raises(ValueError, match="collection name"):
        connect(f"mongodb://127.0.0.1:27017/db?collection={collection}")
    with pytest.raises(ValueError, match="collection name"):
        MongoBackend(collection=collection)


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("mongodb://127.0.0.1/db?maxPoolSize=lots", "maxPoolSize"),
        ("mongodb://127.0.0.1/db?noSuchOption=1", "noSuchOption"),
        ("mongodb://127.0.0.1/db?w=majority&retryWrites=perhaps", "retryWrites"),
        ("mongodb://127.0.0.1/a.b", "database name"),
        ("mongodb://127.0.0.1/db?tls=true&tlsCAFile=/nonexistent/ca.pem", "tlsCAFile"),
        ("mongodb+srv://cluster.example.com:27017/db", "port"),
    ],
)
def test_bad_url_options_are_refused_by_name(url: str, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        connect(url)


def test_bad_keyword_options_are_refused() -> None:
    with pytest.raises(ValueError, match="timeout"):
        MongoBackend(timeout=0)
    with pytest.raises(ValueError, match="maxPoolSize"):
        MongoBackend(options={"maxPoolSize": "lots"})
    with pytest.raises(ValueError, match="host"):
        MongoBackend(hosts=[])


def test_the_password_never_shows_in_url_repr_or_errors() -> None:
    port = free_port()
    password = quote(SECRET, safe="")
    made = connect(f"mongodb://alice:{password}@127.0.0.1:{port}/db?tlsCertificateKeyFilePassword=k3y-s3cret")
    failure = err(made.observe("any", 0.3))
    for shown in (made.url, repr(made), str(failure)):
        assert SECRET not in shown
        assert "k3y-s3cret" not in shown
    assert "alice:***@" in made.url
    keywords = MongoBackend(hosts=f"127.0.0.1:{port}", user="alice", password=SECRET)
    assert SECRET not in repr(keywords)
    assert "alice:***@" in keywords.url


def test_a_used_backend_pickles_as_configuration_only(backend: MongoBackend, lock_name: str) -> None:
    record = _claim_first(backend, lock_name)
    copy = pickle.loads(pickle.dumps(backend))
    assert copy.url == backend.url
    assert ok(copy.observe(lock_name, TIMEOUT)).record == record
    copy.close()


def _observe_in_child(made: MongoBackend, name: str, conn: Any) -> None:
    outcome = result(made.observe(name, TIMEOUT))
    conn.send(outcome.unwrap().record if isinstance(outcome, Success) else str(outcome.failure()))


def test_a_forked_child_connects_on_its_own(backend: MongoBackend, lock_name: str) -> None:
    record = _claim_first(backend, lock_name)
    context = multiprocess.get_context("fork")
    parent_end, child_end = context.Pipe()
    child = context.Process(target=_observe_in_child, args=(backend, lock_name, child_end))
    child.start()
    assert parent_end.poll(TIMEOUT * 2), "the child did not answer"
    assert parent_end.recv() == record
    child.join(TIMEOUT)
    assert ok(backend.renew(record, TTL, TIMEOUT)).token == record.token, "the parent's client still works"


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "no-such-host.invalid:27017"])
def test_an_unreachable_server_is_a_failure_within_the_timeout(host: str) -> None:
    made = MongoBackend(hosts=host.format(port=free_port()))
    started = time.monotonic()
    failure = err(made.observe("any", SHORT_TIMEOUT))
    elapsed = time.monotonic() - started
    assert isinstance(failure, BackendError)
    assert elapsed < SHORT_TIMEOUT + UNREACHABLE_SLACK, f"took {elapsed:.2f} s"
    assert host.partition(":")[0] in str(failure), f"the message should name the host: {failure}"
    made.close()


def test_a_frozen_server_fails_calls_within_the_timeout_and_recovers_when_thawed(
    private_mongodb: SecantusServer, lock_name: str
) -> None:
    made = connect(private_mongodb.url)
    record = _claim_first(made, lock_name)
    private_mongodb.freeze()
    try:
        for step, call in (
            ("observe", lambda: made.observe(lock_name, SHORT_TIMEOUT)),
            ("renew", lambda: made.renew(record, TTL, SHORT_TIMEOUT)),
        ):
            started = time.monotonic()
            outcome = result(call())
            elapsed = time.monotonic() - started
            assert isinstance(outcome, Failure), f"{step} on a frozen server: {outcome}"
            assert isinstance(outcome.failure(), BackendError)
            assert elapsed < SHORT_TIMEOUT + FROZEN_SLACK, f"{step} took {elapsed:.2f} s"
    finally:
        private_mongodb.thaw()
    renewed = ok(made.renew(record, TTL, TIMEOUT))
    assert renewed.renewed_at > record.renewed_at
    made.close()


def test_a_restarted_server_is_used_again_by_the_next_call(
    private_mongodb: SecantusServer, lock_name: str
) -> None:
    made = connect(private_mongodb.url)
    record = _claim_first(made, lock_name)
    private_mongodb.restart()
    # A call may meet a connection the restart closed, and fail; the one after must work.
    first = result(made.renew(record, TTL, TIMEOUT))
    renewed = first.unwrap() if isinstance(first, Success) else ok(made.renew(record, TTL, TIMEOUT))
    assert renewed.token == record.token
    assert ok(made.observe(lock_name, TIMEOUT)).record == renewed
    made.close()


def test_wrong_credentials_are_a_clear_failure(tmp_path_factory: pytest.TempPathFactory) -> None:
    server = SecantusServer(tmp_path_factory.mktemp("secantus-auth"))
    server.start()
    try:
        client: MongoClient[Document] = MongoClient(server.url)
        client.admin.command("createUser", "alice", pwd=SECRET, roles=["root"])
        client.close()
        server.extra_args = ["--auth"]
        server.restart()
        port = server.port
        right = MongoBackend(hosts=f"127.0.0.1:{port}", user="alice", password=SECRET, auth_source="admin")
        assert ok(right.observe("any", TIMEOUT)).record is None
        wrong = MongoBackend(hosts=f"127.0.0.1:{port}", user="alice", password="guess", auth_source="admin")
        failure = err(wrong.observe("any", TIMEOUT))
        assert isinstance(failure, BackendError)
        assert "authentication failed" in str(failure).lower()
        assert "guess" not in str(failure)
        anonymous = MongoBackend(hosts=f"127.0.0.1:{port}")
        assert "requires authentication" in str(err(anonymous.observe("any", TIMEOUT)))
        for made in (right, wrong, anonymous):
            made.close()
    finally:
        server.stop()


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
