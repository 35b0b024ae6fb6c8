"""Top eigenpairs of a kernel Gram matrix, Nyström approximations, sign convention.

* ``common``: the ``Eigenpairs`` result, the sign convention, residuals, solver choice;
* ``host``: dense LAPACK and float64 block Krylov on a NumPy Gram;
* ``device``: the same methods in JAX on an accelerator-resident Gram;
* ``nystrom``: the Nyström approximation from m landmark columns.

``top_eigenpairs`` picks host or device by where K lives (docs/methods.md §3.1).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from .common import (
    DEFAULT_TOL,
    SOLVERS,
    Eigenpairs,
    EigenSolver,
    apply_sign_convention,
    eigen_residuals,
    resolve_solver,
)
from .device import DeviceSolver, device_max_blocks, device_solver_bytes, device_top_eigenpairs
from .host import HostSolver, host_top_eigenpairs
from .nystrom import nystrom_eigenpairs


def top_eigenpairs(K: Any, k: int, *, device: bool | None = None, **options: Any) -> Eigenpairs:
    """The k largest eigenpairs of a symmetric PSD (N, N) matrix, in float64.

    Args:
        K: (N, N) symmetric Gram matrix: a NumPy array (host) or a JAX array (device).
        k: number of eigenpairs, 1 <= k < N.
        device: run on the accelerator (True) or the host (False); default: where K is
            (a ``jax.Array`` on the device, anything else on the host).
        **options: the solver's settings (``EigenSolver.solve``):

            * ``solver``: ``"auto"`` (default: dense for N <= 1500 or k > N/4, else block
              Krylov), ``"dense"`` or ``"block_krylov"``;
            * ``seed``: seed of the block Krylov starting block
              (``numpy.random.default_rng``), default 0;
            * ``tol``: target relative residual ‖K u − λ u‖ / |λ| for the iterative
              solver (default 1e-5); the dense solver ignores it;
            * ``progress``: tqdm bar over Krylov blocks;
            * ``max_blocks``: Krylov blocks allowed before float64 polishing (None: 30),
              e.g. ``device_max_blocks`` for the device's memory.

    Returns:
        ``Eigenpairs`` with values (k,) descending, vectors (k, N) unit rows in the sign
        convention of ``apply_sign_convention``, and float64 residuals.

    Raises:
        ValueError: K not square/finite, k out of range, or unknown solver.
    """
    on_device = isinstance(K, jax.Array) if device is None else bool(device)
    if on_device:
        return DeviceSolver().solve(K, k, **options)
    return HostSolver().solve(np.asarray(K), k, **options)


__all__ = [
    "DEFAULT_TOL",
    "SOLVERS",
    "DeviceSolver",
    "EigenSolver",
    "Eigenpairs",
    "HostSolver",
    "apply_sign_convention",
    "device_max_blocks",
    "device_solver_bytes",
    "device_top_eigenpairs",
    "eigen_residuals",
    "host_top_eigenpairs",
    "nystrom_eigenpairs",
    "resolve_solver",
    "top_eigenpairs",
]
