"""Benchmark: NTK Gram + top-k eigenpairs, ours vs the original method (SPEC §3.1, §4.13, §5).

Runs in one process on the same inputs (CIFAR-shaped N(0, 1) images, fixed seed):

* ours: ``ntk_gram`` (method="auto", float64 products) + ``top_eigenpairs`` (solver="auto"),
  end to end including JAX compilation;
* baseline, the original re-implemented faithfully: every one of the (N/b)² tiles of the
  full square with both tiles' Jacobians recomputed (b = 500, no symmetry, float32, the
  contraction in JAX at default precision), assembled on the host, then ARPACK
  ``scipy.sparse.linalg.eigsh(K, k)`` on the float32 K, reversed to descending order;
* reference (``--reference``): the float64 explicit-Jacobian Gram (``method="jacobian"``,
  J rows cast to float64 before every product) and ``numpy.linalg.eigh``.

Usage: python benchmarks/ntk_spectrum.py --model lenet --n 4000 --k 100
"""

from __future__ import annotations

import argparse
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse.linalg

from linearized_kedro.core import ntk, spectrum
from linearized_kedro.core.models import build_model, init_variables, scalar_apply, split_variables

SEED = 42


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def forward_flops(module, variables, x1) -> float:
    """XLA's FLOP count of one forward pass per sample."""
    f = jax.jit(lambda v, x: module.apply(v, x, train=False))
    try:
        cost = f.lower(variables, x1).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, list | tuple) else cost
        return float(cost["flops"]) / x1.shape[0]
    except Exception:  # noqa: BLE001 - cost analysis is best-effort
        return float("nan")


def baseline(module, variables, x, k: int, b: int) -> tuple[np.ndarray, np.ndarray, float, float]:
    """The original: all (N/b)² tiles, both Jacobians recomputed, float32, then eigsh."""
    params, state = split_variables(variables)
    f = scalar_apply(module, state)

    @jax.jit
    def tile(p, x1, x2):
        def jac(xb):
            g = jax.vmap(jax.grad(lambda p_, xi: f(p_, xi[None])[0]), in_axes=(None, 0))(p, xb)
            return jnp.concatenate(
                [a.reshape(xb.shape[0], -1) for a in jax.tree_util.tree_leaves(g)], 1
            )

        return jac(x1) @ jac(x2).T

    n = x.shape[0]
    t0 = time.perf_counter()
    K = np.empty((n, n), np.float32)
    for i in range(0, n, b):
        for j in range(0, n, b):
            K[i : i + b, j : j + b] = np.asarray(tile(params, x[i : i + b], x[j : j + b]))
    t_gram = time.perf_counter() - t0
    vals, vecs = scipy.sparse.linalg.eigsh(K, k=k)
    t_total = time.perf_counter() - t0
    return vals[::-1], vecs[:, ::-1].T, t_gram, t_total


def subspace_cos(A: np.ndarray, B: np.ndarray) -> float:
    """Smallest principal cosine between the row spaces of A and B ((j, N) each)."""
    return float(np.linalg.svd(A @ B.T, compute_uv=False).min())


def compare(name, vals, vecs, ref_vals, ref_vecs, k) -> None:
    rel = np.abs(np.asarray(vals, np.float64) - ref_vals[:k]) / np.abs(ref_vals[:k])
    vecs = np.asarray(vecs, np.float64)
    vecs = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    cos = {j: subspace_cos(vecs[:j], ref_vecs[:j]) for j in (10, 50, 100) if j <= k}
    print(
        f"  {name} max rel eigenvalue error: all k {rel.max():.2e}, "
        f"top-100 {rel[:100].max():.2e}; subspace cos "
        + ", ".join(f"top-{j} {c:.8f}" for j, c in cos.items())
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["lenet", "mlp"], default="lenet")
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=1, help="repeats of our path (warm)")
    parser.add_argument("--block", type=int, default=500, help="baseline tile size b")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--reference", action="store_true", help="float64 dense reference")
    args = parser.parse_args()

    module = build_model({"name": args.model})
    variables = init_variables(module, SEED, (32, 32, 3))
    x = jax.random.normal(jax.random.key(SEED), (args.n, 32, 32, 3), jnp.float32)
    n, k = args.n, args.k
    plan = ntk.gram_plan(module, variables, n, input_shape=(32, 32, 3))
    F = forward_flops(module, variables, x[:8])
    print(f"model={args.model} N={n} k={k} P={plan['n_params']} F/sample={F:.3g} FLOP")
    print(f"plan: {plan}")

    times = []
    for r in range(max(1, args.repeat)):
        t0 = time.perf_counter()
        K = ntk.ntk_gram(module, variables, x)
        t_gram = time.perf_counter() - t0
        eig = spectrum.top_eigenpairs(K, k)
        times.append((t_gram, time.perf_counter() - t0))
        print(
            f"ours run {r}: gram {times[-1][0]:.2f} s, gram+eig {times[-1][1]:.2f} s "
            f"(solver {eig.solver}, {eig.info}), max residual {eig.residuals.max():.2e}"
        )
    rss_ours = peak_rss_mib()
    ours_flops = plan["estimated_product_flops"] + 3 * n * F
    print(
        f"ours: end to end {times[0][1]:.2f} s (first run, compile included); "
        f"FLOPs ≈ {ours_flops:.3g} (tile products {plan['estimated_product_flops']:.3g} "
        f"+ features ≈3NF); peak RSS so far {rss_ours:.0f} MiB"
    )

    if not args.no_baseline:
        b_vals, b_vecs, b_gram, b_total = baseline(module, variables, x, k, args.block)
        base_flops = 2 * n * n * plan["n_params"] + 6 * n * n * F / args.block
        print(
            f"baseline: gram {b_gram:.2f} s, gram+eigsh {b_total:.2f} s; FLOPs ≈ "
            f"{base_flops:.3g} (2N²P + 6N²F/b); peak RSS {peak_rss_mib():.0f} MiB"
        )
        print(
            f"speed-up (end to end, first runs): {b_total / times[0][1]:.1f}x; "
            f"gram only: {b_gram / times[0][0]:.1f}x"
        )
        # Cheap consistency check when --reference is too expensive: agreement with the
        # baseline's float32 K + ARPACK pairs (itself ~1e-6 from float64, README).
        bv = np.asarray(b_vals, np.float64)
        compare("ours vs baseline:", eig.values, eig.vectors, bv, np.asarray(b_vecs, np.float64), k)

    if args.reference:
        t0 = time.perf_counter()
        K_ref = ntk.ntk_gram(module, variables, x, method="jacobian", block_size=500)
        w, V = np.linalg.eigh(K_ref)
        ref_vals, ref_vecs = w[::-1], V[:, ::-1].T
        print(
            f"reference (float64 explicit-J Gram + numpy eigh): {time.perf_counter() - t0:.1f} s;"
            f" max |K - K_ref| / max |K_ref| = {np.abs(K - K_ref).max() / np.abs(K_ref).max():.2e}"
        )
        print(
            f"  spectrum: λ1={ref_vals[0]:.4g} λ10={ref_vals[9]:.4g} λ{k}={ref_vals[k - 1]:.4g} "
            f"λ{k + 1}={ref_vals[k]:.4g}"
        )
        compare("ours     ", eig.values, eig.vectors, ref_vals, ref_vecs, k)
        if not args.no_baseline:
            compare("baseline ", b_vals, b_vecs, ref_vals, ref_vecs, k)


if __name__ == "__main__":
    main()
