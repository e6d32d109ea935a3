"""Harnesses shared by tests, benchmarks and the demo: real servers, real processes."""
