"""One Gram over several processes (#11 §3): two CPU processes through ``jax.distributed``.

Two Python processes on this machine initialise ``jax.distributed`` (coordinator on
localhost, a free port). Each runs ``experiments.spectrum.compute_spectrum`` on the same
inputs and shared tile store: ``jax.process_index()`` picks its contiguous share of the
tiles, process 1 returns a worker result, process 0 waits for the other's tiles,
assembles, solves and also writes the assembled Gram for this test. The two-process Gram
must equal the one-process Gram (the same tiles from the same code: to float64
round-off), and so must the spectrum.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

import linearized_kedro
from linearized_kedro.core import ntk
from linearized_kedro.core.models import build_model, init_variables
from linearized_kedro.experiments.spectrum import SpectrumConfig, compute_spectrum

# Two fresh Python processes each import JAX and compile LeNet: ~15 s on a quiet 2-core CPU.
pytestmark = pytest.mark.slow

MODEL = {"name": "lenet", "activation": "tanh", "conv_features": [2, 3], "dense_features": [6]}
SHAPE, N, BLOCK = (8, 8, 1), 40, 8  # 5 blocks -> 15 tiles: 8 for process 0, 7 for process 1

_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax
    import numpy as np

    process_id, port, folder = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    jax.distributed.initialize(
        coordinator_address=f"localhost:{port}", num_processes=2, process_id=process_id,
        initialization_timeout=120,
    )
    from linearized_kedro.core import ntk
    from linearized_kedro.core.models import build_model, init_variables
    from linearized_kedro.datasets.gram_blocks import GramBlockStoreFactory
    from linearized_kedro.experiments.spectrum import SpectrumConfig, compute_spectrum

    model, shape, n, block = json.loads(open(f"{folder}/case.json").read())
    x = np.load(f"{folder}/x.npy")
    module = build_model(model)
    variables = jax.tree_util.tree_map(np.asarray, init_variables(module, 0, tuple(shape)))
    config = SpectrumConfig(num_eigvecs=5, block_size=block, progress=False, resume=True,
                            distributed_timeout_s=120)
    factory = GramBlockStoreFactory(f"{folder}/tiles")
    out = compute_spectrum(x, variables, model, config, seed=0, num_train=n,
                           tile_store=factory)
    result = {"role": out.report["distributed"]["role"],
              "index": jax.process_index(), "count": jax.process_count(),
              "tiles_computed": out.report["distributed"]["tiles_computed"]}
    if not out.is_worker:
        job = ntk.TiledGram(module, variables, x, block_size=block)
        gram = job.assemble(factory(out.report["gram_fingerprint"]).load_all().items())
        np.save(f"{folder}/gram.npy", gram)
        np.save(f"{folder}/values.npy", out.values)
    print("RESULT " + json.dumps(result), flush=True)
    jax.distributed.shutdown()
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    folder = tmp_path_factory.mktemp("distributed")
    module = build_model(MODEL)
    variables = jax.tree_util.tree_map(np.asarray, init_variables(module, 0, SHAPE))
    x = np.asarray(jax.random.normal(jax.random.key(3), (N, *SHAPE)), np.float32)
    np.save(folder / "x.npy", x)
    (folder / "case.json").write_text(json.dumps([MODEL, SHAPE, N, BLOCK]))
    return folder, module, variables, x


@pytest.fixture(scope="module")
def two_process_run(case):
    folder = case[0]
    # This checkout's sources first (worktrees share one virtual environment).
    src = str(Path(linearized_kedro.__file__).resolve().parents[1])
    path = os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1", PYTHONPATH=path)
    port = str(_free_port())
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _SCRIPT, str(i), port, str(folder)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-4000:]
        line = next(line for line in out.splitlines() if line.startswith("RESULT "))
        results.append(json.loads(line[len("RESULT ") :]))
    return results


def test_each_process_computes_its_share(two_process_run):
    first, second = two_process_run
    assert (first["index"], first["count"], first["role"]) == (0, 2, "assembler")
    assert (second["index"], second["count"], second["role"]) == (1, 2, "worker")
    assert (first["tiles_computed"], second["tiles_computed"]) == (8, 7)  # 15 tiles in all


def test_two_process_gram_equals_one_process_gram(case, two_process_run):
    folder, module, variables, x = case
    gram = np.load(folder / "gram.npy")
    # The processes ran compute_spectrum's default products (float32 GEMMs added in
    # float64 at k <= 200): the one-process Gram is computed the same way.
    one = ntk.ntk_gram(module, variables, x, block_size=BLOCK, host_precision="auto")
    np.testing.assert_allclose(gram, one, rtol=1e-12, atol=0)
    # Negative controls: the Gram of other inputs, and the float64 products' Gram, differ.
    assert not np.allclose(ntk.ntk_gram(module, variables, x[::-1], block_size=BLOCK), gram)
    exact = ntk.ntk_gram(module, variables, x, block_size=BLOCK, host_precision="float64")
    assert not np.allclose(exact, gram, rtol=1e-12, atol=0)
    np.testing.assert_allclose(exact, gram, rtol=1e-5)
    config = SpectrumConfig(num_eigvecs=5, block_size=BLOCK, progress=False, resume=False)
    single = compute_spectrum(x, variables, MODEL, config, seed=0, num_train=N)
    np.testing.assert_allclose(np.load(folder / "values.npy"), single.values, rtol=1e-12)
