"""Benchmark: each CPU speed-up of the NTK Gram, on and off, in one process.

Every change is timed against its own switched-off version in the same run, on the same
inputs (LeNet, CIFAR-shaped N(0, 1) images, seed 42), variants interleaved, best of
``--repeat`` after a warm-up call:

* ``conv_padding``: XLA:CPU convolutions with the kernel padded to 8 output channels
  (``core.layers._CPU_CHANNEL_MULTIPLE``) against unpadded ones: LeNet's first
  convolution, the jitted NTK feature pass and a jitted training step;
* ``host_precision``: the Gram's tile products in float32 GEMMs added in float64 against
  float64 products (features computed once, cached);
* ``conv_rows_threads``: the convolution rows over the granted threads against one thread;
* ``prefetch``: the next block's feature pass dispatched before this block's host work
  against block after block (the whole Gram). On a CPU both share the cores: this is why
  prefetching is on only where the pass runs on an accelerator;
* ``populated_gram``: assembling an (n, n) float64 Gram from its upper tiles (and their
  mirrors) into ``core.memory.mapped_empty`` (pages mapped in one call) against ``np.empty``
  (pages faulted in during the writes, as transparent huge pages where NumPy asks for
  them). Each variant runs in a fresh process, as in a ``kedro run``, interleaved;
* ``channel_stats``: the data pipeline's per-channel mean/std over 6000 CIFAR-shaped
  images, float64 chunks (``core.data.channel_stats``) against NumPy's mean/std of a
  float64 copy of the whole set (what it did before);
* ``prepare_data``: ``core.data.prepare_dataset`` on 6000 + 2000 CIFAR-shaped images
  (uint8 pixels through a 256-entry lookup table per channel, statistics from their
  histogram, into one populated array) against the earlier chain of copies (scale each
  split, normalise each, concatenate) and against the same steps done in place
  (``arithmetic``), each in a fresh process, interleaved; the outputs are bitwise equal
  (``tests/core/test_data.py``);
* ``features_first``: the LeNet Gram at N = ``--gram-n`` (8000) with float32 host
  products, every block's features computed before the tiles (``TiledGram``'s order on a
  CPU when all blocks fit in the cache) against each block's features computed when a
  tile first needs them (the order before), each in a fresh process, interleaved;
* ``conv_forms``: LeNet's first convolution (3 → 6 channels, 5×5, 1000 images) as XLA's
  convolution with the kernel padded to 8 channels (what ``core.layers`` does) against an
  im2col GEMM and against 25 shifted GEMMs, all jitted (a negative result: neither helps);
* ``krylov_oversampling``: the block Krylov eigensolver (k = 100) on the LeNet and MLP
  Grams with the block width of ``spectrum.common.krylov_sizes`` (p = k/10 in [10, 30])
  against the earlier p = min(k, 30), with each one's error against float64 dense.

Usage::

    python benchmarks/cpu_kernels.py --n 4000 --repeat 3
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from linearized_kedro.core import layers, ntk, sharding
from linearized_kedro.core.models import build_model, init_variables, scalar_apply
from linearized_kedro.core.ntk import features, gram

SEED = 42
SHAPE = (32, 32, 3)


def load() -> str:
    return "load {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())


def best(fn: Callable[[], object], repeat: int) -> float:
    jax.block_until_ready(fn())  # warm-up: compilation, first-touch memory
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return min(times)


def report(name: str, on: float, off: float, what_on: str, what_off: str) -> dict:
    print(
        f"{name:<34} {what_on} {on:7.3f} s | {what_off} {off:7.3f} s | ratio {off / on:5.2f}x "
        f"({load()})",
        flush=True,
    )
    return {"name": name, "on_seconds": on, "off_seconds": off, "ratio": off / on}


def _train_step(module):
    """One jitted SGD step on the squared loss (a fresh trace: the padding rule applies)."""
    apply = scalar_apply(module, {})
    opt = optax.sgd(0.01)

    @jax.jit
    def step(p, xb, yb):
        loss, g = jax.value_and_grad(lambda q: jnp.mean((apply(q, xb) - yb) ** 2))(p)
        updates, _ = opt.update(g, opt.init(p), p)
        return optax.apply_updates(p, updates), loss

    return step


def conv_padding(module, variables, x, repeat: int) -> list[dict]:
    params = variables["params"]
    w0 = params["Conv_0"]["kernel"]
    pads = ((2, 2), (2, 2))
    batch = jnp.asarray(x[:1000])
    xb = jnp.asarray(x[:128])
    yb = jnp.asarray(np.sign(np.asarray(x[:128, 0, 0, 0])), jnp.float32)
    out = []
    results = {}
    for multiple in (8, 1):  # 1 switches the padding off (every count is a multiple of 1)
        layers._CPU_CHANNEL_MULTIPLE = multiple
        features._compiled_features.cache_clear()
        conv = jax.jit(lambda a, k: layers._conv(a, k, (1, 1), pads))
        structure = ntk.TiledGram(module, variables, x[:1000]).structure
        feats = features.feature_fn(module, variables, structure, dtype=np.float32)
        step = _train_step(module)
        results[multiple] = (
            best(lambda conv=conv: conv(batch, w0), repeat),
            best(lambda feats=feats: feats.start(batch), repeat),
            best(lambda step=step: step(params, xb, yb), repeat),
        )
    layers._CPU_CHANNEL_MULTIPLE = 8
    features._compiled_features.cache_clear()
    labels = (
        "first conv (3->6 ch), 1000 images",
        "NTK feature pass, 1000 samples",
        "train step, batch 128",
    )
    for i, label in enumerate(labels):
        out.append(report(f"conv padding: {label}", results[8][i], results[1][i], "pad 8", "none"))
    return out


def host_precision(module, variables, x, repeat: int) -> list[dict]:
    out = []
    times = {}
    for precision in ("float32", "float64"):
        job = ntk.TiledGram(module, variables, x, host_precision=precision)
        blocks = [job._cache.get(i, pinned=0) for i in range(job.n_blocks)]
        keys = job.keys()
        times[precision] = best(
            lambda job=job, blocks=blocks, keys=keys: [
                job._product(blocks[i], blocks[j]) for i, j in keys
            ],
            repeat,
        )
    out.append(
        report(
            f"tile products ({len(keys)} tiles of {job.block_size})",
            times["float32"],
            times["float64"],
            "float32",
            "float64",
        )
    )
    return out


def conv_rows_threads(module, variables, x, repeat: int) -> list[dict]:
    job = ntk.TiledGram(module, variables, x[:1000], host_precision="float32")
    _, conv_io, _, _ = jax.block_until_ready(job._features.start(jnp.asarray(x[:1000])))
    io = [(np.asarray(u), np.asarray(d)) for u, d in conv_io]
    sites = job.structure.conv_sites
    times = {}
    for threads in (os.cpu_count() or 1, 1):
        with sharding.host_blas_threads(threads):
            times[threads] = best(
                lambda: [
                    features._conv_rows_threaded(s, u, d)
                    for s, (u, d) in zip(sites, io, strict=True)
                ],
                repeat,
            )
    many = os.cpu_count() or 1
    return [
        report("conv rows, 1000 samples (float32)", times[many], times[1], f"{many} thr", "1 thr")
    ]


def prefetch(module, variables, x, repeat: int) -> list[dict]:
    times = {}
    for on in (True, False):
        times[on] = best(
            lambda on=on: gram.TiledGram(
                module, variables, x, host_precision="float32", prefetch=on
            ).gram(),
            repeat,
        )
    return [report(f"whole Gram, N = {x.shape[0]}", times[True], times[False], "prefetch", "none")]


def fresh_processes(script: str, modes: Sequence[str], repeat: int, *args: str) -> dict:
    """Seconds printed by ``python -c script MODE *args``, each run in a fresh process (as
    in a ``kedro run``: first-touch memory included), the modes interleaved."""
    import subprocess
    import sys

    times: dict[str, list[float]] = {mode: [] for mode in modes}
    for _ in range(repeat):
        for mode in modes:
            out = subprocess.run(
                [sys.executable, "-c", script, mode, *args],
                capture_output=True,
                text=True,
                check=True,
            )
            times[mode].append(float(out.stdout.split()[-1]))
    return times


def median_report(name: str, times: dict, on: str, off: str, what_on: str, what_off: str):
    """Every time of both variants, then their medians' ratio: medians, not minima, where
    the spread (first-touch memory, huge-page compaction) is part of what is measured."""
    for mode, values in times.items():
        print(f"  {mode:<8} " + " ".join(f"{v:.3f}" for v in values) + " s")
    median_on, median_off = float(np.median(times[on])), float(np.median(times[off]))
    return [report(f"{name} (median)", median_on, median_off, what_on, what_off)]


_ASSEMBLY = """
import sys, time, numpy as np
from linearized_kedro.core.memory import mapped_empty
mode, n, b = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
tile = np.random.default_rng(0).random((b, b))
t0 = time.perf_counter()
out = mapped_empty((n, n), np.float64) if mode == "mapped" else np.empty((n, n))
for i in range(0, n, b):
    for j in range(i, n, b):
        out[i : i + b, j : j + b] = tile
        if i != j:
            out[j : j + b, i : i + b] = tile.T
