"""Tests of the experiment API (a package: basenames repeat those of tests/core)."""
