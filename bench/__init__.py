"""Benchmarks: model variants compared on one table, the nightly job as a process, cost."""