print(time.perf_counter() - t0)
"""


def populated_gram(n: int, block: int, repeat: int) -> list[dict]:
    times = fresh_processes(_ASSEMBLY, ("mapped", "empty"), repeat, str(n), str(block))
    # np.empty's time depends on whether the kernel has free huge pages at hand (fast) or
    # must compact memory first (slow): that spread is the point.
    return median_report(
        f"Gram assembly, N = {n}, b = {block}", times, "mapped", "empty", "mapped", "np.empty"
    )


def channel_stats(repeat: int, images: int = 6000) -> list[dict]:
    from linearized_kedro.core import data

    def copy_then_numpy(x):
        flat = x.reshape(-1, x.shape[-1]).astype(np.float64)
        return flat.mean(axis=0), flat.std(axis=0, ddof=0)

    pixels = np.random.default_rng(SEED).integers(0, 256, (images, *SHAPE), dtype=np.uint8)
    x = data.scale_pixels(pixels)
    times = {"chunks": [], "copy": []}
    for _ in range(repeat):  # interleaved; the first calls include first-touch memory
        for name, fn in (("chunks", data.channel_stats), ("copy", copy_then_numpy)):
            t0 = time.perf_counter()
            fn(x)
            times[name].append(time.perf_counter() - t0)
    return median_report(
        f"channel stats, {images} images", times, "chunks", "copy", "chunks", "copy"
    )


_PREPARE = """
import sys, time, numpy as np
from linearized_kedro.core import data
rng = np.random.default_rng(0)
tri = rng.integers(0, 256, (6000, 32, 32, 3), dtype=np.uint8)
tei = rng.integers(0, 256, (2000, 32, 32, 3), dtype=np.uint8)
trl, tel = rng.integers(0, 10, 6000), rng.integers(0, 10, 2000)
t0 = time.perf_counter()
if sys.argv[1] == "in_place":
    data.prepare_dataset(tri, trl, tei, tel, 6000, 2000, 3)
