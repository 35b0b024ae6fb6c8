"""Nodes of ``eigen_training``: tasks from the stored spectrum → engine → tables and figures."""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import jax
import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from linearized_kedro.core.alignment import kernel_alignment  # noqa: E402
from linearized_kedro.core.fingerprint import fingerprint  # noqa: E402
from linearized_kedro.core.models import ModelConfig, build_model  # noqa: E402
from linearized_kedro.core.sharding import partition_indices, partition_key  # noqa: E402
from linearized_kedro.core.tasks import binarize_eigenfunction, majority_baseline  # noqa: E402
from linearized_kedro.core.train import TrainConfig, train_sweep  # noqa: E402
from linearized_kedro.pipelines.common import (  # noqa: E402
    as_params,
    index_list,
    model_kinds,
    override,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EigenTrainingParams:
    """``eigen_training:`` parameters."""

    label_idx: Any = field(default_factory=lambda: [1, 2, 5, 10, 20, 50])
    linearize: Any = "both"
    alignment: bool = True
    sweep_strategy: str = "auto"
    progress: bool = True
    train: dict = field(default_factory=dict)
    # Job-array sharding of the index list (docs/scaling.md): this job trains every
    # num_partitions-th configured index starting at position `partition`.
    partition: int | None = None
    num_partitions: int = 1


def check_spectrum(
    ntk_report: dict[str, Any],
    ntk_sample_index: np.ndarray,
    sample_index: np.ndarray,
    model_config: ModelConfig,
    data_report: dict[str, Any],
    ntk_init_params: dict | None = None,
) -> None:
    """Refuses a spectrum made for another model, dataset, sample order or θ0 (SPEC §4 item 2)."""
    config = ModelConfig.from_dict(model_config).to_dict()
    stored = ntk_report.get("model_config")
    if stored != config:
        raise ValueError(
            "The stored NTK spectrum was computed for model config "
            f"{stored}, but this run uses {config}. Run `kedro run --pipelines ntk_spectrum` "
            "with the same --params (model, models.*) first, or pin a matching spectrum "
            "with --load-versions."
        )
    if ntk_report.get("dataset") != data_report.get("dataset") or not np.array_equal(
        np.asarray(ntk_sample_index), np.asarray(sample_index)
    ):
        raise ValueError(
            "The stored NTK spectrum was computed on different samples "
            f"(dataset {ntk_report.get('dataset')!r}, N={len(ntk_sample_index)}) than the "
            f"prepared data of this run (dataset {data_report.get('dataset')!r}, "
            f"N={len(sample_index)}). Rerun ntk_spectrum with the same data.* parameters."
        )
    if int(ntk_report["num_train"]) != int(data_report["num_train"]):
        raise ValueError("The spectrum's train/test split differs from the prepared data's.")
    expected = ntk_report.get("init_params_fingerprint")
    if ntk_init_params is not None and expected and fingerprint(ntk_init_params) != expected:
        raise ValueError(
            "The latest ntk_init_params are not the θ0 whose NTK was decomposed (an "
            "interrupted ntk_spectrum run saved θ0 without a spectrum?). Rerun ntk_spectrum, "
            "or pin matching versions: --load-versions ntk_init_params:<v>,ntk_report:<v>,..."
        )


def train_on_eigenfunctions(
    prepared_inputs: np.ndarray,
    data_report: dict[str, Any],
    ntk_eigenvalues: np.ndarray,
    ntk_eigenvectors: np.ndarray,
    ntk_report: dict[str, Any],
    ntk_sample_index: np.ndarray,
    sample_index: np.ndarray,
    ntk_init_params: dict,
    model_config: ModelConfig,
    eigen_training: EigenTrainingParams,
    label_idx: Any,
    linearize: Any,
    seed: int,
) -> tuple[pd.DataFrame, dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Trains each requested model kind on each binarised eigenfunction (SPEC §3.2).

    Returns:
        results table (one row per index × kind), histories, trained parameters
        (``{'<kind>_<j>': variables}``) and alignment arrays (network runs).
    """
    check_spectrum(
        ntk_report, ntk_sample_index, sample_index, model_config, data_report, ntk_init_params
    )
    eigen_training = as_params(EigenTrainingParams, eigen_training)
    indices = partition_indices(
        index_list(override(label_idx, eigen_training.label_idx)),
        eigen_training.partition,
        eigen_training.num_partitions,
    )
    kinds = model_kinds(override(linearize, eigen_training.linearize))
    cfg = TrainConfig.from_dict(eigen_training.train)
    config = ModelConfig.from_dict(model_config)
    module = build_model(config)
    x = np.asarray(prepared_inputs, np.float32)
    num_train = int(data_report["num_train"])
    labels = np.stack([binarize_eigenfunction(ntk_eigenvectors, j) for j in indices])
    train_x, test_x = x[:num_train], x[num_train:]
    train_ys, test_ys = labels[:, :num_train], labels[:, num_train:]
    train_key, _ = jax.random.split(jax.random.key(int(seed)))
    # The same train_key for every task, as the original: identical batch order.
    keys = jax.numpy.stack([train_key] * len(indices))

    rows, histories, trained, alignment = [], {}, {}, {}
    for kind in kinds:
        logger.info("Training %s on eigenfunctions %s (%d epochs)", kind, indices, cfg.epochs)
        results = train_sweep(
            module,
            ntk_init_params,
            kind,
            train_x,
            train_ys,
            test_x,
            test_ys,
            cfg,
            keys,
            strategy=eigen_training.sweep_strategy,
            progress=eigen_training.progress,
        )
        for j, y_all, result in zip(indices, labels, results, strict=True):
            name = f"{kind}_{j}"
            row = {
                "label_idx": j,
                "kind": kind,
                "eigenvalue": float(ntk_eigenvalues[j]),
                "positive_fraction": float(np.mean(y_all)),
                # One class only (e.g. the Perron-Frobenius top eigenvector, SPEC §2.3 (d)):
                # accuracy is trivially the majority baseline.
                "degenerate": bool(np.all(y_all == y_all[0])),
                "majority_baseline_test": majority_baseline(y_all[num_train:]),
                "majority_baseline_train": majority_baseline(y_all[:num_train]),
                "diverged": bool(result.diverged),
                "epochs": cfg.epochs,
            }
            row.update({key: float(value) for key, value in result.final.items()})
            if result.diverged:
                logger.error("Training %s diverged (NaN/Inf loss); reported as failed.", name)
                for key in list(row):
                    if key.startswith(("train_", "test_")) and key not in ("train_key",):
                        row[key] = float("nan")
            rows.append(row)
            histories[name] = {k: np.asarray(v).tolist() for k, v in result.history.items()}
            if result.diverged:
                continue
            variables = {"params": result.params, **(result.state or {})}
            trained[name] = jax.tree_util.tree_map(np.asarray, variables)
            if kind == "network" and eigen_training.alignment:
                aligned = kernel_alignment(
                    module,
                    variables,
                    x,
                    np.asarray(ntk_eigenvectors),
                    np.arange(num_train),
                    np.arange(num_train, x.shape[0]),
                )
                alignment[str(j)] = {
                    key: np.asarray(value).tolist() for key, value in aligned.items()
                }
    alignment_out = {
        "eigenvalues": np.asarray(ntk_eigenvalues, np.float64).tolist(),
        "runs": alignment,
        "settings": {"train": asdict(cfg), "indices": indices},
    }
    table = pd.DataFrame(rows).sort_values(["label_idx", "kind"]).reset_index(drop=True)
    degenerate = sorted(set(table.loc[table["degenerate"], "label_idx"]))
    if degenerate:
        logger.warning(
            "Eigenfunctions %s have a single sign: one-class tasks, accuracy is trivial.",
            degenerate,
        )
    return table, histories, trained, alignment_out


def train_partition(
    prepared_inputs: np.ndarray,
    data_report: dict[str, Any],
    ntk_eigenvalues: np.ndarray,
    ntk_eigenvectors: np.ndarray,
    ntk_report: dict[str, Any],
    ntk_sample_index: np.ndarray,
    sample_index: np.ndarray,
    ntk_init_params: dict,
    model_config: ModelConfig,
    eigen_training: EigenTrainingParams,
    label_idx: Any,
    linearize: Any,
    seed: int,
) -> tuple[dict[str, pd.DataFrame], dict[str, Any], dict[str, Any], dict[str, Any]]:
    """``train_on_eigenfunctions`` with its table keyed by the job's partition.

    Returns:
        ``{'part-PPP-of-NNN': results table}`` (one key, for the PartitionedDataset of
        CSVs), histories, trained parameters and alignment arrays.
    """
    table, histories, trained, alignment = train_on_eigenfunctions(
        prepared_inputs,
        data_report,
        ntk_eigenvalues,
        ntk_eigenvectors,
        ntk_report,
        ntk_sample_index,
        sample_index,
        ntk_init_params,
        model_config,
        eigen_training,
        label_idx,
        linearize,
        seed,
    )
    params = as_params(EigenTrainingParams, eigen_training)
    key = partition_key(params.partition, params.num_partitions)
    return {key: table}, histories, trained, alignment


def merge_partitions(
    eigen_training_partitions: dict[str, Any],
    eigen_training: EigenTrainingParams,
    label_idx: Any,
    linearize: Any,
) -> pd.DataFrame:
    """One results table from the partitions of a sweep (SPEC §3.2; docs/scaling.md).

    Args:
        eigen_training_partitions: ``{'part-PPP-of-NNN': table or loader}``, as a
            PartitionedDataset loads it; partitions of other ``num_partitions`` are ignored.
        eigen_training: the ``eigen_training:`` parameters (``num_partitions``, the
            configured ``label_idx`` / ``linearize``).
        label_idx, linearize: the command-line shortcuts, as for the training node.

    Returns:
        The table one process would have produced: rows sorted by (label_idx, kind).

    Raises:
        ValueError: missing partitions, or partitions from another sweep (other
            indices, kinds or epochs).
    """
    params = as_params(EigenTrainingParams, eigen_training)
    n = params.num_partitions
    expected = {partition_key(p, n) for p in range(n)}
    pattern = re.compile(rf"part-\d{{3}}-of-{n:03d}$")
    found = {
        key.rsplit("/", 1)[-1]: value
        for key, value in eigen_training_partitions.items()
        if pattern.search(key)
    }
    missing = sorted(expected - set(found))
    if missing:
        raise ValueError(
            f"Cannot merge the eigen_training sweep: partitions {missing} of {n} are missing "
            f"(found {sorted(found)}). Run each missing one with `kedro run --pipelines "
            "eigen_training --tags eigen_training_sweep --params "
            f"eigen_training.partition=<p>,eigen_training.num_partitions={n}` first."
        )
    tables = [found[key]() if callable(found[key]) else found[key] for key in sorted(expected)]
    table = pd.concat(tables, ignore_index=True)
    indices = index_list(override(label_idx, params.label_idx))
    kinds = model_kinds(override(linearize, params.linearize))
    want = {(int(j), kind) for j in indices for kind in kinds}
    have = [(int(j), str(kind)) for j, kind in zip(table["label_idx"], table["kind"], strict=True)]
    if set(have) != want or len(have) != len(want) or table["epochs"].nunique() > 1:
        raise ValueError(
            f"The {n} partitions hold tasks {sorted(have)} (epochs "
            f"{sorted(set(table['epochs']))}), but this sweep expects {sorted(want)} with one "
            "epoch count: they come from another sweep. Delete the partitions folder "
            "(data/07_model_output/eigen_training/<dataset>/<model>/partitions) and rerun."
        )
    return table.sort_values(["label_idx", "kind"]).reset_index(drop=True)


def plot_accuracy_vs_index(eigen_training_results: pd.DataFrame, ntk_report: dict[str, Any]):
    """The paper's main figure: test accuracy vs eigenfunction index, network vs linear."""
    table = eigen_training_results
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    styles = {"network": ("C0", "o", "network"), "linear": ("C1", "s", "linearised")}
    for kind, group in table.groupby("kind"):
        color, marker, label = styles.get(kind, ("C2", "^", kind))
        group = group.sort_values("label_idx")
        ax.plot(
            group["label_idx"] + 1,
            group["test_accuracy"],
            marker=marker,
            color=color,
            label=f"{label} (test)",
        )
        ax.plot(
            group["label_idx"] + 1,
            group["train_accuracy"],
            marker=marker,
            color=color,
            ls=":",
            alpha=0.6,
            label=f"{label} (train)",
        )
    base = table.drop_duplicates("label_idx").sort_values("label_idx")
    ax.plot(
        base["label_idx"] + 1,
        base["majority_baseline_test"],
        color="gray",
        ls="--",
        label="majority class (test)",
    )
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel("eigenfunction index j + 1 (log scale)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0.4, 1.02)
    cfg = ntk_report.get("model_config", {})
    ax.set_title(f"NTK eigenfunction benchmark: {cfg.get('name')} on {ntk_report.get('dataset')}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_alignment(eigen_training_alignment: dict[str, Any]):
    """End-kernel energy on the initial eigenvectors, trace-normalised, train vs test."""
    runs = eigen_training_alignment.get("runs", {})
    ncols = min(3, max(len(runs), 1))
    nrows = -(-max(len(runs), 1) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.6 * nrows), squeeze=False)
    for ax in axes.flat[len(runs) :]:
        ax.set_axis_off()
    axes = axes.reshape(1, -1)
    if not runs:
        axes[0, 0].text(0.5, 0.5, "no network runs with alignment", ha="center")
        axes[0, 0].set_axis_off()
    for ax, (j, arrays) in zip(
        axes[0], sorted(runs.items(), key=lambda t: int(t[0])), strict=False
    ):
        for split, color in (("train", "C0"), ("test", "C3")):
            values = np.asarray(arrays.get(f"{split}_normalized", arrays.get(split)))
            ax.semilogy(np.arange(len(values)), values, color=color, lw=1, label=split)
        ax.axvline(int(j), color="k", ls="--", lw=1, label=f"target j={j}")
        ax.set_xlabel("initial eigenvector index")
        ax.set_ylabel("u_jᵀ Θ_end u_j / (‖u_j‖² tr Θ_end / N)")
        ax.set_title(f"Kernel alignment after training on j={j}")
        ax.legend(fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return fig
