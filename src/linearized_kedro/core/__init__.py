"""Pure JAX/NumPy core: no Kedro imports, no file I/O. Usable from a notebook."""
