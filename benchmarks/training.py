"""Benchmark: the scan-based training engine vs a faithful re-implementation of the original loop.

Baseline (docs/methods.md §1.6): one jitted step per batch, batches gathered by host-side indexing of a
device array, drop-last, loss/accuracy pulled to the host after every step, evaluation in
batches of 128 with a host pull per batch. Engine: ``core.train.train_model`` with its
automatic epoch mode (``resolve_epoch_mode``) and with the other mode (``"scan"``: one
``lax.scan`` per epoch; ``"loop"``: a Python loop of donated, compiled steps), masked last
batch. Sweeps (``--sweeps``): ``train_sweep`` of ``--tasks`` label sets for each kind, with one
key for every task as ``eigen_training`` and ``nad_training`` use (one batch order), by each
strategy (``vmap-own-keys``: the vmapped sweep with a key per task, for comparison), reported
as tasks x epochs per second against ``sequential`` in the same run. Same data
(CIFAR-shaped random normal, on the device), same model, variants interleaved, minimum over
``--repeat`` runs after a warm-up (compilation) run.

Usage: python benchmarks/training.py [--n 4096] [--repeat 2] [--models mlp lenet]
       [--no-epochs] [--tasks 8] [--sweep-epochs 1] [--kinds network linear]
The paper's LeNet sweep on a GPU (19 indices, 50 000 images, 100 epochs; estimate from
``--sweep-epochs`` epochs): ``--models lenet --no-epochs --n 50000 --tasks 19 --sweep-epochs 2``.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from linearized_kedro.core.linearize import linearize
from linearized_kedro.core.models import build_model, init_variables, scalar_apply
from linearized_kedro.core.train import (
    TrainConfig,
    make_optimizer,
    resolve_epoch_mode,
    resolve_strategy,
    train_model,
    train_sweep,
)


def baseline_epoch(module, variables, kind, x, y, xt, yt, cfg, key, step_cache):
    """The original per-step loop for one epoch (returns final params)."""
    params0 = variables["params"]
    f = scalar_apply(module, {})
    model = linearize(f, params0) if kind == "linear" else f
    n_steps = x.shape[0] // cfg.batch_size
    opt = make_optimizer(cfg, cfg.epochs * n_steps)
    if kind not in step_cache:

        def loss_fn(p, xb, yb):
            logits = model(p, xb)
            loss = jnp.mean(optax.sigmoid_binary_cross_entropy(logits, yb))
            return loss, logits

        @jax.jit
        def step(p, s, xb, yb):
            (loss, logits), g = jax.value_and_grad(loss_fn, has_aux=True)(p, xb, yb)
            u, s = opt.update(g, s, p)
            acc = jnp.mean((logits > 0) == (yb > 0.5))
            return optax.apply_updates(p, u), s, loss, acc

        @jax.jit
        def evaluate(p, xb, yb):
            logits = model(p, xb)
            return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, yb)), jnp.mean(
                (logits > 0) == (yb > 0.5)
            )

        step_cache[kind] = (step, evaluate)
    step, evaluate = step_cache[kind]
    p, s = params0, opt.init(params0)
    perm = np.asarray(jax.random.permutation(key, x.shape[0]))
    for i in range(n_steps):
        idx = perm[i * cfg.batch_size : (i + 1) * cfg.batch_size]
        p, s, loss, acc = step(p, s, x[idx], y[idx])
        jax.device_get((loss, acc))
    for i in range(xt.shape[0] // 128):
        jax.device_get(evaluate(p, xt[i * 128 : (i + 1) * 128], yt[i * 128 : (i + 1) * 128]))
    return jax.block_until_ready(p)


def step_flops(module, variables, kind, x, y, cfg):
    """XLA's FLOP count of one training step's gradient (data passed as arguments, not
    closed over, so that XLA does not constant-fold the network)."""
    f = scalar_apply(module, {})
    model = linearize(f, variables["params"]) if kind == "linear" else f

    def loss(p, xb, yb):
        return jnp.mean(optax.sigmoid_binary_cross_entropy(model(p, xb), yb))

    b = cfg.batch_size
    compiled = jax.jit(jax.grad(loss)).lower(variables["params"], x[:b], y[:b]).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost.get("flops", float("nan")))


def matmul_gflops(size=2048, repeat=5):
    a = jnp.ones((size, size), jnp.float32)
    mm = jax.jit(lambda a: a @ a)
    mm(a).block_until_ready()
    t = time.perf_counter()
    for _ in range(repeat):
        mm(a).block_until_ready()
    return 2 * size**3 * repeat / (time.perf_counter() - t) / 1e9


def timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def interleaved(variants, repeat):
    """Min wall time of each variant, variants interleaved (after one warm-up call each)."""
    for fn in variants.values():
        fn()
    times = {k: [] for k in variants}
    for _ in range(repeat):
        for k, fn in variants.items():
            times[k].append(timed(fn))
    return {k: min(v) for k, v in times.items()}


def sweeps(module, variables, x, xt, rng, args):
    """Every strategy on one sweep per kind; prints tasks x epochs per second."""
    name = module.__class__.__name__.lower()
    n, n_test, tasks = x.shape[0], xt.shape[0], args.tasks
    ys = jnp.asarray((rng.random((tasks, n)) > 0.5).astype(np.float32))
    yts = ys[:, :n_test]
    shared, own = [0] * tasks, list(range(tasks))
    cfg = TrainConfig(epochs=args.sweep_epochs)
    for kind in args.kinds:
        auto = resolve_strategy(
            "auto", variables["params"], kind=kind, shared_order=True, num_tasks=tasks
        )
        variants = {
            f"auto={auto}": ("auto", shared),
            "sequential": ("sequential", shared),
            "vmap": ("vmap", shared),
            f"chunked({args.chunk})": ("chunked", shared),
            "vmap-own-keys": ("vmap", own),
        }
        runs = {
            label: functools.partial(
                train_sweep,
                module,
                variables,
                kind,
                x,
                ys,
                xt,
                yts,
                cfg,
                keys,
                strategy=strategy,
                chunk_size=args.chunk,
            )
            for label, (strategy, keys) in variants.items()
        }
        times = interleaved(runs, max(1, args.repeat - 1))
        seq = times["sequential"]
        load = " ".join(f"{v:.1f}" for v in os.getloadavg())
        for label, t in times.items():
            print(
                f"{name:8s} sweep {kind:7s} {tasks} tasks x {cfg.epochs} epochs x {n} samples "
                f"{label:16s} {t:7.2f}s ({tasks * cfg.epochs / t:7.3f} task-epochs/s) | vs "
                f"sequential {seq / t:4.2f}x | load {load}",
                flush=True,
            )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--chunk", type=int, default=4)
    parser.add_argument("--models", nargs="+", default=["mlp", "lenet"])
    parser.add_argument("--kinds", nargs="+", default=["network", "linear"])
    parser.add_argument("--sweep-epochs", type=int, default=1)
    parser.add_argument("--no-epochs", action="store_true", help="skip the per-epoch baseline")
    parser.add_argument("--no-sweeps", action="store_true", help="skip the sweeps")
    args = parser.parse_args()
    device = jax.devices()[0].device_kind if jax.default_backend() != "cpu" else cpu_model()
    print(
        f"{time.strftime('%Y-%m-%d %H:%M')} jax {jax.__version__} backend "
        f"{jax.default_backend()} | {device} x{os.cpu_count()} | load average "
        f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}"
    )
    rng = np.random.default_rng(0)
    # Data on the device for every variant (the engine keeps device arrays there).
    x = jax.random.normal(jax.random.key(0), (args.n, 32, 32, 3), jnp.float32)
    y = jnp.asarray((rng.random(args.n) > 0.5).astype(np.float32))
    xt, yt = x[:256], y[:256]
    peak = matmul_gflops()
    print(f"matmul 2048^2 f32: {peak:.1f} GFLOP/s")
    for name in args.models:
        module = build_model({"name": name})
        variables = init_variables(module, 0, (32, 32, 3))
        auto_mode = resolve_epoch_mode("auto", variables["params"])
        other_mode = "scan" if auto_mode == "loop" else "loop"
        cache = {}
        for kind in [] if args.no_epochs else args.kinds:
            flops = step_flops(module, variables, kind, x, y, TrainConfig()) * (args.n // 128)
            # The same data and settings through the engine (both epoch modes) and the baseline.
            data = (module, variables, kind, x, y, xt, yt)
            variants = {
                f"engine {label}": functools.partial(
                    train_model, *data, TrainConfig(epochs=1, epoch_mode=mode), 0
                )
                for label, mode in ((f"auto={auto_mode}", "auto"), (other_mode, other_mode))
            }
            variants["baseline"] = functools.partial(
                baseline_epoch, *data, TrainConfig(epochs=1), jax.random.key(0), cache
            )
            times = interleaved(variants, args.repeat)
            tb = times["baseline"]
            for label, t in times.items():
                print(
                    f"{name:5s} {kind:7s} epoch {label:16s} {t:6.2f}s ({args.n / t:6.0f} samples/s, "
                    f"{flops / t / 1e9:5.1f} GFLOP/s = {flops / t / 1e9 / peak:5.1%} of matmul)"
                    + ("" if label == "baseline" else f" | vs baseline {tb / t:4.2f}x")
                )
        if not args.no_sweeps:
            sweeps(module, variables, x, xt, rng, args)


if __name__ == "__main__":
    main()
