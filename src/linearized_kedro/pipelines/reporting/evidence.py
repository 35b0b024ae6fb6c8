"""What each experiment's results show: tables and statistics for the summary (docs/methods.md §2).

Pure functions of the results tables (``experiments.results`` schema) and the alignment
artifact (``core.alignment``). Conventions, the same in every section:

- a **one-class** task (``degenerate``: all labels equal, e.g. eigen-index 0, docs/methods.md §2.3 (d))
  is shown, marked :data:`ONE_CLASS_NOTE`, and left out of every statistic: any model
  scores 100 % on it;
- a **diverged** run is shown as "failed" and left out of the statistics of its kind;
- accuracy gaps are reported per **index band** (the lower and the upper half of the
  indices), never as one mean across a change of sign;
- the alignment's concentration ratios are shown at θ0 *and* at the end, per split: the
  θ0 value is the baseline (docs/methods.md §3.2 step 5).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

ONE_CLASS_NOTE = "one-class: trivial, excluded from statistics"
FAILED_NOTE = "diverged: failed"

KIND_LABELS = {
    "network": "network",
    "linear": "linearisation",
    "linear_init": "kernel at θ0",
    "linear_pretrained": "kernel at θ_end",
}

RUN_SETTINGS = (
    ("num_train", "train samples"),
    ("num_test", "test samples"),
    ("num_eigvecs", "k"),
    ("epochs", "epochs"),
    ("batch_size", "batch"),
    ("optimizer", "optimizer"),
    ("lr_schedule", "schedule"),
    ("max_lr", "max lr"),
    ("momentum", "momentum"),
    ("seed", "seed"),
)


@dataclass(frozen=True)
class Thresholds:
    """What the statistics call "fits its training set" and "underfits" (``reporting:``)."""

    fit: float = 0.95
    underfit: float = 0.95
    overfit_gap: float = 0.05


@dataclass
class Evidence:
    """Facts (name, value) and captioned tables of one experiment."""

    facts: list[tuple[str, str]]
    tables: list[tuple[str, pd.DataFrame]]


def fmt(value: Any, digits: int = 4) -> str:
    """A cell or a fact: ints plain, floats to ``digits`` significant digits, NaN "—"."""
    if value is None or value is pd.NA:
        return "—"
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            return "—"
        if value != 0 and (abs(value) >= 1e4 or abs(value) < 1e-3):
            return f"{value:.3e}"
        return f"{value:.{digits}g}"
    return str(value)


def signed(value: float) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:+.3f}"


def run_settings(table: pd.DataFrame) -> str:
    """One line of the settings a results table was made with (``varies`` where rows differ)."""
    parts = []
    sizes_are_tasks = "task_axis" in table and (table["task_axis"] == "num_train").any()
    for column, label in RUN_SETTINGS:
        if column not in table:
            continue
        values = table[column].dropna().unique()
        if len(values) == 0:
            continue
        if column == "num_train" and sizes_are_tasks:  # CIFAR-2: the task axis
            continue
        parts.append(f"{label} {fmt(values[0]) if len(values) == 1 else 'varies'}")
    return ", ".join(parts)


def _usable(table: pd.DataFrame) -> pd.DataFrame:
    """Rows that enter statistics: not one-class, not diverged."""
    return table[~table["degenerate"].astype(bool) & ~table["diverged"].astype(bool)]


def _pivot(table: pd.DataFrame, value: str) -> pd.DataFrame:
    return table.pivot_table(
        index="task_value", columns="kind", values=value, aggfunc="first", dropna=False
    )


def _spearman(x: Sequence[float], y: Sequence[float]) -> float:
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = ~(np.isnan(x) | np.isnan(y))
    if keep.sum() < 3 or np.ptp(x[keep]) == 0 or np.ptp(y[keep]) == 0:
        return math.nan
    # Imported here: scipy.stats takes ~0.4 s to import, and every `kedro run` imports
    # this module (the run hooks load every pipeline package).
    from scipy.stats import spearmanr

    return float(spearmanr(x[keep], y[keep]).statistic)


def _index_range(indices: Sequence[int]) -> str:
    indices = sorted(int(i) for i in indices)
    if not indices:
        return "none"
    return f"j = {indices[0]}" if len(indices) == 1 else f"j = {indices[0]}–{indices[-1]}"


def _list(indices: Sequence[int]) -> str:
    return ", ".join(str(int(i)) for i in sorted(indices)) or "none"


def task_table(
    table: pd.DataFrame, kinds: Sequence[str], index_name: str, *, with_eigenvalue: bool = True
) -> pd.DataFrame:
    """One row per task: class balance, baselines, train/test accuracy per kind, notes.

    Args:
        table: a results table (optionally with a ``version`` column).
        kinds: the kinds to show, in column order.
        index_name: the name of the first column (``j``, ``NAD``, ``n``).
        with_eigenvalue: show the task's eigenvalue.

    Returns:
        The display table; diverged accuracies are NaN (rendered "failed").
    """
    first = table.drop_duplicates("task_value").set_index("task_value").sort_index()
    out = pd.DataFrame(index=first.index)
    if with_eigenvalue and first["eigenvalue"].notna().any():
        out["eigenvalue"] = first["eigenvalue"]
    out["pos. frac. train"] = first["positive_fraction_train"]
    out["pos. frac. test"] = first["positive_fraction_test"]
    out["majority (test)"] = first["majority_baseline_test"]
    train, test = _pivot(table, "train_accuracy"), _pivot(table, "test_accuracy")
    for kind in kinds:
        if kind in test:
            label = KIND_LABELS.get(kind, kind)
            out[f"train acc ({label})"] = train[kind]
            out[f"test acc ({label})"] = test[kind]
    notes = []
    for j in out.index:
        rows = table[table["task_value"] == j]
        note = []
        if rows["degenerate"].astype(bool).any():
            note.append(ONE_CLASS_NOTE)
        failed = rows.loc[rows["diverged"].astype(bool), "kind"].tolist()
        if failed:
            note.append(f"{FAILED_NOTE} ({', '.join(failed)})")
        notes.append("; ".join(note))
    if any(notes):
        out["note"] = notes
    if "version" in table and table["version"].nunique() > 1:
        out["version"] = table.drop_duplicates("task_value").set_index("task_value")["version"]
    out.index.name = index_name
    return out


def _excluded(table: pd.DataFrame, axis_symbol: str) -> str:
    """The phrase naming the tasks left out of the statistics."""
    one_class = sorted(set(table.loc[table["degenerate"].astype(bool), "task_value"]))
    if not one_class:
        return ""
    return f" (excluding {axis_symbol} = {_list(one_class)}: one-class)"


def ranking_facts(table: pd.DataFrame, kinds: Sequence[str], symbol: str) -> list:
    """Spearman ρ(index, test accuracy) per kind and between the kinds' rankings."""
    usable = _usable(table)
    test = _pivot(usable, "test_accuracy")
    facts = []
    for kind in kinds:
        if kind in test:
            column = test[kind].dropna()
            rho = _spearman(column.index, column.values)
            facts.append((f"Spearman ρ({symbol}, test accuracy), {KIND_LABELS[kind]}", fmt(rho, 3)))
    present = [k for k in kinds if k in test]
    if len(present) == 2:
        both = test[present].dropna()
        rho = _spearman(both[present[0]], both[present[1]])
        facts.append(
            (
                f"Spearman ρ of the task rankings, {KIND_LABELS[present[0]]} vs "
                f"{KIND_LABELS[present[1]]}",
                fmt(rho, 3),
            )
        )
    return facts


