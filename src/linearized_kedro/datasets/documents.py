"""JSON, text and CSV artifacts, atomic and verified like every other artifact.

Drop-in replacements for kedro-datasets' ``json.JSONDataset``, ``text.TextDataset``
and ``pandas.CSVDataset`` (same constructor arguments and defaults), built on
:class:`~linearized_kedro.datasets.base.ArtifactDataset`: kedro-datasets write these
in place, so a killed or out-of-space save left a 0-byte or truncated ``report.json``
as the latest version and blocked every downstream run.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pandas as pd
from kedro.io.core import DatasetError
from kedro_datasets._typing import JSONPreview, TablePreview

from linearized_kedro.datasets.base import ArtifactDataset
from linearized_kedro.datasets.metadata import json_ready


class JSONDataset(ArtifactDataset):
    """A JSON document (dicts, lists, numbers, strings; NumPy scalars/arrays are converted).

    ``save_args`` go to ``json.dump`` (default ``indent: 2``); ``load_args`` to
    ``json.loads``.

    In ``conf/base/catalog.yml``: the reports (``"{name}_report"``), the training
    histories (``"{name}_histories"``) and the kernel alignment.
    """

    FORMAT = "json"
    DEFAULT_SAVE_ARGS = {"indent": 2}

    def _write(self, out, data: Any) -> dict[str, Any]:
        try:
            text = json.dumps(json_ready(data, strict=True), **self._save_args)
        except (TypeError, ValueError) as exc:
            raise DatasetError(f"Cannot save {self._filepath} as JSON: {exc}") from exc
        out.write(text.encode("utf-8"))
        return {"type": type(data).__name__}

    def _read(self, payload: bytes) -> Any:
        return json.loads(payload.decode("utf-8"), **self._load_args)

    def preview(self) -> JSONPreview:
        """The document, for Kedro-Viz."""
        return JSONPreview(json.dumps(self.load()))


class TextDataset(ArtifactDataset):
    """A UTF-8 text file (``load`` returns ``str``)."""

    FORMAT = "text"

    def _write(self, out, data: Any) -> dict[str, Any]:
        if not isinstance(data, str):
            raise DatasetError(
                f"Cannot save {type(data).__name__} to text file {self._filepath}: pass a str."
            )
        out.write(data.encode(self._save_args.get("encoding", "utf-8")))
        return {"characters": len(data)}

    def _read(self, payload: bytes) -> str:
        return payload.decode(self._load_args.get("encoding", "utf-8"))


class CSVDataset(ArtifactDataset):
    """A pandas table as CSV: ``save_args`` to ``DataFrame.to_csv`` (default ``index: False``),
    ``load_args`` to ``pandas.read_csv``.

    In ``conf/base/catalog.yml``: the results tables (``"{name}_results"``, the schema of
    ``experiments.results``).
    """

    FORMAT = "csv"
    DEFAULT_SAVE_ARGS = {"index": False}

    def _write(self, out, data: pd.DataFrame) -> dict[str, Any]:
        if not isinstance(data, pd.DataFrame):
            raise DatasetError(
                f"Cannot save {type(data).__name__} as CSV {self._filepath}: pass a "
                "pandas DataFrame."
            )
        buffer = io.StringIO()
        data.to_csv(path_or_buf=buffer, **self._save_args)
        out.write(buffer.getvalue().encode("utf-8"))
        return {"rows": int(len(data)), "columns": [str(c) for c in data.columns]}

    def _read(self, payload: bytes) -> pd.DataFrame:
        return pd.read_csv(io.BytesIO(payload), **self._load_args)

    def preview(self, nrows: int = 5) -> TablePreview:
        """The first ``nrows`` rows, for Kedro-Viz's table view."""
        return TablePreview(self.load().head(nrows).to_dict(orient="split"))
