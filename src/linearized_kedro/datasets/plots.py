"""Figure artifacts: matplotlib figures (PNG/PDF/SVG) and Plotly figures (JSON).

Both are atomic and verified like every artifact. A matplotlib figure's format comes
from the file's extension and ``load()`` returns the stored bytes, so reporting can
embed them; PDF and SVG are written without a creation date, so re-rendering the
same figure gives the same bytes (``deduplicate: true`` can then link them). Kedro-Viz previews figures as
images (``ImagePreview``) and Plotly figures interactively (``PlotlyPreview``), the
types it reads from the ``preview`` method's return annotation.
"""

from __future__ import annotations

import base64
import io
import json
from typing import Any

from kedro.io.core import DatasetError
from kedro_datasets._typing import ImagePreview, PlotlyPreview

from linearized_kedro.datasets.base import ArtifactDataset

_FORMATS = {"png": "png", "pdf": "pdf", "svg": "svg"}


class FigureDataset(ArtifactDataset):
    """A matplotlib figure stored as PNG, PDF or SVG (by the file's extension).

    ``save_args`` go to ``Figure.savefig`` (e.g. ``dpi: 120``). ``load()`` returns
    the file's bytes.

    In ``conf/base/catalog.yml``: every paper-style figure (``"{name}_plot"``, PNG at
    ``save_args: {dpi: 120}``).
    """

    FORMAT = "figure"

    @property
    def image_format(self) -> str:
        suffix = self._filepath.suffix.lower().lstrip(".")
        if suffix not in _FORMATS:
            raise DatasetError(
                f"{self._filepath}: cannot tell the figure format from {suffix!r}; use one "
                f"of {', '.join('.' + s for s in _FORMATS)}."
            )
        return _FORMATS[suffix]

    def _write(self, out, data: Any) -> dict[str, Any]:
        if not hasattr(data, "savefig"):
            raise DatasetError(
                f"Cannot save {type(data).__name__} to {self._filepath}: expected a "
                "matplotlib Figure."
            )
        fmt = self.image_format
        args = dict(self._save_args)
        if fmt in ("pdf", "svg"):
            args.setdefault("metadata", {"CreationDate": None} if fmt == "pdf" else {"Date": None})
        buffer = io.BytesIO()
        data.savefig(buffer, format=fmt, **args)
        out.write(buffer.getvalue())
        width, height = data.get_size_inches()
        return {"image_format": fmt, "size_inches": [float(width), float(height)]}

    def _read(self, payload: bytes) -> bytes:
        return payload

    def preview(self) -> ImagePreview:
        """The image, base64-encoded, for Kedro-Viz."""
        return ImagePreview(base64.b64encode(self.load()).decode("ascii"))


class PlotlyDataset(ArtifactDataset):
    """A Plotly figure stored as Plotly JSON; ``load()`` returns a ``plotly.graph_objects.Figure``.

    ``save`` accepts a Plotly figure or its JSON dict. ``save_args`` go to
    ``plotly.io.to_json`` (e.g. ``pretty: true``), ``load_args`` to
    ``plotly.io.from_json``.
    """

    FORMAT = "plotly-json"

    def _write(self, out, data: Any) -> dict[str, Any]:
        import plotly.io as pio

        if isinstance(data, dict):
            text = json.dumps(data)
        elif hasattr(data, "to_plotly_json"):
            text = pio.to_json(data, **self._save_args)
        else:
            raise DatasetError(
                f"Cannot save {type(data).__name__} to {self._filepath}: expected a "
                "Plotly figure (or its JSON dict)."
            )
        out.write(text.encode("utf-8"))
        return {"traces": len(json.loads(text).get("data", []))}

    def _read(self, payload: bytes) -> Any:
        import plotly.io as pio

        return pio.from_json(payload.decode("utf-8"), **self._load_args)

    def preview(self) -> PlotlyPreview:
        """The figure's JSON (data and layout), which Kedro-Viz draws interactively."""
        path = self._load_path()
        with self._fs.open(path, "rb") as handle:
            return PlotlyPreview(json.loads(handle.read().decode("utf-8")))
