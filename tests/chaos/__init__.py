"""Fault injection on real processes and real servers, judged by the work's own witness log.

``proxy`` is a TCP fault proxy (pass, cut, blackhole, delay) that sits between each node and the
backend; ``harness`` runs groups of nodes against throwaway servers and injects faults from a
seeded schedule; ``run`` is the command behind ``make chaos``, which writes
``docs/reliability.md``.
"""
