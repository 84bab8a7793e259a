"""Valid-observation raster per scene: clear / cloud / cloud shadow / cirrus / snow / no data.

``results/validity/{scene}.tif`` is a uint8 GeoTIFF on exactly the grid of the scene stack
(``results/scenes/{scene}.tif``: same CRS, transform, width, height) holding one code per pixel:

====  =============  ==========================================================================
code  name           meaning
====  =============  ==========================================================================
0     no data        the scene has no data there (or SCL 0 no data / 1 saturated or defective)
1     clear          observed surface (also: clouds not screened, ``source: none``)
2     cloud          cloud (SCL 8 medium and 9 high probability; s2cloudless above threshold)
3     cloud shadow   SCL 3
4     cirrus         SCL 10 thin cirrus
5     snow           SCL 11 snow or ice: observed (snow can be a land-cover class), so valid
====  =============  ==========================================================================

Codes 0, 2, 3 and 4 are *invalid* (:data:`INVALID_CODES`): those pixels get label 0 in chip masks
(ignored by the loss), are left out of every metric and come out of prediction as
:data:`s2landcover.classes.NOT_OBSERVED` (255, "Not observed"). The *cloud fraction* of a scene or
chip is the share of its pixels with data (code != 0) that are cloud, shadow or cirrus (2, 3, 4).

SCL classes 2 (dark area pixels) and 7 (unclassified) map to clear: Sen2Cor puts dark land cover
(conifers, wet soil, burn scars, lakes) and terrain shadow in class 2 and ambiguous but mostly
clear pixels in class 7 (19 % of the clear Barbellino date in the real test data); masking them
would remove real land cover from training and the map.

Sources (``validity.source``):

- ``scl``: the L2A scene classification band: ingest's ``{scene}_scl.tif`` when given, else the
  SCL file of the product itself (SAFE, band folder, STAC download), warped onto the scene grid with
  nearest-neighbour resampling.
- ``s2cloudless``: Sentinel Hub's LightGBM pixel classifier (PyPI ``s2cloudless``, its model ships
  in the wheel; licence CC BY-SA 4.0) on the top-of-atmosphere reflectance of B01, B02, B04, B05,
  B08, B8A, B09, B10, B11, B12 read from the product, at ``validity.s2cloudless.resolution`` metres
  (bands resampled onto that grid: average when finer, bilinear when coarser), the mask then put on
  the scene grid by nearest neighbour. It was trained on L1C (TOA) data; B10 exists only in L1C.
- ``file``: a mask raster per scene (``validity.files``), warped onto the scene grid (nearest);
  values are validity codes, or are mapped by ``validity.file_map`` (value -> code); the file's
  nodata becomes 0.
- ``none``: no raster at all; the report says that clouds were not screened.
- ``auto`` (default): the file when one is given for the scene, else SCL when the product has it,
  else s2cloudless when the product has its ten bands, else every pixel with data is 1 (clear) and
  the raster's ``VALIDITY_SOURCE`` tag says ``none`` (a warning is logged; the report says so).

Memory: one strip of ``STRIP_ROWS`` rows of the scene grid (and, for s2cloudless, a strip of the
ten bands at the detector resolution plus the whole detector-resolution mask, 1 byte a pixel:
30 MB for a 10,980 px tile at 20 m), whatever the scene size. Nothing is downloaded at run time.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine
from rasterio.enums import Resampling
from rasterio.warp import reproject
from rasterio.windows import Window

from s2landcover.errors import InputError
from s2landcover.io.qgis_styles import write_code_style
from s2landcover.io.rasters import (
    Grid,
    grid_of,
    open_raster,
    require_grid,
    warped_onto,
)
from s2landcover.io.windowed import RasterWriter
from s2landcover.windows import block_windows

log = logging.getLogger(__name__)

NODATA, CLEAR, CLOUD, SHADOW, CIRRUS, SNOW = range(6)
VALIDITY_CODES = {
    NODATA: "no data",
    CLEAR: "clear",
    CLOUD: "cloud",
    SHADOW: "cloud shadow",
    CIRRUS: "cirrus",
    SNOW: "snow",
}
VALIDITY_COLORS = {
    NODATA: (0, 0, 0, 0),
    CLEAR: (60, 160, 60, 255),
    CLOUD: (255, 255, 255, 255),
    SHADOW: (90, 60, 30, 255),
    CIRRUS: (140, 200, 255, 255),
    SNOW: (200, 120, 255, 255),
}
INVALID_CODES = (NODATA, CLOUD, SHADOW, CIRRUS)
CLOUDY_CODES = (CLOUD, SHADOW, CIRRUS)
SOURCES = ("auto", "scl", "s2cloudless", "file", "none")
# SCL code -> validity code (Sen2Cor classes 0..11; see the module docstring for 2 and 7).
SCL_TO_VALIDITY = {
    0: NODATA,
    1: NODATA,
    2: CLEAR,
    3: SHADOW,
    4: CLEAR,
    5: CLEAR,
    6: CLEAR,
    7: CLEAR,
    8: CLOUD,
    9: CLOUD,
    10: CIRRUS,
    11: SNOW,
}
S2CLOUDLESS_BANDS = ("B01", "B02", "B04", "B05", "B08", "B8A", "B09", "B10", "B11", "B12")
STRIP_ROWS = 1024


# --- codes (pure) -----------------------------------------------------------------------------


def scl_lookup() -> np.ndarray:
    """uint8 table (256) SCL value -> validity code; values above 11 are no data."""
    lut = np.zeros(256, dtype=np.uint8)
    for code, validity in SCL_TO_VALIDITY.items():
        lut[code] = validity
    return lut


def scl_to_validity(scl: np.ndarray) -> np.ndarray:
    """Validity codes (uint8, same shape) of Sentinel-2 L2A scene classification values."""
    return scl_lookup()[np.clip(scl, 0, 255).astype(np.uint8)]


def invalid_pixels(validity: np.ndarray) -> np.ndarray:
    """Bool array: True where the code is no data, cloud, cloud shadow or cirrus."""
    return np.isin(validity, INVALID_CODES)


def code_counts(validity: np.ndarray) -> np.ndarray:
    """Pixels per validity code 0..5 (int64, length 6; codes above 5 count as no data)."""
    codes = np.where(validity > SNOW, NODATA, validity).astype(np.intp).ravel()
    return np.bincount(codes, minlength=len(VALIDITY_CODES))


def cloud_fraction_of_counts(counts: Sequence[int] | np.ndarray) -> float:
    """Share of pixels with data (code != 0) that are cloud, shadow or cirrus; 0 with no data."""
    counts = np.asarray(counts, dtype=np.int64)
    observed = int(counts[1:].sum())
    return float(counts[list(CLOUDY_CODES)].sum() / observed) if observed else 0.0


def chip_validity_stats(validity: np.ndarray) -> dict[str, float]:
    """Index columns of one chip: ``cloud_fraction`` and ``validity_fraction_<code>`` (0..5)."""
    counts = code_counts(validity)
    stats = {"cloud_fraction": cloud_fraction_of_counts(counts)}
    stats.update(
        {f"validity_fraction_{c}": float(counts[c] / validity.size) for c in VALIDITY_CODES}
    )
    return stats


def map_file_values(values: np.ndarray, file_map: Mapping[int, int], path: str) -> np.ndarray:
    """Values of a user mask -> validity codes (``file_map``, or the values themselves)."""
    if file_map:
        lut = np.full(65536, 255, dtype=np.uint8)
        for value, code in file_map.items():
            lut[int(value)] = int(code)
        mapped = lut[values.astype(np.int64).clip(0, 65535)]
        unmapped = mapped == 255
        if unmapped.any():
            bad = sorted(set(np.unique(values[unmapped]).tolist()))[:5]
            raise InputError(
                f"validity mask {path} holds value(s) {bad} that validity.file_map "
                f"{dict(file_map)} does not map; map every value to a code 0..5"
            )
        return mapped
    if values.size and (values.min() < 0 or values.max() > SNOW):
        bad = sorted(set(np.unique(values[(values < 0) | (values > SNOW)]).tolist()))[:5]
        raise InputError(
            f"validity mask {path} holds value(s) {bad}; expected validity codes 0..5 "
            f"({VALIDITY_CODES}) or a validity.file_map from its values to those codes"
        )
    return values.astype(np.uint8)


# --- choosing the source -------------------------------------------------------------------------


def _product_plan(source: Mapping[str, Any] | None, bands: Sequence[str], want_scl: bool) -> Any:
    """ingest's plan of ``bands`` (and SCL) of the product, or None when it lacks them."""
    from s2landcover.ingest import plan_ingest

    if not source or not source.get("path"):
        return None
    try:
        return plan_ingest(source, list(bands), want_scl=want_scl)
    except InputError as error:
        log.debug("product %s: %s", source.get("path"), error)
        return None


