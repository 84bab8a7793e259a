"""``evaluate_model``: per-class metrics of predicted land-cover maps against the masks; report.

Metrics come from confusion matrices (rows = reference class, columns = predicted class, classes
1..K; pixels where either map holds 0 = no data are left out) accumulated window by window over the
full scenes, so memory is bounded by one window whatever the scene size. They are reported for
areas of the split: ``val``, ``test`` and ``train`` (the union of the chip windows of that split: a
pixel covered by several overlapping chips counts once) and ``whole_scene`` (every valid pixel,
which includes the training areas, so it flatters the model).

With validity rasters (:mod:`s2landcover.validity`), pixels coded cloud, cloud shadow, cirrus or
no data are left out of every metric (their reference is treated as 0), and predictions of 255
("Not observed") never count; ``metrics.json`` gets ``clouds``: whether clouds were screened and,
per scene, the source, the cloud fraction and the pixels predicted as not observed.

Every area is set beside two baselines on the same pixels (``baselines`` in ``metrics.json``):
the majority class (always predicting the class with most pixels in the training chips) and, when
its predictions are given, the pixel classifier (:mod:`s2landcover.pixel_model`) trained on the
same training chips. Classes without reference pixels in an area are listed as absent; an area
without pixels says why; a class absent or rare (< 1 % of labelled pixels) in the training chips
but present in the validation or test area or the scene is warned about (log, ``warnings``,
report).

Outputs in ``results/evaluation/size{tile}/{model}/``: ``metrics.json``, ``confusion_matrix.png``,
``training_curves.png``, ``samples.png``, ``overview_<scene>.png`` and ``report.html``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rasterio.windows import Window

from s2landcover.classes import ClassTable
from s2landcover.errors import InputError
from s2landcover.io import evaluation_io as eio
from s2landcover.io.documents import write_bytes, write_json, write_string
from s2landcover.training.digests import check_model_training_data

log = logging.getLogger(__name__)

SPLIT_AREAS = ("val", "test", "train")
WHOLE_SCENE = "whole_scene"
AREAS = (*SPLIT_AREAS, WHOLE_SCENE)
AREA_LABELS = {
    "val": "validation chips",
    "test": "test chips",
    "train": "training chips",
    WHOLE_SCENE: "whole scene (includes training areas)",
}
DEFAULT_WINDOW_SIZE = 1024


# --- confusion matrices -------------------------------------------------------------------------


def pair_codes(reference: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """Flat uint16 codes ``reference * 256 + prediction`` of two class rasters (uint8 values).

    Every (reference, prediction) pair of uint8 values has its own code, so values above K need
    no masking here: :func:`counts_of_codes` drops them when it cuts the table to 0..K.
    """
    if reference.shape != prediction.shape:
        raise ValueError(f"reference {reference.shape} and prediction {prediction.shape} differ")
    codes = _as_uint8(reference).ravel().astype(np.uint16)
    codes <<= 8
    codes |= _as_uint8(prediction).ravel()
    return codes


def _as_uint8(labels: np.ndarray) -> np.ndarray:
    # Other integer types: values outside 0..255 become 255, which is never a class (K < 255).
    if labels.dtype == np.uint8:
        return labels
    return np.where((labels < 0) | (labels > 255), 255, labels).astype(np.uint8)


def counts_of_codes(
    codes: np.ndarray, num_classes: int, where: np.ndarray | None = None
) -> np.ndarray:
    """(K + 1)² int64 table of :func:`pair_codes` codes (where ``where``, flat bool, is True)."""
    selected = codes if where is None else codes[where]
    table = np.bincount(selected, minlength=65536).reshape(256, 256)
    size = num_classes + 1
    return table[:size, :size].astype(np.int64)


def confusion_counts(
    reference: np.ndarray,
    prediction: np.ndarray,
    num_classes: int,
    where: np.ndarray | None = None,
) -> np.ndarray:
    """Counts of (reference, prediction) pairs as a (K + 1)² int64 table, no data (0) included.

    Row ``r`` / column ``p`` counts pixels with reference ``r`` and prediction ``p`` (0..K) of two
    uint8 class rasters. Pixels outside ``where`` (bool, same shape) and values above K are not
    counted.
    """
    codes = pair_codes(reference, prediction)
    return counts_of_codes(codes, num_classes, None if where is None else where.ravel())


def class_confusion(full_counts: np.ndarray) -> np.ndarray:
    """The K x K confusion matrix of classes 1..K (no-data row and column dropped)."""
    return full_counts[1:, 1:]


def confusion_matrix(
    reference: np.ndarray, prediction: np.ndarray, num_classes: int, where: np.ndarray | None = None
) -> np.ndarray:
    """K x K confusion matrix (rows = reference 1..K, cols = prediction 1..K), no data excluded."""
    return class_confusion(confusion_counts(reference, prediction, num_classes, where))


def metrics_from_confusion(matrix: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """Per-class and overall metrics of a K x K confusion matrix (rows reference, cols prediction).

    Per class: IoU = TP / (TP + FP + FN), F1 (= Dice) = 2 TP / (2 TP + FP + FN), precision
    TP / (TP + FP), recall TP / (TP + FN), support (reference pixels) and predicted pixels; a ratio
    with a zero denominator is NaN. ``miou`` and ``mean_f1`` average the classes present in the
    reference or the prediction (NaN classes left out); ``overall_accuracy`` = trace / total.
    """
    matrix = np.asarray(matrix, dtype=np.int64)
    if matrix.shape != (len(class_names), len(class_names)):
        raise ValueError(
            f"confusion matrix {matrix.shape} does not match {len(class_names)} classes"
        )
    tp = np.diag(matrix).astype(float)
    support = matrix.sum(axis=1).astype(float)
    predicted = matrix.sum(axis=0).astype(float)
    fp, fn = predicted - tp, support - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = tp / (tp + fp + fn)
        f1 = 2 * tp / (2 * tp + fp + fn)
        precision = tp / predicted
        recall = tp / support
    total = int(matrix.sum())
    per_class = {
        name: {
            "index": i + 1,
            "iou": float(iou[i]),
            "f1": float(f1[i]),
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "support": int(support[i]),
            "predicted": int(predicted[i]),
        }
        for i, name in enumerate(class_names)
    }
    present = (support + predicted) > 0
    return {
        "pixels": total,
        "overall_accuracy": float(tp.sum() / total) if total else float("nan"),
        "miou": float(iou[present].mean()) if present.any() else float("nan"),
        "mean_f1": float(f1[present].mean()) if present.any() else float("nan"),
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
    }


def area_metrics(full_counts: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """:func:`metrics_from_confusion` of a full (K + 1)² table, plus the no-data bookkeeping.

    ``reference_without_prediction``: pixels with a reference class but prediction 0 (the scene had
    no data there); ``prediction_without_reference``: predicted pixels where the mask is 0.
    """
    result = metrics_from_confusion(class_confusion(full_counts), class_names)
    result["reference_without_prediction"] = int(full_counts[1:, 0].sum())
    result["prediction_without_reference"] = int(full_counts[0, 1:].sum())
    return result


# --- baselines and warnings ---------------------------------------------------------------------

RARE_SHARE = 0.01  # a class below this share of the training chips' labelled pixels is rare


def training_class_counts(split_table: pd.DataFrame, num_classes: int) -> np.ndarray | None:
    """Labelled pixels per class 1..K (int64, length K) in the training chips of the split table
    (its ``px_1..px_K`` columns, from the chip index); None when the table lacks those columns."""
    columns = [f"px_{k}" for k in range(1, num_classes + 1)]
    if any(c not in split_table.columns for c in columns):
        return None
    train = split_table[split_table["split"] == "train"]
    return train[columns].to_numpy(dtype=np.int64).sum(axis=0)


def majority_confusion(matrix: np.ndarray, majority: int) -> np.ndarray:
    """The K x K confusion matrix of always predicting class ``majority`` (1..K) on the pixels of
    ``matrix`` (same reference pixels: every row's total goes to the majority column)."""
    matrix = np.asarray(matrix, dtype=np.int64)
    baseline = np.zeros_like(matrix)
    baseline[:, majority - 1] = matrix.sum(axis=1)
    return baseline


def empty_area_reason(split_table: pd.DataFrame, area: str) -> str:
    """Why an area of the split has no evaluated pixel."""
    if area == WHOLE_SCENE:
        return "no pixel has both a reference class and a prediction"
    chips = int((split_table["split"] == area).sum())
    if chips == 0:
        return (
            f"the split has no {AREA_LABELS[area]} (split.fractions.{area} is 0, or the scenes "
            "have too few spatial blocks of split.block_size to give this split one)"
        )
    return (
        f"the {chips} {AREA_LABELS[area]} hold no pixel with both a reference class and a "
        "prediction (all no data)"
    )


def rare_class_warnings(
    training_counts: np.ndarray | None,
    area_supports: Mapping[str, np.ndarray],
    class_names: Sequence[str],
    rare_share: float = RARE_SHARE,
) -> list[str]:
    """Warnings for classes absent or rare (< ``rare_share`` of labelled pixels) in the training
    chips but present in an evaluated area (``area_supports``: reference pixels per class)."""
    if training_counts is None or training_counts.sum() == 0:
        return []
    shares = training_counts / training_counts.sum()
    warnings = []
    for i, name in enumerate(class_names):
        present = [area for area, support in area_supports.items() if support[i] > 0]
        if shares[i] >= rare_share or not present:
            continue
        where = ", ".join(f"{AREA_LABELS[a]} {int(area_supports[a][i]):,} px" for a in present)
        what = (
            "absent from the training chips"
            if training_counts[i] == 0
            else f"rare in the training chips ({100 * shares[i]:.2f} % of labelled pixels, "
            f"{int(training_counts[i]):,} px)"
        )
        warnings.append(
            f"class {name} is {what} but present in the {where}: the model can hardly learn it "
            "(the training chips are those the filter kept in the split's training blocks)"
        )
    return warnings


def mark_absent_classes(metrics: dict[str, Any]) -> dict[str, Any]:
    """Add ``absent`` to each class (no reference pixel in the area) and ``absent_classes``."""
    absent = []
    for name, values in metrics["per_class"].items():
        values["absent"] = values["support"] == 0
        if values["absent"]:
            absent.append(name)
    metrics["absent_classes"] = absent
    return metrics


# --- areas of the split -----------------------------------------------------------------------


def chip_windows(split_table: pd.DataFrame, scene: str, split: str) -> np.ndarray:
    """(n, 4) int64 (row_off, col_off, height, width) of the chips of ``scene`` in ``split``."""
    rows = split_table[(split_table["scene"] == scene) & (split_table["split"] == split)]
    return rows[["row_off", "col_off", "height", "width"]].to_numpy(dtype=np.int64).reshape(-1, 4)


def area_mask(window: Window, chips: np.ndarray) -> np.ndarray:
    """Bool (h, w) mask of the pixels of ``window`` covered by at least one chip window.

    ``chips`` is (n, 4) (row_off, col_off, height, width) in the same pixel grid as ``window``.
    Overlapping chips set the same pixels, so each pixel counts once. Memory: one bool window.
    """
    row0, col0 = int(window.row_off), int(window.col_off)
    height, width = int(window.height), int(window.width)
    mask = np.zeros((height, width), dtype=bool)
    if len(chips) == 0:
        return mask
    top = np.clip(chips[:, 0] - row0, 0, height)
    bottom = np.clip(chips[:, 0] + chips[:, 2] - row0, 0, height)
    left = np.clip(chips[:, 1] - col0, 0, width)
    right = np.clip(chips[:, 1] + chips[:, 3] - col0, 0, width)
    for t, b, lft, r in zip(top, bottom, left, right, strict=True):
        if b > t and r > lft:
            mask[t:b, lft:r] = True
    return mask


def accumulate_area_counts(
    blocks: Iterable[tuple[Window, np.ndarray, np.ndarray]],
    chips_by_area: Mapping[str, np.ndarray],
    num_classes: int,
) -> dict[str, np.ndarray]:
    """Sum full (K + 1)² confusion tables over ``(window, reference, prediction)`` blocks, per area.

    ``chips_by_area`` maps an area name to its (n, 4) chip windows; the area ``whole_scene`` (every
    pixel) is always added. Memory: one block and one bool mask at a time.
    """
    size = num_classes + 1
    totals = {
        name: np.zeros((size, size), dtype=np.int64) for name in [*chips_by_area, WHOLE_SCENE]
    }
    for window, reference, prediction in blocks:
        codes = pair_codes(reference, prediction)
        totals[WHOLE_SCENE] += counts_of_codes(codes, num_classes)
        for name, chips in chips_by_area.items():
            mask = area_mask(window, chips)
            if mask.any():
                totals[name] += counts_of_codes(codes, num_classes, mask.ravel())
    return totals


# --- clouds ---------------------------------------------------------------------------------------


def cloud_summary(names: Sequence[str], validity: Mapping[str, Path] | None) -> dict[str, Any]:
    """``metrics.json``'s ``clouds``: screened (bool) and per scene source and cloud fraction."""
    from s2landcover.validity import read_validity_info

    validity = validity or {}
    missing = [n for n in names if validity and n not in validity]
    if missing:
        raise InputError(
            f"evaluate: no validity raster for scene(s) {missing}; got {sorted(validity)} "
            "(files are matched by name: {scene}.tif)"
        )
    scenes: dict[str, Any] = {}
    for name in names:
        if name in validity:
            info = read_validity_info(validity[name])
            scenes[name] = {**info, "not_observed_pixels": 0, "excluded_reference_pixels": 0}
        else:
            scenes[name] = {"source": "none", "screened": False, "cloud_fraction": None}
    return {
        "screened": bool(scenes) and all(s["screened"] for s in scenes.values()),
        "cloud_fraction_definition": "cloud, cloud shadow or cirrus pixels / pixels with data",
        "scenes": scenes,
    }


def screened_blocks(
    blocks: Iterable[tuple[Window, np.ndarray, np.ndarray]],
    validity_path: Path,
    scene_info: dict[str, Any],
) -> Iterator[tuple[Window, np.ndarray, np.ndarray]]:
    """``blocks`` with the reference set to 0 where the validity raster is invalid (cloud, shadow,
    cirrus, no data); counts those reference pixels and the predictions of 255 in ``scene_info``."""
    from s2landcover.classes import NOT_OBSERVED
    from s2landcover.validity import invalid_pixels, read_validity_window

    for window, reference, prediction in blocks:
        invalid = invalid_pixels(read_validity_window(validity_path, window))
        scene_info["excluded_reference_pixels"] += int(np.count_nonzero(invalid & (reference > 0)))
        scene_info["not_observed_pixels"] += int(np.count_nonzero(prediction == NOT_OBSERVED))
        yield window, np.where(invalid, 0, reference).astype(reference.dtype), prediction


def baselines_of(
    totals: Mapping[str, np.ndarray],
    baseline_counts: Mapping[str, Mapping[str, np.ndarray]],
    names: Sequence[str],
    split_table: pd.DataFrame,
    class_names: Sequence[str],
) -> dict[str, Any]:
    """``baselines`` of metrics.json: ``majority`` (the most frequent class of the training chips,
    scored on each area's pixels) and ``pixel`` (the pixel classifier's maps, when given)."""
    k = len(class_names)
    counts = training_class_counts(split_table, k)
    source = "chip index of the training chips (px_1..px_K)"
    if counts is None or counts.sum() == 0:
        counts = class_confusion(totals["train"]).sum(axis=1)
        source = "reference pixels of the training area"
    result: dict[str, Any] = {}
    if counts.sum() > 0:
        majority = int(np.argmax(counts)) + 1
        result["majority"] = {
            "description": f"always predict {class_names[majority - 1]}, the most frequent class "
            f"of the training chips ({source})",
            "class": class_names[majority - 1],
            "index": majority,
            "training_share": float(counts[majority - 1] / counts.sum()),
            "training_pixels": {n: int(c) for n, c in zip(class_names, counts, strict=True)},
            "areas": {
                area: mark_absent_classes(
                    metrics_from_confusion(
                        majority_confusion(class_confusion(totals[area]), majority), class_names
                    )
                )
                for area in AREAS
            },
        }
    else:
        result["majority"] = {"description": "no labelled training pixel", "areas": {}}
    if baseline_counts:
        pixel_totals = {
            area: np.sum([baseline_counts[s][area] for s in names], axis=0) for area in AREAS
        }
        result["pixel"] = {
            "description": "pixel classifier (LightGBM on reflectance and NDVI/NDWI/NDBI) trained "
            "on pixels of the same training chips",
            "areas": {
                area: mark_absent_classes(area_metrics(pixel_totals[area], class_names))
                for area in AREAS
            },
        }
    else:
        result["pixel"] = {
            "description": "not run: evaluation.pixel_baseline is false, or the model is itself "
            "the pixel classifier",
            "areas": {},
        }
    return result


def baseline_series(
    metrics: Mapping[str, Any], class_names: Sequence[str]
) -> dict[str, dict[str, dict[str, float]]]:
    """IoU per class and mIoU of the model and each baseline, per evaluated val / test area (the
    input of :func:`s2landcover.plots.baseline_comparison_figure`)."""
    result: dict[str, dict[str, dict[str, float]]] = {}
    for area in ("val", "test"):
        model = metrics["areas"][area]
        if model["pixels"] == 0:
            continue
        sources = {"model": model}
        for name, baseline in metrics.get("baselines", {}).items():
            if baseline.get("areas", {}).get(area):
                sources[name] = baseline["areas"][area]
        result[AREA_LABELS[area]] = {
            name: {
                **{c: m["per_class"][c]["iou"] for c in class_names},
                "mIoU": m["miou"],
            }
            for name, m in sources.items()
        }
    return result


KEY_NUMBERS_FILE = "key_numbers.tsv"


def key_numbers_tsv(metrics: Mapping[str, Any]) -> str:
    """Tab-separated key numbers (Snakemake's report shows them as a table): a row per area with
    the model's mIoU, overall accuracy, mean F1 and pixels, each baseline's mIoU on the same
    pixels, then the IoU of each class. Empty cells: not defined (no pixels)."""

    def cell(value: Any) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return ""
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    class_names = list(metrics["class_names"])
    baselines = metrics.get("baselines", {})
    shown = [b for b in ("pixel", "majority") if baselines.get(b, {}).get("areas")]
    header = ["area", "miou", "overall_accuracy", "mean_f1", "pixels"]
    header += [f"{b}_baseline_miou" for b in shown] + [f"iou_{n}" for n in class_names]
    lines = ["\t".join(header)]
    for area in ("val", "test", WHOLE_SCENE):
        m = metrics["areas"][area]
        row = [area, *(cell(m.get(k)) for k in ("miou", "overall_accuracy", "mean_f1", "pixels"))]
        row += [cell(baselines[b]["areas"][area].get("miou")) for b in shown]
        row += [cell(m["per_class"][n]["iou"]) for n in class_names]
        lines.append("\t".join(row))
    return "\n".join(lines) + "\n"


# --- sample chips ---------------------------------------------------------------------------------


def select_sample_chips(
    split_table: pd.DataFrame, count: int, num_classes: int
) -> tuple[pd.DataFrame, str]:
    """Up to ``count`` chips to show, from the val split (else test, else train), and that split.

    Chips with more classes present (``px_1..px_K`` columns, when there) and fewer no-data pixels
    come first; scenes take turns so each appears; chips overlapping one already chosen are taken
    only when nothing else is left. Deterministic for a given table.
    """
    for split in ("val", "test", "train"):
        chips = split_table[split_table["split"] == split].copy()
        if len(chips):
            break
    else:
        return split_table.iloc[:0], "none"
    if count <= 0:
        return split_table.iloc[:0], split
    px = [f"px_{i}" for i in range(1, num_classes + 1) if f"px_{i}" in chips.columns]
    chips["_classes"] = (chips[px] > 0).sum(axis=1) if px else 0
    chips["_valid"] = chips["valid_fraction"] if "valid_fraction" in chips.columns else 1.0
    sort_by = ["_classes", "_valid", "scene", "row_off", "col_off"]
    chips = chips.sort_values(sort_by, ascending=[False, False, True, True, True], kind="stable")
    chips["_rank"] = chips.groupby("scene").cumcount()
    chips = chips.sort_values(
        ["_rank", "_classes", "_valid", "scene"], ascending=[True, False, False, True]
    )
    chips = chips.drop(columns=["_classes", "_valid", "_rank"])
    picked = _without_overlaps(chips, count)
    if len(picked) < count:
        picked += [i for i in range(len(chips)) if i not in set(picked)][: count - len(picked)]
    chosen = chips.iloc[picked]
    return chosen.sort_values(["scene", "row_off", "col_off"]).reset_index(drop=True), split


def _without_overlaps(chips: pd.DataFrame, count: int) -> list[int]:
    """Positions of up to ``count`` chips, in table order, none overlapping an earlier pick."""
    picked: list[int] = []
    boxes: list[tuple[str, int, int, int, int]] = []
    columns = ["scene", "row_off", "col_off", "height", "width"]
    for position, (scene, row, col, height, width) in enumerate(
        chips[columns].itertuples(index=False)
    ):
        if any(
            s == scene and row < r + h and r < row + height and col < c + w and c < col + width
            for s, r, c, h, w in boxes
        ):
            continue
        picked.append(position)
        boxes.append((scene, row, col, height, width))
        if len(picked) == count:
            break
    return picked


# --- the stage ------------------------------------------------------------------------------------


def _check_scenes(
    predictions: Mapping[str, Path], masks: Mapping[str, Path], scenes: Mapping[str, Path]
) -> list[str]:
    names = sorted(predictions)
    if not names:
        raise InputError("evaluate: no prediction given; expected one predicted GeoTIFF per scene")
    for label, paths in (("mask", masks), ("scene stack", scenes)):
        missing = [n for n in names if n not in paths]
        if missing:
            raise InputError(
                f"evaluate: no {label} for scene(s) {missing}; got {label}s for {sorted(paths)} "
                f"(files are matched by name: {{scene}}.tif)"
            )
    return names


def evaluate_model(
    predictions: Mapping[str, Path],
    masks: Mapping[str, Path],
    scenes: Mapping[str, Path],
    split_path: str | Path,
    model_dir: str | Path,
    out_dir: str | Path,
    classes: ClassTable,
    evaluation_cfg: Mapping[str, Any],
    window_size: int = DEFAULT_WINDOW_SIZE,
    validity: Mapping[str, Path] | None = None,
    baseline_predictions: Mapping[str, Path] | None = None,
    run_config: Mapping[str, Any] | None = None,
    benchmarks_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate the predicted maps of a run against the masks; write metrics, figures, report.

    Keys of ``predictions``, ``masks`` and ``scenes`` (and ``baseline_predictions``, the pixel
    baseline's maps, optional) are scene names; the rasters of one scene
    share one grid (pixel windows of ``split.parquet`` are in that grid): chip windows come from
    the split table, pixels from the rasters (the chip stores hold the same pixels).
    Memory: one ``window_size``² window of two uint8 rasters plus the sample chips and the decimated
    overviews (``evaluation.overview_size`` pixels a side), independent of scene size.
    ``validity`` maps scene names to validity rasters (None or empty: clouds not screened).
    ``run_config`` (the validated config sections of the run) and ``benchmarks_dir`` (Snakemake's
    benchmark files) feed the report's provenance block (:mod:`s2landcover.provenance`).
    Besides ``report.html`` and ``metrics.json`` it writes ``key_numbers.tsv`` (a row per area),
    ``confusion_matrix.png``, ``training_curves.png`` (when ``metrics.csv`` exists),
    ``overview_<scene>.png``, ``samples.png`` (when ``evaluation.sample_chips`` > 0) and
    ``baselines.png`` (when ``baseline_predictions`` are given).
    Returns a summary: mIoU and overall accuracy per area and the paths written.

    Raises:
        InputError: when ``model_dir/model.pt`` records training on another split table (or class
            table) than ``split_path`` (a stale model); ``metrics.json`` key ``training_data``
            says whether the check matched or could not be made (``"unknown"``: no record).
    """
    from s2landcover import plots, report
    from s2landcover.provenance import collect_provenance

    out_dir = Path(out_dir)
    names = _check_scenes(predictions, masks, scenes)
    split_table = eio.read_split_table(split_path)
    # A model trained on another split would be scored on its own training chips: refuse it.
    training_data = check_model_training_data(
        Path(model_dir) / "model.pt", split_path, classes.to_dict()
    )
    class_names = list(classes.names)
    k = classes.num_classes

    per_scene_counts: dict[str, dict[str, np.ndarray]] = {}
    clouds = cloud_summary(names, validity)
    for scene in names:
        chips_by_area = {area: chip_windows(split_table, scene, area) for area in SPLIT_AREAS}
        blocks = eio.iter_label_windows(predictions[scene], masks[scene], window_size)
        if validity and scene in validity:
            blocks = screened_blocks(blocks, validity[scene], clouds["scenes"][scene])
        per_scene_counts[scene] = accumulate_area_counts(blocks, chips_by_area, k)
        log.info(
            "evaluated %s: %d valid pixels",
            scene,
            int(per_scene_counts[scene][WHOLE_SCENE][1:, 1:].sum()),
        )

    baseline_counts: dict[str, dict[str, np.ndarray]] = {}
    if baseline_predictions:
        missing = [n for n in names if n not in baseline_predictions]
        if missing:
            raise InputError(
                f"evaluate: no pixel-baseline prediction for scene(s) {missing}; got "
                f"{sorted(baseline_predictions)} (files are matched by name: {{scene}}.tif)"
            )
        for scene in names:
            chips_by_area = {area: chip_windows(split_table, scene, area) for area in SPLIT_AREAS}
            blocks = eio.iter_label_windows(baseline_predictions[scene], masks[scene], window_size)
            baseline_counts[scene] = accumulate_area_counts(blocks, chips_by_area, k)

    totals = {area: np.sum([per_scene_counts[s][area] for s in names], axis=0) for area in AREAS}
    metrics: dict[str, Any] = {
        "classes": [
            {"index": i, "name": n, "color": c}
            for i, n, c in zip(classes.indices, classes.names, classes.colors, strict=True)
        ],
        "class_names": class_names,
        "confusion_matrix_layout": (
            "rows = reference class 1..K, columns = predicted class 1..K, no data excluded"
        ),
        "area_descriptions": {
            "val": "union of the validation chip windows (a pixel counts once)",
            "test": "union of the test chip windows (a pixel counts once)",
            "train": "union of the training chip windows (a pixel counts once)",
            WHOLE_SCENE: "every pixel with a reference class and a prediction; "
            "includes training areas",
        },
        "areas": {area: area_metrics(totals[area], class_names) for area in AREAS},
        "clouds": clouds,
        "scenes": {
            scene: {
                area: area_metrics(per_scene_counts[scene][area], class_names) for area in AREAS
            }
            for scene in names
        },
    }
    scene_tables = {scene: split_table[split_table["scene"] == scene] for scene in names}
    for area_set, table in [
        (metrics["areas"], split_table),
        *((metrics["scenes"][scene], scene_tables[scene]) for scene in names),
    ]:
        for area in AREAS:
            mark_absent_classes(area_set[area])
            if area_set[area]["pixels"] == 0:
                area_set[area]["empty_reason"] = empty_area_reason(table, area)
    metrics["baselines"] = baselines_of(totals, baseline_counts, names, split_table, class_names)
    supports = {
        area: class_confusion(totals[area]).sum(axis=1)
        for area in ("val", "test", WHOLE_SCENE)
        if totals[area].sum() > 0
    }
    metrics["warnings"] = rare_class_warnings(
        training_class_counts(split_table, k), supports, class_names
    )
    for warning in metrics["warnings"]:
        log.warning("%s", warning)

    figures: dict[str, bytes] = {}
    figures["confusion_matrix.png"] = plots.figure_png(
        plots.confusion_matrix_figure(
            {
                AREA_LABELS[a]: np.asarray(metrics["areas"][a]["confusion_matrix"])
                for a in ("val", "test", WHOLE_SCENE)
                if metrics["areas"][a]["pixels"] > 0 or a == WHOLE_SCENE
            },
            class_names,
        )
    )
    comparison = baseline_series(metrics, class_names)
    if baseline_predictions:  # the majority alone: tables only
        figures["baselines.png"] = plots.figure_png(
            plots.baseline_comparison_figure(comparison, class_names)
        )
    training = eio.read_training_metrics(model_dir)
    if training is not None:
        figures["training_curves.png"] = plots.figure_png(
            plots.training_curves_figure(training, class_names, classes.colors)
        )
    else:
        log.warning("no metrics.csv in %s: training curves skipped", model_dir)

    overview_size = int(evaluation_cfg["overview_size"])
    stretches: dict[str, np.ndarray] = {}
    for scene in names:
        reflectance, valid = eio.read_true_colour_overview(scenes[scene], overview_size)
        stretches[scene] = plots.percentile_limits(reflectance, valid)
        overview = plots.overview_figure(
            plots.true_colour(reflectance, valid, stretches[scene]),
            eio.read_labels_overview(predictions[scene], overview_size),
            eio.read_labels_overview(masks[scene], overview_size),
            classes,
            title=f"{scene}: whole scene (decimated)",
        )
        figures[f"overview_{scene}.png"] = plots.figure_png(overview)

    sample_table, sample_split = select_sample_chips(
        split_table[split_table["scene"].isin(names)], int(evaluation_cfg["sample_chips"]), k
    )
    if len(sample_table) or int(evaluation_cfg["sample_chips"]) > 0:
        samples = []
        for chip in sample_table.to_dict("records"):
            scene = str(chip["scene"])
            row_off, col_off = int(chip["row_off"]), int(chip["col_off"])
            window = Window(col_off, row_off, int(chip["width"]), int(chip["height"]))
            reflectance, valid = eio.read_true_colour(scenes[scene], window)
            samples.append(
                plots.SampleChip(
                    title=f"{scene} r{row_off} c{col_off}",
                    true_colour=plots.true_colour(reflectance, valid, stretches[scene]),
                    reference=eio.read_labels(masks[scene], window),
                    prediction=eio.read_labels(predictions[scene], window),
                )
            )
        figures["samples.png"] = plots.figure_png(
            plots.sample_chips_figure(samples, classes, split=sample_split)
        )

    for name, data in figures.items():
        write_bytes(data, out_dir / name)
    metrics["figures"] = sorted(figures)
    metrics["training_data"] = training_data
    metrics["provenance"] = collect_provenance(run_config, model_dir, scenes, benchmarks_dir)
    write_string(key_numbers_tsv(metrics), out_dir / KEY_NUMBERS_FILE)
    write_json(metrics, out_dir / "metrics.json", nan="null")  # undefined metrics: null
    html = report.report_html(
        metrics, figures, title=f"Land-cover evaluation: {out_dir.parent.name}/{out_dir.name}"
    )
    write_string(html, out_dir / "report.html")
    summary = {
        f"{area}_{key}": metrics["areas"][area][key]
        for area in AREAS
        for key in ("miou", "overall_accuracy")
    }
    for name, baseline in metrics["baselines"].items():
        if baseline.get("areas"):
            for area in ("val", "test"):
                summary[f"{area}_{name}_miou"] = baseline["areas"][area]["miou"]
    summary["report"] = str(out_dir / "report.html")
    return summary
