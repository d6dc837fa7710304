"""What the contract suite cannot see about Redis: key layout, counters, notices, faults, settings.

Every test talks to a real ``redis-server`` (the session's ``redis_url``, or a private one that it
freezes, restarts, flushes or puts behind a password); nothing is mocked.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
import redis
from redis.connection import AbstractConnection
from returns.result import Failure, Success

from gomaster.backends import LockBackend, connect
from gomaster.backends.redis import DEFAULT_PREFIX, NOTICE_TURN, RedisBackend
from gomaster.core.decide import Claim, plan_acquire
from gomaster.core.errors import BackendError, Conflict, Lost
from gomaster.core.record import LockRecord, MalformedRecord, NodeIdentity
from gomaster.core.timing import Timing
from tests.helpers import err, identity, ok, result, waiter
from tests.servers.redis import RedisServer

pytestmark = pytest.mark.redis

TIMEOUT = 5.0
TTL = 5.0
SHORT_TTL = 0.3
LONG_TTL = 60.0
#: A call to a hung server must give up within its timeout plus this.
FROZEN_SLACK = 0.5
SHORT_TIMEOUT = 0.5
#: A waiter must wake this soon after the release that it waits for.
NOTIFY_WITHIN = 0.1
SECRET = "pa55-w0rd:not/for@logs"
RACERS = 8
MS = 1000
#: A schedule's tick (a whole millisecond, as every tick is).
TICK = 1_764_921_600.125


@pytest.fixture
def backend(redis_url: str) -> Iterator[RedisBackend]:
    made = connect(redis_url)
    assert isinstance(made, RedisBackend)
    yield made
    made.close()


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    """A plain client on the same server, to look at and spoil keys by hand."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def _backend(url: str) -> RedisBackend:
    made = connect(url)
    assert isinstance(made, RedisBackend)
    return made


def _claim_first(
    backend: LockBackend, name: str, me: NodeIdentity | None = None, ttl: float = TTL
) -> LockRecord:
    return ok(backend.claim(Claim.first(name, me or identity(), ttl), TIMEOUT))


def _try_acquire(backend: LockBackend, name: str, ttl: float = TTL) -> LockRecord | Conflict | None:
    """One observe and, when the lock is free, one claim: the record, a Conflict, or None if held."""
    seen = ok(backend.observe(name, TIMEOUT))
    planned = plan_acquire(seen, name, identity(), Timing())
    if isinstance(planned, Failure):
        return None
    outcome = result(backend.claim(replace(planned.unwrap(), ttl=ttl), TIMEOUT))
    if isinstance(outcome, Success):
        record: LockRecord = outcome.unwrap()
        return record
    failure = outcome.failure()
    assert isinstance(failure, Conflict), failure
    return failure


def _acquire(backend: LockBackend, name: str, ttl: float = TTL, attempts: int = 1) -> LockRecord:
    """Observe and claim, as the elector does, up to ``attempts`` times (a Conflict tries again)."""
    for _ in range(attempts):
        got = _try_acquire(backend, name, ttl)
        if isinstance(got, LockRecord):
            return got
        assert got is not None, f"lock {name} is unexpectedly held"
    raise AssertionError(f"no claim of {name} succeeded in {attempts} attempts")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


# -- clock, keys and round trips --------------------------------------------------------------


def test_the_module_named_redis_uses_the_redis_py_library() -> None:
    import gomaster.backends.redis as backend_module

    driver = vars(backend_module)["redis"]
    assert driver is redis, "gomaster/backends/redis.py must import redis-py, not itself"
    assert hasattr(driver, "Connection") and driver.__name__ == "redis"


def test_the_server_clock_agrees_with_local_time(backend: RedisBackend, lock_name: str) -> None:
    before = time.time()
    seen = ok(backend.observe(lock_name, TIMEOUT))
    after = time.time()
    assert before - 1 <= seen.server_now <= after + 1
    record = _claim_first(backend, lock_name)
    assert before - 1 <= record.acquired_at <= time.time() + 1, "claim times come from the server's TIME"


