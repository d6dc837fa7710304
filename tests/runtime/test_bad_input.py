"""Bad input is refused before any process starts, with an error that names the problem."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import multiprocess
import pytest

import gomaster
from gomaster import Leadership, Timing
from gomaster.backends import connect
from gomaster.core.election import Config
from gomaster.runtime.elector import Elector
from gomaster.runtime.supervisor import Job, Supervisor, SupervisorOptions
from tests.helpers import identity


def _noop(_leadership: Leadership) -> None:
    return None


@pytest.fixture(autouse=True)
def no_process_started() -> object:
    before = set(multiprocess.active_children())
    yield None
    assert set(multiprocess.active_children()) == before


def test_an_unknown_url_scheme_is_refused_naming_the_scheme() -> None:
    with pytest.raises(ValueError, match=r"unknown backend scheme 'cassandra'.*sqlite"):
        gomaster.supervise(_noop, backend="cassandra://db/x")


def test_a_url_without_a_scheme_is_refused_with_an_example() -> None:
    with pytest.raises(ValueError, match=r"scheme://"):
        gomaster.supervise(_noop, backend="/tmp/locks.db")


def test_an_unwritable_sqlite_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"does not exist"):
        gomaster.supervise(_noop, backend=f"sqlite:///{tmp_path / 'missing' / 'locks.db'}")
    with pytest.raises(ValueError, match=r"is a directory"):
        connect(f"sqlite:///{tmp_path}")


def test_an_impossible_timing_names_the_rule_it_breaks() -> None:
    with pytest.raises(ValueError, match=r"heartbeat < renew_deadline"):
        Timing(heartbeat=3.0, renew_deadline=3.0)
    with pytest.raises(ValueError, match=r"renew_deadline \+ grace < ttl"):
        Timing(ttl=3.0)
    with pytest.raises(ValueError, match=r"ttl must be from 0\.1 to 86400 seconds"):
        Timing.from_ttl(-1.0)


def test_a_target_that_is_not_callable_is_refused() -> None:
    with pytest.raises(TypeError, match=r"target 1 is int"):
        gomaster.supervise([_noop, 42], backend="memory://")  # type: ignore[list-item]


@pytest.mark.parametrize("targets", [42, "job", b"job", {"job": 42}, None], ids=repr)
def test_something_that_is_neither_a_callable_nor_a_list_of_them_is_refused_saying_what_is_taken(
    targets: object,
) -> None:
    shown = "int for lock name 'job'" if isinstance(targets, dict) else type(targets).__name__
    expected = rf"supervise\(\) takes a callable or a list of callables.*not {shown}"
    with pytest.raises(TypeError, match=expected):
        gomaster.supervise(targets, backend="memory://")  # type: ignore[arg-type]


def test_lock_names_given_both_as_mapping_keys_and_as_name_are_refused() -> None:
    with pytest.raises(TypeError, match=r"either as the keys of the mapping or as name="):
        gomaster.supervise({"a": _noop}, backend="memory://", name="a")


def test_an_empty_mapping_of_lock_names_is_refused() -> None:
    with pytest.raises(ValueError, match=r"at least one lock name"):
        gomaster.supervise({}, backend="memory://")


@pytest.mark.parametrize("key", ["", 7], ids=repr)
def test_a_mapping_key_that_is_no_lock_name_is_refused_naming_it(key: object) -> None:
    with pytest.raises((TypeError, ValueError), match=r"lock name"):
        gomaster.supervise({key: _noop}, backend="memory://")  # type: ignore[dict-item]


def test_a_target_that_cannot_reach_a_worker_is_named_with_its_lock_name() -> None:
    pending = (n for n in range(3))
    with pytest.raises(TypeError, match=r"target 1 for lock name 'sweeper' .*cannot be sent to a worker"):
        gomaster.supervise(
            {"reports": _noop, "sweeper": [_noop, lambda _lead: next(pending)]}, backend="memory://"
        )


def test_one_lock_name_twice_in_a_supervisor_is_refused_before_anything_starts() -> None:
    me = identity()
    timing = Timing()
    jobs = [Job(config=Config(name="jobs", me=me, timing=timing), targets=[_noop]) for _ in range(2)]
    with pytest.raises(ValueError, match=r"lock name 'jobs' is given more than once"):
        Supervisor(connect("memory://"), jobs)


@pytest.mark.parametrize("version", ["1.0\x1b[2J", "1.0\udc80"])
def test_a_version_a_terminal_would_obey_or_no_backend_can_store_is_refused(version: str) -> None:
    with pytest.raises(ValueError, match=r"^version must"):
        gomaster.supervise(_noop, backend="memory://", version=version)


def test_a_target_that_cannot_reach_a_worker_is_refused() -> None:
    pending = (n for n in range(3))
    with pytest.raises(TypeError, match=r"cannot be sent to a worker"):
        gomaster.supervise(lambda _lead: next(pending), backend="memory://")


def test_no_targets_is_refused() -> None:
    with pytest.raises(ValueError, match=r"at least one target"):
        gomaster.supervise([], backend="memory://")


def test_a_bad_lock_name_is_refused() -> None:
    with pytest.raises(ValueError, match=r"lock name"):
        gomaster.supervise(_noop, backend="memory://", name="")


def test_a_malformed_row_is_a_failure_and_the_election_carries_on(tmp_path: Path) -> None:
    path = tmp_path / "locks.db"
    backend = connect(f"sqlite:///{path}")
    backend.names(1.0)  # creates the table
    with sqlite3.connect(path) as raw:
        raw.execute(
            "INSERT INTO gomaster_lock (name, holder, version, token, acquired_at, renewed_at, expires_at, "
            "host, pid) VALUES ('broken', 'x', '', 'not-a-number', 0, 0, 9e18, 'h', 1)"
        )
    timing = Timing.from_ttl(1.0)
    events: list[object] = []
    node = Elector(backend)
    elector = node.join(Config(name="broken", me=identity(), timing=timing), events.append)
    thread = threading.Thread(target=node.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while elector.status().error is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "malformed" in (elector.status().error or "")
    assert thread.is_alive()
    assert elector.status().role == "follower"
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE gomaster_lock SET token = 7, holder = '', expires_at = 0 WHERE name = 'broken'")
    while elector.status().role != "leader" and time.monotonic() < deadline + 5:
        time.sleep(0.01)
    assert elector.status().role == "leader"
    assert elector.status().token == 8
    elector.stop()
    thread.join(5)
    assert not thread.is_alive()


def test_a_password_never_reaches_logs_repr_or_status(caplog: pytest.LogCaptureFixture) -> None:
    secret = "pa55-w0rd-secret"
    backend = connect(f"mysql://app:{secret}@127.0.0.1:1/db?connect_timeout=1")
    assert secret not in repr(backend) and secret not in backend.url
    timing = Timing.from_ttl(1.0)
    node = Elector(backend)
    elector = node.join(Config(name="secret", me=identity(), timing=timing), lambda _event: None)
    thread = threading.Thread(target=node.run, daemon=True)
    with caplog.at_level("WARNING", logger="gomaster"):
        thread.start()
        deadline = time.monotonic() + 10
        while elector.status().error is None and time.monotonic() < deadline:
            time.sleep(0.01)
        elector.stop()
        thread.join(10)
    status = elector.status()
    assert status.error is not None and "***" in status.error
    assert secret not in repr(status)
    assert caplog.records, "the failure should have been logged"
    assert all(secret not in record.getMessage() for record in caplog.records)


def test_a_name_added_to_a_supervisor_twice_or_beyond_its_capacity_is_refused_saying_so(
    tmp_path: Path,
) -> None:
    def job(name: str) -> Job:
        return Job(config=Config(name=name, me=identity(), timing=Timing.from_ttl(1.0)), targets=[_noop])

    supervisor = Supervisor(
        connect(f"sqlite:///{tmp_path / 'locks.db'}"), [job("first")], SupervisorOptions(capacity=2)
    )
    with pytest.raises(ValueError, match="'first' is already carried"):
        supervisor.add(job("first"))
    supervisor.add(job("second"))
    with pytest.raises(ValueError, match=r"carries 2 lock names, its capacity: 'third' cannot join"):
        supervisor.add(job("third"))
    assert supervisor.names == ("first", "second")
