"""One short check for a lent GPU: device path == host path, then paper-scale timings (#11).

Stages (each appends to the JSON file as soon as it finishes, so a time limit keeps what
was measured):

1. ``environment``: JAX version, devices, memory, the measured float64/float32 product
   rule (``core.ntk.device.measure_precision_rule``).
2. ``equality``: on small inputs, ``compute_spectrum`` on the device path (products, Gram
   and eigensolver on the device, float64) against the host path (host float64 products
   and eigensolver) for LeNet and a ResNet18 (zero columns dropped): eigenvalues must
   agree to 1e-10 relative, the Grams to 1e-12 (float64 round-off).
3. ``lenet``: LeNet, N = 60 000 CIFAR-shaped inputs, k = 1000, end to end (target < 5 min).
4. ``resnet18``: ResNet18, N = 60 000 CIFAR-shaped inputs, k = 1000, end to end (target
   < 30 min; it needs more than one lease of 10 minutes: run it with ``--only resnet18``).

``--dry-run`` runs every stage on this machine's default backend at tiny sizes (seconds on
a CPU; the device path is forced), which is what the test suite does.

Usage on the GPU machine::

    python benchmarks/gpu_check.py --out gpu_check.json                # stages 1-3
    python benchmarks/gpu_check.py --only resnet18 --out resnet.json   # stage 4
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import time
import traceback
from pathlib import Path

# JAX reserves 75 % of a GPU's memory by default; the Gram (28.8 GB at N = 60 000), the
# cached features and the eigensolver's basis want more of it. Must precede the import.
os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.95")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from linearized_kedro.core import ntk  # noqa: E402
from linearized_kedro.core.models import build_model, init_variables  # noqa: E402
from linearized_kedro.core.ntk import device as ntk_device  # noqa: E402
from linearized_kedro.experiments.spectrum import SpectrumConfig, compute_spectrum  # noqa: E402

SEED = 42
CIFAR = (32, 32, 3)

# name -> (model config, input shape, N, k, extra SpectrumConfig settings)
FULL = {
    "equality_lenet": ({"name": "lenet"}, CIFAR, 1024, 50, {"block_size": 256}),
    "equality_resnet18": ({"name": "resnet18"}, CIFAR, 256, 20, {"block_size": 128}),
    # memory_budget_gb None: what the device has left beside the Gram (``_budget_gb``)
    "lenet": ({"name": "lenet"}, CIFAR, 60_000, 1000, {"memory_budget_gb": None}),
    "resnet18": ({"name": "resnet18"}, CIFAR, 60_000, 1000, {"memory_budget_gb": None}),
}
DRY = {
    "equality_lenet": (
        {"name": "lenet", "conv_features": [2, 3], "dense_features": [6]},
        (8, 8, 1),
        48,
        5,
        {"block_size": 16},
    ),
    "equality_resnet18": (
        {"name": "resnet18", "stage_sizes": [1, 1], "num_filters": 4},
        (4, 4, 3),
        24,
        4,
        {"block_size": 8},
    ),
    "lenet": (
        {"name": "lenet", "conv_features": [2, 3], "dense_features": [6]},
        (8, 8, 1),
        48,
        6,
        {"memory_budget_gb": 0.5, "device": "device", "device_precision": "float64"},
    ),
    "resnet18": (
        {"name": "resnet18", "stage_sizes": [1, 1], "num_filters": 4},
        (4, 4, 3),
        24,
        5,
        {"memory_budget_gb": 0.5, "device": "device", "device_precision": "float64"},
    ),
}


def _memory() -> dict:
    try:
        stats = jax.local_devices()[0].memory_stats() or {}
    except Exception:  # noqa: BLE001 - CPU backends have no statistics
        stats = {}
    return {k: stats.get(k) for k in ("bytes_limit", "bytes_in_use", "peak_bytes_in_use")}


@functools.lru_cache(maxsize=8)
def _init(model_json: str, shape: tuple):
    """θ0 of a model, once per (model, shape): stages share their models."""
    module = build_model(json.loads(model_json))
    return module, jax.tree_util.tree_map(np.asarray, init_variables(module, SEED, shape))


def _case(spec):
    model, shape, n, k, extra = spec
    module, variables = _init(json.dumps(model, sort_keys=True), tuple(shape))
    x = np.asarray(jax.random.normal(jax.random.key(SEED), (n, *shape), jnp.float32))
    return model, module, variables, x, k, extra


def _spectrum(model, variables, x, k, **settings):
    config = SpectrumConfig(num_eigvecs=k, progress=False, resume=False, **settings)
    t0 = time.perf_counter()
    out = compute_spectrum(x, variables, model, config, seed=0, num_train=x.shape[0])
    return out, time.perf_counter() - t0


def environment(matmul_size: int = 2048) -> dict:
    rule = ntk_device.measure_precision_rule(size=matmul_size)
    return {
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.local_devices()],
        "device_kind": str(jax.local_devices()[0].device_kind),
        "memory": _memory(),
        "precision_rule": rule,
        "load_average": list(os.getloadavg()),
    }


def equality(spec) -> dict:
    model, module, variables, x, k, extra = _case(spec)
    device, t_dev = _spectrum(
        model, variables, x, k, device="device", device_precision="float64", **extra
    )
    host, t_host = _spectrum(
        model, variables, x, k, device="host", host_precision="float64", **extra
    )
    dropped = device.report["zero_columns"].get("dropped_leaves", [])
    kwargs = dict(
        block_size=extra.get("block_size"), dropped=[tuple(s.split("/")) for s in dropped]
    )
    g_dev = ntk.ntk_gram(
        module, variables, x, products="device", device_precision="float64", **kwargs
    )
    g_host = ntk.ntk_gram(module, variables, x, products="host", **kwargs)
    gram_rel = float(np.max(np.abs(g_dev - g_host)) / np.max(np.abs(g_host)))
    value_rel = float(np.max(np.abs(device.values / host.values - 1)))
    cos = float(np.min(np.abs(np.sum(device.vectors.astype(np.float64) * host.vectors, axis=1))))
    return {
        "n": x.shape[0],
        "k": k,
        "path": {key: v for key, v in device.report["path"].items() if key != "precision_rule"},
        "device_seconds": t_dev,
        "host_seconds": t_host,
        "gram_max_rel_diff": gram_rel,
        "eigenvalue_max_rel_diff": value_rel,
        "min_vector_cosine": cos,
        "dropped_params": device.report["zero_columns"].get("dropped_params"),
        "ok": gram_rel < 1e-12 and value_rel < 1e-10 and cos > 1 - 1e-6,
    }


def _budget_gb(n: int, k: int) -> float:
    """Feature budget for the device path: 90 % of the device's memory minus the float64
    Gram and the eigensolver's workspace at 12 Krylov blocks, at most 60 GB, at least 4 GB
    (ResNet18's 60 000 feature rows need ~43 GB to be computed once each)."""
    from linearized_kedro.core import spectrum

    limit = _memory().get("bytes_limit")
    if not limit:
        return 4.0
    left = 0.9 * limit - 8 * n * n - spectrum.device_solver_bytes(n, k, max_blocks=12)
    return float(min(60.0, max(4.0, left / 2**30)))


def timed(spec) -> dict:
    model, _, variables, x, k, extra = _case(spec)
    if extra.get("memory_budget_gb", 0) is None:
        extra = {**extra, "memory_budget_gb": _budget_gb(x.shape[0], k)}
    out, seconds = _spectrum(model, variables, x, k, **extra)
    report = out.report
    return {
        "n": x.shape[0],
        "k": k,
        "memory_budget_gb": extra.get("memory_budget_gb"),
        "seconds_end_to_end": seconds,
        "timings": report["timings"],
        "path": {key: v for key, v in report["path"].items() if key != "precision_rule"},
        "plan": {
            key: report["plan"].get(key)
            for key in (
                "method",
                "products",
                "product_precision",
                "block_size",
                "n_tiles",
                "feature_dim",
                "n_params",
                "dropped_params",
                "cached_blocks",
                "feature_block_evaluations",
            )
        },
        "zero_columns": {
            key: report["zero_columns"].get(key)
            for key in ("checked", "dropped_params", "kept_params", "dropped_fraction")
        },
        "solver": report["solver"],
        "solver_info": report["solver_info"],
        "max_residual": report["max_residual"],
        "eigenvalues_head": report["eigenvalues"][:5],
        "memory": _memory(),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes, device path forced")
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    parser.add_argument(
        "--only",
        nargs="*",
        default=None,
        choices=["environment", "equality", "lenet", "resnet18"],
        help="stages to run (default: environment, equality, lenet; all four in a dry run)",
    )
    args = parser.parse_args(argv)
    specs = DRY if args.dry_run else FULL
    if args.only is None:
        args.only = ["environment", "equality", "lenet"] + (["resnet18"] if args.dry_run else [])
    results: dict = {"dry_run": args.dry_run, "stages": {}}

    def save():
        args.out.write_text(json.dumps(results, indent=1, default=str))

    stages = {
        "environment": lambda: environment(256 if args.dry_run else 2048),
        "equality": lambda: {
            "lenet": equality(specs["equality_lenet"]),
            "resnet18": equality(specs["equality_resnet18"]),
        },
        "lenet": lambda: timed(specs["lenet"]),
        "resnet18": lambda: timed(specs["resnet18"]),
    }
    for name in args.only:
        t0 = time.perf_counter()
        try:
            results["stages"][name] = stages[name]()
        except Exception as exc:  # noqa: BLE001 - keep the other stages' figures
            results["stages"][name] = {"error": repr(exc), "traceback": traceback.format_exc()}
        results["stages"][name]["stage_seconds"] = time.perf_counter() - t0
        print(name, json.dumps(results["stages"][name], default=str)[:2000], flush=True)
        save()
    return results


if __name__ == "__main__":
    main()