def choose_source(
    validity_cfg: Mapping[str, Any],
    scene_name: str,
    source: Mapping[str, Any] | None,
    scl_path: str | Path | None = None,
) -> str:
    """The source actually used for a scene: ``scl``, ``s2cloudless``, ``file`` or ``none``.

    An explicit source that the scene cannot provide is an :class:`InputError`; ``auto`` falls
    back in the order file, SCL, s2cloudless, none (with a warning).
    """
    wanted = str(validity_cfg["source"])
    if wanted not in SOURCES:
        raise InputError(f"validity.source is {wanted!r}; expected one of {list(SOURCES)}")
    files = validity_cfg["files"]
    has_file = scene_name in files
    if wanted == "file" and not has_file:
        raise InputError(
            f"validity.source is 'file' but validity.files has no entry for scene {scene_name!r} "
            f"(entries: {sorted(files)})"
        )
    if wanted in ("file", "none"):
        return wanted
    if wanted == "auto" and has_file:
        return "file"
    has_scl = scl_path is not None or _product_plan(source, [], want_scl=True) is not None
    if wanted == "scl":
        if not has_scl:
            raise InputError(
                f"validity.source is 'scl' but scene {scene_name!r} (source "
                f"{(source or {}).get('path')}) has no scene classification band (SCL exists in "
                "L2A products only); use s2cloudless for L1C, a file, or none"
            )
        return "scl"
    if wanted == "auto" and has_scl:
        return "scl"
    has_bands = _product_plan(source, S2CLOUDLESS_BANDS, want_scl=False) is not None
    if wanted == "s2cloudless" and not has_bands:
        raise InputError(
            f"validity.source is 's2cloudless' but the product of scene {scene_name!r} "
            f"({(source or {}).get('path')}) lacks some of its bands {list(S2CLOUDLESS_BANDS)} "
            "(B10 exists in L1C products only)"
        )
    if has_bands:
        return "s2cloudless"
    log.warning(
        "scene %s: no SCL, no validity file and not the ten bands s2cloudless needs: clouds are "
        "NOT screened (every pixel with data counts as clear)",
        scene_name,
    )
    return "none"


