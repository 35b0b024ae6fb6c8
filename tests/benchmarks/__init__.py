"""Tests of the benchmark scripts (a package: basenames repeat those of tests/core)."""
