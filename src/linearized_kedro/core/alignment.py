"""Kernel alignment: how training rotates the NTK toward the target eigenfunction (docs/methods.md §3.2 step 5).

For unit eigenvectors u_i of the initial Gram (over all N = N_train + N_test samples) and
the Jacobian J of the network at some θ (BN in inference mode with that θ's state),

    a_all(i)   = ‖J(X)ᵀ u_i‖² / ‖u_i‖²  = u_iᵀ Θ u_i / u_iᵀ u_i,
    a_s(i)     = the same with only the rows of split s (train or test) of X and u_i,

the Rayleigh quotients of the kernel Θ = J Jᵀ restricted to the split. At θ = θ0,
a_all(i) = λ_i.

Raw quotients mix three effects: the kernel *rotating* toward the target u_j, the kernel
*growing* (its trace changes during training) and an asymmetry present before any
training (restricting u_i to the test rows is not an eigenvector of Θ_0[test, test], so the
test curve is flatter than the train one already at θ0). The measures reported here
separate them:

* **trace-normalised quotients** q_s(i) = a_s(i) / (tr Θ[s, s] / n_s), for Θ = Θ_0 and
  Θ = Θ_end: scaling the kernel by a constant (pure growth) leaves them unchanged;
* the **neighbour-based concentration ratio** at the target j: q_s(j) divided by the
  median of q_s(i) over the indices i = j ± 1 .. j ± ``radius`` inside [1, k). It compares
  the target with eigenvectors of nearly the same eigenvalue, so the decay of the spectrum
  cancels (≈ 1 on train at θ0), and its θ0 value is the baseline the end value is read
  against, on each split separately. The median, not the mean: a neighbour that training
  also rotated toward (a near-degenerate partner of u_j) does not swamp the reference.
  Measured on digits (LeNet-ReLU, j = 10, 100 epochs): train 1.01 → 4.86, test
  0.76 → 2.51 (θ0 → end).

Unlike the original (docs/methods.md §4 items 9, 14), every sample contributes (the last data batch is
zero-padded with zero cotangents) and only ``chunk`` eigenvectors' accumulators
(chunk × P) are kept at a time: each data batch's VJP is reused for a chunk of cotangents.
"""

from __future__ import annotations

import functools
import logging
import math
import sys
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from .layers import with_conv_autodiff
from .models import count_params, scalar_apply, split_variables

logger = logging.getLogger(__name__)

DEFAULT_MEMORY_BYTES = 256 * 2**20

SPLITS = ("train", "test")
STAGES = ("init", "end")
DEFAULT_RADIUS = 5
"""Neighbours on each side of the target in the concentration ratio (docs/methods.md §3.2 step 5)."""

FIRST_NEIGHBOUR = 1
"""Index 0 never counts as a neighbour: the top eigenvector has one sign (Perron-Frobenius)
and a quotient orders of magnitude above the rest, which would swamp the mean for j ≤ 5."""

DEFINITION = (
    "q_s(i) = u_i[s]ᵀ Θ[s,s] u_i[s] / (‖u_i[s]‖² · tr Θ[s,s] / n_s) for split s and the "
    "initial eigenvectors u_i, Θ = Θ_0 (init) or Θ_end (end); concentration = q_s(j) / "
    "median(q_s(i) for i in j±1..j±radius, 1 <= i < k)"
)


