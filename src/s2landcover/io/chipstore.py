"""The chip store (one folder per scene and tile size, fast random reads), chip tables, footprints.

Layout of ``results/chips/size{tile}/{scene}/`` (the contract between tiling and training):

- ``images.npy``: (N, C, T, T) uint16 stored values of the scene (np.save format, read with
  ``np.load(mmap_mode="r")``: a chip read is one contiguous slice of the file, no decoding),
- ``masks.npy``: (N, T, T) uint8 class indices (0 = no data),
- ``index.parquet``: one row per chip, row i <-> store position i (see :data:`INDEX_COLUMNS`),
- ``meta.json``: scene, bands, scales, offsets, nodata, crs, transform (GDAL order a, b, c, d, e, f
  of the affine transform of the scene, pixel -> CRS units), width, height, tile_size, stride, edge.

Reading: :class:`ChipStore`. Writing: :class:`ChipStoreWriter` (chips written by position with
``os.pwrite`` from several threads into a preallocated ``.npy`` file, so the writer holds no chip in
memory; page cache aside). Also the tables of the filter and split stages (``selected.parquet``,
``split.parquet``, JSON summaries) and the footprint GeoPackage that QGIS opens.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from affine import Affine

from s2landcover.errors import InputError
from s2landcover.io.documents import read_json, write_json
from s2landcover.io.qgis_styles import split_qml, style_path, write_gpkg_default_styles, write_qml
from s2landcover.io.rasters import atomic_path

IMAGES_FILE = "images.npy"
MASKS_FILE = "masks.npy"
INDEX_FILE = "index.parquet"
META_FILE = "meta.json"

# Columns of index.parquet (then px_0..px_K, and scl_fraction_0..11 when an SCL band was given).
INDEX_COLUMNS = (
    "chip_id",
    "scene",
    "store_index",
    "row_off",
    "col_off",
    "height",
    "width",
    "stride",
    "minx",
    "miny",
    "maxx",
    "maxy",
    "crs",
    "valid_fraction",
    "nodata_fraction",
    "image_nodata_fraction",
)


class ChipStore:
    """Reader of one scene's chip store folder (``results/chips/size{tile}/{scene}/``).

    ``images`` (N, C, T, T) uint16 and ``masks`` (N, T, T) uint8 are read-only memory maps, opened
    lazily (so a store can be handed to data-loader worker processes: each opens its own maps);
    ``index`` is the chip table (row i = store position i), ``meta`` the ``meta.json`` dict.
    Memory: a read copies one chip (C x T x T x 2 bytes + T x T bytes); the maps use page cache.
    """

    def __init__(self, chip_dir: str | Path) -> None:
        self.chip_dir = Path(chip_dir)
        missing = [
            name
            for name in (IMAGES_FILE, MASKS_FILE, INDEX_FILE, META_FILE)
            if not (self.chip_dir / name).is_file()
        ]
        if missing:
            raise InputError(
                f"chip store {self.chip_dir} is incomplete: missing {', '.join(missing)} "
                "(expected the output of `s2lc tile`)"
            )
        self.meta: dict[str, Any] = read_json(self.chip_dir / META_FILE)
        self.index: pd.DataFrame = pd.read_parquet(self.chip_dir / INDEX_FILE)
        self._images: np.ndarray | None = None
        self._masks: np.ndarray | None = None
        self._transform = Affine(*self.meta["transform"])
        if len(self.index) != self.images.shape[0] or self.images.shape[0] != self.masks.shape[0]:
            raise InputError(
                f"chip store {self.chip_dir} is inconsistent: {len(self.index)} index rows, "
                f"{self.images.shape[0]} images, {self.masks.shape[0]} masks "
                "(expected equal counts)"
            )

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_images"] = None  # memory maps are reopened in the receiving process
        state["_masks"] = None
        return state

    @property
    def images(self) -> np.ndarray:
        """(N, C, T, T) uint16 memory map of the stored values."""
        if self._images is None:
            self._images = np.load(self.chip_dir / IMAGES_FILE, mmap_mode="r")
        return self._images

    @property
    def masks(self) -> np.ndarray:
        """(N, T, T) uint8 memory map of the class indices (0 = no data)."""
        if self._masks is None:
            self._masks = np.load(self.chip_dir / MASKS_FILE, mmap_mode="r")
        return self._masks

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def bands(self) -> list[str]:
        """Band names in store order."""
        return list(self.meta["bands"])

    @property
    def tile_size(self) -> int:
        """Chip side in pixels."""
        return int(self.meta["tile_size"])

    def read(self, store_index: int) -> tuple[np.ndarray, np.ndarray]:
        """Chip ``store_index`` as (image (C, T, T) uint16, mask (T, T) uint8), copied."""
        if not 0 <= store_index < len(self):
            raise IndexError(
                f"chip {store_index} out of range 0..{len(self) - 1} in {self.chip_dir}"
            )
        return np.array(self.images[store_index]), np.array(self.masks[store_index])

    def transform_of(self, store_index: int) -> Affine:
        """Transform (pixel -> CRS units) of a chip: the scene's, offset by the chip's window."""
        row = self.index.iloc[store_index]
        return self._transform @ Affine.translation(int(row["col_off"]), int(row["row_off"]))

    @property
    def crs(self) -> str:
        """CRS of the scene (and of every chip), as stored in meta.json."""
        return str(self.meta["crs"])


class ChipStoreWriter:
    """Writes a chip store into a folder: preallocated ``.npy`` files filled by position.

    ``write(start, images, masks)`` may be called from several threads at once for disjoint store
    ranges (``os.pwrite`` does not move a shared file offset). ``finish`` writes index and meta.
    """

    @staticmethod
    def bytes_needed(count: int, bands: int, tile_size: int) -> int:
        """Bytes of a store of ``count`` chips (the arrays exactly, plus about 1 KB a chip of index
        and headers): what the device must have free before tiling starts."""
        return count * (tile_size * tile_size * (2 * bands + 1) + 1024) + (1 << 16)

    def __init__(self, folder: str | Path, count: int, bands: int, tile_size: int) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.count = count
        self.image_shape = (bands, tile_size, tile_size)
        self.mask_shape = (tile_size, tile_size)
        self._image_fd, self._image_offset = _preallocate(
            self.folder / IMAGES_FILE, np.dtype(np.uint16), (count, *self.image_shape)
        )
        self._mask_fd, self._mask_offset = _preallocate(
            self.folder / MASKS_FILE, np.dtype(np.uint8), (count, *self.mask_shape)
        )
        self._image_bytes = int(np.prod(self.image_shape)) * 2
        self._mask_bytes = int(np.prod(self.mask_shape))

    def write(self, start: int, images: np.ndarray, masks: np.ndarray) -> None:
        """Write chips start..start+n-1: images (n, C, T, T) uint16, masks (n, T, T) uint8."""
        if images.shape[1:] != self.image_shape or masks.shape[1:] != self.mask_shape:
            raise ValueError(f"chip shapes {images.shape}, {masks.shape} do not match the store")
        if start < 0 or start + len(images) > self.count or len(images) != len(masks):
            raise ValueError(
                f"chips {start}..{start + len(images)} outside the store of {self.count}"
            )
        _pwrite_all(
            self._image_fd,
            np.ascontiguousarray(images, dtype=np.uint16).tobytes(),
            self._image_offset + start * self._image_bytes,
        )
        _pwrite_all(
            self._mask_fd,
            np.ascontiguousarray(masks, dtype=np.uint8).tobytes(),
            self._mask_offset + start * self._mask_bytes,
        )

    def finish(self, index: pd.DataFrame, meta: Mapping[str, Any]) -> None:
        """Write index.parquet and meta.json and close the array files."""
        self.close()
        if len(index) != self.count:
            raise ValueError(f"index has {len(index)} rows for {self.count} chips")
        index.to_parquet(self.folder / INDEX_FILE, index=False)
        write_json(dict(meta), self.folder / META_FILE, nan="error")

    def close(self) -> None:
        """Close the array files (idempotent)."""
        for name in ("_image_fd", "_mask_fd"):
            fd = getattr(self, name)
            if fd is not None:
                os.close(fd)
                setattr(self, name, None)


def _preallocate(path: Path, dtype: np.dtype, shape: tuple[int, ...]) -> tuple[int, int]:
    """Create a sparse zero-filled .npy file of ``shape``; return an open fd and the data offset."""
    with open(path, "wb") as handle:
        header = {
            "descr": np.lib.format.dtype_to_descr(dtype),
            "fortran_order": False,
            "shape": shape,
        }
        np.lib.format.write_array_header_2_0(handle, header)
        offset = handle.tell()
        handle.truncate(offset + int(np.prod(shape)) * dtype.itemsize)
    return os.open(path, os.O_WRONLY), offset


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def read_chip_index(path: str | Path) -> pd.DataFrame:
    """Read a chip table (index.parquet, selected.parquet, split.parquet) with a clear error."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"chip table {path} does not exist")
    try:
        return pd.read_parquet(path)
    except Exception as error:  # pyarrow raises several types for corrupt files
        raise InputError(f"cannot read chip table {path}: {error}") from None


