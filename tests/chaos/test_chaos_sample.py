"""A small sample of ``make chaos`` for ``make test``: every fault kind once on every backend.

All backends run at once, one group each (own throwaway server, 5 nodes, each one supervisor
carrying two lock names: five supervisors per backend and 25 in all, which is what two cores
carry without starving the nodes), so the whole module takes well under a minute; ``make chaos``
runs the same harness with 3 locks per group and 1,000 faults per backend. Then, in a second
wave, asyncio applications (``gomaster.aio``, work as a task in the node's loop) on SQLite,
PostgreSQL and Redis, every fault kind of theirs once, a blocked loop and a stopped supervisor
among them. The process groups' locks also run a job every second (``every()``'s target). Each
test asserts one part of the bar on the witness logs alone.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gomaster.testing import STALE_LIMIT
from tests.chaos.harness import BACKENDS, BackendResult, Plan, kinds_for, liveness_bound, run_backend
from tests.chaos.proxy import ProxyHub

SEED = int(os.environ.get("GOMASTER_CHAOS_SEED", "7"))
TTL = 2.0  # the bound scales with ttl; the time a process needs to boot under CI load does not
LOCKS = 2
#: Each lock of a process group also runs a job this often (seconds).
EVERY = 1.0

#: The backends whose sample also runs asyncio applications.
AIO_BACKENDS = ("sqlite", "postgresql", "redis")
#: (backend, asyncio?) of every sample, in waves that run at once.
WAVES = ([(backend, False) for backend in BACKENDS], [(backend, True) for backend in AIO_BACKENDS])


def _sample_id(backend: str, aio: bool) -> str:
    return f"{backend}-aio" if aio else backend


PARAMS = [
    pytest.param(
        _sample_id(backend, aio),
        id=_sample_id(backend, aio),
        marks=[getattr(pytest.mark, backend)] if backend != "sqlite" else [],
    )
    for wave in WAVES
    for backend, aio in wave
]
#: Samples whose work is a process tree (an asyncio application's work starts no escapees: the
#: children of in-process work are not contained, docs/asyncio.md).
PROCESS_PARAMS = [param for param in PARAMS if not str(param.values[0]).endswith("-aio")]
AIO_PARAMS = [param for param in PARAMS if str(param.values[0]).endswith("-aio")]


@pytest.fixture(scope="module")
def results() -> Iterator[dict[str, BackendResult]]:
    """Run each wave's samples at once and hand out the results by sample id."""
    found: dict[str, BackendResult] = {}
    errors: dict[str, BaseException] = {}
    with ProxyHub() as hub, tempfile.TemporaryDirectory(prefix="gomaster-chaos-sample-") as scratch:

        def one(backend: str, aio: bool) -> None:
            plan = Plan(
                backend=backend,
                faults=len(kinds_for(backend, aio)),
                locks=LOCKS,
                ttl=TTL,
                seed=SEED,
                aio_groups=1 if aio else 0,
                every=EVERY,
            )
            workdir = Path(scratch) / _sample_id(backend, aio)
            try:
                found[_sample_id(backend, aio)] = run_backend(plan, workdir, hub)
            except BaseException as exc:
                errors[_sample_id(backend, aio)] = exc

        for wave in WAVES:
            threads = [threading.Thread(target=one, args=sample) for sample in wave]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        if errors:
            raise AssertionError(f"the harness failed: {errors!r}")
        yield found


def _of(results: dict[str, BackendResult], backend: str) -> BackendResult:
    return results[backend]


@pytest.mark.parametrize("backend", PARAMS)
def test_every_fault_kind_ran_once_against_the_master(
    results: dict[str, BackendResult], backend: str
) -> None:
    result = _of(results, backend)
    errors = [v.evidence for v in result.violations if v.what == "harness error"]
    assert not errors, "\n".join(errors)
    assert sorted(o.fault.kind for o in result.outcomes) == sorted(
        kinds_for(result.plan.backend, result.plan.aio_groups > 0)
    )