def _batched(x: np.ndarray, batch: int) -> np.ndarray:
    """(n, ...) -> (ceil(n / batch), batch, ...) zero-padded."""
    nb = -(-x.shape[0] // batch)
    pad = np.zeros((nb * batch - x.shape[0], *x.shape[1:]), x.dtype)
    return np.concatenate([x, pad]).reshape(nb, batch, *x.shape[1:])


@functools.lru_cache(maxsize=16)
def _projection_fn(module: nn.Module):
    """jit(params, state, xb (nb, b, ...), ub (nb, c, b)) -> Σ_n u[:, n] ∇f(x_n), c pytrees."""

    def run(params, state, xb, ub):
        f = scalar_apply(module, state)
        acc0 = jax.tree_util.tree_map(lambda p: jnp.zeros((ub.shape[1], *p.shape), p.dtype), params)

        def body(acc, inputs):
            x, u = inputs
            _, vjp = jax.vjp(lambda p: f(p, x), params)
            contrib = jax.vmap(lambda cot: vjp(cot.astype(x.dtype))[0])(u)
            return jax.tree_util.tree_map(jnp.add, acc, contrib), None

        acc, _ = jax.lax.scan(body, acc0, (xb, ub))
        return acc

    return jax.jit(run)


@functools.lru_cache(maxsize=16)
def _grad_sq_norms_fn(module: nn.Module):
    """jit(params, state, xb (nb, b, ...)) -> (nb, b) per-sample ‖∇f(x_n)‖² (diag of Θ)."""

    def run(params, state, xb):
        f = scalar_apply(module, state)

        def per_sample(x):
            g = jax.grad(lambda p: f(p, x[None])[0])(params)
            return sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree_util.tree_leaves(g))

        def body(carry, x):
            return carry, jax.vmap(per_sample)(x)

        return jax.lax.scan(body, None, xb)[1]

    return jax.jit(run)


def _sq_norms(tree: Any) -> jax.Array:
    return sum(
        jnp.sum(jnp.square(leaf.reshape(leaf.shape[0], -1)), axis=1)
        for leaf in jax.tree_util.tree_leaves(tree)
    )


def _check_split(x: np.ndarray, train_idx: Any, test_idx: Any) -> tuple[np.ndarray, np.ndarray]:
    n = x.shape[0]
    train_idx = np.asarray(train_idx, np.int64).reshape(-1)
    test_idx = np.asarray(test_idx, np.int64).reshape(-1)
    for name, idx in (("train_idx", train_idx), ("test_idx", test_idx)):
        if idx.size == 0 or idx.min() < 0 or idx.max() >= n:
            raise ValueError(f"{name} must be non-empty indices into the {n} rows of x.")
    return train_idx, test_idx