def write_table(table: pd.DataFrame, path: str | Path) -> Path:
    """Write a chip table as Parquet, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        table.to_parquet(tmp, index=False)
    return path


def crs_layer_name(crs: str) -> str:
    """A GeoPackage layer name for chips in ``crs`` (``chips_EPSG_32631``)."""
    return "chips_" + re.sub(r"[^A-Za-z0-9]+", "_", crs).strip("_")[:50]


def write_footprints(
    table: pd.DataFrame, path: str | Path, columns: Sequence[str]
) -> dict[str, int]:
    """Write chip footprints (polygons from minx/miny/maxx/maxy) to a GeoPackage, atomically.

    One layer ``chips`` when all chips share a CRS; otherwise one layer per CRS
    (``chips_EPSG_32631``, ...), each in its own CRS, so QGIS shows every layer where it belongs
    (reprojecting would distort chips at zone edges). Returns {layer name: feature count}.

    With a ``split`` column, each layer gets a QGIS style (outlines coloured by split, no fill:
    :func:`s2landcover.io.qgis_styles.split_qml`) as its default style in the GeoPackage's
    ``layer_styles`` table and in ``<stem>.qml`` beside the file.
    """
    import geopandas as gpd
    import shapely

    path = Path(path)
    crs_values = sorted(table["crs"].unique())
    layers: dict[str, int] = {}
    with atomic_path(path) as tmp:
        for crs in crs_values:
            part = table[table["crs"] == crs]
            geometry = shapely.box(
                part["minx"].to_numpy(), part["miny"].to_numpy(),
                part["maxx"].to_numpy(), part["maxy"].to_numpy(),
            )  # fmt: skip
            frame = gpd.GeoDataFrame(
                part[list(columns)].reset_index(drop=True), geometry=geometry, crs=crs
            )
            layer = "chips" if len(crs_values) == 1 else crs_layer_name(crs)
            frame.to_file(tmp, layer=layer, driver="GPKG", engine="pyogrio")
            layers[layer] = len(frame)
        style = split_qml(table["split"].astype(str)) if "split" in columns else None
        if style is not None:  # QGIS's default style of each layer, inside the GeoPackage
            write_gpkg_default_styles(tmp, {layer: style for layer in layers})
    if style is not None:  # and beside it, for QGIS versions or tools that read .qml files
        write_qml(style_path(path), style)
    return layers
