"""The closing summary of a workflow run: where the maps and the report are, and the headline
metrics (the Snakefile's ``onsuccess:`` handler prints it)::

    s2-landcover: run finished.
      map  demo: results/predictions/size64/tiny/demo.tif (+ .qml style for QGIS)
      report: results/evaluation/size64/tiny/report.html
        mIoU  validation 0.412 (pixel baseline 0.350), test 0.398 (pixel baseline 0.331)
      Snakemake report of the run: snakemake --report report.zip
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from s2landcover.io.run_records import read_json_record

AREAS = (("val", "validation"), ("test", "test"))


def _score(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{float(value):.3f}"


def headline_metrics(metrics: dict[str, Any]) -> str:
    """``"mIoU  validation 0.412 (pixel baseline 0.350), test ..."`` from a metrics.json content;
    an area without pixels reads ``n/a``, a baseline not run is left out."""
    pixel = metrics.get("baselines", {}).get("pixel", {}).get("areas", {})
    parts = []
    for area, title in AREAS:
        model = metrics.get("areas", {}).get(area, {})
        text = f"{title} {_score(model.get('miou'))}"
        if area in pixel:
            text += f" (pixel baseline {_score(pixel[area].get('miou'))})"
        parts.append(text)
    return "mIoU  " + ", ".join(parts)


def run_summary(outputs: Sequence[str | Path], root: str | Path = ".") -> str:
    """The summary of the default target's ``outputs`` (paths relative to ``root``, the
    workflow's working folder): each map (``.tif``), each report (``report.html``) with the
    headline metrics of the ``metrics.json`` beside it, and each chip-label metrics file."""
    root = Path(root)
    lines = ["s2-landcover: run finished."]
    for output in map(Path, outputs):
        if output.suffix == ".tif":
            style = (
                " (+ .qml style for QGIS)" if (root / output.with_suffix(".qml")).is_file() else ""
            )
            lines.append(f"  map  {output.stem}: {output}{style}")
    for output in map(Path, outputs):
        if output.name == "report.html":
            lines.append(f"  report: {output}")
            metrics = read_json_record(root / output.with_name("metrics.json"))
            if isinstance(metrics, dict):
                lines.append("    " + headline_metrics(metrics))
        elif output.suffix == ".json":
            lines.append(f"  metrics: {output}")
    lines.append("  Snakemake report of the run: snakemake --report report.zip")
    return "\n".join(lines)
