"""Benchmark: the scan-based training engine vs a faithful re-implementation of the original loop.

Baseline (SPEC §1.6): one jitted step per batch, batches gathered by host-side indexing of a
device array, drop-last, loss/accuracy pulled to the host after every step, evaluation in
batches of 128 with a host pull per batch. Engine: ``core.train`` (one ``lax.scan`` per epoch,
masked last batch). Same data (CIFAR-shaped random normal), same model, variants interleaved.

Usage: python benchmarks/training.py [--n 4096] [--repeat 2] [--models lenet mlp]
"""

from __future__ import annotations

import argparse
import functools
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from linearized_kedro.core.linearize import linearize
from linearized_kedro.core.models import build_model, init_variables, scalar_apply
from linearized_kedro.core.train import TrainConfig, make_optimizer, train_model, train_sweep


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
    f = scalar_apply(module, {})
    model = linearize(f, variables["params"]) if kind == "linear" else f

    def loss(p):
        return jnp.mean(
            optax.sigmoid_binary_cross_entropy(model(p, x[: cfg.batch_size]), y[: cfg.batch_size])
        )

    cost = jax.jit(jax.grad(loss)).lower(variables["params"]).compile().cost_analysis()
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


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--models", nargs="+", default=["mlp", "lenet"])
    args = parser.parse_args()
    print(f"jax {jax.__version__} backend {jax.default_backend()} {platform.processor()}")
    rng = np.random.default_rng(0)
    x_np = rng.normal(size=(args.n, 32, 32, 3)).astype(np.float32)
    y_np = (rng.random(args.n) > 0.5).astype(np.float32)
    xt_np, yt_np = x_np[:256], y_np[:256]
    x, y, xt, yt = map(jnp.asarray, (x_np, y_np, xt_np, yt_np))
    cfg = TrainConfig(epochs=1, batch_size=128)
    peak = matmul_gflops()
    print(f"matmul 2048^2 f32: {peak:.1f} GFLOP/s")
    for name in args.models:
        module = build_model({"name": name})
        variables = init_variables(module, 0, (32, 32, 3))
        cache = {}
        for kind in ("network", "linear"):
            flops = step_flops(module, variables, kind, x, y, cfg) * (args.n // 128)

            engine = functools.partial(
                train_model, module, variables, kind, x_np, y_np, xt_np, yt_np, cfg, 0
            )
            base = functools.partial(
                baseline_epoch, module, variables, kind, x, y, xt, yt, cfg, jax.random.key(0), cache
            )

            engine(), base()  # compile
            te, tb = [], []
            for _ in range(args.repeat):
                te.append(timed(engine))
                tb.append(timed(base))
            te, tb = min(te), min(tb)
            print(
                f"{name:5s} {kind:7s} epoch: engine {te:6.2f}s ({args.n / te:7.0f} samples/s, "
                f"{flops / te / 1e9:5.1f} GFLOP/s = {flops / te / 1e9 / peak:5.1%} of matmul) | "
                f"baseline {tb:6.2f}s ({args.n / tb:7.0f} samples/s) | speed-up {tb / te:4.2f}x"
            )
        ys = (rng.random((args.tasks, args.n)) > 0.5).astype(np.float32)
        yts = ys[:, :256]
        keys = list(range(args.tasks))
        times = {}
        strategies = ("vmap", "sequential") if name == "mlp" else ("auto", "sequential", "vmap")
        for strategy in strategies:
            sweep = functools.partial(
                train_sweep,
                module,
                variables,
                "network",
                x_np,
                ys,
                xt_np,
                yts,
                cfg,
                keys,
                strategy=strategy,
            )
            sweep()
            times[strategy] = min(timed(sweep) for _ in range(max(1, args.repeat - 1)))
        line = ", ".join(
            f"{s} {t:6.2f}s ({args.tasks * args.n / t:7.0f} samples/s)" for s, t in times.items()
        )
        best = min(t for s, t in times.items() if s != "sequential")
        print(
            f"{name:5s} sweep of {args.tasks} network tasks (1 epoch): {line} | sequential/best {times['sequential'] / best:4.2f}x"
        )


if __name__ == "__main__":
    main()
