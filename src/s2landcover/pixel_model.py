"""A classical pixel classifier: gradient-boosted trees (LightGBM) on reflectance and indices.

The baseline every report sets the network beside, and a model of its own
(``model.architecture: pixel_gbm``) for users without a GPU: it trains in seconds to minutes and
maps a scene with the same streaming output contract as the U-Net (:mod:`s2landcover.predict`).

Features per pixel: the configured bands as surface reflectance (``stored * scale + offset``, the
scene's own GDAL scale/offset, as the U-Net sees them before standardisation) plus, when their
bands are configured, NDVI = (B08 - B04) / (B08 + B04), NDWI (McFeeters) = (B03 - B08) / (B03 +
B08) and NDBI = (B11 - B08) / (B11 + B08) (0 where the denominator is 0).

Training pixels: sampled from the **training chips only** (``split == "train"`` of the split
table), never class 0 (no data) nor pixels where the image has no data. ``model.pixel.samples``
pixels are drawn in one pass over the chips, each labelled pixel kept with a probability per class:
``balanced`` gives every class present an equal quota (a class with fewer pixels gives all it has;
what is left goes to the others), ``proportional`` keeps the training distribution. A pixel covered
by several overlapping chips is counted once. The validation chips give a second, proportional
sample on which the number of boosting rounds is chosen: training stops 20 rounds after the
validation log loss last fell, and the model keeps the fewest rounds whose validation mIoU is within
0.001 of the best (as the U-Net keeps its best epoch; fewer trees predict faster).

The model file: ``model.pt`` of the project's checkpoint format (:mod:`s2landcover.io.checkpoints`,
read with ``weights_only=True``: tensors and plain values only, never unpickled code),
with no tensors and the metadata prediction needs (bands, scales, classes and colours, ...) plus
``booster``, LightGBM's own plain-text model (``Booster.model_to_string``: the trees as numbers,
documented and stable across LightGBM versions, parsed, never executed). scikit-learn's forests and
histogram boosting can only be saved by pickling (or skops, not a dependency), which a model file
that users exchange must not need.

Prediction streams bands of rows (about a megapixel each) through the trees: memory grows with the
scene width, never its height; output: uint8 classes 1..K, 0 where the scene has no data, colour
table and class names, a COG (:class:`s2landcover.io.prediction_writer.StreamingRasterWriter`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from s2landcover.classes import ClassTable
from s2landcover.errors import InputError
from s2landcover.radiometry import to_reflectance, valid_pixels

log = logging.getLogger(__name__)

PIXEL_ARCHITECTURES = ("pixel_gbm",)
ENCODER = "lightgbm"
INDICES = {  # name: (a, b) for (a - b) / (a + b)
    "NDVI": ("B08", "B04"),
    "NDWI": ("B03", "B08"),
    "NDBI": ("B11", "B08"),
}
EVAL_EVERY = 10  # boosting rounds between two validation scores
# Rounds kept: the fewest whose validation mIoU is within this of the best (prediction time grows
# with the rounds; on Aberystwyth 20 rounds score 0.9971 against 0.9977 for 90, 4.5x faster).
ROUNDS_TOLERANCE = 0.001
EARLY_STOPPING_ROUNDS = 20  # rounds without a lower validation log loss before training stops
ROWS_PIXELS = 2**20  # pixels per band of rows in prediction


def is_pixel_architecture(architecture: str) -> bool:
    """True for the architectures this module trains (``pixel_gbm``)."""
    return str(architecture).lower() in PIXEL_ARCHITECTURES


def pixel_settings(model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``model.pixel`` of the validated config (which fills its defaults in)."""
    return dict(model_cfg["pixel"])