def test_the_lease_is_a_hash_that_expires_with_the_lease_and_the_counter_never_expires(
    backend: RedisBackend, raw: redis.Redis, lock_name: str
) -> None:
    keys = backend.keys(lock_name)
    assert keys.lease == f"{DEFAULT_PREFIX}:lease:{lock_name.encode().hex()}"
    record = _claim_first(backend, lock_name, identity("2.0"))
    stored = {_text(k): _text(v) for k, v in raw.hgetall(keys.lease).items()}
    assert stored == {
        "holder": record.holder,
        "version": "2.0",
        "token": "1",
        "acquired_at": str(round(record.acquired_at * MS)),
        "renewed_at": str(round(record.renewed_at * MS)),
        "expires_at": str(round(record.expires_at * MS)),
        "host": record.host,
        "pid": str(record.pid),
    }
    assert int(stored["expires_at"]) - int(stored["acquired_at"]) == TTL * MS
    assert raw.pexpiretime(keys.lease) == int(stored["expires_at"]), "the key ends exactly with the lease"
    assert TTL * MS - 200 < raw.pttl(keys.lease) <= TTL * MS
    assert raw.get(keys.counter) == b"1"
    assert raw.ttl(keys.counter) == -1, "the token counter must never expire"
    time.sleep(0.02)
    renewed = ok(backend.renew(record, TTL, TIMEOUT))
    assert raw.pexpiretime(keys.lease) == round(renewed.expires_at * MS), "renew moves the key's expiry"
    assert ok(backend.revoke(renewed, TIMEOUT)) is True
    assert raw.pexpiretime(keys.lease) == round(renewed.expires_at * MS), "revoke keeps the key's expiry"
    assert raw.hget(keys.lease, "holder") == b""


def test_the_run_ledger_is_a_hash_that_outlives_the_lease_key_and_a_claim_after_expiry_keeps_it(
    backend: RedisBackend, raw: redis.Redis, lock_name: str
) -> None:
    keys = backend.keys(lock_name)
    assert keys.runs == f"{DEFAULT_PREFIX}:runs:{lock_name.encode().hex()}"
    first = _claim_first(backend, lock_name, ttl=SHORT_TTL)
    assert raw.exists(keys.runs) == 0, "a name that never ran keeps no ledger"
    assert ok(backend.start_run(first, TICK, TIMEOUT, schedule="every 125ms")) is True
    stored = {_text(k): _text(v) for k, v in raw.hgetall(keys.runs).items()}
    assert stored == {
        "run_started": str(round(TICK * MS)),
        "run_token": str(first.token),
        "run_finished": "0",
        "run_ok": "1",
        "run_schedule": "every 125ms",
    }
    assert raw.ttl(keys.runs) == -1, "the run ledger must never expire"
    time.sleep(SHORT_TTL + 0.05)
    assert raw.exists(keys.lease) == 0, "Redis should have dropped the lease"
    seen = ok(backend.observe(lock_name, TIMEOUT)).record
    assert seen is not None and seen.released
    assert (seen.ledger.started, seen.ledger.token, seen.ledger.unfinished) == (TICK, first.token, True)
    second = _acquire(backend, lock_name)
    assert second.token == first.token + 1
    assert second.ledger == seen.ledger, "the claim rewrote the lease but must keep the ledger"


def test_an_expired_lease_is_observed_as_released_with_the_counters_token(
    backend: RedisBackend, raw: redis.Redis, lock_name: str
) -> None:
    first = _claim_first(backend, lock_name, ttl=SHORT_TTL)
    time.sleep(SHORT_TTL + 0.05)
    assert raw.exists(backend.keys(lock_name).lease) == 0, "Redis should have dropped the lease"
    seen = ok(backend.observe(lock_name, TIMEOUT))
    assert seen.record is not None
    assert seen.record.released and seen.record.token == first.token
    assert seen.record.expires_at <= seen.server_now
    assert _acquire(backend, lock_name).token == first.token + 1


