"""The NTK-eigenfunction benchmark: train on sign(u_j), network vs linearisation (docs/methods.md §3.2).

For each index j the labels are the signs of the j-th eigenvector of the NTK Gram at θ0
(``core.tasks.binarize_eigenfunction``); every task starts from the same θ0 with the same
training key (the original's batch order), and each requested model kind is trained on it.
For network runs the end kernel's alignment with the initial eigenvectors is measured
(docs/methods.md §3.2 step 5).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar, Literal

import jax
import numpy as np
import pandas as pd

from linearized_kedro.core import alignment as alignment_core
from linearized_kedro.core.config import Config, ConfigError
from linearized_kedro.core.fingerprint import fingerprint
from linearized_kedro.core.models import build_model, model_config
from linearized_kedro.core.sharding import partition_key
from linearized_kedro.core.tasks import binarize_eigenfunction
from linearized_kedro.core.train import TrainConfig, train_sweep
from linearized_kedro.experiments import results
from linearized_kedro.experiments.common import (
    TaskSelection,
    check_indices_below,
    check_seed,
    training_progress,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EigenTasksConfig(TaskSelection, Config):
    """``eigen_training:`` parameters (``conf/base/parameters_eigen_training.yml``).

    Attributes:
        label_idx: eigenfunction index j, or a list of them (each < the spectrum's k).
        linearize: ``false`` (network), ``true`` (linearisation) or ``both``.
        alignment: measure the end kernel's alignment for network runs.
        sweep_strategy: how tasks share compiled programs (``core.train.resolve_strategy``).
        progress: progress bars while training.
        partition, num_partitions: job-array sharding of the index list (docs/scaling.md):
            job ``partition`` trains every ``num_partitions``-th index from that position.
        train: the optimiser and schedule (docs/methods.md §1.6).
    """

    SECTION: ClassVar[str] = "eigen_training"

    label_idx: int | tuple[int, ...] = (1, 2, 5, 10, 20, 50)
    linearize: bool | str = "both"
    alignment: bool = True
    sweep_strategy: Literal["auto", "vmap", "chunked", "sequential"] = "auto"
    progress: bool = True
    partition: int | None = None
    num_partitions: int = 1
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> None:
        self.check_selection()
        if self.num_partitions < 1:
            raise ConfigError(f"{self.SECTION}.num_partitions must be >= 1.")
        if self.partition is not None and not 0 <= self.partition < self.num_partitions:
            raise ConfigError(
                f"{self.SECTION}.partition must be in 0..{self.num_partitions - 1} "
                f"(num_partitions={self.num_partitions}); got {self.partition}."
            )


def check_spectrum_matches(
    ntk_report: dict[str, Any],
    spectrum_sample_index: np.ndarray,
    sample_index: np.ndarray,
    model_cfg: Any,
    data_report: dict[str, Any],
    variables0: Any = None,
) -> None:
    """Refuses a spectrum made for another model, dataset, sample order or θ0 (docs/methods.md §4 item 2).

    Args:
        ntk_report: the spectrum's report (model config, dataset, split, θ0 fingerprint).
        spectrum_sample_index: (N,) sample order the spectrum was computed on.
        sample_index: (N,) sample order of the prepared data of this run.
        model_cfg: the model preset of this run.
        data_report: the prepared data's report.
        variables0: θ0 loaded beside the spectrum (checked against its fingerprint).
    """
    config = model_config(model_cfg).to_dict()
    stored = ntk_report.get("model_config")
    if stored != config:
        raise ValueError(
            f"The stored NTK spectrum was computed for model config {stored}, but this run "
            f"uses {config}. Run `kedro run --pipelines ntk_spectrum` with the same --params "
            "(model, models.*) first, or pin a matching spectrum with --load-versions."
        )
    if ntk_report.get("dataset") != data_report.get("dataset") or not np.array_equal(
        np.asarray(spectrum_sample_index), np.asarray(sample_index)
    ):
        raise ValueError(
            "The stored NTK spectrum was computed on different samples "
            f"(dataset {ntk_report.get('dataset')!r}, N={len(spectrum_sample_index)}) than "
            f"the prepared data of this run (dataset {data_report.get('dataset')!r}, "
            f"N={len(sample_index)}). Rerun ntk_spectrum with the same data.* parameters."
        )
    if int(ntk_report["num_train"]) != int(data_report["num_train"]):
        raise ValueError("The spectrum's train/test split differs from the prepared data's.")
    expected = ntk_report.get("init_params_fingerprint")
    if variables0 is not None and expected and fingerprint(variables0) != expected:
        raise ValueError(
            "The stored θ0 is not the θ0 whose NTK was decomposed (an interrupted "
            "ntk_spectrum run?). Rerun ntk_spectrum, or pin matching versions of "
            "ntk_spectrum.init_params and ntk_spectrum.report with --load-versions."
        )


@dataclass(frozen=True)
class StoredSpectrum:
    """The prepared data and the ``ntk_spectrum`` artifacts an eigenfunction experiment uses.

    The field names are the catalog names: a node takes them as ``**stored_spectrum``,
    wired with :meth:`node_inputs`.

    Attributes:
        prepared_inputs: (N, H, W, C) float32, train rows first.
        data_report: the prepared data's report (``dataset``, ``num_train``).
        prepared_sample_index: (N,) sample order of the prepared data.
        ntk_eigenvalues: (k,) descending.
        ntk_eigenvectors: (k, N) rows.
        ntk_report: the spectrum's report (model, dataset, split, θ0 fingerprint).
        ntk_sample_index: (N,) sample order the spectrum was computed on.
        ntk_init_params: θ0 the spectrum was computed at.
    """

    prepared_inputs: np.ndarray
    data_report: dict[str, Any]
    prepared_sample_index: np.ndarray
    ntk_eigenvalues: np.ndarray
    ntk_eigenvectors: np.ndarray
    ntk_report: dict[str, Any]
    ntk_sample_index: np.ndarray
    ntk_init_params: Any

    @classmethod
    def node_inputs(cls, *params: str, **datasets: str) -> dict[str, str]:
        """``{argument: catalog name}`` of a node that takes ``**stored_spectrum``.

        Args:
            *params: parameter arguments, each wired to ``params:<name>``.
            **datasets: further arguments, each wired to the named catalog entry.
        """
        return {
            **{f.name: f.name for f in fields(cls)},
            **datasets,
            **{name: f"params:{name}" for name in params},
        }

    @property
    def num_train(self) -> int:
        return int(self.data_report["num_train"])

    @property
    def dataset(self) -> str:
        return str(self.data_report["dataset"])

    def check(self, model_cfg: Any) -> StoredSpectrum:
        """Itself, once :func:`check_spectrum_matches` accepts it for ``model_cfg``."""
        check_spectrum_matches(
            self.ntk_report,
            self.ntk_sample_index,
            self.prepared_sample_index,
            model_cfg,
            self.data_report,
            self.ntk_init_params,
        )
        return self

    def experiment_inputs(self) -> tuple[np.ndarray, int, np.ndarray, np.ndarray, Any]:
        """``(inputs, num_train, eigenvalues, eigenvectors, variables0)``: the leading
        arguments of :func:`train_eigen_tasks`, :func:`network_alignment` and
        ``experiments.pretrained.compare_kernels``."""
        return (
            self.prepared_inputs,
            self.num_train,
            self.ntk_eigenvalues,
            self.ntk_eigenvectors,
            self.ntk_init_params,
        )


def eigen_labels(eigenvectors: np.ndarray, indices: tuple[int, ...]) -> np.ndarray:
    """(T, N) float32 0/1 labels, one row per index (``binarize_eigenfunction``)."""
    return np.stack([binarize_eigenfunction(eigenvectors, j) for j in indices])


@dataclass(frozen=True)
class EigenTaskRun:
    """What every training on the eigenfunctions of a stored spectrum starts from.

    Shared by :func:`train_eigen_tasks` and ``experiments.pretrained.compare_kernels``.

    Attributes:
        indices: the eigenfunction indices j (sorted, each < k).
        labels: (T, N) float32 0/1 labels sign(u_j), one row per index.
        num_train: number of leading train rows.
        train_x, test_x: (num_train, H, W, C) and (N - num_train, H, W, C) float32.
        module: the model θ0 belongs to.
        train_key: ``split(key(seed))[0]``, the batch order of every task.
        settings: the results table's settings (task_axis ``eigen_index``, k).
    """

    indices: tuple[int, ...]
    labels: np.ndarray
    num_train: int
    train_x: np.ndarray
    test_x: np.ndarray
    module: Any
    train_key: Any
    settings: results.RunSettings


def eigen_task_run(
    inputs: np.ndarray,
    num_train: int,
    eigenvectors: np.ndarray,
    model_cfg: Any,
    config: Any,
    *,
    seed: int,
    dataset: str,
) -> EigenTaskRun:
    """Checks the requested indices against k and sets up the tasks (docs/methods.md §3.2).

    Args:
        inputs: (N, H, W, C) float32, train rows first (the samples of the spectrum).
        num_train: number of leading train rows.
        eigenvectors: (k, N) rows.
        model_cfg: the model preset θ0 belongs to.
        config: the experiment's settings (``SECTION``, ``indices``, ``train``).
        seed: integer seed.
        dataset: dataset name (recorded in the table).
    """
    seed = check_seed(seed)
    indices = config.indices
    k = int(np.shape(eigenvectors)[0])
    check_indices_below(
        indices,
        k,
        f"{config.SECTION}.label_idx",
        f"the spectrum has k={k} eigenvectors",
        "Use smaller indices or rerun ntk_spectrum with a larger ntk.num_eigvecs.",
    )
    cfg_model = model_config(model_cfg)
    x = np.asarray(inputs, np.float32)
    train_key, _ = jax.random.split(jax.random.key(seed))
    settings = results.RunSettings(
        experiment=config.SECTION,
        dataset=dataset,
        model=cfg_model.name,
        activation=cfg_model.activation,
        task_axis="eigen_index",
        num_train=num_train,
        num_test=x.shape[0] - num_train,
        seed=seed,
        train=asdict(config.train),
        num_eigvecs=k,
    )
    return EigenTaskRun(
        indices=indices,
        labels=eigen_labels(eigenvectors, indices),
        num_train=num_train,
        train_x=x[:num_train],
        test_x=x[num_train:],
        module=build_model(cfg_model),
        train_key=train_key,
        settings=settings,
    )


def train_eigen_tasks(
    inputs: np.ndarray,
    num_train: int,
    eigenvalues: np.ndarray,
    eigenvectors: np.ndarray,
    variables0: Any,
    model_cfg: Any,
    config: EigenTasksConfig,
    *,
    seed: int,
    dataset: str,
) -> results.TaskResults:
    """Trains every requested kind on every requested eigenfunction (docs/methods.md §3.2).

    Args:
        inputs: (N, H, W, C) float32, train rows first (the samples of the spectrum).
        num_train: number of leading train rows.
        eigenvalues: (k,) descending; eigenvectors: (k, N) rows.
        variables0: θ0 the spectrum was computed at (``{'params': ..., [...]}``).
        model_cfg: the model preset θ0 belongs to.
        config: the experiment's settings (shortcuts already applied).
        seed: integer seed; ``train_key = split(key(seed))[0]`` for every task.
        dataset: dataset name (recorded in the table).

    Returns:
        ``TaskResults`` with the results table (task_axis ``eigen_index``), histories and
        trained parameters (:func:`network_alignment` measures the networks' kernels).
    """
    run = eigen_task_run(
        inputs, num_train, eigenvectors, model_cfg, config, seed=seed, dataset=dataset
    )
    indices, labels = run.indices, run.labels
    keys = jax.numpy.stack([run.train_key] * len(indices))
    recorder = results.ResultsRecorder(run.settings)
    for kind in config.kinds:
        logger.info(
            "Training %s on eigenfunctions %s (%d epochs)", kind, indices, config.train.epochs
        )
        trained = train_sweep(
            run.module,
            variables0,
            kind,
            run.train_x,
            labels[:, :num_train],
            run.test_x,
            labels[:, num_train:],
            config.train,
            keys,
            strategy=config.sweep_strategy,
            progress=training_progress("eigen_training", config.progress),
            task_labels=[f"j={j}" for j in indices],
        )
        for j, y, result in zip(indices, labels, trained, strict=True):
            recorder.add(
                kind, j, result, y[:num_train], y[num_train:], eigenvalue=float(eigenvalues[j])
            )
    out = recorder.finish()
    degenerate = sorted(set(out.table.loc[out.table["degenerate"], "task_value"]))
    if degenerate:
        logger.warning(
            "Eigenfunctions %s have a single sign: one-class tasks, accuracy is trivial.",
            degenerate,
        )
    return out


def network_alignment(
    inputs: np.ndarray,
    num_train: int,
    eigenvalues: np.ndarray,
    eigenvectors: np.ndarray,
    variables0: Any,
    trained: Mapping[str, Any],
    model_cfg: Any,
    config: EigenTasksConfig,
) -> dict[str, Any]:
    """How the kernel of every trained network moved from the kernel at θ0 (docs/methods.md §3.2 step 5).

    Args:
        inputs: (N, H, W, C) float32, train rows first (the spectrum's samples).
        num_train: number of leading train rows.
        eigenvalues: (k,); eigenvectors: (k, N), of the Gram at ``variables0``.
        variables0: θ0.
        trained: ``train_eigen_tasks(...).params``; its ``network_<j>`` entries are used.
        model_cfg: the model preset.
        config: the experiment's settings (``alignment: false`` measures nothing).

    Returns:
        The alignment artifact of ``core.alignment.kernel_rotation`` (``runs`` empty when
        no network was trained or alignment is off).
    """
    prefix = "network_"
    networks = {
        int(name[len(prefix) :]): variables
        for name, variables in trained.items()
        if name.startswith(prefix)
    }
    settings = {"train": asdict(config.train), "indices": sorted(networks)}
    if not (config.alignment and networks):
        return {
            "eigenvalues": np.asarray(eigenvalues, np.float64).tolist(),
            "runs": {},
            "settings": {**settings, "indices": []},
        }
    x = np.asarray(inputs, np.float32)
    return alignment_core.kernel_rotation(
        build_model(model_config(model_cfg)),
        variables0,
        networks,
        x,
        np.asarray(eigenvectors),
        np.arange(num_train),
        np.arange(num_train, x.shape[0]),
        eigenvalues=eigenvalues,
        settings=settings,
        progress=config.progress,
    )


def merge_partition_tables(partitions: Mapping[str, Any], config: EigenTasksConfig) -> pd.DataFrame:
    """One results table from the partitions of a job-array sweep (docs/scaling.md).

    Args:
        partitions: ``{'part-PPP-of-NNN': table or loader}`` as a PartitionedDataset loads
            it; partitions of another ``num_partitions`` are ignored.
        config: the sweep's settings (``num_partitions``, indices, kinds, epochs).

    Returns:
        The table one process would have produced.

    Raises:
        ValueError: missing partitions, or partitions from another sweep.
    """
    n = config.num_partitions
    expected = {partition_key(p, n) for p in range(n)}
    pattern = re.compile(rf"part-\d{{3}}-of-{n:03d}$")
    found = {k.rsplit("/", 1)[-1]: v for k, v in partitions.items() if pattern.search(k)}
    missing = sorted(expected - set(found))
    if missing:
        raise ValueError(
            f"Cannot merge the eigen_training sweep: partitions {missing} of {n} are missing "
            f"(found {sorted(found)}). Run each missing one with `kedro run --pipelines "
            "eigen_training --tags eigen_training_sweep --params "
            f"eigen_training.partition=<p>,eigen_training.num_partitions={n}` first."
        )
    tables = [found[k]() if callable(found[k]) else found[k] for k in sorted(expected)]
    table = results.conform(pd.concat(tables, ignore_index=True))
    want = {(j, kind) for j in config.indices for kind in config.kinds}
    have = list(zip(table["task_value"].astype(int), table["kind"].astype(str), strict=True))
    if set(have) != want or len(have) != len(want) or table["epochs"].nunique() > 1:
        raise ValueError(
            f"The {n} partitions hold tasks {sorted(have)} (epochs "
            f"{sorted(set(table['epochs']))}), but this sweep expects {sorted(want)} with one "
            "epoch count: they come from another sweep. Delete the folder "
            "data/07_model_output/<dataset>/<model>/eigen_training_partitions and rerun."
        )
    return results.results_table(table.to_dict("records"))