elif sys.argv[1] == "arithmetic":  # the fourth session's in-place steps, no lookup table
    tr, te = data.stratified_subset(trl, 6000, 3), data.stratified_subset(tel, 2000, 3)
    x = data.mapped_empty((8000, 32, 32, 3), np.float32)
    data.scale_pixels(tri[tr], out=x[:6000])
    data.scale_pixels(tei[te], out=x[6000:])
    mean, std = data.channel_stats(x[:6000])
    data.normalize_images(x, mean, std, out=x)
else:  # the earlier chain of copies
    x_train, x_test = data.scale_pixels(tri), data.scale_pixels(tei)
    x_train, x_test = (x.astype(np.float32) for x in (x_train, x_test))
    mean, std = data.channel_stats(x_train)
    x_train = data.normalize_images(x_train, mean, std).astype(np.float32)
    x_test = data.normalize_images(x_test, mean, std).astype(np.float32)
    np.concatenate([x_train, x_test], axis=0)
print(time.perf_counter() - t0)
"""


_FEATURES_FIRST = """
import sys, time, jax, jax.numpy as jnp, numpy as np
from linearized_kedro.core.models import build_model, init_variables
from linearized_kedro.core.ntk import gram
mode, n = sys.argv[1], int(sys.argv[2])
module = build_model({"name": "lenet"})
variables = jax.tree_util.tree_map(np.asarray, init_variables(module, 42, (32, 32, 3)))
x = np.asarray(jax.random.normal(jax.random.key(42), (n, 32, 32, 3), jnp.float32))
gram.TiledGram(module, variables, x[:1000], host_precision="float32").gram()  # compile
if mode == "tiles":  # the order before: each block's features when a tile first needs them
    gram.TiledGram._features_first = lambda self, keys: None
