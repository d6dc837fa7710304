"""``gomaster.metrics.Metrics``: Prometheus metrics for one lock (extra ``gomaster[metrics]``).

The metrics observe the elector, so they live in the runtime (:mod:`gomaster.runtime.metrics`);
this is their public name.
"""

from gomaster.runtime.metrics import RENEW_BUCKETS, Metrics

__all__ = ["RENEW_BUCKETS", "Metrics"]