# --- reading onto a grid -------------------------------------------------------------------------


def validity_raster_writer(out_path: str | Path, grid: Grid) -> RasterWriter:
    """The writer of a validity raster on ``grid``: uint8 codes of :data:`VALIDITY_CODES`
    (nodata :data:`NODATA`), their colour table and band description, overviews by the package's
    policy and a QGIS style ``<stem>.qml`` (a scene's and a stack's alike)."""
    return RasterWriter(
        out_path, grid, 1, "uint8", NODATA,
        colormap=VALIDITY_COLORS, descriptions=["validity code"],
        style=lambda final: write_code_style(final, VALIDITY_CODES, VALIDITY_COLORS),
    )  # fmt: skip


def validity_tags(source: str, counts: np.ndarray, **extra: Any) -> dict[str, str]:
    """The tags :func:`read_validity_info` reads: the source, the code table, the invalid codes,
    the cloud fraction and the pixels per code (``counts``), plus ``extra`` ones."""
    return {
        "VALIDITY_SOURCE": source,
        "VALIDITY_CODES": json.dumps({str(k): v for k, v in VALIDITY_CODES.items()}),
        "INVALID_CODES": json.dumps(list(INVALID_CODES)),
        "CLOUD_FRACTION": repr(cloud_fraction_of_counts(counts)),
        "PIXELS_PER_CODE": json.dumps(counts.tolist()),
        **{key: str(value) for key, value in extra.items()},
    }


