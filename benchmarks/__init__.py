"""Benchmarks: load generator and scenarios."""
