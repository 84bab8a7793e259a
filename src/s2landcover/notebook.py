"""Opening the pipeline's products in a notebook: lazy xarray/rioxarray arrays and pandas tables.

Everything here is lazy and dask-backed: opening a scene or a class raster reads only its header;
pixels are read chunk by chunk when a result is computed (``.compute()``, ``.plot()``, or
:func:`class_areas`), so a 10,980 x 10,980 px scene never has to fit in memory.

- :func:`open_scene`: a scene stack (``results/scenes/{scene}.tif``) as a ``(band, y, x)``
  float32 DataArray of reflectance, band names as the ``band`` coordinate, no data as NaN.
- :func:`open_classes`: a mask (``results/masks/{scene}.tif``) or a prediction
  (``results/predictions/size{tile}/{model}/{scene}.tif``) as a ``(y, x)`` uint8 DataArray of class
  codes, with class names and colours in ``attrs``.
- :func:`class_areas`: area in hectares of each class per scene and per split (train / val / test
  / excluded chips of ``split.parquet``), as a tidy pandas table.
- :func:`open_results`: the paths of one run (results folder, tile size, model name).

Arrays carry their CRS and transform (``da.rio.crs``, ``da.rio.transform()``); coordinates ``x``
and ``y`` are pixel centres in CRS units (metres for UTM).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import dask.array
import numpy as np
import pandas as pd
import rioxarray
import xarray as xr

from s2landcover.classes import NODATA_CLASS, NOT_OBSERVED, NOT_OBSERVED_COLOR, NOT_OBSERVED_NAME
from s2landcover.errors import InputError
from s2landcover.io.chipstore import read_chip_index
from s2landcover.io.rasters import open_raster

__all__ = [
    "RunResults",
    "class_areas",
    "class_colormap",
    "open_classes",
    "open_results",
    "open_scene",
]

Chunks = bool | int | str | Mapping[str, Any] | None
# Split name of the rows of class_areas that cover the whole raster (not only chips).
ALL = "all"
SQUARE_METRES_PER_HECTARE = 10_000.0
_VALUES = 256  # class rasters are uint8
# Default chunk side in pixels (rounded to the file's blocks): a 10-band float32 chunk is 40 MB.
CHUNK_PIXELS = 1024


def _open_lazy(path: Path, chunks: Chunks) -> tuple[xr.DataArray, dict[str, Any]]:
    """rioxarray's lazy DataArray of ``path`` (no masking or scaling) and the file's header."""
    with open_raster(path) as src:  # missing or unreadable file -> InputError naming it
        header = {
            "count": src.count,
            "dtypes": src.dtypes,
            "nodata": src.nodata,
            "descriptions": src.descriptions,
            "scales": src.scales,
            "offsets": src.offsets,
            "tags": src.tags(),
            "band_tags": src.tags(1) if src.count else {},
            "colormap": _colormap_or_none(src),
            "block_shape": src.block_shapes[0] if src.count else (CHUNK_PIXELS, CHUNK_PIXELS),
            "shape": (src.height, src.width),
        }
    if chunks is True:
        chunks = _default_chunks(header["block_shape"], header["shape"])
    # lock=False: every chunk read opens its own handle, so dask threads read in parallel.
    with warnings.catch_warnings():
        # "Scales/Offsets differ across bands": open_scene applies each band's own, on purpose.
        warnings.filterwarnings("ignore", message="(Scales|Offsets) differ across bands")
        # rioxarray's annotation omits "auto" and Mapping, which it passes on to dask as they are.
        lazy_chunks: Any = chunks
        data = rioxarray.open_rasterio(
            path, chunks=lazy_chunks, lock=False, masked=False, cache=False
        )
    if not isinstance(data, xr.DataArray):  # subdatasets (HDF, netCDF): not a product of ours
        raise InputError(f"{path} holds several datasets; expected a single GeoTIFF raster")
    data.attrs = {}
    data.encoding = {}
    return data, header


def _default_chunks(block: tuple[int, int], shape: tuple[int, int]) -> dict[str, int]:
    """All bands, and about :data:`CHUNK_PIXELS` a side in whole blocks of the file."""
    sizes = [max(1, CHUNK_PIXELS // b) * b for b in block]
    return {"band": -1, "y": min(sizes[0], shape[0]), "x": min(sizes[1], shape[1])}


def _colormap_or_none(src: Any) -> dict[int, tuple[int, ...]] | None:
    try:
        return src.colormap(1)
    except ValueError:  # no colour table
        return None


def open_scene(path: str | Path, chunks: Chunks = True) -> xr.DataArray:
    """A scene stack as lazy reflectance: DataArray ``(band, y, x)``, float32, dask-backed.

    The stack (``results/scenes/{scene}.tif``, written by ``s2lc ingest``) stores uint16 values with
    0 = no data and a GDAL scale and offset per band (reflectance = stored * scale + offset). Here
    no data becomes NaN and every band gets its own scale and offset; nothing is read until a
    result is computed.

    Args:
        path: the scene stack GeoTIFF.
        chunks: dask chunks, as for :func:`rioxarray.open_rasterio`: True (default) for all
            bands and about 1024 x 1024 px in whole blocks of the file, a dict such as
            ``{"band": 1, "y": 2048, "x": 2048}``, "auto", or None to read eagerly into numpy.

    Returns:
        Reflectance (unitless, about 0..1), coordinates ``band`` (band names from the file's band
        descriptions: ``B02``...), ``y`` and ``x`` (pixel centres in CRS units), CRS and transform
        on the ``rio`` accessor. ``attrs``: ``scene`` (file stem), ``path``, ``date``
        (``YYYY-MM-DD`` from the ``DATE`` tag, "" when unknown), ``product_level``, ``scales``,
        ``offsets``, ``tags`` (all dataset tags).

    Raises:
        InputError: missing or unreadable file, bands without names, duplicate band names, or a
            stack that is not uint16.
    """
    path = Path(path)
    stored, header = _open_lazy(path, chunks)
    names = list(header["descriptions"])
    if not all(names):
        raise InputError(
            f"{path} has bands without a description ({names}); expected a scene stack written "
            "by `s2lc ingest`, whose band descriptions are the band names (B02, B03, ...)"
        )
    if len(set(names)) != len(names):
        raise InputError(f"{path} has duplicate band names {names}; expected one band per name")
    if set(header["dtypes"]) != {"uint16"}:
        raise InputError(
            f"{path} holds {sorted(set(header['dtypes']))} values; expected a scene stack of "
            "uint16 (0 = no data) with a scale and offset per band"
        )
    nodata = 0 if header["nodata"] is None else header["nodata"]
    scales = np.asarray([1.0 if s is None else s for s in header["scales"]], dtype=np.float32)
    offsets = np.asarray([0.0 if o is None else o for o in header["offsets"]], dtype=np.float32)
    stored = stored.assign_coords(band=names)
    factors = xr.DataArray(scales, dims="band", coords={"band": names})
    shifts = xr.DataArray(offsets, dims="band", coords={"band": names})
    reflectance = (stored.astype(np.float32) * factors + shifts).where(stored != nodata)
    reflectance = reflectance.astype(np.float32)
    reflectance.name = "reflectance"
    reflectance.rio.write_crs(stored.rio.crs, inplace=True)
    reflectance.rio.write_transform(stored.rio.transform(), inplace=True)
    reflectance.rio.write_nodata(np.nan, encoded=False, inplace=True)
    tags = dict(header["tags"])
    reflectance.attrs.update(
        scene=path.stem,
        path=str(path),
        date=str(tags.get("DATE") or tags.get("date") or "")[:10],
        product_level=str(tags.get("PRODUCT_LEVEL", "")),
        scales=[float(s) for s in scales],
        offsets=[float(o) for o in offsets],
        units="reflectance",
        tags=tags,
    )
    return reflectance


def _class_table(path: Path, header: Mapping[str, Any]) -> tuple[dict[int, str], dict[int, str]]:
    """{value: name} and {value: '#rrggbb'} of a class raster from its metadata."""
    names: list[str] | None = None
    colors: list[str] | None = None
    table = header["tags"].get("CLASS_TABLE")
    band_tags = header["band_tags"]
    try:
        if table:  # dataset tag: classes 1..K
            parsed = json.loads(table)
            names = ["no data", *parsed["names"]]
            colors = ["#000000", *parsed["colors"]]
        elif band_tags.get("CLASS_NAMES"):  # band tags: index 0 = no data
            names = list(json.loads(band_tags["CLASS_NAMES"]))
            if band_tags.get("CLASS_COLORS"):
                colors = list(json.loads(band_tags["CLASS_COLORS"]))
    except (ValueError, KeyError, TypeError) as error:
        raise InputError(
            f"{path}: the class metadata (CLASS_TABLE / CLASS_NAMES tags) cannot be read "
            f"({error}); expected the JSON written by s2landcover"
        ) from None
    if names is None:
        raise InputError(
            f"{path} carries no class names (neither a CLASS_TABLE nor a CLASS_NAMES tag); "
            "expected a mask or prediction written by the pipeline (results/masks/{scene}.tif, "
            "results/predictions/size{tile}/{model}/{scene}.tif)"
        )
    cmap = header["colormap"] or {}
    if colors is None or len(colors) != len(names):
        colors = [
            "#{:02x}{:02x}{:02x}".format(*cmap.get(v, (128, 128, 128))[:3])
            for v in range(len(names))
        ]
    value_names = dict(enumerate(names))
    value_colors = dict(enumerate(colors))
    value_names[NODATA_CLASS] = "no data"
    if band_tags.get("NOT_OBSERVED") or NOT_OBSERVED in _named_colormap(cmap, len(names)):
        value_names[NOT_OBSERVED] = NOT_OBSERVED_NAME
        value_colors[NOT_OBSERVED] = NOT_OBSERVED_COLOR
    return value_names, value_colors


def _named_colormap(cmap: Mapping[int, tuple[int, ...]], count: int) -> set[int]:
    """Values beyond the classes that the colour table makes visible (alpha > 0, not black)."""
    return {
        v
        for v, rgba in cmap.items()
        if v >= count and len(rgba) > 3 and rgba[3] > 0 and any(rgba[:3])
    }


def open_classes(path: str | Path, chunks: Chunks = True) -> xr.DataArray:
    """A mask or a prediction as lazy class codes: DataArray ``(y, x)``, uint8, dask-backed.

    Codes: 0 = no data, 1..K the classes of the run, 255 = "Not observed" (a prediction made with a
    validity raster: cloud, cloud shadow, cirrus or no data in the scene).

    Args:
        path: ``results/masks/{scene}.tif`` or
            ``results/predictions/size{tile}/{model}/{scene}.tif``.
        chunks: dask chunks (see :func:`open_scene`).

    Returns:
        The codes with ``x``, ``y`` coordinates (pixel centres, CRS units), CRS and transform on
        the ``rio`` accessor. ``attrs``: ``scene`` (file stem), ``path``, ``class_names``
        ({code: name}, with 0 "no data" and, when the raster may hold it, 255 "Not observed"),
        ``class_colors`` ({code: "#rrggbb"}), ``tags``. :func:`class_colormap` turns them into a
        matplotlib colour map.

    Raises:
        InputError: missing or unreadable file, a file with several bands or not uint8, or one
            without the class metadata the pipeline writes (CLASS_TABLE or CLASS_NAMES tags).
    """
    path = Path(path)
    raw, header = _open_lazy(path, chunks)
    if header["count"] != 1 or header["dtypes"][0] != "uint8":
        raise InputError(
            f"{path} has {header['count']} band(s) of {header['dtypes']}; expected one uint8 band "
            "of class codes (a mask or prediction of the pipeline)"
        )
    names, colors = _class_table(path, header)
    codes = raw.squeeze("band", drop=True)
    codes.name = "class"
    codes.attrs.update(
        scene=path.stem,
        path=str(path),
        class_names=names,
        class_colors=colors,
        tags=dict(header["tags"]),
    )
    codes.rio.write_nodata(NODATA_CLASS, encoded=False, inplace=True)
    return codes


def class_colormap(codes: xr.DataArray) -> tuple[Any, Any]:
    """A matplotlib ``(ListedColormap, BoundaryNorm)`` pair for a DataArray of :func:`open_classes`.

    Use as ``codes.plot.imshow(cmap=cmap, norm=norm)``; no data (0) is transparent.
    """
    from matplotlib.colors import BoundaryNorm, ListedColormap, to_rgba

    colors = codes.attrs.get("class_colors")
    if not colors:
        raise InputError("the DataArray has no class_colors attribute; open it with open_classes")
    values = sorted(int(v) for v in colors)
    rgba = [(0.0, 0.0, 0.0, 0.0) if v == NODATA_CLASS else to_rgba(colors[v]) for v in values]
    bounds = [v - 0.5 for v in values] + [values[-1] + 0.5]
    return ListedColormap(rgba), BoundaryNorm(bounds, len(values))


def _pixel_area_ha(codes: xr.DataArray, label: str) -> float:
    """Area of one pixel in hectares, from the transform and the linear unit of a projected CRS."""
    crs = codes.rio.crs
    if crs is None:
        raise InputError(f"{label} has no CRS; cannot compute areas in hectares")
    if not crs.is_projected:
        raise InputError(
            f"{label} is in the geographic CRS {crs.to_string()}: its pixels are degrees, not "
            "metres, so areas in hectares are undefined; expected a projected CRS such as UTM "
            "(reproject with `rio.reproject`)"
        )
    t = codes.rio.transform()
    metres = crs.linear_units_factor[1]
    return abs(t.a * t.e - t.b * t.d) * metres * metres / SQUARE_METRES_PER_HECTARE


def _chip_windows(
    splits: pd.DataFrame, scene: str, codes: xr.DataArray, label: str
) -> tuple[np.ndarray, list[str]]:
    """(n, 5) int array of (row0, row1, col0, col1, split index) and the split names."""
    chips = splits[splits["scene"].astype(str) == scene]
    names = sorted(chips["split"].astype(str).unique())
    if chips.empty:
        return np.zeros((0, 5), dtype=np.int64), names
    rows = chips["row_off"].to_numpy(np.int64)
    cols = chips["col_off"].to_numpy(np.int64)
    heights = chips["height"].to_numpy(np.int64)
    widths = chips["width"].to_numpy(np.int64)
    height, width = codes.sizes["y"], codes.sizes["x"]
    outside = (rows < 0) | (cols < 0) | (rows + heights > height) | (cols + widths > width)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        name = chips["chip_id"].iloc[i] if "chip_id" in chips else f"#{i}"
        raise InputError(
            f"chip {name} of scene {scene} (rows {rows[i]}..{rows[i] + heights[i]}, "
            f"cols {cols[i]}..{cols[i] + widths[i]}) "
            f"lies outside {label} ({width} x {height} px); the split table belongs to another grid"
        )
    if {"minx", "maxy"} <= set(chips.columns):  # the chip corners must be the raster's pixels
        t = codes.rio.transform()
        x, y = t @ (float(cols[0]), float(rows[0]))
        corner = (float(chips["minx"].iloc[0]), float(chips["maxy"].iloc[0]))
        pixel = max(abs(t.a), abs(t.e))
        if abs(x - corner[0]) > pixel / 2 or abs(y - corner[1]) > pixel / 2:
            raise InputError(
                f"chip {chips['chip_id'].iloc[0] if 'chip_id' in chips else '?'} of scene {scene} "
                f"has its corner at {corner} in the split table but at ({x:.2f}, {y:.2f}) on "
                f"{label}; the split table belongs to another grid"
            )
    split_index = {name: i for i, name in enumerate(names)}
    index = chips["split"].astype(str).map(split_index).to_numpy(np.int64)
    return np.stack([rows, rows + heights, cols, cols + widths, index], axis=1), names


def _block_counts(
    block: np.ndarray, windows: np.ndarray, groups: int, block_info: Any = None
) -> np.ndarray:
    """Pixel counts per value of one chunk: row 0 the whole chunk, row 1 + s the pixels under
    chips of split s (each pixel once per split, however many of its chips overlap it)."""
    (r0, r1), (c0, c1) = block_info[0]["array-location"]
    counts = np.zeros((1, 1, groups, _VALUES), dtype=np.int64)
    counts[0, 0, 0] = np.bincount(block.ravel(), minlength=_VALUES)[:_VALUES]
    if len(windows):
        hit = windows[
            (windows[:, 0] < r1)
            & (windows[:, 1] > r0)
            & (windows[:, 2] < c1)
            & (windows[:, 3] > c0)
        ]
        for split in np.unique(hit[:, 4]):
            covered = np.zeros(block.shape, dtype=bool)
            for a, b, c, d, _ in hit[hit[:, 4] == split]:
                covered[max(a, r0) - r0 : min(b, r1) - r0, max(c, c0) - c0 : min(d, c1) - c0] = True
            counts[0, 0, 1 + split] = np.bincount(block[covered], minlength=_VALUES)[:_VALUES]
    return counts


def _scene_counts(codes: xr.DataArray, windows: np.ndarray, groups: int) -> dask.array.Array:
    """Lazy (groups, 256) pixel counts of a class DataArray, one task per chunk."""
    data = codes.data
    if not isinstance(data, dask.array.Array):
        data = dask.array.from_array(np.asarray(data), chunks=(1024, 1024))
    if data.dtype != np.uint8:
        raise InputError(
            f"{codes.attrs.get('path', 'the array')} holds {data.dtype}; expected uint8 codes"
        )
    per_chunk = data.map_blocks(
        _block_counts,
        windows,
        groups,
        new_axis=[2, 3],
        chunks=((1,) * data.numblocks[0], (1,) * data.numblocks[1], (groups,), (_VALUES,)),
        dtype=np.int64,
        meta=np.zeros((0, 0, 0, 0), dtype=np.int64),
    )
    return per_chunk.sum(axis=(0, 1))


def _read_splits(splits: pd.DataFrame | str | Path) -> pd.DataFrame:
    if isinstance(splits, pd.DataFrame):
        table, label = splits, "the split table"
    else:
        table, label = read_chip_index(splits), str(splits)
    missing = [
        c for c in ("scene", "split", "row_off", "col_off", "height", "width") if c not in table
    ]
    if missing:
        raise InputError(
            f"{label} lacks columns {missing}; expected split.parquet of `s2lc split` "
            "(results/splits/size{tile}/split.parquet)"
        )
    return table


def class_areas(
    rasters: Mapping[str, xr.DataArray | str | Path] | xr.DataArray | str | Path,
    splits: pd.DataFrame | str | Path | None = None,
    *,
    include_nodata: bool = False,
) -> pd.DataFrame:
    """Area of each class in hectares, per scene and per split, as a tidy table.

    One pass over each raster, chunk by chunk (dask): memory is a chunk per worker thread, not a
    raster. All scenes are computed together.

    Args:
        rasters: class rasters of :func:`open_classes`, or their paths: one, or a mapping
            ``{scene name: raster}`` (a single raster is named by its ``scene`` attribute).
            Masks and predictions alike.
        splits: ``results/splits/size{tile}/split.parquet`` (or its table): the chip windows
            (``row_off``, ``col_off``, ``height``, ``width`` in pixels of the scene grid) and
            their ``split`` (train, val, test, excluded). None: whole scenes only.
        include_nodata: also report value 0 (no data).

    Returns:
        Columns ``scene``, ``split`` (``"all"`` for the whole raster, else the split name),
        ``value`` (class code), ``class`` (name), ``pixels``, ``area_ha`` (hectares, from the pixel
        size in the raster's projected CRS) and ``fraction`` (of the pixels of that scene and
        split with a class, i.e. excluding no data and "Not observed"). Every class of the raster
        gets a row per scene and split, 0 when absent; "Not observed" (255) when the raster may
        hold it; codes outside the class table as ``"value N"``. A pixel under several chips of
        one split (stride < tile size) counts once for that split; a pixel under chips of two
        splits (val and test chips overlap at block edges) counts in both. Per split over all
        scenes: ``table.groupby(["split", "class"])["area_ha"].sum()``.

    Raises:
        InputError: a raster in a geographic CRS (degrees: no hectares) or without CRS; a split
            table without chip windows, or whose chips do not fit a raster's grid.
    """
    if isinstance(rasters, (xr.DataArray, str, Path)):
        one = rasters if isinstance(rasters, xr.DataArray) else open_classes(rasters)
        rasters = {str(one.attrs.get("scene", "scene")): one}
    opened = {
        str(scene): (r if isinstance(r, xr.DataArray) else open_classes(r))
        for scene, r in rasters.items()
    }
    table = None if splits is None else _read_splits(splits)
    plans = []
    for scene, codes in opened.items():
        label = str(codes.attrs.get("path", f"the raster of scene {scene}"))
        area = _pixel_area_ha(codes, label)
        if table is not None:
            windows, names = _chip_windows(table, scene, codes, label)
        else:
            windows, names = np.zeros((0, 5), dtype=np.int64), []
        plans.append((scene, codes, area, names, _scene_counts(codes, windows, 1 + len(names))))
    counted = dask.compute(*[plan[-1] for plan in plans])
    records = []
    for (scene, codes, area, names, _), counts in zip(plans, counted, strict=True):
        class_names = dict(codes.attrs.get("class_names") or {})
        for group, split in enumerate([ALL, *names]):
            row = counts[group]
            values = sorted(
                {int(v) for v in class_names if v != NODATA_CLASS}
                | {int(v) for v in np.flatnonzero(row) if v != NODATA_CLASS}
                | ({NODATA_CLASS} if include_nodata else set())
            )
            observed = sum(int(row[v]) for v in values if v not in (NODATA_CLASS, NOT_OBSERVED))
            for value in values:
                pixels = int(row[value])
                records.append(
                    {
                        "scene": scene,
                        "split": split,
                        "value": value,
                        "class": class_names.get(value, f"value {value}"),
                        "pixels": pixels,
                        "area_ha": pixels * area,
                        "fraction": (
                            pixels / observed
                            if observed and value not in (NODATA_CLASS, NOT_OBSERVED)
                            else float("nan")
                        ),
                    }
                )
    columns = ["scene", "split", "value", "class", "pixels", "area_ha", "fraction"]
    return pd.DataFrame.from_records(records, columns=columns)


@dataclass(frozen=True)
class RunResults:
    """The products of one run: ``results/`` of a workflow folder, a tile size and a model name.

    Paths follow the workflow's layout; nothing is opened until asked.
    """

    results: Path
    tile: int
    model: str

    @property
    def scenes(self) -> list[str]:
        """Scene names with a stack in ``results/scenes/`` (sorted)."""
        folder = self.results / "scenes"
        return sorted(
            p.stem
            for p in folder.glob("*.tif")
            if not p.stem.endswith("_scl") and not p.name.startswith(".")
        )

    def scene_path(self, scene: str) -> Path:
        return self.results / "scenes" / f"{scene}.tif"

    def mask_path(self, scene: str) -> Path:
        return self.results / "masks" / f"{scene}.tif"

    def prediction_path(self, scene: str) -> Path:
        return self.results / "predictions" / f"size{self.tile}" / self.model / f"{scene}.tif"

    @property
    def split_path(self) -> Path:
        return self.results / "splits" / f"size{self.tile}" / "split.parquet"

    def scene(self, scene: str, chunks: Chunks = True) -> xr.DataArray:
        """:func:`open_scene` of a scene's stack."""
        return open_scene(self.scene_path(scene), chunks)

    def mask(self, scene: str, chunks: Chunks = True) -> xr.DataArray:
        """:func:`open_classes` of a scene's reference mask."""
        return open_classes(self.mask_path(scene), chunks)

    def prediction(self, scene: str, chunks: Chunks = True) -> xr.DataArray:
        """:func:`open_classes` of the model's prediction of a scene."""
        return open_classes(self.prediction_path(scene), chunks)

    def class_areas(self, kind: str = "prediction", by_split: bool = True) -> pd.DataFrame:
        """:func:`class_areas` of every scene's ``kind`` ("prediction" or "mask"), by split."""
        if kind not in ("prediction", "mask"):
            raise InputError(f"kind = {kind!r}; expected 'prediction' or 'mask'")
        path = self.prediction_path if kind == "prediction" else self.mask_path
        rasters = {scene: path(scene) for scene in self.scenes}
        return class_areas(rasters, self.split_path if by_split else None)


def open_results(results_dir: str | Path, tile: int, model: str) -> RunResults:
    """The products of a run: :class:`RunResults` for ``results_dir`` (the workflow's ``results/``).

    Raises:
        InputError: ``results_dir`` has no ``scenes/`` folder (not a results folder).
    """
    results = Path(results_dir)
    if not (results / "scenes").is_dir():
        raise InputError(
            f"{results} has no scenes/ folder; expected the results/ folder of a workflow run"
        )
    return RunResults(results, int(tile), str(model))