def _warped(dataset: Any, grid: Grid, resampling: Resampling, nodata: float | None) -> Any:
    return warped_onto(dataset, grid, resampling, nodata, src_nodata=nodata)


def _scene_nodata(scene: Any, window: Window) -> np.ndarray:
    """True where every band of the scene stack holds its nodata value (0 when unset)."""
    stored = scene.read(window=window)
    nodata = scene.nodata if scene.nodata is not None else 0
    return (stored == nodata).all(axis=0)


def detector_grid(grid: Grid, resolution: float) -> Grid:
    """A north-up grid of ``resolution`` (CRS units) pixels covering ``grid``'s bounds."""
    left, bottom, right, top = grid.bounds
    width = max(1, math.ceil((right - left) / resolution - 1e-9))
    height = max(1, math.ceil((top - bottom) / resolution - 1e-9))
    return Grid(grid.crs, Affine(resolution, 0, left, 0, -resolution, top), width, height)


def s2cloudless_mask(
    plan: Any, grid: Grid, s2c_cfg: Mapping[str, Any], rows: int = 512
) -> tuple[np.ndarray, Grid, float]:
    """s2cloudless cloud mask (uint8 0/1) of the product's bands on a detector grid over ``grid``.

    ``plan`` is ingest's plan of :data:`S2CLOUDLESS_BANDS`; reflectance = stored * scale + offset.
    Returns (mask, detector grid, mean cloud probability of pixels with data). Strips of ``rows``
    detector rows are classified with a margin so averaging and dilation see their neighbours.
    """
    from s2cloudless import S2PixelCloudDetector

    resolution = float(s2c_cfg["resolution"])
    threshold = float(s2c_cfg["threshold"])
    average_over = int(s2c_cfg["average_over"])
    dilation = int(s2c_cfg["dilation_size"])
    detector = S2PixelCloudDetector(
        threshold=threshold,
        all_bands=False,
        average_over=average_over or None,
        dilation_size=dilation or None,
    )
    dgrid = detector_grid(grid, resolution)
    margin = 2 * (average_over + dilation) + 2
    mask = np.zeros((dgrid.height, dgrid.width), dtype=np.uint8)
    prob_sum, prob_n = 0.0, 0
    if str(getattr(plan, "level", "")).upper() == "L2A":
        log.warning("s2cloudless was trained on L1C top-of-atmosphere data; this product is L2A")
    datasets = [open_raster(b.path) for b in plan.bands]
    try:
        vrts = []
        for band, dataset in zip(plan.bands, datasets, strict=True):
            native = abs(dataset.transform.a)
            resampling = Resampling.average if native < resolution - 1e-6 else Resampling.bilinear
            nodata = band.src_nodata if band.src_nodata is not None else None
            vrts.append(_warped(dataset, dgrid, resampling, nodata))
        for row in range(0, dgrid.height, rows):
            top = max(0, row - margin)
            bottom = min(dgrid.height, row + rows + margin)
            window = Window(0, top, dgrid.width, bottom - top)
            stored = [
                v.read(band.index, window=window) for v, band in zip(vrts, plan.bands, strict=True)
            ]
            data = np.stack(
                [
                    s.astype(np.float32) * np.float32(b.scale) + np.float32(b.offset)
                    for s, b in zip(stored, plan.bands, strict=True)
                ],
                axis=-1,
            )
            nodata = np.zeros(data.shape[:2], dtype=bool)
            for s, b in zip(stored, plan.bands, strict=True):
                nodata |= s == (b.src_nodata if b.src_nodata is not None else 0)
            probs = detector.get_cloud_probability_maps(data[None])
            probs[0][nodata] = 0.0
            strip_mask = detector.get_mask_from_prob(probs)[0]
            keep = slice(row - top, row - top + min(rows, dgrid.height - row))
            mask[row : row + min(rows, dgrid.height - row)] = strip_mask[keep]
            valid = ~nodata[keep]
            prob_sum += float(probs[0][keep][valid].sum())
            prob_n += int(valid.sum())
        for v in vrts:
            v.close()
    finally:
        for dataset in datasets:
            dataset.close()
    return mask, dgrid, prob_sum / prob_n if prob_n else 0.0


