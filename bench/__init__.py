"""Benchmarks, run by hand with ``./dev bench``: every figure next to a baseline measured in the same run."""