def band_gaps(table: pd.DataFrame, better: str, worse: str, symbol: str) -> list[tuple[str, str]]:
    """Mean test-accuracy gap ``better − worse`` in the lower and the upper half of the indices.

    One mean across all indices hides a change of sign (the linearisation ahead at low
    indices, the network at high ones), so each half is reported with its index range and
    how often each side is ahead; the indices where ``worse`` is ahead are listed.
    """
    test = _pivot(_usable(table), "test_accuracy")
    if not {better, worse} <= set(test.columns):
        return []
    gap = (test[better] - test[worse]).dropna().sort_index()
    if gap.empty:
        return []
    half = math.ceil(len(gap) / 2)
    bands = [("lower", gap.iloc[:half]), ("upper", gap.iloc[half:])] if len(gap) > 1 else []
    facts = []
    label = f"{KIND_LABELS[better]} − {KIND_LABELS[worse]} test accuracy"
    for name, band in bands or [("all", gap)]:
        if band.empty:
            continue
        facts.append(
            (
                f"{label}, {name} indices ({symbol} = {_range_text(band.index)})",
                f"mean {signed(float(band.mean()))}; {KIND_LABELS[better]} ahead at "
                f"{int((band > 0).sum())} of {len(band)}, {KIND_LABELS[worse]} at "
                f"{int((band < 0).sum())}",
            )
        )
    facts.append((f"indices where the {KIND_LABELS[worse]} is ahead", _list(gap.index[gap < 0])))
    return facts


def _range_text(indices: Sequence[int]) -> str:
    indices = sorted(int(i) for i in indices)
    return str(indices[0]) if len(indices) == 1 else f"{indices[0]}–{indices[-1]}"