def _mask_on_grid(mask: np.ndarray, mgrid: Grid, grid: Grid, window: Window) -> np.ndarray:
    """Nearest-neighbour values of ``mask`` (on ``mgrid``) at the pixels of ``window``."""
    out = np.zeros((int(window.height), int(window.width)), dtype=np.uint8)
    reproject(
        mask,
        out,
        src_transform=mgrid.transform,
        src_crs=mgrid.crs,
        dst_transform=grid.window_transform(window),
        dst_crs=grid.crs,
        resampling=Resampling.nearest,
    )
    return out


# --- the stage -----------------------------------------------------------------------------------


def write_validity(
    scene_path: str | Path,
    out_path: str | Path,
    validity_cfg: Mapping[str, Any],
    scene_name: str,
    source: Mapping[str, Any] | None = None,
    scl_path: str | Path | None = None,
) -> dict[str, Any]:
    """Write the validity raster of one scene on the grid of its scene stack.

    Args:
        scene_path: the scene stack (its grid and no-data pixels).
        out_path: the validity GeoTIFF (uint8 codes of :data:`VALIDITY_CODES`, colour table, tags
            ``VALIDITY_SOURCE``, ``VALIDITY_CODES``, ``CLOUD_FRACTION``); written atomically.
        validity_cfg: the validated ``validity`` section.
        scene_name: the scene's name (for ``validity.files``).
        source: the scene's product source (``type``, ``path``, ...), as ingest reads it.
        scl_path: ingest's SCL band on the scene grid, when it wrote one.

    Returns a summary: source, cloud fraction, pixels per code, seconds.
    """
    started = time.perf_counter()
    chosen = choose_source(validity_cfg, scene_name, source, scl_path)
    if chosen == "none" and validity_cfg["source"] == "none":
        raise InputError("validity.source is 'none': no validity raster is made")
    with open_raster(scene_path) as scene:
        grid = grid_of(scene)
    extra_tags: dict[str, str] = {}
    detector: tuple[np.ndarray, Grid] | None = None
    reader: Any = None
    file_map = {int(k): int(v) for k, v in validity_cfg["file_map"].items()}
    if chosen == "scl":
        path = scl_path or _product_plan(source, [], want_scl=True).scl.path
        extra_tags["VALIDITY_INPUT"] = str(path)
        reader = ("scl", str(path))
    elif chosen == "file":
        path = str(validity_cfg["files"][scene_name])
        extra_tags["VALIDITY_INPUT"] = path
        reader = ("file", path)
    elif chosen == "s2cloudless":
        s2c_cfg = dict(validity_cfg["s2cloudless"])
        plan = _product_plan(source, S2CLOUDLESS_BANDS, want_scl=False)
        mask, dgrid, mean_prob = s2cloudless_mask(plan, grid, s2c_cfg)
        detector = (mask, dgrid)
        extra_tags.update(
            VALIDITY_INPUT=str((source or {}).get("path")),
            S2CLOUDLESS=json.dumps(
                {
                    "version": _s2cloudless_version(),
                    "licence": "CC BY-SA 4.0",
                    **{k: s2c_cfg[k] for k in sorted(s2c_cfg)},
                }
            ),
            S2CLOUDLESS_MEAN_PROBABILITY=f"{mean_prob:.4f}",
        )
    counts = np.zeros(len(VALIDITY_CODES), dtype=np.int64)
    out_path = Path(out_path)
    with open_raster(scene_path) as scene, contextlib.ExitStack() as sources:
        source_ds = sources.enter_context(open_raster(reader[1])) if reader is not None else None
        vrt = None
        if source_ds is not None:
            vrt = sources.enter_context(
                _warped(source_ds, grid, Resampling.nearest, source_ds.nodata)
            )
        with validity_raster_writer(out_path, grid) as writer:
            for window in block_windows(grid.width, grid.height, grid.width, STRIP_ROWS):
                if vrt is not None and reader is not None and reader[0] == "scl":
                    codes = scl_to_validity(vrt.read(1, window=window))
                elif vrt is not None and reader is not None:
                    values = vrt.read(1, window=window, masked=True)
                    codes = map_file_values(values.filled(0), file_map, reader[1])
                    codes[np.ma.getmaskarray(values)] = NODATA
                elif detector is not None:
                    cloudy = _mask_on_grid(detector[0], detector[1], grid, window)
                    codes = np.where(cloudy > 0, CLOUD, CLEAR).astype(np.uint8)
                else:
                    codes = np.full((int(window.height), int(window.width)), CLEAR, np.uint8)
                codes[_scene_nodata(scene, window)] = NODATA
                counts += code_counts(codes)
                writer.write(window, codes)
            fraction = cloud_fraction_of_counts(counts)
            writer.tags.update(validity_tags(chosen, counts, **extra_tags))
    summary = {
        "out": str(out_path),
        "scene": scene_name,
        "source": chosen,
        "cloud_fraction": fraction,
        "pixels": {VALIDITY_CODES[c]: int(n) for c, n in enumerate(counts)},
        "seconds": round(time.perf_counter() - started, 3),
    }
    log.info(
        "%s: validity from %s, cloud fraction %.1f %% of pixels with data",
        scene_name,
        chosen,
        100 * fraction,
    )
    return summary


