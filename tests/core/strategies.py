"""Hypothesis strategies and plain builders for the core's values."""

from __future__ import annotations

from hypothesis import strategies as st

from gomaster.core.record import MAX_TOKEN, LockRecord, NodeIdentity, Observation
from gomaster.core.timing import MIN_PERIOD, Timing

NAME = "jobs"
#: A handful of node ids, so that generated records often name the node under test.
NODE_IDS = ("a", "b", "c")

#: Backend times: epoch seconds of this century, so that sums never lose the sub-millisecond.
server_times = st.floats(min_value=1.6e9, max_value=2.0e9, allow_nan=False, allow_infinity=False)
#: Short spans of seconds, as between two reads.
spans = st.floats(min_value=0.0, max_value=100.0, allow_nan=False, allow_infinity=False)
tokens = st.integers(min_value=0, max_value=MAX_TOKEN - 2)


def identity(node_id: str = "a") -> NodeIdentity:
    """The node under test, or another one."""
    return NodeIdentity(node_id=node_id, host=f"host-{node_id}", pid=100, version="1.0")


def record(
    *,
    holder: str = "b",
    token: int = 1,
    acquired_at: float = 1_000.0,
    renewed_at: float | None = None,
    expires_at: float | None = None,
    name: str = NAME,
) -> LockRecord:
    """A lease with sensible defaults: held by ``b``, renewed at acquisition, lasting 5 s."""
    renewed = acquired_at if renewed_at is None else renewed_at
    return LockRecord(
        name=name,
        holder=holder,
        version="1.0",
        token=token,
        acquired_at=acquired_at,
        renewed_at=renewed,
        expires_at=renewed + 5.0 if expires_at is None else expires_at,
        host=f"host-{holder}" if holder else "",
        pid=100,
    )


@st.composite
def identities(draw: st.DrawFn) -> NodeIdentity:
    """A contender, usually one of :data:`NODE_IDS`."""
    return identity(draw(st.sampled_from(NODE_IDS)))


@st.composite
def records(draw: st.DrawFn, *, name: str = NAME) -> LockRecord:
    """Any well-formed record: held by someone, released, live or long expired."""
    acquired = draw(server_times)
    renewed = acquired + draw(spans)
    return LockRecord(
        name=name,
        holder=draw(st.sampled_from(("", *NODE_IDS))),
        version=draw(st.sampled_from(("", "1.0", "2.0"))),
        token=draw(tokens),
        acquired_at=acquired,
        renewed_at=renewed,
        expires_at=renewed + draw(spans),
        host=draw(st.sampled_from(("", "host-a", "host-b"))),
        pid=draw(st.integers(min_value=0, max_value=2**31)),
    )


@st.composite
def observations(draw: st.DrawFn) -> Observation:
    """A read of the backend: no record, or any record, at a time around its lease."""
    seen = draw(st.none() | records())
    if seen is None:
        return Observation(None, draw(server_times))
    return Observation(seen, seen.renewed_at + draw(st.floats(min_value=-1.0, max_value=120.0)))


@st.composite
def timings(draw: st.DrawFn) -> Timing:
    """A valid timing: a lease of 0.5 s to an hour in the default proportions, or a bent one."""
    ttl = draw(st.floats(min_value=0.5, max_value=3600.0))
    base = Timing.from_ttl(ttl)
    drift = draw(st.floats(min_value=0.0, max_value=0.15))
    grace = max(MIN_PERIOD, draw(st.floats(min_value=0.01, max_value=0.3)) * ttl)
    renew_deadline = draw(st.floats(min_value=0.05, max_value=0.5)) * ttl
    heartbeat = max(MIN_PERIOD, draw(st.floats(min_value=0.1, max_value=0.9)) * renew_deadline)
    return base.replace(heartbeat=heartbeat, renew_deadline=renew_deadline, grace=grace, max_drift=drift)
