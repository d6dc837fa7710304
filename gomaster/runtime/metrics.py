"""Prometheus metrics for one lock (extra ``gomaster[metrics]``, prometheus-client).

Its public name is ``gomaster.metrics.Metrics``:

    metrics = gomaster.metrics.Metrics(name="jobs")          # or registry=your_registry
    gomaster.supervise(work, name="jobs", metrics=metrics)

The elector feeds every renewal, role change and holder change to ``observe``; the metrics
live in the process that owns them (for ``Master`` that is the application process: the
supervisor forwards its observations over the pipe).
"""

from __future__ import annotations

import threading

from gomaster.runtime.clock import boottime
from gomaster.runtime.elector import HolderChanged, RenewOutcome, RoleChanged, Watched

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
except ModuleNotFoundError as missing:  # pragma: no cover - exercised only without the extra
    raise ModuleNotFoundError(
        "gomaster.metrics needs prometheus-client: pip install 'gomaster[metrics]'"
    ) from missing

#: Renewals are one round trip: buckets from 0.1 ms to the default renew deadline.
RENEW_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 3.0)


class Metrics:
    """The metrics of a node's lock names, labelled by name, registered once in ``registry``
    (default: the global one). ``name`` is the name observations are for unless they say."""

    def __init__(
        self, *, name: str, registry: CollectorRegistry | None = None, prefix: str = "gomaster"
    ) -> None:
        target = registry if registry is not None else REGISTRY
        self._name = name
        self._last_renewal: dict[str, float | None] = {}
        self._lock = threading.Lock()
        labels = ["lock"]
        self.is_master = Gauge(f"{prefix}_is_master", "1 while this node is master", labels, registry=target)
        self.token = Gauge(
            f"{prefix}_token",
            "fencing token of the current tenure (0 when not master)",
            labels,
            registry=target,
        )
        self.transitions = Counter(
            f"{prefix}_transitions", "role changes of this node", [*labels, "to"], registry=target
        )
        self.renew_seconds = Histogram(
            f"{prefix}_renew_seconds", "renewal round trip", labels, buckets=RENEW_BUCKETS, registry=target
        )
        self.renew_failures = Counter(
            f"{prefix}_renew_failures",
            "renewals that failed, by reason",
            [*labels, "reason"],
            registry=target,
        )
        self.since_renewal = Gauge(
            f"{prefix}_seconds_since_renewal",
            "seconds since the last successful renewal (0 when not master)",
            labels,
            registry=target,
        )
        self._known: set[str] = set()
        self._meet(name)

    def _meet(self, lock: str) -> None:
        """Give ``lock`` its series the first time it is observed."""
        with self._lock:
            if lock in self._known:
                return
            self._known.add(lock)
        self.since_renewal.labels(lock).set_function(lambda: self._seconds_since_renewal(lock))
        self.is_master.labels(lock).set(0)
        self.token.labels(lock).set(0)

    def _seconds_since_renewal(self, lock: str) -> float:
        with self._lock:
            last = self._last_renewal.get(lock)
            return 0.0 if last is None else boottime() - last

    def observe(self, seen: Watched, lock: str | None = None) -> None:
        """Update the metrics from one elector observation of ``lock`` (default: the name these
        metrics were made for; one object serves every name of a supervisor)."""
        name = self._name if lock is None else lock
        self._meet(name)
        match seen:
            case RenewOutcome(latency=latency, ok=True):
                self.renew_seconds.labels(name).observe(latency)
                with self._lock:
                    self._last_renewal[name] = boottime()
            case RenewOutcome(latency=latency, ok=False, reason=reason):
                self.renew_seconds.labels(name).observe(latency)
                self.renew_failures.labels(name, reason or "unknown").inc()
            case RoleChanged(role=role, token=token):
                leader = role == "leader"
                self.is_master.labels(name).set(1 if leader else 0)
                self.token.labels(name).set(token or 0)
                self.transitions.labels(name, role).inc()
                with self._lock:
                    self._last_renewal[name] = boottime() if leader else None
            case HolderChanged():
                pass