t0 = time.perf_counter()
gram.TiledGram(module, variables, x, host_precision="float32", block_size=1000).gram()
print(time.perf_counter() - t0)
"""


def features_first(n: int, repeat: int) -> list[dict]:
    times = fresh_processes(_FEATURES_FIRST, ("first", "tiles"), repeat, str(n))
    return median_report(
        f"LeNet Gram, N = {n}, features first", times, "first", "tiles", "first", "by tile"
    )


def prepare_data(repeat: int) -> list[dict]:
    times = fresh_processes(_PREPARE, ("in_place", "arithmetic", "copies"), repeat)
    name = "prepare 6000 + 2000 images"
    return [
        *median_report(name, times, "in_place", "copies", "in place", "copies"),
        *median_report(name, times, "in_place", "arithmetic", "table", "arithm."),
    ]


def conv_forms(repeat: int, images: int = 1000) -> list[dict]:
    from jax import lax

    x = jax.random.normal(jax.random.key(SEED), (images, *SHAPE))
    w = jax.random.normal(jax.random.key(SEED + 1), (5, 5, 3, 6))
    hi = lax.Precision.HIGHEST

    def padded(x):
        w8 = jnp.pad(w, ((0, 0), (0, 0), (0, 0), (0, 2)))
        dims = ("NHWC", "HWIO", "NHWC")
        return lax.conv_general_dilated(x, w8, (1, 1), "VALID", dimension_numbers=dims)[..., :6]

    def im2col(x):
        dims = ("NHWC", "HWIO", "NHWC")
        p = lax.conv_general_dilated_patches(x, (5, 5), (1, 1), "VALID", dimension_numbers=dims)
        wm = jnp.transpose(w, (2, 0, 1, 3)).reshape(75, 6)  # patches are (C, kh, kw)
        return jnp.einsum("bhwk,ko->bhwo", p, wm, precision=hi)

    def shifted(x):
        out = 0.0
        for dy in range(5):
            for dx in range(5):
                part = x[:, dy : dy + 28, dx : dx + 28]
                out = out + jnp.einsum("bhwc,co->bhwo", part, w[dy, dx], precision=hi)
        return out

    times = {}
    for name, fn in (("padded", padded), ("im2col", im2col), ("shifted", shifted)):
        compiled = jax.jit(fn)
        times[name] = best(lambda compiled=compiled: compiled(x), repeat)
    return [
        report(
            f"first conv as im2col, {images} images",
            times["padded"],
            times["im2col"],
            "padded conv",
            "im2col",
        ),
        report(
            f"first conv as shifts, {images} images",
            times["padded"],
            times["shifted"],
            "padded conv",
            "25 GEMMs",
        ),
    ]


def krylov_oversampling(n: int, repeat: int, k: int = 100) -> list[dict]:
    from linearized_kedro.core import spectrum
    from linearized_kedro.core.spectrum import common, host

    def earlier(n, k, max_blocks):  # the rule before: p = max(10, min(k, 30))
        b = min(k + max(10, min(k, 30)), n)
        return b, max(1, min(max_blocks, n // b))

    rows = []
    for name in ("lenet", "mlp"):
        module = build_model({"name": name})
        variables = jax.tree_util.tree_map(np.asarray, init_variables(module, SEED, SHAPE))
        x = np.asarray(jax.random.normal(jax.random.key(SEED), (n, *SHAPE), jnp.float32))
        K = ntk.ntk_gram(module, variables, x, host_precision="float32")
        dense = np.linalg.eigvalsh(K)[::-1][:k]
        times: dict[str, list[float]] = {"now": [], "earlier": []}
        info = {}
        for _ in range(repeat):
            for variant, sizes in (("now", common.krylov_sizes), ("earlier", earlier)):
                host.krylov_sizes = sizes
                try:
                    t0 = time.perf_counter()
                    out = spectrum.top_eigenpairs(K, k, solver="block_krylov", seed=0)
                    times[variant].append(time.perf_counter() - t0)
                finally:
                    host.krylov_sizes = common.krylov_sizes
                error = float(np.max(np.abs(out.values - dense) / dense))
                info[variant] = (
                    f"b = {out.info['block_size']}, {out.info['krylov_blocks']} "
                    f"blocks, max rel error {error:.1e}"
                )
        print(f"  {name}: now {info['now']}; earlier {info['earlier']}")
        rows.append(
            report(
                f"{name} top-{k} eigensolver, N = {n}",
                min(times["now"]),
                min(times["earlier"]),
                "p=k/10",
                "p=30",
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--gram-n", type=int, default=8000, help="populated_gram's N")
    parser.add_argument(
        "--only",
        choices=[
            "populated_gram",
            "channel_stats",
            "krylov_oversampling",
            "prepare_data",
            "conv_forms",
            "features_first",
        ],
        help="run only this one",
    )
    args = parser.parse_args()
    module = build_model({"name": "lenet"})
    variables = jax.tree_util.tree_map(np.asarray, init_variables(module, SEED, SHAPE))
    x = np.asarray(jax.random.normal(jax.random.key(SEED), (args.n, *SHAPE), jnp.float32))
    print(f"jax {jax.__version__} {jax.default_backend()} | {os.cpu_count()} cores | {load()}")
    if args.only == "populated_gram":
        populated_gram(args.gram_n, 1000, args.repeat)
        return
    if args.only == "channel_stats":
        channel_stats(args.repeat)
        return
    if args.only == "conv_forms":
        conv_forms(args.repeat)
        return
    if args.only == "prepare_data":
        prepare_data(args.repeat)
        return
    if args.only == "features_first":
        features_first(args.gram_n, args.repeat)
        return
    if args.only == "krylov_oversampling":
        with sharding.host_blas_threads():
            krylov_oversampling(args.n, args.repeat)
        return
    with sharding.host_blas_threads() as threads:
        print(f"BLAS threads: {threads}")
        conv_padding(module, variables, x, args.repeat)
        host_precision(module, variables, x, args.repeat)
        conv_rows_threads(module, variables, x, args.repeat)
        prefetch(module, variables, x, args.repeat)
        krylov_oversampling(args.n, args.repeat)
        conv_forms(args.repeat)
    populated_gram(args.gram_n, 1000, args.repeat)
    channel_stats(args.repeat)
    prepare_data(args.repeat)
    features_first(args.gram_n, args.repeat)


if __name__ == "__main__":
    main()