def _s2cloudless_version() -> str:
    from importlib.metadata import version

    return version("s2cloudless")


def read_validity_info(path: str | Path) -> dict[str, Any]:
    """Source, cloud fraction and pixels per code stored in a validity raster's tags."""
    with open_raster(path) as src:
        tags = src.tags()
    if "VALIDITY_SOURCE" not in tags:
        raise InputError(
            f"{path} is not a validity raster of `s2lc validity` (no VALIDITY_SOURCE tag)"
        )
    counts = json.loads(tags.get("PIXELS_PER_CODE", "[]"))
    return {
        "source": tags["VALIDITY_SOURCE"],
        "cloud_fraction": float(tags.get("CLOUD_FRACTION", "nan")),
        "screened": tags["VALIDITY_SOURCE"] != "none",
        "pixels": {VALIDITY_CODES[c]: int(n) for c, n in enumerate(counts)},
    }


def read_validity_window(path: str | Path, window: Window) -> np.ndarray:
    """Validity codes of one window (uint8)."""
    with open_raster(path) as src:
        return src.read(1, window=window)


def check_validity_grid(path: str | Path, grid: Grid, what: str) -> None:
    """:class:`InputError` unless the validity raster at ``path`` is exactly on ``grid``."""
    require_grid(
        path,
        grid,
        "validity raster",
        what,
        "expected the same CRS, transform and size (run s2lc validity on that scene stack)",
    )
