"""Chip classification outputs: a class per chip for every chip of a scene, maps and metrics.

:func:`predict_chips` runs a ``task: classification`` model (``model.pt`` of :func:`train_model`)
over every chip of each scene's chip store (kept by the filter or not) and writes, in ``out_dir``:

- ``{scene}.tif``: the chip-resolution land-cover raster, one pixel per chip window (uint8, 0 = no
  chip / no data, colour table and class names), on the grid of :func:`chip_grid`;
- ``chips.gpkg``: the chip footprints (one layer ``chips``, or one per CRS) with ``chip_id``,
  ``scene``, ``split`` (``dropped`` for chips not in the split table), ``predicted_class``,
  ``predicted_name``, ``confidence`` (softmax probability of the predicted class),
  ``reference_class`` / ``reference_name`` (the dominant valid class of the chip's mask, from the
  chip index; 0 / "no data" when the chip has no valid pixel) and ``reference_share`` (its share of
  the valid pixels); ``chips.parquet``: the same table without geometry;
- ``metrics.json``: per evaluated split (val, test) the chip confusion matrix (rows reference,
  columns prediction), per-class precision / recall / F1 / IoU, overall accuracy, macro F1, and
  the accuracy of always predicting the most frequent class of the training chips (the baseline);
- ``confusion_matrix.png``: the row-normalised confusion matrices of those splits.

Chips scored in the metrics are those with a reference class whose share reaches the model's
``min_dominant_fraction`` (as in training).

Grid of the chip raster. Pixel size = stride x the scene's pixel size, origin = the scene's origin
(``transform = scene_transform @ Affine.scale(stride)``); column j is the window whose column
offset is ``j * stride``. For ``stride == tile_size`` this is exactly the chip grid. With
``chips.edge: shift`` the last window along an axis is shifted back to end at the scene's edge
(offset ``W - T``, not on the stride grid); it takes the pixel after the last regular window
(``ceil(offset / stride)``), so every window has its own pixel. That last pixel starts at the
scene-grid position ``j * stride`` and reaches past the scene's edge, whereas the shifted chip
starts earlier (at ``W - T``) and ends at the edge: the pixel's footprint is off by
``j * stride - (W - T)`` scene pixels there (the footprint layer has the exact chip polygons).
(Taking the cell of the chip's centre instead would put the shifted chip on the same pixel as the
regular window before it.) With ``edge: drop`` the scene's remainder has no chip and no pixel.

Memory: one batch of chips at a time (``batch_size`` x C x T x T float32) plus the per-chip tables;
the chip raster is tiny (one byte per chip).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from affine import Affine
from rasterio.crs import CRS

from s2landcover.classes import ClassTable
from s2landcover.devices import choose_device
from s2landcover.errors import InputError
from s2landcover.evaluate import confusion_matrix, metrics_from_confusion
from s2landcover.io.chip_rasters import write_chip_class_raster, write_chip_predictions_layer
from s2landcover.io.chipstore import ChipStore, read_chip_index, write_table
from s2landcover.io.documents import write_bytes, write_json
from s2landcover.io.rasters import Grid
from s2landcover.predict import network_from_checkpoint
from s2landcover.training.data import SceneInput, pad_pair, stored_to_input
from s2landcover.training.tasks import dominant_classes
from s2landcover.windows import window_starts

EVALUATED_SPLITS = ("val", "test")
LAYER_COLUMNS = (
    "chip_id",
    "scene",
    "split",
    "predicted_class",
    "predicted_name",
    "confidence",
    "reference_class",
    "reference_name",
    "reference_share",
)


def chip_cells(offsets: np.ndarray, stride: int) -> np.ndarray:
    """Pixel index of each window along one axis of the chip raster: ``ceil(offset / stride)``.

    Regular windows (offset ``j * stride``) get ``j``; a window shifted back to the scene's edge
    gets the pixel after the last regular one (see the module docstring).
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    return -(-offsets // int(stride))


def chip_grid(
    scene_transform: Affine,
    crs: str | CRS,
    scene_width: int,
    scene_height: int,
    tile_size: int,
    stride: int,
    edge: str = "shift",
) -> Grid:
    """The grid of the chip-resolution raster of a scene (one pixel per window).

    Args:
        scene_transform: the scene's affine transform (pixel -> CRS units).
        crs: the scene's CRS.
        scene_width, scene_height: scene size in pixels.
        tile_size, stride: chip side and step in scene pixels.
        edge: ``shift`` or ``drop``, as in tiling (how many windows an axis has).

    Returns:
        A :class:`Grid` with ``transform = scene_transform @ Affine.scale(stride)`` and as many
        columns (rows) as tiling has windows along the scene's width (height).
    """
    columns = len(window_starts(int(scene_width), int(tile_size), int(stride), edge=edge))
    rows = len(window_starts(int(scene_height), int(tile_size), int(stride), edge=edge))
    return Grid(
        CRS.from_user_input(crs), scene_transform @ Affine.scale(int(stride)), columns, rows
    )


def chip_label_raster(
    row_cells: np.ndarray, col_cells: np.ndarray, labels: np.ndarray, shape: tuple[int, int]
) -> np.ndarray:
    """A (rows, cols) uint8 array with ``labels[i]`` at ``(row_cells[i], col_cells[i])``, else 0."""
    raster = np.zeros(shape, dtype=np.uint8)
    raster[np.asarray(row_cells), np.asarray(col_cells)] = np.asarray(labels, dtype=np.uint8)
    return raster


def chip_metrics(
    reference: np.ndarray,
    predicted: np.ndarray,
    class_names: Sequence[str],
    baseline_class: int | None,
) -> dict[str, Any]:
    """Chip metrics of one split (classes 1..K): confusion, per class, accuracy, baseline.

    ``baseline_class`` is the most frequent class of the training chips; ``baseline_accuracy`` is
    the accuracy of predicting it for every chip (NaN without chips or baseline class).
    """
    reference = np.asarray(reference, dtype=np.int64)
    matrix = confusion_matrix(reference, np.asarray(predicted), len(class_names))
    metrics = metrics_from_confusion(matrix, class_names)
    metrics["chips"] = metrics.pop("pixels")
    metrics["accuracy"] = metrics.pop("overall_accuracy")
    metrics["macro_f1"] = metrics.pop("mean_f1")
    for per_class in metrics["per_class"].values():
        per_class["support_chips"] = per_class.pop("support")
        per_class["predicted_chips"] = per_class.pop("predicted")
    metrics["baseline_class"] = (
        None if baseline_class is None else class_names[int(baseline_class) - 1]
    )
    metrics["baseline_accuracy"] = (
        float((reference == baseline_class).mean())
        if baseline_class is not None and len(reference)
        else math.nan
    )
    return metrics


def classify_store(
    model: torch.nn.Module,
    store: ChipStore,
    meta: Mapping[str, Any],
    pad_multiple: int,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Predicted class (1..K) and confidence of every chip of a store, in store order.

    Chips whose image is entirely no data get class 0 and confidence 0. Memory: one batch.
    """
    if list(store.bands) != list(meta["bands"]):
        raise InputError(
            f"chip store {store.chip_dir} has bands {store.bands}; the model was trained on "
            f"{list(meta['bands'])}; re-run tiling with the model's bands"
        )
    scene = SceneInput.from_meta(store.chip_dir, store.meta)
    count = len(store)
    predicted = np.zeros(count, dtype=np.uint8)
    confidence = np.zeros(count, dtype=np.float32)
    device = torch.device(device)
    model = model.to(device)
    for start in range(0, count, batch_size):
        stop = min(count, start + batch_size)
        images = []
        all_nodata = np.zeros(stop - start, dtype=bool)
        for position, stored in enumerate(np.asarray(store.images[start:stop])):
            array, nodata = stored_to_input(stored, scene, meta["mean"], meta["std"])
            all_nodata[position] = bool(nodata.all())
            images.append(pad_pair(torch.from_numpy(array), None, pad_multiple)[0])
        with torch.no_grad():
            probabilities = model(torch.stack(images).to(device)).float().softmax(dim=1).cpu()
        best, position = probabilities.max(dim=1)
        predicted[start:stop] = np.where(all_nodata, 0, position.numpy() + 1)
        confidence[start:stop] = np.where(all_nodata, 0.0, best.numpy())
    return predicted, confidence


def predict_chips(
    checkpoint_path: str | Path,
    chips_root: str | Path,
    split_path: str | Path,
    out_dir: str | Path,
    scenes: Sequence[str] | None = None,
    batch_size: int = 16,
    device: str = "auto",
) -> dict[str, Any]:
    """Classify every chip of each scene; write chip rasters, the chip layer and metrics.

    Args:
        checkpoint_path: ``model.pt`` of a ``task: classification`` model.
        chips_root: ``results/chips/size{tile}``; scene S's chip store is ``chips_root / S``.
        split_path: ``results/splits/size{tile}/split.parquet`` (chip_id, scene, split).
        out_dir: output folder (see the module docstring for its files).
        scenes: scenes to classify; default the scenes of the split table.
        batch_size: chips per forward pass.
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda``, ``cuda:1``...

    Returns:
        A summary: output paths, chips per scene, accuracy and baseline accuracy per split.

    Raises:
        InputError: for a CUDA device on a machine without one, a checkpoint that is not a
            classification model or whose weights do not fit its architecture (the loader of
            whole-scene prediction, :func:`s2landcover.predict.network_from_checkpoint`), a split
            table lacking columns (all before anything is written), a missing chip store.
    """
    out_dir = Path(out_dir)
    torch_device = choose_device(device)
    model, meta, task = network_from_checkpoint(checkpoint_path, "classification")
    classes = ClassTable.from_dict(meta["classes"])
    split = read_chip_index(split_path)
    missing = [c for c in ("chip_id", "scene", "split") if c not in split.columns]
    if missing:
        raise InputError(f"split table {split_path} lacks columns {missing}")
    scene_names = sorted(split["scene"].astype(str).unique()) if scenes is None else list(scenes)
    names = np.array(["no data", *classes.names], dtype=object)
    tables = []
    rasters: dict[str, str] = {}
    for scene in scene_names:
        chip_dir = Path(chips_root) / scene
        if not chip_dir.is_dir():
            raise InputError(f"chip store {chip_dir} of scene {scene!r} does not exist")
        store = ChipStore(chip_dir)
        predicted, confidence = classify_store(
            model, store, meta, task.pad_multiple, batch_size, torch_device
        )
        table = store.index.copy()
        positions, shares = dominant_classes(table, classes.num_classes)
        table["predicted_class"] = predicted.astype(np.int64)
        table["predicted_name"] = names[predicted]
        table["confidence"] = confidence.astype(np.float64)
        table["reference_class"] = np.where(positions >= 0, positions + 1, 0)
        table["reference_name"] = names[table["reference_class"].to_numpy()]
        table["reference_share"] = shares
        store_meta = store.meta
        stride = int(store_meta.get("stride", store_meta["tile_size"]))
        grid = chip_grid(
            Affine(*store_meta["transform"]),
            store_meta["crs"],
            int(store_meta["width"]),
            int(store_meta["height"]),
            int(store_meta["tile_size"]),
            stride,
            str(store_meta.get("edge", "shift")),
        )
        labels = chip_label_raster(
            chip_cells(table["row_off"].to_numpy(), stride),
            chip_cells(table["col_off"].to_numpy(), stride),
            predicted,
            (grid.height, grid.width),
        )
        rasters[scene] = str(
            write_chip_class_raster(out_dir / f"{scene}.tif", labels, grid, classes)
        )
        tables.append(table)
    chips = pd.concat(tables, ignore_index=True)
    split_of = dict(zip(split["chip_id"].astype(str), split["split"].astype(str), strict=False))
    chips["split"] = chips["chip_id"].astype(str).map(split_of).fillna("dropped")

    scored = (chips["reference_class"] > 0) & (
        chips["reference_share"] >= task.min_dominant_fraction
    )
    train_reference = chips.loc[scored & (chips["split"] == "train"), "reference_class"]
    # The most frequent class of the training chips (ties: the lower class index).
    baseline = (
        int(np.bincount(train_reference.to_numpy()).argmax()) if len(train_reference) else None
    )
    metrics: dict[str, Any] = {
        "task": "classification",
        "checkpoint": str(checkpoint_path),
        "min_dominant_fraction": task.min_dominant_fraction,
        "classes": list(classes.names),
        "splits": {},
    }
    matrices = {}
    for split_name in EVALUATED_SPLITS:
        rows = chips[scored & (chips["split"] == split_name) & (chips["predicted_class"] > 0)]
        if len(rows) == 0:
            continue
        result = chip_metrics(
            rows["reference_class"].to_numpy(),
            rows["predicted_class"].to_numpy(),
            classes.names,
            baseline,
        )
        metrics["splits"][split_name] = result
        matrices[f"{split_name} chips"] = np.asarray(result["confusion_matrix"])
    outputs = {
        "rasters": rasters,
        "layer": str(out_dir / "chips.gpkg"),
        "table": str(out_dir / "chips.parquet"),
        "metrics": str(out_dir / "metrics.json"),
    }
    write_chip_predictions_layer(chips, out_dir / "chips.gpkg", LAYER_COLUMNS)
    write_table(chips, out_dir / "chips.parquet")
    write_json(metrics, out_dir / "metrics.json", nan="null")
    if matrices:
        write_bytes(_confusion_png(matrices, classes.names), out_dir / "confusion_matrix.png")
        outputs["confusion_matrix"] = str(out_dir / "confusion_matrix.png")
    return {
        **outputs,
        "chips": {scene: int((chips["scene"] == scene).sum()) for scene in scene_names},
        "accuracy": {k: v["accuracy"] for k, v in metrics["splits"].items()},
        "baseline_accuracy": {k: v["baseline_accuracy"] for k, v in metrics["splits"].items()},
    }


def _confusion_png(matrices: Mapping[str, np.ndarray], class_names: Sequence[str]) -> bytes:
    from s2landcover.plots import confusion_matrix_figure, figure_png

    figure = confusion_matrix_figure(matrices, class_names)
    for axes in figure.axes:  # the figure counts pixels; these are chips
        title = axes.get_title()
        if title.endswith(" px"):
            axes.set_title(title[: -len(" px")], fontsize=10)
    return figure_png(figure)  # a pyplot-free Figure: nothing to close
