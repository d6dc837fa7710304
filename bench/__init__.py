"""Benchmarks: run with ``make bench``; they report ratios measured in one run, not pass/fail."""
