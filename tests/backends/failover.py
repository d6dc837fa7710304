"""What the replicated-backend tests do alike: claim a lease, renew it through a failover as a
holder does, and wait for a replica to catch up."""

from __future__ import annotations

import time
from collections.abc import Callable

from returns.io import IOResult
from returns.result import Failure, Success

from gomaster.backends import LockBackend
from gomaster.core.decide import Claim, plan_acquire
from gomaster.core.errors import BackendError, Lost
from gomaster.core.record import LockRecord, NodeIdentity
from gomaster.core.timing import Timing
from tests.helpers import ok, result

#: Long enough that the lease outlives the failover: the tests show where steps go after it,
#: not a race for the lease.
TTL = 30.0
TIMEOUT = 2.0
#: How long the holder keeps renewing after the primary died (Sentinel takes about 2 s to promote).
FOLLOW_WITHIN = 15.0
#: How long a replica may take to have what the primary wrote.
REPLICATED_WITHIN = 10.0


def acquire(backend: LockBackend, name: str, me: NodeIdentity) -> LockRecord:
    """Claim ``name`` for ``me`` as an elector does: observe, plan, claim."""
    planned = plan_acquire(ok(backend.observe(name, TIMEOUT)), name, me, Timing.from_ttl(TTL))
    assert isinstance(planned, Success), f"{name} is held already: {planned}"
    plan = planned.unwrap()
    return ok(
        backend.claim(Claim(name=name, node=me, token=plan.token, expected=plan.expected, ttl=TTL), TIMEOUT)
    )


def renew_through(backend: LockBackend, held: LockRecord) -> tuple[LockRecord, list[str]]:
    """Renew ``held`` as its holder does, every 0.2 s until a renewal succeeds: the renewed
    record and the errors of the tries before. Losing the lease fails the test at once."""
    errors: list[str] = []
    deadline = time.monotonic() + FOLLOW_WITHIN
    while time.monotonic() < deadline:
        match result(backend.renew(held, TTL, TIMEOUT)):
            case Success(renewed):
                return renewed, errors
            case Failure(Lost() as lost):
                raise AssertionError(f"the holder lost its lease in the failover: {lost}")
            case Failure(error):
                errors.append(str(error))
                time.sleep(0.2)
    raise AssertionError(f"no renewal succeeded within {FOLLOW_WITHIN} s of the failover: {errors[-3:]}")


def error_of(step: IOResult[object, object]) -> str:
    """The message of a step that must have failed with a ``BackendError``."""
    failed = result(step)
    assert isinstance(failed, Failure), f"the step succeeded: {failed}"
    assert isinstance(failed.failure(), BackendError), failed
    return str(failed.failure())


def wait_for(condition: Callable[[], bool], what: str, within: float = REPLICATED_WITHIN) -> None:
    """Poll ``condition`` until it holds, failing the test after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"never saw {what} within {within} s"
        time.sleep(0.05)
