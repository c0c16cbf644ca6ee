"""Benchmark suites and baselines (installed as fastnn.benchmarks for fastnn bench)."""