@pytest.mark.parametrize("backend", PARAMS)
def test_no_two_masters_worked_at_once_and_tokens_only_rose(
    results: dict[str, BackendResult], backend: str
) -> None:
    result = _of(results, backend)
    assert result.tenures > len(result.outcomes) // 2, "the faults hardly changed mastership"
    broken = [v for v in result.violations if v.what.startswith(("overlap", "token regression"))]
    assert not broken, "\n\n".join(f"{v.what} ({v.where})\n{v.evidence}" for v in broken)
    assert result.overlaps == 0 and result.regressions == 0


@pytest.mark.parametrize("backend", PARAMS)
def test_a_master_frozen_past_its_lease_stops_within_0_2s_of_resuming(
    results: dict[str, BackendResult], backend: str
) -> None:
    freezes = [o for o in _of(results, backend).outcomes if o.fault.kind == "freeze_node"]
    assert freezes
    for outcome in freezes:
        assert outcome.new_tenures >= 1, f"nobody took over during {outcome.fault.detail}"
        assert outcome.stale_window is not None
        assert outcome.stale_window <= STALE_LIMIT, f"old work ran {outcome.stale_window:.3f} s after SIGCONT"


@pytest.mark.parametrize("backend", AIO_PARAMS)
def test_an_application_whose_loop_is_blocked_past_its_lease_is_ended_before_a_new_master_works(
    results: dict[str, BackendResult], backend: str
) -> None:
    result = _of(results, backend)
    blocked = [o for o in result.outcomes if o.fault.kind == "block_loop"]
    assert len(blocked) == 1
    assert "application ended by" in blocked[0].fault.detail, blocked[0].fault.detail
    assert blocked[0].new_tenures >= 1, "nobody took over from the blocked application"
    stopped = [o for o in result.outcomes if o.fault.kind == "stop_supervisor"]
    assert len(stopped) == 1 and stopped[0].new_tenures >= 1, "nobody took over from the stopped supervisor"
    assert result.overlaps == 0


@pytest.mark.parametrize("backend", PARAMS)
def test_a_master_works_again_within_ttl_plus_two_heartbeats_of_every_fault(
    results: dict[str, BackendResult], backend: str
) -> None:
    """Liveness is a time bound: on a machine that other work starves it can fail, so the message
    carries the load average."""
    result = _of(results, backend)
    bound = liveness_bound(result.plan.timing)
    late = [
        f"{o.fault.kind}: {o.gap:.3f} s without a master on {o.gap_lock}"
        for o in result.outcomes
        if o.gap > bound
    ]
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    assert not late, f"bound {bound:.3f} s; load average {load}: " + "; ".join(late)
    stuck = [v for v in result.violations if v.what in ("no master on some lock", "node exited by itself")]
    assert not stuck, "\n".join(f"{v.what} ({v.where}): {v.evidence}" for v in stuck)


@pytest.mark.parametrize("backend", PROCESS_PARAMS)
def test_nothing_the_work_started_outlived_its_tenure_under_any_fault(
    results: dict[str, BackendResult], backend: str
) -> None:
    result = _of(results, backend)
    assert result.escapees >= 3 * result.tenures, "the work did not start its escapees"
    survived = [v for v in result.violations if v.what.startswith("escapee")]
    assert not survived, "\n".join(f"{v.what} ({v.where}): {v.evidence}" for v in survived)
    assert result.survivors == 0


@pytest.mark.parametrize("backend", PROCESS_PARAMS)
def test_each_scheduled_tick_ran_at_most_once_and_none_went_by_while_a_master_held_it(
    results: dict[str, BackendResult], backend: str
) -> None:
    result = _of(results, backend)
    verdicts = result.ticks
    assert len(verdicts) == LOCKS and all(v.ticks > 0 for v in verdicts), "no scheduled run was witnessed"
    broken = [v for v in result.violations if v.what.startswith("scheduled tick")]
    assert not broken, "\n\n".join(f"{v.what} ({v.where})\n{v.evidence}" for v in broken)
    assert sum(len(v.duplicates) + len(v.uncoalesced) + len(v.demoted_writes) for v in verdicts) == 0
