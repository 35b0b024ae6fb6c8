"""Scaling benchmark: NTK Gram and an 8-task sweep on 1, 2 and 4 simulated CPU devices.

    python benchmarks/scaling.py [--n 2000] [--devices 1 2 4] [--model mlp]
    python benchmarks/scaling.py --single --n 10000 --model lenet   # this process's devices

Each device count runs in its own subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=D`` (the flag is read when JAX starts).
Simulated devices share the same CPU cores, so the times show the overhead of the
sharded path, not a speed-up; the max |difference| against 1 device is the correctness
check. ``--single`` times the Gram on whatever devices the process sees (e.g. one GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

MODELS = {
    "mlp": {"name": "mlp", "features": [100, 100]},
    "lenet": {"name": "lenet"},
}


def worker(args) -> dict:
    import jax
    import numpy as np

    from linearized_kedro.core import ntk, sharding
    from linearized_kedro.core.models import build_model, init_variables
    from linearized_kedro.core.train import TrainConfig, train_sweep

    rng = np.random.default_rng(42)
    shape = (32, 32, 3)
    module = build_model(MODELS[args.model])
    variables = init_variables(module, 0, shape)
    x = rng.normal(size=(args.n, *shape)).astype(np.float32)
    out = {
        "devices": jax.local_device_count(),
        "platform": jax.devices()[0].platform,
        "mesh": sharding.mesh_size(sharding.resolve_mesh("auto")),
    }
    t0 = time.perf_counter()
    gram = ntk.ntk_gram(module, variables, x, block_size=args.block_size)
    out["gram_s_first"] = time.perf_counter() - t0  # compilation included
    t0 = time.perf_counter()
    gram = ntk.ntk_gram(module, variables, x, block_size=args.block_size)
    out["gram_s"] = time.perf_counter() - t0
    out["gram_trace"] = float(np.trace(gram))
    if args.single:
        out["gram_n"] = args.n
        return out
    np.save(args.gram_out, gram)

    n_train, tasks = args.sweep_train, 8
    xs = rng.normal(size=(n_train + 256, *shape)).astype(np.float32)
    train_x, test_x = xs[:n_train], xs[n_train:]
    labels = (rng.normal(size=(tasks, n_train + 256)) > 0).astype(np.float32)
    cfg = TrainConfig(epochs=1, batch_size=128, max_lr=0.01)
    keys = jax.numpy.stack([jax.random.key(0)] * tasks)
    timings = []
    for _ in range(2):
        t0 = time.perf_counter()
        results = train_sweep(
            module,
            variables,
            "network",
            train_x,
            labels[:, :n_train],
            test_x,
            labels[:, n_train:],
            cfg,
            keys,
            strategy="vmap",
        )
        timings.append(time.perf_counter() - t0)
    out["sweep_s_first"], out["sweep_s"] = timings
    out["sweep_test_loss"] = [float(r.final["test_loss"]) for r in results]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="Gram samples")
    parser.add_argument("--block-size", type=int, default=None)
    parser.add_argument("--model", choices=sorted(MODELS), default="mlp")
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--sweep-train", type=int, default=1024)
    parser.add_argument("--single", action="store_true", help="time this process's devices")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--gram-out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker or args.single:
        print(json.dumps(worker(args)))
        return

    import tempfile

    import numpy as np

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for d in args.devices:
            env = dict(os.environ)
            env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={d}"
            env["JAX_PLATFORMS"] = "cpu"
            gram_out = os.path.join(tmp, f"gram_{d}.npy")
            cmd = [sys.executable, __file__, "--worker", "--gram-out", gram_out]
            cmd += ["--n", str(args.n), "--model", args.model]
            cmd += ["--sweep-train", str(args.sweep_train)]
            if args.block_size:
                cmd += ["--block-size", str(args.block_size)]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            if proc.returncode:
                print(proc.stderr[-3000:])
                raise SystemExit(f"worker with {d} devices failed")
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            res["gram"] = np.load(gram_out)
            results[d] = res
    base = results[args.devices[0]]
    scale = float(np.max(np.abs(base["gram"])))
    print(
        f"model={args.model} gram N={args.n}, sweep 8 tasks x {args.sweep_train} samples, 1 epoch"
    )
    for d, res in results.items():
        gdiff = float(np.max(np.abs(res["gram"] - base["gram"])))
        sdiff = float(np.max(np.abs(np.subtract(res["sweep_test_loss"], base["sweep_test_loss"]))))
        print(
            f"devices={d} (mesh {res['mesh']}): gram {res['gram_s']:6.2f} s "
            f"(first {res['gram_s_first']:6.2f} s), max|dK| {gdiff:.2e} "
            f"(rel {gdiff / scale:.1e}); sweep {res['sweep_s']:6.2f} s "
            f"(first {res['sweep_s_first']:6.2f} s), max|d test loss| {sdiff:.2e}"
        )


if __name__ == "__main__":
    main()
