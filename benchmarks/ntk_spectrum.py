"""Benchmark: NTK Gram + top-k eigenpairs, ours vs the host path vs the original method.

One command, one process, the same inputs (CIFAR-shaped N(0, 1) images, seed 42) for every
contender (docs/methods.md §3.1, §4 item 13, §5):

* **ours**: ``experiments.spectrum.compute_spectrum`` with default settings, end to end
  (zero-column check, compilation, Gram, eigensolver). On an accelerator this is the device
  path (products, Gram and eigensolver on the device); on a CPU the host path.
* **host path** (``--host-path``): the same experiment forced onto the first wave's path:
  host float64 products (``host_precision: float64``), host eigensolver, no zero-column
  dropping. For ResNet18 on a CPU
  this is infeasible at N = 2000 (2·N²·P/2 float64 FLOPs with P = 11.2 M); the script then
  prints the estimate from the plan instead (``--host-path-max-flops``).
* **original** (``--original``): the original method re-implemented faithfully: every one of
  the (N/b)² tiles of the full square with both tiles' Jacobians recomputed (b = 500, no
  symmetry, float32, JAX contraction at default precision), assembled on the host, then
  ARPACK ``scipy.sparse.linalg.eigsh(K, k)``.
* **reference** (``--reference``): float64 dense ``numpy.linalg.eigh`` of the float64
  explicit-Jacobian Gram (MLP/LeNet only; accuracy of every contender against it).

Every timing is printed with the load average; ``--json`` writes all figures.

Usage::

    python benchmarks/ntk_spectrum.py --model lenet --n 4000 --k 100 --original
    python benchmarks/ntk_spectrum.py --model resnet18 --n 2000 --k 100
    python benchmarks/ntk_spectrum.py --kedro 8000    # profile `kedro run` (LeNet)
    # 3 runs each of the defaults and of a variant, interleaved, with their ratio:
    python benchmarks/ntk_spectrum.py --kedro 8000 --kedro-repeat 3 \
        --kedro-variant ntk.resume_after_s=0
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse.linalg

from linearized_kedro.core import ntk
from linearized_kedro.core.models import build_model, init_variables, scalar_apply, split_variables
from linearized_kedro.experiments.spectrum import SpectrumConfig, compute_spectrum

SEED = 42
SHAPE = (32, 32, 3)
ROOT = Path(__file__).resolve().parents[1]


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d.device_kind) for d in jax.local_devices()],
        "load_average": list(os.getloadavg()),
    }


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.1f} {five:.1f} {fifteen:.1f}"


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def original(module, variables, x, k: int, b: int) -> dict:
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
    return {
        "values": vals[::-1],
        "vectors": vecs[:, ::-1].T,
        "gram_seconds": t_gram,
        "total_seconds": time.perf_counter() - t0,
    }


def subspace_cos(A: np.ndarray, B: np.ndarray) -> float:
    """Smallest principal cosine between the row spaces of A and B ((j, N) each)."""
    return float(np.linalg.svd(A @ B.T, compute_uv=False).min())


def accuracy(vals, vecs, ref_vals, ref_vecs, k) -> dict:
    rel = np.abs(np.asarray(vals, np.float64) - ref_vals[:k]) / np.abs(ref_vals[:k])
    vecs = np.asarray(vecs, np.float64)
    vecs = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    return {
        "max_rel_eigenvalue_error": float(rel.max()),
        "max_rel_eigenvalue_error_top100": float(rel[:100].max()),
        **{
            f"subspace_cos_top{j}": subspace_cos(vecs[:j], ref_vecs[:j])
            for j in (10, 50, 100)
            if j <= k
        },
    }


def run_ours(x, variables, model_cfg, k, **settings) -> dict:
    config = SpectrumConfig(num_eigvecs=k, progress=False, resume=False, **settings)
    t0 = time.perf_counter()
    out = compute_spectrum(x, variables, model_cfg, config, seed=0, num_train=x.shape[0])
    total = time.perf_counter() - t0
    report = out.report
    return {
        "values": out.values,
        "vectors": out.vectors,
        "total_seconds": total,
        "timings": report["timings"],
        "path": {key: v for key, v in report["path"].items() if key != "precision_rule"},
        "precision_rule": report["path"].get("precision_rule"),
        "solver": report["solver"],
        "solver_info": report["solver_info"],
        "max_residual": report["max_residual"],
        "zero_columns": {
            key: report["zero_columns"].get(key)
            for key in ("enabled", "checked", "dropped_params", "kept_params", "dropped_fraction")
        },
        "plan": {
            key: report["plan"][key]
            for key in ("method", "block_size", "n_tiles", "feature_dim", "n_params")
            if key in report["plan"]
        },
    }


def benchmark(args) -> dict:
    model_cfg = {"name": args.model}
    module = build_model(model_cfg)
    variables = jax.tree_util.tree_map(np.asarray, init_variables(module, SEED, SHAPE))
    x = np.asarray(jax.random.normal(jax.random.key(SEED), (args.n, *SHAPE), jnp.float32))
    n, k = args.n, args.k
    out: dict = {"machine": machine(), "model": args.model, "n": n, "k": k}
    print(f"{out['machine']}\nmodel={args.model} N={n} k={k}", flush=True)

    runs = []
    for r in range(max(1, args.repeat)):
        res = run_ours(x, variables, model_cfg, k)
        runs.append(res)
        print(
            f"ours run {r}: {res['total_seconds']:.2f} s end to end ({load()}); timings "
            f"{ {key: round(v, 2) for key, v in res['timings'].items()} }; path {res['path']}; "
            f"solver {res['solver']} {res['solver_info'].get('krylov_blocks')} blocks; "
            f"zero columns {res['zero_columns']}; plan {res['plan']}",
            flush=True,
        )
    ours = runs[0]
    out["ours"] = {key: v for key, v in ours.items() if key not in ("values", "vectors")}
    out["ours"]["repeats_seconds"] = [r["total_seconds"] for r in runs]

    if args.host_path:
        plan = ntk.gram_plan(module, variables, n, input_shape=SHAPE)
        if plan["estimated_product_flops"] > args.host_path_max_flops:
            gflops = args.host_gflops
            est = plan["estimated_product_flops"] / (gflops * 1e9)
            out["host_path"] = {"skipped": True, "estimated_seconds": est, "plan": plan}
            print(
                f"host path: skipped, {plan['estimated_product_flops']:.3g} float64 product "
                f"FLOPs ({plan['feature_dim']} columns/sample) ≈ {est / 60:.0f} min at "
                f"{gflops} GFLOP/s",
                flush=True,
            )
        else:
            host = run_ours(
                x,
                variables,
                model_cfg,
                k,
                device="host",
                host_precision="float64",
                drop_zero_columns=False,
            )
            out["host_path"] = {
                key: v for key, v in host.items() if key not in ("values", "vectors")
            }
            out["host_path"]["ours_speedup"] = host["total_seconds"] / ours["total_seconds"]
            out["host_path"]["accuracy_vs_host"] = accuracy(
                ours["values"], ours["vectors"], host["values"], host["vectors"], k
            )
            print(
                f"host path: {host['total_seconds']:.2f} s ({load()}); ours / host speed-up "
                f"{out['host_path']['ours_speedup']:.2f}x; ours vs host "
                f"{out['host_path']['accuracy_vs_host']}",
                flush=True,
            )

    if args.original:
        base = original(module, variables, x, k, args.block)
        # The load of a shared machine drifts over the minutes the original takes: time
        # ours again right after it and compare with the mean of the runs around it.
        after = run_ours(x, variables, model_cfg, k)
        around = [runs[-1], after]
        mean_total = float(np.mean([r["total_seconds"] for r in around]))
        mean_gram = float(np.mean([r["timings"]["gram_seconds"] for r in around]))
        print(f"ours again after the original: {after['total_seconds']:.2f} s ({load()})")
        out["ours"]["after_original_seconds"] = after["total_seconds"]
        out["original"] = {
            "gram_seconds": base["gram_seconds"],
            "total_seconds": base["total_seconds"],
            "speedup_end_to_end": base["total_seconds"] / mean_total,
            "speedup_gram": base["gram_seconds"] / mean_gram,
            "peak_rss_mib": peak_rss_mib(),
            "accuracy_ours_vs_original": accuracy(
                ours["values"], ours["vectors"], base["values"], base["vectors"], k
            ),
        }
        print(
            f"original: gram {base['gram_seconds']:.2f} s, gram+eigsh "
            f"{base['total_seconds']:.2f} s ({load()}); speed-up against ours before and after "
            "it: end to end "
            f"{out['original']['speedup_end_to_end']:.1f}x, gram only "
            f"{out['original']['speedup_gram']:.1f}x",
            flush=True,
        )
        out["original_values"] = base

    if args.reference:
        t0 = time.perf_counter()
        K_ref = ntk.ntk_gram(module, variables, x, method="jacobian", block_size=500)
        w, V = np.linalg.eigh(K_ref)
        ref_vals, ref_vecs = w[::-1], V[:, ::-1].T
        out["reference_seconds"] = time.perf_counter() - t0
        out["accuracy_ours"] = accuracy(ours["values"], ours["vectors"], ref_vals, ref_vecs, k)
        print(f"reference {out['reference_seconds']:.1f} s; ours: {out['accuracy_ours']}")
        if "original_values" in out:
            b = out["original_values"]
            out["accuracy_original"] = accuracy(b["values"], b["vectors"], ref_vals, ref_vecs, k)
            print(f"  original: {out['accuracy_original']}")
    out.pop("original_values", None)
    out["machine"]["load_average_end"] = list(os.getloadavg())
    return out


# ----------------------------------------------------------------------------- kedro run
def extra_params(extra: str) -> str:
    """``--params`` additions: ``"a=1,b=2"`` -> ``",a=1,b=2"`` (empty stays empty)."""
    return f",{extra}" if extra else ""


def kedro_profile(n: int, model: str, repeat: int = 1, variant: str | None = None) -> dict:
    """Times `kedro run --pipelines ntk_spectrum` on generated CIFAR-10 files of n images.

    A throw-away copy of the project gets CIFAR-10 binary archives in the official format
    (seeded noise, ``tests/official_formats.py``) with their checksums, so nothing is
    downloaded. Reports the wall time and where it went, from the node timings in the
    log and the spectrum report. With ``repeat`` > 1 the pipeline runs again (the first
    run fills the project's compilation cache; later ones are what a user sees from then
    on); with ``variant`` (extra ``--params``, e.g. ``ntk.resume_after_s=0``) each run of
    the defaults is followed by one with the variant, and the median ratio is printed.
    """
    sys.path.insert(0, str(ROOT / "tests"))
    from official_formats import raw_images_catalog, write_cifar10_binary

    work = Path(tempfile.mkdtemp(prefix="ntk-kedro-profile-"))
    try:
        project = work / "project"
        project.mkdir()
        for name in ("pyproject.toml",):
            shutil.copy2(ROOT / name, project / name)
        if (ROOT / ".telemetry").exists():
            shutil.copy2(ROOT / ".telemetry", project / ".telemetry")
        shutil.copytree(ROOT / "conf", project / "conf", ignore=shutil.ignore_patterns("local"))
        (project / "conf" / "local").mkdir(exist_ok=True)
        shutil.copytree(ROOT / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__"))
        n_train, n_test = n * 3 // 4, n - n * 3 // 4
        checksums = write_cifar10_binary(project / "data/01_raw/cifar10", n_train, n_test, seed=3)
        (project / "conf/local/catalog.yml").write_text(raw_images_catalog(checksums))
        env = dict(os.environ, DO_NOT_TRACK="1", KEDRO_DISABLE_TELEMETRY="1", MPLBACKEND="Agg")
        params = (
            f"model={model},data.dataset=cifar10,data.num_train={n_train},"
            f"data.num_test={n_test},ntk.progress=false"
        )

        def run(*extra):
            t0 = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-m", "kedro", "run", *extra],
                cwd=project,
                env=env,
                capture_output=True,
                text=True,
            )
            wall = time.perf_counter() - t0
            if proc.returncode:
                raise RuntimeError(proc.stderr[-4000:])
            return wall, proc.stdout + proc.stderr

        # Start-up alone: Python, Kedro, JAX import and session creation.
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", "import kedro.framework.session, jax, linearized_kedro"],
            env=env,
            check=True,
        )
        imports = time.perf_counter() - t0

        def latest_timings() -> dict:
            # Versioned: .../ntk_report.json/<version>/ntk_report.json; the newest run's.
            reports = sorted(
                (p for p in (project / "data").rglob("ntk_report.json") if p.is_file()),
                key=lambda p: p.parent.name,
            )
            return json.loads(reports[-1].read_text()).get("timings", {}) if reports else {}

        data_wall, _ = run("--pipelines", "data", "--params", params)
        runs: dict[str, list] = {"defaults": [], "variant": []}
        log = ""
        for r in range(max(1, repeat)):
            for label, extra in (("defaults", ""), ("variant", variant)):
                if extra is None:
                    continue
                wall, log = run(
                    "--pipelines", "ntk_spectrum", "--params", params + extra_params(extra)
                )
                timings = latest_timings()
                runs[label].append({"wall_seconds": wall, "spectrum_timings": timings})
                print(
                    f"kedro run {label} #{r}: {wall:.2f} s wall, spectrum node "
                    f"{timings.get('total_seconds', float('nan')):.2f} s (Gram "
                    f"{timings.get('gram_seconds', float('nan')):.2f} s, eigensolver "
                    f"{timings.get('eigensolver_seconds', float('nan')):.2f} s) ({load()})",
                    flush=True,
                )
        out = {
            "n": n,
            "model": model,
            "imports_seconds": imports,
            "data_pipeline_seconds": data_wall,
            "ntk_spectrum_pipeline_seconds": runs["defaults"][0]["wall_seconds"],
            "spectrum_timings": runs["defaults"][0]["spectrum_timings"],
            "runs": runs,
            "log_tail": log[-3000:],
        }
        if variant:
            base = float(np.median([r["wall_seconds"] for r in runs["defaults"]]))
            other = float(np.median([r["wall_seconds"] for r in runs["variant"]]))
            out["variant"] = {"params": variant, "median_ratio_wall": other / base}
            print(
                f"median wall: defaults {base:.2f} s, with {variant} {other:.2f} s: "
                f"ratio {other / base:.2f}x ({load()})",
                flush=True,
            )
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["lenet", "mlp", "resnet18"], default="lenet")
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=1, help="runs of ours (first is cold)")
    parser.add_argument("--original", action="store_true", help="run the original method")
    parser.add_argument("--block", type=int, default=500, help="original's tile size b")
    parser.add_argument("--host-path", action="store_true", help="run the host path too")
    parser.add_argument("--host-path-max-flops", type=float, default=5e12)
    parser.add_argument("--host-gflops", type=float, default=20.0, help="for the estimate")
    parser.add_argument("--reference", action="store_true", help="float64 dense reference")
    parser.add_argument("--kedro", type=int, default=0, help="profile `kedro run` at N")
    parser.add_argument("--kedro-repeat", type=int, default=1, help="ntk_spectrum runs")
    parser.add_argument(
        "--kedro-variant", default=None, help="extra --params to compare, e.g. ntk.resume_after_s=0"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args()
    if args.kedro:
        out = kedro_profile(args.kedro, args.model, args.kedro_repeat, args.kedro_variant)
        print(json.dumps({k: v for k, v in out.items() if k != "log_tail"}, indent=1))
    else:
        out = benchmark(args)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
