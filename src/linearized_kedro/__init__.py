"""linearized-kedro: NTK spectra, eigenfunction and NAD benchmarks, and linearised training."""

__version__ = "0.1.0"