def test_a_released_lease_stays_readable_with_its_times_until_its_old_expiry(
    backend: RedisBackend, raw: redis.Redis, lock_name: str
) -> None:
    record = _claim_first(backend, lock_name)
    assert ok(backend.release(record, TIMEOUT)) is True
    seen = ok(backend.observe(lock_name, TIMEOUT)).record
    assert seen is not None
    assert (seen.holder, seen.token, seen.acquired_at) == ("", record.token, record.acquired_at)
    assert raw.pexpiretime(backend.keys(lock_name).lease) == round(record.expires_at * MS)


def test_each_step_is_one_script_call_and_a_forgotten_script_costs_one_more_trip_once(
    private_redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The contract suite counts round trips on the wire; this is Redis's own: one EVALSHA per
    step (the server's count), and the EVAL fallback when the server lost its scripts."""
    backend = _backend(private_redis.url())
    warm = _acquire(backend, "warm-up")  # connect, check the configuration, load the scripts
    ok(backend.start_run(warm, TICK, TIMEOUT))
    ok(backend.finish_run(warm, TICK, True, TIMEOUT))
    ok(backend.release(ok(backend.renew(warm, TTL, TIMEOUT)), TIMEOUT))
    ok(backend.revoke(warm, TIMEOUT))
    sent: list[str] = []
    send, read = AbstractConnection.send_packed_command, AbstractConnection.read_response

    def counting_send(conn: Any, command: Any, check_health: bool = True) -> None:
        sent.append("send")
        send(conn, command, check_health)  # type: ignore[no-untyped-call]

    def counting_read(conn: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append("read")
        return read(conn, *args, **kwargs)

    stats = private_redis.client()

    def trips(step: Callable[[], object]) -> tuple[list[str], int]:
        before = stats.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
        sent.clear()
        step()
        taken = list(sent)
        after = stats.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
        return taken, after - before

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting_send)
    monkeypatch.setattr(AbstractConnection, "read_response", counting_read)
    one = (["send", "read"], 1)
    seen: list[Any] = []
    assert trips(lambda: seen.append(ok(backend.observe("trips", TIMEOUT)))) == one
    claim = plan_acquire(seen[0], "trips", identity(), Timing()).unwrap()
    records: list[LockRecord] = []
    assert trips(lambda: records.append(ok(backend.claim(claim, TIMEOUT)))) == one
    assert trips(lambda: records.append(ok(backend.renew(records[-1], TTL, TIMEOUT)))) == one
    assert trips(lambda: ok(backend.start_run(records[-1], TICK, TIMEOUT))) == one
    assert trips(lambda: ok(backend.finish_run(records[-1], TICK, True, TIMEOUT))) == one
    assert trips(lambda: ok(backend.release(records[-1], TIMEOUT))) == one
    assert trips(lambda: ok(backend.revoke(records[-1], TIMEOUT))) == one
    # A server that forgot the scripts costs one more round trip (EVAL), once.
    stats.script_flush()
    assert trips(lambda: ok(backend.observe("trips", TIMEOUT)))[0] == ["send", "read"] * 2
    assert trips(lambda: ok(backend.observe("trips", TIMEOUT))) == one
    stats.close()
    backend.close()


# -- a lost token counter ---------------------------------------------------------------------


def test_a_counter_deleted_under_a_live_lease_restarts_from_the_server_clock(
    backend: RedisBackend, raw: redis.Redis, lock_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    record = _acquire(backend, lock_name)
    raw.delete(backend.keys(lock_name).counter)
    renewed = ok(backend.renew(record, TTL, TIMEOUT))  # the holder is not disturbed
    assert ok(backend.release(renewed, TIMEOUT)) is True
    first_try = _try_acquire(backend, lock_name)
    assert isinstance(first_try, Conflict), "the claim that finds the counter lost restarts it"
    seen = ok(backend.observe(lock_name, TIMEOUT))
    assert seen.record is not None
    assert seen.record.token >= int(seen.server_now * MS) - 1000, "restarted from the clock in ms"
    after = _acquire(backend, lock_name)
    assert after.token == seen.record.token + 1 > record.token
    assert "was lost (its lease still exists" in caplog.text


def test_a_counter_deleted_after_the_lease_expired_restarts_from_the_clock(
    backend: RedisBackend, raw: redis.Redis, lock_name: str
) -> None:
    record = _acquire(backend, lock_name, ttl=SHORT_TTL)
    time.sleep(SHORT_TTL + 0.05)
    raw.delete(backend.keys(lock_name).counter)
    assert ok(backend.observe(lock_name, TIMEOUT)).record is None, "nothing is left but the registry"
    after = _acquire(backend, lock_name, attempts=2)
    assert after.token > record.token
    assert after.token > int(after.acquired_at * MS) - 1000


def test_a_run_ledger_that_names_a_token_restarts_a_counter_lost_with_its_registry_entry(
    backend: RedisBackend, raw: redis.Redis, lock_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    record = _acquire(backend, lock_name, ttl=SHORT_TTL)
    assert ok(backend.start_run(record, TICK, TIMEOUT))
    time.sleep(SHORT_TTL + 0.05)
    keys = backend.keys(lock_name)
    raw.delete(keys.counter)
    raw.srem(keys.registry, keys.member)
    assert isinstance(_try_acquire(backend, lock_name), Conflict), "the ledger is evidence of use"
    assert "its run ledger names token" in caplog.text
    after = _acquire(backend, lock_name)
    assert after.token > int(after.acquired_at * MS) - 1000 > record.token
    assert after.ledger.started == TICK


def test_a_counter_below_the_run_ledgers_token_restarts_from_the_clock(
    backend: RedisBackend, raw: redis.Redis, lock_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    record = _acquire(backend, lock_name, ttl=SHORT_TTL)
    assert ok(backend.start_run(record, TICK, TIMEOUT))
    time.sleep(SHORT_TTL + 0.05)
    raw.set(backend.keys(lock_name).counter, "0")  # rolled back behind the token that ran
    assert isinstance(_try_acquire(backend, lock_name), Conflict)
    assert "below the lease's or the run ledger's token" in caplog.text
    assert _acquire(backend, lock_name).token > record.token


def test_a_claimant_that_saw_the_old_record_restarts_a_flushed_counter(
    private_redis: RedisServer, lock_name: str
) -> None:
    backend = _backend(private_redis.url())
    _acquire(backend, lock_name, ttl=SHORT_TTL)
    time.sleep(SHORT_TTL + 0.05)
    stale = ok(backend.observe(lock_name, TIMEOUT)).record
    assert stale is not None
    private_redis.client().flushall()
    assert isinstance(err(backend.claim(Claim.after(stale, identity(), TTL), TIMEOUT)), Conflict)
    assert _acquire(backend, lock_name).token > stale.token
    backend.close()


def test_after_a_total_loss_only_first_token_clock_keeps_tokens_rising(
    private_redis: RedisServer, lock_name: str
) -> None:
    """Without evidence a flushed name looks new: it starts at 1 by default, at the clock with
    ``first_token=clock``."""
    plain = _backend(private_redis.url())
    clocked = _backend(private_redis.url(first_token="clock"))
    _acquire(plain, lock_name, ttl=SHORT_TTL)
    private_redis.client().flushall()
    assert _acquire(plain, lock_name).token == 1, "the documented gap of the default"
    private_redis.client().flushall()
    before = ok(clocked.observe(lock_name, TIMEOUT)).server_now
    first = _acquire(clocked, lock_name, ttl=SHORT_TTL, attempts=2)
    assert first.token > before * MS
    private_redis.client().flushall()
    assert _acquire(clocked, lock_name, attempts=2).token > first.token
    for made in (plain, clocked):
        made.close()


def test_tokens_keep_rising_across_a_restart_without_persistence_with_first_token_clock(
    private_redis: RedisServer, lock_name: str
) -> None:
    backend = _backend(private_redis.url(first_token="clock"))
    record = _acquire(backend, lock_name, attempts=2)
    private_redis.restart()
    assert isinstance(err(backend.renew(record, TTL, TIMEOUT)), Lost), "the restart lost the lease"
    assert _acquire(backend, lock_name, attempts=2).token > record.token
    backend.close()


def test_racing_claimers_after_a_counter_loss_still_have_one_winner(
    backend: RedisBackend, raw: redis.Redis, redis_url: str, lock_name: str
) -> None:
    record = _acquire(backend, lock_name)
    ok(backend.release(record, TIMEOUT))
    raw.delete(backend.keys(lock_name).counter)
    racers = [_backend(redis_url) for _ in range(RACERS)]
    barrier = threading.Barrier(RACERS)
    won: list[LockRecord] = []

    def race(made: RedisBackend) -> None:
        barrier.wait()
        for _ in range(3):
            got = _try_acquire(made, lock_name)
            if isinstance(got, LockRecord):
                won.append(got)
            if not isinstance(got, Conflict):
                return

    threads = [threading.Thread(target=race, args=(made,)) for made in racers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT * 2)
    assert len(won) == 1, won
    assert won[0].token > record.token
    for made in racers:
        made.close()


# -- notifications ---------------------------------------------------------------------------


def test_waiters_for_many_names_share_one_pub_sub_connection_and_each_wakes_at_once(
    redis_url: str, raw: redis.Redis, lock_name: str
) -> None:
    separator = "&" if "?" in redis_url else "?"
    holder, follower = _backend(redis_url), _backend(f"{redis_url}{separator}client_name={lock_name}")
    names = [f"{lock_name}-{each}" for each in range(3)]
    records = [_claim_first(holder, name) for name in names]
    # The first waiter reads for all; the others begin while it reads, and are subscribed within
    # the reader's turn.
    waiting = [waiter(follower, name, TIMEOUT, answer=result) for name in names]
    time.sleep(NOTICE_TURN + 0.15)
    pub_sub = [c for c in raw.client_list() if c["name"] == lock_name and int(c["sub"]) > 0]
    assert [c["sub"] for c in pub_sub] == ["3"], pub_sub
    for index in (1, 0, 2):  # a waiter woken by the reader, the reader, then its successor's
        thread, outcome = waiting[index]
        released_at = time.monotonic()
        assert ok(holder.release(records[index], TIMEOUT)) is True
        thread.join(TIMEOUT)
        assert outcome[0] == Success(True), names[index]
        assert outcome[1] - released_at < NOTIFY_WITHIN, (
            f"{names[index]} woke {outcome[1] - released_at:.3f} s after"
        )
    waiting = [waiter(follower, name, TIMEOUT, answer=result) for name in names]
    time.sleep(0.1)
    closed_at = time.monotonic()
    follower.close()
    for thread, outcome in waiting:
        thread.join(TIMEOUT)
        assert outcome[0] == Success(False)
        assert outcome[1] - closed_at < FROZEN_SLACK, "a close ends every wait at once"
    holder.close()


def test_a_release_between_two_waits_still_wakes_the_next(backend: RedisBackend, lock_name: str) -> None:
    assert ok(backend.wait_for_release(lock_name, 0.01)) is False  # subscribes
    ok(backend.release(_claim_first(backend, lock_name), TIMEOUT))
    started = time.monotonic()
    assert ok(backend.wait_for_release(lock_name, TIMEOUT)) is True
    assert time.monotonic() - started < NOTIFY_WITHIN


def test_closing_the_backend_ends_a_blocked_wait_at_once(redis_url: str, lock_name: str) -> None:
    """Sooner than the contract asks (there the wait may run to its timeout): at once."""
    made = _backend(redis_url)
    thread, outcome = waiter(made, lock_name, TIMEOUT, answer=result)
    time.sleep(0.1)
    closed_at = time.monotonic()
    made.close()
    thread.join(TIMEOUT)
    assert outcome[0] == Success(False)
    assert outcome[1] - closed_at < FROZEN_SLACK
    assert ok(made.wait_for_release(lock_name, 0.01)) is False, "a closed backend reconnects on demand"
    made.close()


# -- names --------------------------------------------------------------------------------------

ODD_NAMES = [
    "with 'quotes' and \"doubles\"",
    "spaces  and\ttabs",
    "ünïcödé/€/日本語/🔒",
    "glob*?[chars]{braces}:colons",
    "x" * 200,
    "lone surrogate \ud800",
]


@pytest.mark.parametrize("odd", ODD_NAMES, ids=["quotes", "spaces", "unicode", "glob", "long", "surrogate"])
def test_odd_lock_names_work_in_every_step(backend: RedisBackend, lock_name: str, odd: str) -> None:
    name = f"{lock_name} {odd}"
    record = _acquire(backend, name)
    assert ok(backend.observe(name, TIMEOUT)).record == record
    renewed = ok(backend.renew(record, TTL, TIMEOUT))
    thread, outcome = waiter(backend, name, TIMEOUT, answer=result)
    time.sleep(0.05)
    assert ok(backend.release(renewed, TIMEOUT)) is True
    thread.join(TIMEOUT)
    assert outcome[0] == Success(True)
    assert name in ok(backend.names(TIMEOUT)), "the registry holds the name as hex and gives it back"
    assert _acquire(backend, name).token == record.token + 1


def test_prefixes_keep_locks_apart(redis_url: str, lock_name: str) -> None:
    separator = "&" if "?" in redis_url else "?"
    one = _backend(f"{redis_url}{separator}prefix=app-one")
    two = _backend(f"{redis_url}{separator}prefix=app.two:locks")
    _claim_first(one, lock_name)
    assert ok(two.observe(lock_name, TIMEOUT)).record is None
    assert lock_name in ok(one.names(TIMEOUT))
    assert lock_name not in ok(two.names(TIMEOUT))
    assert one.keys(lock_name).counter.startswith("app-one:token:")
    for made in (one, two):
        made.close()


# -- corruption ---------------------------------------------------------------------------------


def test_a_lease_key_of_the_wrong_type_fails_the_writing_steps_with_a_reason(
    backend: RedisBackend, raw: redis.Redis, lock_name: str
) -> None:
    record = _claim_first(backend, lock_name)
    raw.delete(backend.keys(lock_name).lease)
    raw.sadd(backend.keys(lock_name).lease, "x")
    for failure in (
        err(backend.claim(Claim.after(record, identity(), TTL), TIMEOUT)),
        err(backend.renew(record, TTL, TIMEOUT)),
        err(backend.release(record, TIMEOUT)),
    ):
        assert isinstance(failure, BackendError), failure
        assert "holds a set, not a hash" in failure.message


def test_a_run_ledger_of_the_wrong_type_refuses_claims_and_runs_until_repair_counts_the_present_as_run(
    backend: RedisBackend, raw: redis.Redis, lock_name: str
) -> None:
    record = _claim_first(backend, lock_name)
    runs = backend.keys(lock_name).runs
    raw.set(runs, "not a hash")
    problem = f"run ledger {runs} holds a string, not a hash"
    seen = err(backend.observe(lock_name, TIMEOUT))
    assert isinstance(seen, MalformedRecord) and problem in str(seen), seen
    for failure in (
        err(backend.claim(Claim.after(record, identity(), TTL), TIMEOUT)),
        err(backend.start_run(record, TICK, TIMEOUT)),
        err(backend.finish_run(record, TICK, True, TIMEOUT)),
    ):
        assert isinstance(failure, BackendError) and problem in failure.message, failure
    assert ok(backend.repair(lock_name, 0.0, 0, TIMEOUT)) == record.token
    stored = {_text(k): _text(v) for k, v in raw.hgetall(runs).items()}
    assert stored["run_started"] == stored["run_finished"], "repair counts the present as run"
    assert abs(int(stored["run_started"]) / MS - time.time()) < 60, stored
    assert (stored["run_token"], stored["run_ok"]) == ("0", "1")
    assert _acquire(backend, lock_name).ledger.unfinished is False


def test_a_run_ledger_without_a_schedule_reads_as_none_and_the_next_start_adds_it(
    backend: RedisBackend, raw: redis.Redis, lock_name: str
) -> None:
    """A ledger written before schedules were stored."""
    record = _claim_first(backend, lock_name)
    assert ok(backend.start_run(record, TICK, TIMEOUT, schedule="every 125ms"))
    runs = backend.keys(lock_name).runs
    raw.hdel(runs, "run_schedule")
    seen = ok(backend.observe(lock_name, TIMEOUT)).record
    assert seen is not None and (seen.ledger.started, seen.ledger.schedule) == (TICK, "")
    assert ok(backend.start_run(seen, TICK + 1, TIMEOUT, schedule="cron 0 3 * * * UTC"))
    assert raw.hget(runs, "run_schedule") == b"cron 0 3 * * * UTC"


def test_a_schedule_that_is_no_text_is_malformed_and_repair_clears_only_it(
    backend: RedisBackend, raw: redis.Redis, lock_name: str
) -> None:
    record = _claim_first(backend, lock_name)
    assert ok(backend.start_run(record, TICK, TIMEOUT, schedule="every 125ms"))
    ledger = ok(backend.observe(lock_name, TIMEOUT)).record
    assert ledger is not None
    runs = backend.keys(lock_name).runs
    raw.hset(runs, "run_schedule", b"every \xff")
    seen = err(backend.observe(lock_name, TIMEOUT))
    assert isinstance(seen, MalformedRecord) and "run_schedule" in str(seen), seen
    assert ok(backend.repair(lock_name, 0.0, 0, TIMEOUT)) == record.token
    assert _acquire(backend, lock_name).ledger == replace(ledger.ledger, schedule="")
    # Text of every width, an encoded surrogate included (as names may be), survives repair.
    text = "cron 0 3 * * * Europe/Zürich \u20ac \U0001f600 \ud800"
    raw.hset(runs, "run_schedule", text.encode("utf-8", "surrogatepass"))
    assert ok(backend.repair(lock_name, 0.0, 0, TIMEOUT)) is not None
    after = ok(backend.observe(lock_name, TIMEOUT)).record
    assert after is not None and after.ledger.schedule == text


def test_a_registry_of_the_wrong_type_is_a_failure_of_names(private_redis: RedisServer) -> None:
    backend = _backend(private_redis.url())
    private_redis.client().set(f"{DEFAULT_PREFIX}:names", "oops")
    failure = err(backend.names(TIMEOUT))
    assert isinstance(failure, BackendError)
    assert "WRONGTYPE" in failure.message
    assert _claim_first(backend, "still-works").token == 1, "claims do not depend on the registry"
    backend.close()


# -- faults -------------------------------------------------------------------------------------


# -- configuration -----------------------------------------------------------------------------


def test_the_default_test_server_is_warned_about(redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    made = _backend(redis_url)
    with caplog.at_level(logging.WARNING, logger="gomaster"):
        ok(made.observe("any", TIMEOUT))
        ok(made.observe("any", TIMEOUT))
    warnings = [r.getMessage() for r in caplog.records if r.name == "gomaster"]
    assert len(warnings) == 1, "warned once, at the first connection"
    assert "has no persistence" in warnings[0]
    assert "first_token=clock" in warnings[0]
    made.close()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--appendonly", "yes", "--maxmemory-policy", "noeviction"], []),
        (["--save", "3600 1"], ["keeps only RDB snapshots"]),
        (
            ["--appendonly", "yes", "--maxmemory-policy", "volatile-lru"],
            ["evicts keys (maxmemory-policy volatile-lru)"],
        ),
        (["--rename-command", "CONFIG", ""], []),
    ],
    ids=["aof-noeviction", "rdb-only", "eviction", "config-disabled"],
)
def test_the_configuration_warnings_name_the_risk(
    args: list[str], expected: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    with RedisServer(args=args) as server, caplog.at_level(logging.WARNING, logger="gomaster"):
        made = _backend(server.url())
        assert _claim_first(made, "configured").token == 1
        made.close()
    warnings = [r.getMessage() for r in caplog.records if r.name == "gomaster"]
    assert len(warnings) == len(expected), warnings
    for text, warning in zip(expected, warnings, strict=True):
        assert text in warning