def fit_facts(table: pd.DataFrame, thresholds: Thresholds, symbol: str) -> list:
    """Does the network fit its training set; where does the linearisation underfit it."""
    train = _pivot(_usable(table), "train_accuracy")
    facts = []
    if "network" in train:
        net = train["network"].dropna()
        if len(net):
            fits = int((net >= thresholds.fit).sum())
            facts.append(
                (
                    f"network train accuracy ≥ {thresholds.fit:g} (fits its training set)",
                    f"at {fits} of {len(net)} tasks (min {fmt(float(net.min()), 3)})",
                )
            )
    if "linear" in train:
        lin = train["linear"].dropna()
        under = lin.index[lin < thresholds.underfit]
        facts.append(
            (
                f"linearisation train accuracy < {thresholds.underfit:g} "
                "(underfits its training set)",
                f"at {symbol} = {_list(under)}" if len(under) else "nowhere",
            )
        )
    return facts


def eigen_evidence(table: pd.DataFrame, thresholds: Thresholds) -> Evidence:
    """The eigenfunction benchmark: accuracy by index, rankings, gaps by band, fit."""
    kinds = [k for k in ("network", "linear") if k in set(table["kind"])]
    usable = _usable(table)
    header = (
        "statistics over",
        f"{usable['task_value'].nunique()} tasks, "
        f"{_index_range(usable['task_value'].unique())}{_excluded(table, 'j')}",
    )
    facts = [header, *ranking_facts(table, kinds, "j")]
    facts += band_gaps(table, "linear", "network", "j")
    facts += fit_facts(table, thresholds, "j")
    return Evidence(
        facts=facts,
        tables=[("Accuracy by eigen-index j", task_table(table, kinds, "j"))],
    )


def alignment_evidence(
    alignment: Mapping[str, Any], table: pd.DataFrame | None, thresholds: Thresholds
) -> Evidence:
    """Concentration ratio at the target, θ0 → end, per split; where the network overfits.

    The gain of a split is the end ratio minus the θ0 ratio of the same split; "rotation
    larger on train" means train gain > test gain. It is counted over every trained index
    and over the indices where the network overfits (train − test accuracy ≥
    ``thresholds.overfit_gap``), where docs/methods.md §2.1 item 4 places the effect.
    """
    runs = alignment.get("runs") or {}
    if not runs:
        return Evidence(facts=[("trained networks with alignment", "none")], tables=[])
    overfit: dict[int, float] = {}
    if table is not None:
        net = table[(table["kind"] == "network") & ~table["diverged"].astype(bool)]
        overfit = dict(
            zip(
                net["task_value"].astype(int),
                net["train_accuracy"] - net["test_accuracy"],
                strict=True,
            )
        )
    rows = {}
    for j, run in runs.items():
        c = run.get("concentration") or {}
        gains = {
            s: c.get(f"{s}_end", math.nan) - c.get(f"{s}_init", math.nan) for s in ("train", "test")
        }
        rows[int(j)] = {
            "train θ0": c.get("train_init"),
            "train end": c.get("train_end"),
            "test θ0": c.get("test_init"),
            "test end": c.get("test_end"),
            "train gain": gains["train"],
            "test gain": gains["test"],
            "network train − test acc": overfit.get(int(j), math.nan),
        }
    frame = pd.DataFrame.from_dict(rows, orient="index").sort_index()
    frame.index.name = "j"
    if table is not None:
        one_class = set(table.loc[table["degenerate"].astype(bool), "task_value"].astype(int))
        if one_class & set(frame.index):
            frame["note"] = [ONE_CLASS_NOTE if j in one_class else "" for j in frame.index]
    if (
        "version" in next(iter(runs.values()))
        and len({r.get("version") for r in runs.values()}) > 1
    ):
        frame["version"] = [runs[str(j)].get("version") for j in frame.index]
    scored = frame[(frame.index >= 1) & (frame.get("note", "") != ONE_CLASS_NOTE)]
    facts = []
    for name, subset in (
        ("all trained j ≥ 1", scored),
        (
            f"where the network overfits (train − test ≥ {thresholds.overfit_gap:g})",
            scored[scored["network train − test acc"] >= thresholds.overfit_gap],
        ),
    ):
        if subset.empty:
            facts.append((f"rotation larger on train than on test, {name}", "no such index"))
            continue
        more = int((subset["train gain"] > subset["test gain"]).sum())
        facts.append(
            (
                f"rotation larger on train than on test, {name}",
                f"at {more} of {len(subset)} (median gain train {signed(subset['train gain'].median())}, "
                f"test {signed(subset['test gain'].median())}; {_index_range(subset.index)})",
            )
        )
    settings = alignment.get("settings") or {}
    if settings.get("radius"):
        facts.append(
            (
                "concentration ratio",
                f"q(j) / {settings.get('neighbour_statistic', 'median')} of q over "
                f"j ± 1..{settings['radius']} (index ≥ {settings.get('first_neighbour', 1)}); "
                "≈ 1 means no preference for u_j",
            )
        )
    return Evidence(
        facts=facts,
        tables=[
            (
                "Concentration at the target u_j, θ0 → end of training (docs/methods.md §3.2 step 5)",
                frame,
            )
        ],
    )


