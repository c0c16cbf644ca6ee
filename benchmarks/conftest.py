"""Per-op kernel benchmarks: fastnn's backends against its own NumPy backend, float32,
with fastnn's thread setting (2 threads on the CI machine).

Whole-training and MLPClassifier comparisons against other libraries are not here:
`fastnn bench` runs them, every system in a fresh process of its own
(fastnn/bench/isolated.py), which an in-process pytest benchmark cannot do.
"""