def baseline_rule_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config sections the workflow's pixel baseline reads: the classes, bands, tile size and
    task, the seed, and a model section of architecture ``pixel_gbm`` with ``model.pixel`` (so a
    change of the network's settings does not re-train the baseline)."""
    return {
        **{key: config[key] for key in ("classes", "bands", "tile_size", "task")},
        "model": {
            "name": "pixel-baseline",
            "architecture": PIXEL_ARCHITECTURES[0],
            "pixel": pixel_settings(config["model"]),
        },
        "training": {"seed": config["training"]["seed"]},
    }


# --- features ---------------------------------------------------------------------------------


def _index_inputs(bands: Sequence[str]) -> list[tuple[str, str, str]]:
    """(feature name, band a, band b) of every index whose two bands are among ``bands``. For the
    dated names of a stack (``2024-04-15:B08``) each date gets its own indices
    (``2024-04-15:NDVI``): a stacked model sees each season's NDVI."""
    prefixes = list(dict.fromkeys(b.rpartition(":")[0] for b in bands))
    found = []
    for prefix in prefixes:
        dated = f"{prefix}:" if prefix else ""
        for name, (a, b) in INDICES.items():
            if f"{dated}{a}" in bands and f"{dated}{b}" in bands:
                found.append((f"{dated}{name}", f"{dated}{a}", f"{dated}{b}"))
    return found


def feature_names(bands: Sequence[str]) -> list[str]:
    """Band names, then the indices whose bands are among ``bands`` (per date for a stack)."""
    return [*bands, *[name for name, _, _ in _index_inputs(bands)]]


def lightgbm_feature_names(names: Sequence[str]) -> list[str]:
    """Feature names LightGBM accepts (it refuses JSON's special characters such as ':' in a
    stack's dated names): each character outside letters, digits, '_' and '-' becomes '_'. The
    model file keeps the real names (``features``)."""
    return ["".join(c if c.isalnum() or c in "_-" else "_" for c in name) for name in names]


def pixel_features(reflectance: np.ndarray, bands: Sequence[str]) -> np.ndarray:
    """Reflectance (C, N) of ``bands`` -> features (N, F) float32 in :func:`feature_names` order."""
    reflectance = np.asarray(reflectance, dtype=np.float32)
    indices = _index_inputs(bands)
    out = np.empty((reflectance.shape[1], len(bands) + len(indices)), dtype=np.float32)
    out[:, : len(bands)] = reflectance.T
    position = {b: i for i, b in enumerate(bands)}
    for j, (_, band_a, band_b) in enumerate(indices, start=len(bands)):
        a, b = reflectance[position[band_a]], reflectance[position[band_b]]
        total = a + b
        with np.errstate(divide="ignore", invalid="ignore"):
            out[:, j] = np.where(total != 0, (a - b) / total, 0.0)
    return out


# --- sampling ----------------------------------------------------------------------------------


def class_quotas(counts: np.ndarray, total: int, sampling: str) -> np.ndarray:
    """Pixels to draw per class (float, length K) from ``counts`` available per class.

    ``balanced``: equal shares among classes with pixels, capped by what a class has, the rest
    shared among the others (water filling); ``proportional``: ``total`` spread like ``counts``.
    """
    counts = np.asarray(counts, dtype=float)
    if counts.sum() <= total:
        return counts.copy()
    if sampling == "proportional":
        return counts * total / counts.sum()
    if sampling != "balanced":
        raise InputError(f"model.pixel.sampling is {sampling!r}; expected balanced or proportional")
    quotas = np.zeros_like(counts)
    open_ = counts > 0
    left = float(total)
    while open_.any():
        share = left / open_.sum()
        small = open_ & (counts - quotas <= share)
        if not small.any():
            quotas[open_] += share
            break
        left -= float((counts[small] - quotas[small]).sum())
        quotas[small] = counts[small]
        open_ &= ~small
    return quotas


def _chip_class_counts(chips: pd.DataFrame, num_classes: int) -> np.ndarray:
    columns = [f"px_{k}" for k in range(1, num_classes + 1)]
    if all(c in chips.columns for c in columns):
        return chips[columns].to_numpy(dtype=np.int64).sum(axis=0)
    return np.zeros(num_classes, dtype=np.int64)


def sample_pixels(
    chips: pd.DataFrame,
    chips_root: str | Path,
    bands: Sequence[str],
    num_classes: int,
    samples: int,
    sampling: str,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Features (n, F) float32 and classes (n,) int64 (1..K) of about ``samples`` pixels.

    One pass over ``chips`` (rows of the split table: scene, store_index, row_off, col_off), chip by
    chip from each scene's chip store: memory is one chip plus the sample. Deterministic for
    ``seed``. Pixels with class 0 or image no data are never drawn.
    """
    from s2landcover.io.chipstore import ChipStore

    counts = _chip_class_counts(chips, num_classes)
    if counts.sum() == 0:  # no per-class columns: count from the masks (one extra pass)
        counts = np.zeros(num_classes, dtype=np.int64)
        for scene, group in chips.groupby(chips["scene"].astype(str), sort=True):
            store = ChipStore(Path(chips_root) / scene)
            for i in group["store_index"].to_numpy(dtype=np.int64):
                counts += np.bincount(store.masks[i].ravel(), minlength=256)[1 : num_classes + 1]
    quotas = class_quotas(counts, samples, sampling)
    with np.errstate(divide="ignore", invalid="ignore"):
        keep_p = np.where(counts > 0, np.minimum(1.0, quotas / counts), 0.0)
    keep_p = np.concatenate([[0.0], keep_p, np.zeros(256 - num_classes - 1)])
    rng = np.random.default_rng(seed)
    features: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    for scene, group in chips.groupby(chips["scene"].astype(str), sort=True):
        store = ChipStore(Path(chips_root) / scene)
        if list(store.bands) != list(bands):
            raise InputError(
                f"chip store {store.chip_dir} has bands {store.bands}, the config's bands are "
                f"{list(bands)}; re-run tiling (and ingest) with the configured bands"
            )
        scales, offsets = store.meta["scales"], store.meta["offsets"]
        nodata = store.meta.get("nodata")
        width = int(store.meta["width"])
        seen: set[int] = set()
        ordered = group.sort_values("store_index")[["store_index", "row_off", "col_off"]]
        for i, row_off, col_off in ordered.to_numpy(dtype=np.int64).tolist():
            image, mask = np.asarray(store.images[i]), np.asarray(store.masks[i])
            labelled = (mask > 0) & valid_pixels(image, nodata)
            draw = labelled & (rng.random(mask.shape) < keep_p[mask])
            rows, cols = np.nonzero(draw)
            if len(rows) == 0:
                continue
            ids = (rows + row_off) * width + cols + col_off
            new = np.fromiter((pid not in seen for pid in ids.tolist()), bool, len(ids))
            seen.update(ids[new].tolist())
            rows, cols = rows[new], cols[new]
            reflectance = to_reflectance(image[:, rows, cols], scales, offsets)
            features.append(pixel_features(reflectance, bands))
            labels.append(mask[rows, cols].astype(np.int64))
    if not features:
        return np.zeros((0, len(feature_names(bands))), np.float32), np.zeros(0, np.int64)
    return np.concatenate(features), np.concatenate(labels)


# --- training ----------------------------------------------------------------------------------


def passive_openmp() -> None:
    """Let OpenMP threads wait passively unless the user chose otherwise (``OMP_WAIT_POLICY``).

    Threads that spin while they wait make LightGBM several times slower than one thread when the
    cores are shared (measured on 2 cores at load 6: Aberystwyth training 75 s against 9 s). The
    OpenMP runtime reads the variable once, when it starts (torch's import starts it), so this
    takes effect only when called before torch is imported: ``s2lc train`` calls
    :func:`train_pixel_model` first thing.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _lightgbm() -> Any:
    passive_openmp()
    try:
        import lightgbm
    except ImportError as error:  # pragma: no cover - a pinned dependency
        raise InputError(
            "model.architecture pixel_gbm needs the lightgbm package (pip install lightgbm)"
        ) from error
    return lightgbm


def _threads(threads: int | None) -> int:
    return int(threads) if threads else max(1, len(os.sched_getaffinity(0)))


def scores_of(predicted: np.ndarray, reference: np.ndarray, names: Sequence[str]) -> dict:
    """Metrics (:func:`s2landcover.evaluate.metrics_from_confusion`) of class vectors 1..K."""
    from s2landcover.evaluate import confusion_matrix, metrics_from_confusion

    return metrics_from_confusion(confusion_matrix(reference, predicted, len(names)), names)


def train_pixel_model(
    split_path: str | Path,
    chips_root: str | Path,
    out_dir: str | Path,
    config: Mapping[str, Any],
    threads: int | None = None,
) -> dict[str, Any]:
    """Train the pixel classifier on the training chips; write ``model.pt``, ``metrics.csv``,
    ``curves.png`` in ``out_dir`` (the U-Net's model-folder contract).

    ``metrics.csv`` has a row per ``EVAL_EVERY`` boosting rounds (column ``epoch`` = rounds):
    ``train_loss`` / ``val_loss`` (multi-class log loss of the samples), ``val_miou``,
    ``val_accuracy`` and ``val_iou_<class>`` on the validation sample. ``model.pt`` keeps the
    fewest rounds within :data:`ROUNDS_TOLERANCE` of the best validation mIoU (all rounds when
    there are no validation chips).

    Raises:
        InputError: no training chips, no labelled training pixel, a task other than segmentation.
    """
    passive_openmp()  # before anything imports torch
    from s2landcover.io import evaluation_io as eio
    from s2landcover.io.checkpoints import save_model_checkpoint, write_training_metrics
    from s2landcover.io.chipstore import ChipStore
    from s2landcover.io.documents import write_bytes

    started = time.perf_counter()
    lgb = _lightgbm()
    split_path, chips_root, out_dir = Path(split_path), Path(chips_root), Path(out_dir)
    if config["task"] != "segmentation":
        raise InputError(
            f"model.architecture {config['model']['architecture']!r} maps pixels; it needs "
            f"task: segmentation (got {config['task']!r})"
        )
    settings = pixel_settings(config["model"])
    classes = ClassTable.from_config(config["classes"])
    names = list(classes.names)
    k = classes.num_classes
    bands = list(config["bands"])
    seed = int(config["training"]["seed"])
    split = eio.read_split_table(split_path)
    train_chips = split[split["split"] == "train"]
    val_chips = split[split["split"] == "val"]
    if len(train_chips) == 0:
        raise InputError(
            f"split table {split_path} has no chip with split == 'train'; nothing to train on"
        )
    x_train, y_train = sample_pixels(
        train_chips, chips_root, bands, k, int(settings["samples"]), settings["sampling"], seed
    )
    if len(y_train) == 0:
        raise InputError(
            f"the {len(train_chips)} training chips of {split_path} hold no labelled pixel "
            "(class 1..K with image data); nothing to train on"
        )
    x_val, y_val = sample_pixels(
        val_chips, chips_root, bands, k, int(settings["samples"]), "proportional", seed + 1
    )
    per_class = np.bincount(y_train, minlength=k + 1)[1:]
    log.info(
        "pixel model: %d training pixels (%s), %d validation pixels, %d features",
        len(y_train),
        ", ".join(f"{n} {c}" for n, c in zip(names, per_class, strict=True)),
        len(y_val),
        x_train.shape[1],
    )
    params = {
        "objective": "multiclass",
        "num_class": k,
        "num_leaves": int(settings["num_leaves"]),
        "learning_rate": float(settings["learning_rate"]),
        "num_threads": _threads(threads),
        "seed": seed,
        "deterministic": True,
        "force_col_wise": True,
        "verbose": -1,
    }
    fnames = feature_names(bands)
    train_set = lgb.Dataset(
        x_train, label=y_train - 1, feature_name=lightgbm_feature_names(fnames), free_raw_data=False
    )
    valid_sets, valid_names = [train_set], ["train"]
    record: dict[str, Any] = {}
    callbacks = [lgb.record_evaluation(record)]
    if len(y_val):
        valid_sets.append(lgb.Dataset(x_val, label=y_val - 1, reference=train_set))
        valid_names.append("val")
        callbacks.append(lgb.early_stopping(EARLY_STOPPING_ROUNDS, verbose=False))
    booster = lgb.train(
        params,
        train_set,
        num_boost_round=int(settings["iterations"]),
        valid_sets=valid_sets,
        valid_names=valid_names,
        callbacks=callbacks,
    )
    rounds = booster.current_iteration()
    rows = []
    best_rounds, best_miou = rounds, -math.inf
    raw = np.zeros((len(y_val), k))  # validation scores summed round block by round block
    done = 0
    for n in sorted({*range(EVAL_EVERY, rounds + 1, EVAL_EVERY), rounds}):
        row: dict[str, float] = {
            "epoch": n,
            "train_loss": record["train"]["multi_logloss"][n - 1],
        }
        if len(y_val):
            row["val_loss"] = record["val"]["multi_logloss"][n - 1]
            raw += booster.predict(
                x_val, start_iteration=done, num_iteration=n - done, raw_score=True
            ).reshape(len(y_val), k)
            done = n
            predicted = raw.argmax(axis=1) + 1
            scores = scores_of(predicted, y_val, names)
            row["val_miou"], row["val_accuracy"] = scores["miou"], scores["overall_accuracy"]
            for name in names:
                row[f"val_iou_{name}"] = scores["per_class"][name]["iou"]
        rows.append(row)
    if len(y_val):  # the fewest rounds within ROUNDS_TOLERANCE of the best validation mIoU
        best_miou = max(row["val_miou"] for row in rows)
        best_rounds = next(
            int(row["epoch"]) for row in rows if row["val_miou"] >= best_miou - ROUNDS_TOLERANCE
        )

    first = str(train_chips["scene"].astype(str).iloc[0])
    store = ChipStore(chips_root / first)
    transform = store.meta["transform"]
    reflectance = x_train[:, : len(bands)]
    metadata = {
        "task": "segmentation",
        "architecture": str(config["model"]["architecture"]).lower(),
        "encoder": ENCODER,
        "model_name": config["model"].get("name", ""),
        "bands": bands,
        "scales": [float(s) for s in store.meta["scales"]],
        "offsets": [float(o) for o in store.meta["offsets"]],
        "nodata": store.meta.get("nodata"),
        "mean": [float(v) for v in reflectance.mean(axis=0)],
        "std": [float(v) for v in reflectance.std(axis=0)],
        "classes": classes.to_dict(),
        "tile_size": int(store.meta.get("tile_size", config["tile_size"])),
        "resolution": float(math.hypot(transform[0], transform[3])),
        "crs": str(store.meta.get("crs", "")),
        "features": fnames,
        "pixel": settings,
        "rounds": best_rounds,
        "training_pixels": {n: int(c) for n, c in zip(names, per_class, strict=True)},
        "lightgbm_version": lgb.__version__,
        "booster": booster.model_to_string(num_iteration=best_rounds),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    save_model_checkpoint(out_dir / "model.pt", {}, metadata)
    table = pd.DataFrame(rows)
    write_training_metrics(out_dir / "metrics.csv", table)
    from s2landcover import plots

    figure = plots.training_curves_figure(table, names, classes.colors)
    figure.axes[0].set_xlabel("boosting rounds")
    write_bytes(plots.figure_png(figure), out_dir / "curves.png")
    seconds = time.perf_counter() - started
    log.info(
        "pixel model: %d rounds kept (best validation mIoU %.3f), trained in %.1f s",
        best_rounds,
        best_miou,
        seconds,
    )
    return {
        "model": str(out_dir / "model.pt"),
        "architecture": metadata["architecture"],
        "training_pixels": len(y_train),
        "validation_pixels": len(y_val),
        "rounds": best_rounds,
        "best_val_miou": best_miou if math.isfinite(best_miou) else math.nan,
        "seconds": round(seconds, 2),
    }


# --- the model file ----------------------------------------------------------------------------


class PixelModel:
    """A loaded pixel classifier: its metadata and LightGBM booster (parsed from plain text)."""

    def __init__(self, metadata: Mapping[str, Any], source: str = "model") -> None:
        lgb = _lightgbm()
        self.metadata = dict(metadata)
        self.bands = list(metadata["bands"])
        self.classes = ClassTable.from_dict(metadata["classes"])
        if list(metadata.get("features", [])) != feature_names(self.bands):
            raise InputError(
                f"{source}: features {metadata.get('features')} do not match the bands "
                f"{self.bands} (expected {feature_names(self.bands)})"
            )
        try:
            self.booster = lgb.Booster(model_str=str(metadata["booster"]))
        except Exception as error:
            raise InputError(f"{source}: the LightGBM model text cannot be read: {error}") from None
        if self.booster.num_model_per_iteration() != self.classes.num_classes:
            raise InputError(
                f"{source}: the trees score {self.booster.num_model_per_iteration()} classes, "
                f"the class table has {self.classes.num_classes}"
            )

    def probabilities(
        self,
        stored: np.ndarray,
        scales: Sequence[float],
        offsets: Sequence[float],
        threads: int | None = None,
    ) -> np.ndarray:
        """Class probabilities (K, ...) float32 of stored values (C, ...) of the model's bands."""
        shape = stored.shape[1:]
        flat = stored.reshape(stored.shape[0], -1)
        features = pixel_features(to_reflectance(flat, scales, offsets), self.bands)
        if len(features) == 0:
            return np.zeros((self.classes.num_classes, *shape), np.float32)
        prob = self.booster.predict(features, num_threads=_threads(threads))
        return prob.T.astype(np.float32).reshape(self.classes.num_classes, *shape)


def load_pixel_model(path: str | Path) -> PixelModel:
    """Load ``model.pt`` of a pixel model (no unpickling: read with ``weights_only=True``).

    Raises:
        InputError: a missing or corrupt file, or a checkpoint that is not a pixel model.
    """
    from s2landcover.io.checkpoints import load_model_checkpoint

    _, metadata = load_model_checkpoint(path)
    if not is_pixel_architecture(metadata["architecture"]) or "booster" not in metadata:
        raise InputError(
            f"checkpoint {path} is a {metadata['architecture']!r} model, not a pixel model "
            f"({', '.join(PIXEL_ARCHITECTURES)})"
        )
    return PixelModel(metadata, source=f"checkpoint {path}")


def checkpoint_is_pixel_model(path: str | Path) -> bool:
    """True when ``path`` is a checkpoint of a pixel model (False for other or unreadable files:
    the caller's own loader then reports those)."""
    from s2landcover.io.checkpoints import load_model_checkpoint

    try:
        _, metadata = load_model_checkpoint(path)
    except InputError:
        return False
    return is_pixel_architecture(metadata.get("architecture", ""))


# --- prediction --------------------------------------------------------------------------------


def _row_bands(scene: Any, rows: int) -> Iterator[tuple[int, np.ndarray]]:
    from s2landcover.io.prediction_writer import read_row_bands

    return read_row_bands(scene, list(range(0, scene.grid.height, rows)), rows)


def predict_scene_pixels(
    checkpoint_path: str | Path,
    scene_path: str | Path,
    out_path: str | Path,
    prediction_cfg: Mapping[str, Any],
    threads: int | None = None,
    progress: bool = True,
    validity_path: str | Path | None = None,
) -> dict[str, Any]:
    """Map a whole scene with a pixel model into a land-cover Cloud-Optimized GeoTIFF.

    The output contract of :func:`s2landcover.predict.predict_scene`: uint8 classes 1..K, 0 where
    every band holds the scene's no-data value, on exactly the scene's grid, colour table and class
    names, a COG; with ``prediction.confidence`` also ``<stem>_confidence.tif`` (largest class
    probability x 255, 0 where no data). Window, overlap, blend and tta do not apply to a pixel
    model. With ``validity_path`` (the scene's validity raster, same grid), pixels it codes cloud,
    shadow, cirrus or no data become 255 "Not observed" (confidence 0), as in the U-Net's maps.
    Memory: a band of about a megapixel of rows (its features and probabilities).

    Raises:
        InputError: a bad model file, a scene lacking a band or at another resolution.
    """
    from s2landcover.predict import (
        BackgroundConsumer,
        SceneOutputs,
        open_scene_for_model,
        prefetch,
    )

    started = time.perf_counter()
    scene_path, out_path = Path(scene_path), Path(out_path)
    model = load_pixel_model(checkpoint_path)
    scene, classes = open_scene_for_model(
        scene_path, out_path, {**model.metadata, "bands": model.bands}, model.classes, validity_path
    )
    rows = max(1, ROWS_PIXELS // scene.grid.width)
    with_confidence = bool(prediction_cfg["confidence"])
    log.info(
        "predicting %s (%s) with pixel model %s, %d rows at a time",
        scene_path,
        scene.grid.describe(),
        checkpoint_path,
        rows,
    )
    with SceneOutputs(out_path, scene, classes, with_confidence, validity_path) as outputs:
        writer = BackgroundConsumer(outputs.write)
        try:
            bands = prefetch(lambda: _row_bands(scene, rows), depth=2)
            with contextlib.closing(bands):
                for row_off, stored in bands:
                    prob = model.probabilities(stored, scene.scales, scene.offsets, threads)
                    valid = valid_pixels(stored, scene.nodata)
                    labels = np.where(valid, prob.argmax(axis=0) + 1, 0).astype(np.uint8)
                    conf = None
                    if with_confidence:
                        top = np.clip(np.round(prob.max(axis=0) * 255), 1, 255)
                        conf = np.where(valid, top, 0).astype(np.uint8)
                    writer.put((row_off, labels, conf))
                    if progress:
                        log.info("rows %d / %d", row_off + len(labels), scene.grid.height)
        finally:
            writer.close()
    seconds = time.perf_counter() - started
    megapixels = scene.grid.width * scene.grid.height / 1e6
    log.info("wrote %s in %.1f s (%.2f Mpx/s)", out_path, seconds, megapixels / seconds)
    return {
        **outputs.summary(),  # out, confidence, class_pixels, validity, not_observed_pixels
        "width": scene.grid.width,
        "height": scene.grid.height,
        "model": "pixel",
        "seconds": round(seconds, 3),
        "megapixels_per_second": round(megapixels / seconds, 4),
    }
