"""The elector's I/O thread: every backend call of every name, batched where it can be.

The elector's loop never waits on the backend: it queues each call here and gets the answer
back as an input. The thread takes everything queued at once, renewals first (a renewal keeps a
lease, a release hands one over, a claim or a look can wait a moment), and sends the renewals
as one ``renew_many`` and the looks as one ``observe_many``: each row is still its own
compare-and-set, so a name whose renewal fails is ``Lost`` alone. A call's timeout runs from
when it was queued, so time spent behind other calls never stretches a renewal past its
deadline; a batch gets the shortest timeout of its calls.

Each look's answer says whether release notices for its name were live for the whole look
(``Observed.notices``): the thread asks its owner (``notices(name, sent_at)``, when the
answer is in), since only the owner knows its listener's health.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeAlias, TypeVar

from returns.result import Failure, Result

from gomaster.backends.base import LockBackend
from gomaster.core.election import (
    ClaimResult,
    Input,
    Observe,
    Observed,
    RenewResult,
    SendClaim,
    SendRelease,
    SendRenew,
)
from gomaster.core.errors import BackendError
from gomaster.runtime._io import performed

#: The shortest timeout a call is sent with.
MIN_TIMEOUT = 0.001
#: The most names one batched call carries: a bound on one statement's size (SQLite takes at
#: most 8,191 renewals in one) and on how long one round trip holds the others up.
BATCH_MAX = 500

Request: TypeAlias = Observe | SendClaim | SendRenew | SendRelease

#: Which queued calls go first.
_URGENCY: dict[type, int] = {SendRenew: 0, SendRelease: 1, SendClaim: 2, Observe: 3}

_K = TypeVar("_K")


@dataclass(frozen=True, slots=True)
class Call(Generic[_K]):
    """A call for the I/O thread: who asked (``key``, handed back with the answer), what, and
    when it was asked (its timeout runs from then)."""

    key: _K
    request: Request
    asked_at: float


class Calls(Generic[_K]):
    """The queue of backend calls and the thread that serves it (:meth:`serve`); answers go to
    ``answer(key, input)``. ``notices(name, sent_at)``: were release notices for ``name`` live
    from before ``sent_at`` until now (default: never, which keeps followers polling)."""

    def __init__(
        self,
        backend: LockBackend,
        answer: Callable[[_K, Input], None],
        clock: Callable[[], float],
        log: logging.Logger,
        notices: Callable[[str, float], bool] = lambda _name, _sent_at: False,
    ) -> None:
        self._backend = backend
        self._answer = answer
        self._clock = clock
        self._log = log
        self._notices = notices
        self._queue: queue.Queue[Call[_K] | None] = queue.Queue()

    def put(self, key: _K, request: Request) -> None:
        """Queue ``request`` on behalf of ``key`` (from any thread)."""
        self._queue.put(Call(key, request, self._clock()))

    def close(self) -> None:
        """Serve what is queued, then end :meth:`serve`."""
        self._queue.put(None)

    def serve(self) -> None:
        """Serve calls until :meth:`close`; run on a thread of its own.

        Between two sends it takes in whatever was queued meanwhile and sends the most urgent
        kind next: every renewal queued goes out in one batch, every look in another, and a claim
        or a release goes alone. So a renewal waits behind at most one other send, however many
        claims a node with many names has queued (1,000 names claimed one by one take seconds).
        """
        pending: list[Call[_K]] = []
        closing = False
        while True:
            if not pending and not closing:
                first = self._queue.get()
                closing = first is None
                pending += [] if first is None else [first]
            while not closing:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                closing = more is None
                pending += [] if more is None else [more]
            if not pending:
                return
            kind = min((type(c.request) for c in pending), key=_URGENCY.__getitem__)
            same = [c for c in pending if type(c.request) is kind]
            sending = same if kind in (SendRenew, Observe) else same[:1]
            sent = {id(call) for call in sending}
            pending = [call for call in pending if id(call) not in sent]
            self._guarded(kind, sending)

    def _guarded(self, kind: type, calls: list[Call[_K]]) -> None:
        try:
            self._serve(kind, calls)
        except Exception as exc:  # a backend bug must not kill the only I/O thread
            self._log.exception("backend call %s failed unexpectedly", kind.__name__)
            problem = BackendError(self._backend.url, f"unexpected {type(exc).__name__}: {exc}")
            for call in calls:
                self._fail(call, problem)

    def _serve(self, kind: type, calls: list[Call[_K]]) -> None:
        if kind is SendRenew and len(calls) > 1:
            by_ttl: dict[float, list[Call[_K]]] = {}
            for call in calls:
                assert isinstance(call.request, SendRenew)
                by_ttl.setdefault(call.request.ttl, []).append(call)
            for ttl, group in by_ttl.items():
                for chunk in _chunks(group):
                    self._renew_many(chunk, ttl)
        elif kind is Observe and len(calls) > 1:
            for chunk in _chunks(calls):
                self._observe_many(chunk)
        else:
            for call in calls:
                for live, timeout in self._in_time([call]):
                    self._one(live, timeout)

    def _in_time(self, calls: list[Call[_K]]) -> list[tuple[Call[_K], float]]:
        """The calls that still have time, each with what is left of its timeout now; the
        others are answered with a failure (a release is sent whatever its wait)."""
        now = self._clock()
        live: list[tuple[Call[_K], float]] = []
        for call in calls:
            left = call.request.timeout - (now - call.asked_at)
            if left > 0 or isinstance(call.request, SendRelease):
                live.append((call, max(left, MIN_TIMEOUT)))
            else:
                self._fail(call, BackendError(self._backend.url, "not sent: its time ran out in the queue"))
        return live

    def _renew_many(self, chunk: list[Call[_K]], ttl: float) -> None:
        live = self._in_time(chunk)
        if not live:
            return
        records = [c.request.record for c, _ in live if isinstance(c.request, SendRenew)]
        sent_at = self._clock()
        answered = performed(self._backend.renew_many(records, ttl, min(t for _, t in live)))
        now = self._clock()
        for call, _ in live:
            assert isinstance(call.request, SendRenew)
            outcome = _pick(answered, call.request.record.name, self._backend.url)
            self._answer(call.key, RenewResult(outcome, sent_at, now))

    def _observe_many(self, chunk: list[Call[_K]]) -> None:
        live = self._in_time(chunk)
        if not live:
            return
        names = [c.request.name for c, _ in live if isinstance(c.request, Observe)]
        sent_at = self._clock()
        answered = performed(self._backend.observe_many(names, min(t for _, t in live)))
        now = self._clock()
        for call, _ in live:
            assert isinstance(call.request, Observe)
            name = call.request.name
            seen = _pick(answered, name, self._backend.url)
            self._answer(call.key, Observed(seen, sent_at, now, self._notices(name, sent_at)))

    def _one(self, call: Call[_K], timeout: float) -> None:
        sent_at = self._clock()
        backend, key = self._backend, call.key
        match call.request:
            case Observe(name=name):
                seen = performed(backend.observe(name, timeout))
                self._answer(key, Observed(seen, sent_at, self._clock(), self._notices(name, sent_at)))
            case SendClaim(claim=claim):
                claimed = performed(backend.claim(claim, timeout))
                self._answer(key, ClaimResult(claimed, sent_at, self._clock()))
            case SendRenew(record=record, ttl=ttl):
                renewed = performed(backend.renew(record, ttl, timeout))
                self._answer(key, RenewResult(renewed, sent_at, self._clock()))
            case SendRelease(record=record):
                match performed(backend.release(record, timeout)):
                    case Failure(problem):
                        self._log.warning("release of token %s failed: %s", record.token, problem)
                    case _:
                        pass

    def _fail(self, call: Call[_K], failure: BackendError) -> None:
        now = self._clock()
        match call.request:
            case Observe():
                self._answer(call.key, Observed(Failure(failure), now, now))
            case SendClaim():
                self._answer(call.key, ClaimResult(Failure(failure), now, now))
            case SendRenew():
                self._answer(call.key, RenewResult(Failure(failure), now, now))
            case SendRelease():
                pass


def _chunks(calls: list[Call[_K]]) -> list[list[Call[_K]]]:
    """``calls`` in batches of at most ``BATCH_MAX``."""
    return [calls[start : start + BATCH_MAX] for start in range(0, len(calls), BATCH_MAX)]


_V = TypeVar("_V")
_E = TypeVar("_E")


def _pick(
    answered: Result[Mapping[str, Result[_V, _E]], BackendError], name: str, url: str
) -> Result[_V, _E | BackendError]:
    """One name's answer out of a batch's: its own, or the batch's failure."""
    unanswered = BackendError(url, f"the batch had no answer for {name!r}")
    missing: Result[_V, _E | BackendError] = Failure(unanswered)

    def own(each: Mapping[str, Result[_V, _E]]) -> Result[_V, _E | BackendError]:
        return each.get(name, missing)

    widened: Result[Mapping[str, Result[_V, _E]], _E | BackendError] = answered
    return widened.bind(own)
