"""Benchmarks run float32 with fastnn's thread setting (2 threads on the CI machine)."""