def kernel_alignment(
    module: nn.Module,
    variables: Mapping[str, Any],
    x: np.ndarray,
    eigvecs: np.ndarray,
    train_idx: np.ndarray,
    test_idx: np.ndarray,
    *,
    chunk: int | None = None,
    batch_size: int = 128,
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
) -> dict[str, np.ndarray]:
    """Raw Rayleigh quotients of Θ (the NTK at ``variables``) on the vectors ``eigvecs``.

    Args:
        module: a module from ``models.build_model``.
        variables: ``{'params': θ, ['batch_stats': ...]}`` (BN in inference mode with these
            statistics, docs/methods.md §1.3).
        x: (N, H, W, C), the samples the eigenvectors live on (train + test).
        eigvecs: (k, N) eigenvectors of the initial Gram.
        train_idx: (N_train,) row indices of the train samples in ``x``.
        test_idx: (N_test,) row indices of the test samples.
        chunk: eigenvectors per VJP batch; default from ``memory_bytes`` (2·chunk·P floats).
        batch_size: data rows per VJP (the remainder is zero-padded, never dropped).
        memory_bytes: accumulator budget used when ``chunk`` is None.

    Returns:
        ``all``, ``train``, ``test``: (k,) float64 quotients a_s(i) (module docstring);
        ``*_normalized``: the same divided by tr Θ / N (the *whole* kernel's mean diagonal,
        as in the first wave); ``train_split_normalized``, ``test_split_normalized``:
        q_s(i) = a_s(i) / (tr Θ[s, s] / n_s), each split by its own trace (the quotients
        of the alignment artifact); ``trace`` = tr Θ = Σ_n ‖∇f(x_n)‖², ``trace_train``,
        ``trace_test``: 0-d float64.
    """
    x = np.asarray(x)
    eigvecs = np.asarray(eigvecs)
    if x.ndim != 4:
        raise ValueError(f"x must be (N, H, W, C); got shape {x.shape}.")
    n = x.shape[0]
    if eigvecs.ndim != 2 or eigvecs.shape[1] != n:
        raise ValueError(f"eigvecs must be (k, N={n}); got shape {eigvecs.shape}.")
    train_idx, test_idx = _check_split(x, train_idx, test_idx)
    params, state = split_variables(variables)
    k = eigvecs.shape[0]
    if chunk is None:
        per_vec = 2 * count_params(params) * 4
        chunk = int(max(1, min(k, memory_bytes // max(per_vec, 1))))
    if int(chunk) < 1 or int(batch_size) < 1:
        raise ValueError("chunk and batch_size must be >= 1.")
    chunk = min(int(chunk), k)
    dtype = jax.tree_util.tree_leaves(params)[0].dtype
    x = x.astype(dtype)
    u = eigvecs.astype(dtype)
    disjoint_cover = (
        np.intersect1d(train_idx, test_idx).size == 0
        and np.union1d(train_idx, test_idx).size == n
        and train_idx.size + test_idx.size == n
    )
    # Hand-written conv VJPs: the data loops are ``lax.scan``s of VJPs, where autodiff's own
    # backward convolutions are slow on XLA:CPU (``core.layers``).
    module = with_conv_autodiff(module, "vjp")
    project = _projection_fn(module)
    parts = {"train": train_idx, "test": test_idx}
    if not disjoint_cover:
        parts["all"] = np.arange(n)
    xbs = {name: _batched(x[idx], batch_size) for name, idx in parts.items()}
    sq = {name: [] for name in ("all", "train", "test")}
    for start in range(0, k, chunk):
        uc = u[start : start + chunk]
        c = uc.shape[0]
        # The last chunk is padded with zero vectors (zero cotangents, sliced off
        # below) so that every chunk reuses one compiled program.
        uc = np.concatenate([uc, np.zeros((chunk - c, n), uc.dtype)])
        accs = {}
        for name, idx in parts.items():
            ub = _batched(uc[:, idx].T, batch_size)  # (nb, b, c)
            accs[name] = project(params, state, xbs[name], jnp.swapaxes(ub, 1, 2))
        if disjoint_cover:
            accs["all"] = jax.tree_util.tree_map(jnp.add, accs["train"], accs["test"])
        for name in sq:
            sq[name].append(np.asarray(_sq_norms(accs[name]), np.float64)[:c])
    # diag Θ once for all samples; each split's trace is a sum over its rows.
    diag = _grad_sq_norms_fn(module)(params, state, _batched(x, batch_size))
    diag = np.asarray(diag, np.float64).reshape(-1)[:n]
    traces = {
        "all": float(np.sum(diag)),
        "train": float(np.sum(diag[train_idx])),
        "test": float(np.sum(diag[test_idx])),
    }
    u64 = eigvecs.astype(np.float64)
    denoms = {
        "all": np.sum(u64**2, axis=1),
        "train": np.sum(u64[:, train_idx] ** 2, axis=1),
        "test": np.sum(u64[:, test_idx] ** 2, axis=1),
    }
    out: dict[str, np.ndarray] = {}
    for name in ("all", "train", "test"):
        out[name] = np.concatenate(sq[name]) / denoms[name]
    for name in ("all", "train", "test"):
        out[f"{name}_normalized"] = out[name] / (traces["all"] / n)
    sizes = {"train": train_idx.size, "test": test_idx.size}
    for name in SPLITS:
        out[f"{name}_split_normalized"] = out[name] / (traces[name] / sizes[name])
    out["trace"] = np.asarray(traces["all"], np.float64)
    for name in SPLITS:
        out[f"trace_{name}"] = np.asarray(traces[name], np.float64)
    return out


def split_quotients(*args: Any, **kwargs: Any) -> dict[str, np.ndarray]:
    """Trace-normalised Rayleigh quotients q_s(i) of the kernel at ``variables`` per split.

    Args:
        *args, **kwargs: as for :func:`kernel_alignment` (module, variables, x, eigvecs,
            train_idx, test_idx; ``chunk``, ``batch_size``, ``memory_bytes``).

    Returns:
        ``{"train": (k,), "test": (k,)}`` float64: a_s(i) / (tr Θ[s, s] / n_s), the
        ``*_split_normalized`` entries of :func:`kernel_alignment`.
    """
    raw = kernel_alignment(*args, **kwargs)
    return {s: raw[f"{s}_split_normalized"] for s in SPLITS}


def quotients_from_gram(gram: np.ndarray, eigvecs: np.ndarray, idx: Any) -> np.ndarray:
    """Trace-normalised Rayleigh quotients of an explicit kernel restricted to rows ``idx``.

    The dense twin of :func:`split_quotients` for a kernel already in memory (small N,
    or a kernel built by hand).

    Args:
        gram: (N, N) symmetric kernel Θ.
        eigvecs: (k, N) vectors u_i.
        idx: (n_s,) row indices of the split s.

    Returns:
        (k,) float64: u_i[s]ᵀ Θ[s, s] u_i[s] / (‖u_i[s]‖² · tr Θ[s, s] / n_s).
    """
    gram = np.asarray(gram, np.float64)
    idx = np.asarray(idx, np.int64).reshape(-1)
    sub = np.asarray(eigvecs, np.float64)[:, idx]
    block = gram[np.ix_(idx, idx)]
    raw = np.einsum("ki,ij,kj->k", sub, block, sub) / np.sum(sub**2, axis=1)
    return raw / (np.trace(block) / idx.size)


def neighbours(target: int, k: int, radius: int = DEFAULT_RADIUS) -> np.ndarray:
    """Indices j ± 1 .. j ± radius inside [FIRST_NEIGHBOUR, k), the target excluded."""
    if not 0 <= int(target) < int(k):
        raise ValueError(f"target index {target} is outside the k={k} eigenvectors.")
    if int(radius) < 1:
        raise ValueError(f"radius must be >= 1; got {radius}.")
    lo, hi = max(FIRST_NEIGHBOUR, target - radius), min(int(k), target + radius + 1)
    return np.array([i for i in range(lo, hi) if i != target], np.int64)


def concentration_ratio(quotients: np.ndarray, target: int, radius: int = DEFAULT_RADIUS) -> float:
    """q(j) / median(q(i) for the :func:`neighbours` i of j): > 1 where Θ concentrates on u_j.

    Args:
        quotients: (k,) quotients of one kernel on one split.
        target: j.
        radius: neighbours on each side.

    Returns:
        The ratio, NaN when j has no neighbour (k ≤ 2) or the neighbours' median is 0.
    """
    quotients = np.asarray(quotients, np.float64).reshape(-1)
    idx = neighbours(target, quotients.size, radius)
    reference = float(np.median(quotients[idx])) if idx.size else 0.0
    return float(quotients[target]) / reference if reference != 0.0 else math.nan


def rotation_run(
    init: Mapping[str, np.ndarray],
    end: Mapping[str, np.ndarray],
    target: int,
    radius: int = DEFAULT_RADIUS,
) -> dict[str, Any]:
    """The stored alignment of one trained network (PLAN "Kernel alignment" contract).

    Args:
        init: ``{"train": (k,), "test": (k,)}`` trace-normalised quotients of Θ_0.
        end: the same for Θ_end.
        target: the eigen-index j the network was trained on.
        radius: neighbours on each side in the concentration ratio.

    Returns:
        ``{"train_init", "train_end", "test_init", "test_end"}``: (k,) lists, and
        ``"concentration"``: the same four keys → the ratio at ``target`` (floats).
    """
    stages = {"init": init, "end": end}
    run: dict[str, Any] = {}
    concentration = {}
    for split in SPLITS:
        for stage, values in stages.items():
            q = np.asarray(values[split], np.float64)
            run[f"{split}_{stage}"] = q.tolist()
            concentration[f"{split}_{stage}"] = concentration_ratio(q, target, radius)
    run["concentration"] = concentration
    return run


def kernel_rotation(
    module: nn.Module,
    variables0: Mapping[str, Any],
    trained: Mapping[int, Mapping[str, Any]],
    x: np.ndarray,
    eigvecs: np.ndarray,
    train_idx: np.ndarray,
    test_idx: np.ndarray,
    *,
    eigenvalues: np.ndarray,
    radius: int = DEFAULT_RADIUS,
    settings: Mapping[str, Any] | None = None,
    progress: bool = False,
    **kwargs: Any,
) -> dict[str, Any]:
    """The alignment artifact of an eigenfunction sweep: every trained network against θ0.

    Θ_0's quotients are computed once and shared by every run; each trained network
    adds Θ_end's. With θ_end = θ0 the end entries equal the init ones bit for bit.

    Args:
        module: a module from ``models.build_model``.
        variables0: θ0 variables, whose Gram's eigenvectors are ``eigvecs``.
        trained: eigen-index j → the variables of the network trained on task j.
        x: (N, H, W, C) train + test samples.
        eigvecs: (k, N) initial eigenvectors (rows).
        train_idx, test_idx: the split's row indices in ``x``.
        eigenvalues: (k,) initial eigenvalues (stored for the figures).
        radius: neighbours on each side in the concentration ratio.
        settings: the caller's settings (training, seed, ...), stored beside ours.
        progress: a bar over the kernels on a terminal (one INFO line per kernel always).
        **kwargs: ``chunk``, ``batch_size``, ``memory_bytes`` of :func:`kernel_alignment`.

    Returns:
        ``{"eigenvalues": (k,) list, "runs": {str(j): rotation_run(...)}, "settings": {...}}``.
    """
    eigvecs = np.asarray(eigvecs)
    eigenvalues = np.asarray(eigenvalues, np.float64).reshape(-1)
    k = eigvecs.shape[0] if eigvecs.ndim == 2 else -1
    if eigenvalues.size != k:
        raise ValueError(
            f"eigenvalues has {eigenvalues.size} entries but eigvecs has shape {eigvecs.shape}; "
            "they must come from the same spectrum."
        )
    targets = sorted(int(j) for j in trained)
    for j in targets:
        neighbours(j, k, radius)  # index and radius checks before any kernel work
    kernels = tqdm(
        total=len(targets) + 1,
        desc="kernel alignment",
        unit="kernel",
        disable=not progress or not sys.stderr.isatty(),
    )
    init = split_quotients(module, variables0, x, eigvecs, train_idx, test_idx, **kwargs)
    kernels.update()
    logger.info(
        "Kernel alignment: Θ_0 on %d + %d samples done.", np.size(train_idx), np.size(test_idx)
    )
    runs = {}
    for j in targets:
        end = split_quotients(module, trained[j], x, eigvecs, train_idx, test_idx, **kwargs)
        runs[str(j)] = rotation_run(init, end, j, radius)
        kernels.update()
        ratio = runs[str(j)]["concentration"]
        logger.info(
            "Kernel alignment j=%d: concentration train %.2f → %.2f, test %.2f → %.2f (θ0 → end).",
            j,
            ratio["train_init"],
            ratio["train_end"],
            ratio["test_init"],
            ratio["test_end"],
        )
    kernels.close()
    return {
        "eigenvalues": eigenvalues.tolist(),
        "runs": runs,
        "settings": {
            **dict(settings or {}),
            "indices": targets,
            "radius": int(radius),
            "first_neighbour": FIRST_NEIGHBOUR,
            "neighbour_statistic": "median",
            "num_train": int(np.size(train_idx)),
            "num_test": int(np.size(test_idx)),
            "definition": DEFINITION,
        },
    }
