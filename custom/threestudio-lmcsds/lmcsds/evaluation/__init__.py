"""Benchmarks, metrics and diagnostics."""