def pretrained_evidence(table: pd.DataFrame) -> Evidence:
    """Kernel at θ0 vs after training vs the network, per index."""
    kinds = ("network", "linear_init", "linear_pretrained")
    test = _pivot(_usable(table), "test_accuracy")
    facts = []
    if set(kinds) <= set(test.columns):
        both = test[list(kinds)].dropna()
        if len(both):
            below = both["linear_init"] - both["linear_pretrained"]
            close = (both["linear_pretrained"] - both["network"]).abs()
            far = (both["linear_init"] - both["network"]).abs()
            facts += [
                (
                    "test accuracy, kernel at θ0 − kernel at θ_end",
                    f"mean {signed(below.mean())} "
                    f"(kernel at θ0 ahead at {int((below > 0).sum())} of {len(below)})",
                ),
                ("|kernel at θ_end − network| test accuracy", f"mean {fmt(close.mean(), 3)}"),
                ("|kernel at θ0 − network| test accuracy", f"mean {fmt(far.mean(), 3)}"),
            ]
    facts.append(
        (
            "BatchNorm in the θ_end kernel",
            "initial statistics (re-initialised, as in the original; docs/methods.md §3.5)",
        )
    )
    return Evidence(
        facts=facts,
        tables=[("Accuracy by eigen-index j", task_table(table, list(kinds), "j"))],
    )


def nad_evidence(table: pd.DataFrame) -> Evidence:
    """Training along NADs: accuracy by NAD index, rankings, first vs last."""
    kinds = [k for k in ("network", "linear") if k in set(table["kind"])]
    test = _pivot(_usable(table), "test_accuracy").sort_index()
    facts = ranking_facts(table, kinds, "NAD index")
    for kind in kinds:
        column = test[kind].dropna() if kind in test else pd.Series(dtype=float)
        if len(column) >= 2:
            facts.append(
                (
                    f"test accuracy, first − last NAD index ({KIND_LABELS[kind]})",
                    f"{signed(float(column.iloc[0] - column.iloc[-1]))} "
                    f"(NAD {int(column.index[0])} vs {int(column.index[-1])})",
                )
            )
    facts += band_gaps(table, "network", "linear", "NAD")
    return Evidence(
        facts=facts,
        tables=[("Accuracy by NAD index", task_table(table, kinds, "NAD index"))],
    )


def cifar2_evidence(table: pd.DataFrame, thresholds: Thresholds) -> Evidence:
    """CIFAR-2: network vs linearisation by training-set size."""
    kinds = [k for k in ("network", "linear") if k in set(table["kind"])]
    test = _pivot(_usable(table), "test_accuracy")
    facts = []
    if {"network", "linear"} <= set(test.columns):
        gap = (test["network"] - test["linear"]).dropna()
        facts = [(f"network − linear at n={int(n)}", signed(float(g))) for n, g in gap.items()]
    facts += fit_facts(table, thresholds, "n")
    shown = task_table(table, kinds, "n", with_eigenvalue=False)
    return Evidence(facts=facts, tables=[("Accuracy by training-set size n", shown)])


def spectrum_evidence(report: Mapping[str, Any], values: np.ndarray | None, top: int) -> Evidence:
    """Size, solver, accuracy and the eigenvalue range, every ratio labelled with its indices."""
    facts = [
        ("N (samples)", fmt(report.get("n"))),
        ("k (eigenpairs)", fmt(report.get("k"))),
        ("parameters P", fmt(report.get("num_params"))),
        ("solver", fmt(report.get("solver"))),
        ("max residual ‖Ku − λu‖/|λ|", fmt(report.get("max_residual"))),
    ]
    if values is not None and len(values):
        values = np.asarray(values, np.float64)
        last = len(values) - 1
        listed = [(f"λ_{i}", fmt(values[i])) for i in sorted({*range(min(top, len(values))), last})]
        ratios = [
            (f"λ_0 / λ_{i}", fmt(values[0] / values[i], 3))
            for i in sorted({i for i in (100, 1000) if i < last} | {last})
            if i > 0 and values[i] > 0
        ]
        facts[2:2] = listed + ratios
    timings = report.get("timings") or {}
    facts += [(f"time: {k}", f"{v:.1f} s") for k, v in timings.items()]
    return Evidence(facts=facts, tables=[])


def scalar_facts(report: Mapping[str, Any], limit: int) -> list[tuple[str, str]]:
    items = [
        (key, fmt(value))
        for key, value in report.items()
        if isinstance(value, str | int | float | bool) and value is not None
    ]
    return items[:limit]
