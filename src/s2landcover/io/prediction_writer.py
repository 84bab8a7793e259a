"""Files of whole-scene prediction: the scene's bands by name, row bands read in order, and the
streamed uint8 output raster turned into a Cloud-Optimized GeoTIFF.

Reading: :func:`inspect_scene_bands` matches the model's band names to the scene's band
descriptions (never by position) and collects each band's GDAL scale and offset (stored value ->
reflectance) and the no-data value; :func:`read_row_bands` yields bands of rows of those bands in
model order, one read per band of rows (so overlapping windows do not read a block twice).

Writing: :class:`StreamingRasterWriter` receives finished rows in order, buffers them to whole block
rows and hands them to the package's one raster writer
(:class:`~s2landcover.io.windowed.RasterWriter`): a tiled stage GeoTIFF beside the output, at the
end re-encoded by GDAL's COG driver (overviews by the package's policy built from the stage,
internal tiles, DEFLATE) at a temporary name that is renamed to the output only when everything
succeeded. Memory: one
block row (block height x scene width bytes) plus GDAL's block cache; never the scene height.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.windows import Window

from s2landcover.classes import ClassTable
from s2landcover.errors import InputError
from s2landcover.io.qgis_styles import write_class_style, write_confidence_style
from s2landcover.io.rasters import (
    BLOCK_SIZE,
    Grid,
    grid_of,
    open_raster,
)
from s2landcover.io.windowed import RasterWriter


@dataclass(frozen=True)
class SceneBands:
    """Where the model's bands are in a scene stack and how their stored values become reflectance.

    ``indexes`` are 1-based band indexes of the file, in the model's band order; ``scales`` and
    ``offsets`` are the scene's own (reflectance = stored * scale + offset); ``nodata`` is the
    stored no-data value (None when the file declares none). ``grid`` is in the scene's CRS.
    """

    path: str
    names: tuple[str, ...]
    indexes: tuple[int, ...]
    scales: tuple[float, ...]
    offsets: tuple[float, ...]
    nodata: float | None
    grid: Grid


def inspect_scene_bands(scene_path: str | Path, band_names: Sequence[str]) -> SceneBands:
    """Find ``band_names`` (the model's bands, in model order) among the scene's band descriptions.

    Raises:
        InputError: when the scene cannot be read, has no band names, or lacks one of the bands.
    """
    with open_raster(scene_path) as src:
        descriptions = list(src.descriptions)
        by_name = {name: i + 1 for i, name in enumerate(descriptions) if name}
        if not by_name:
            raise InputError(
                f"scene {scene_path} has no band descriptions; expected the band names "
                f"{list(band_names)} as descriptions (the scene stack written by ingest has them)"
            )
        missing = [name for name in band_names if name not in by_name]
        if missing:
            raise InputError(
                f"scene {scene_path} lacks band(s) {missing} that the model needs; the scene has "
                f"{[d for d in descriptions if d]}, the model was trained on {list(band_names)}"
            )
        indexes = tuple(by_name[name] for name in band_names)
        scales = tuple(float(src.scales[i - 1]) for i in indexes)
        offsets = tuple(float(src.offsets[i - 1]) for i in indexes)
        nodata = src.nodatavals[indexes[0] - 1]
        return SceneBands(
            path=str(scene_path),
            names=tuple(band_names),
            indexes=indexes,
            scales=scales,
            offsets=offsets,
            nodata=None if nodata is None else float(nodata),
            grid=grid_of(src),
        )


def read_row_bands(
    scene: SceneBands,
    row_starts: Sequence[int],
    band_height: int,
    reuse: bool = False,
    threads: int = 1,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(row_off, stored)`` per start: rows ``[row_off, row_off + band_height)`` (clipped to
    the scene) of the model's bands, ``stored`` shaped (C, rows, scene width), the file's dtype.

    Opens its own dataset handle, so it may run in a reader thread. Memory: one band of rows.
    ``reuse``: every band is read into the same array (no page faults for a fresh one each
    time), so a consumer must be done with a band before it asks for the next. ``threads`` > 1:
    GDAL decodes the blocks of one read on that many threads (the GeoTIFF driver's
    ``NUM_THREADS`` open option; a band of rows spans many compressed blocks).
    """
    buffer: np.ndarray | None = None
    options = {"num_threads": str(threads)} if threads > 1 else {}
    with open_raster(scene.path, **options) as src:
        dtype = src.dtypes[scene.indexes[0] - 1]
        for row_off in row_starts:
            rows = min(band_height, scene.grid.height - row_off)
            window = Window(0, row_off, scene.grid.width, rows)
            shape = (len(scene.indexes), rows, scene.grid.width)
            out = None
            if reuse:
                if buffer is None or buffer.shape != shape:
                    buffer = np.empty(shape, dtype=dtype)
                out = buffer
            yield row_off, src.read(indexes=list(scene.indexes), window=window, out=out)


def bounded_block_cache(width: int, bands: int, itemsize: int = 2) -> rasterio.Env:
    """A rasterio environment whose GDAL block cache holds about three block rows of the scene
    (its ``bands`` of ``itemsize`` bytes plus the uint8 output) and never more than that.

    GDAL's default cache (5 % of RAM) keeps every block read or written until it is full, so the
    memory of a run would grow with the scene height up to that size; bounding it keeps peak memory
    a function of the scene width. Three block rows avoid decoding a block twice when consecutive
    bands of rows share a block row.
    """
    block_row = BLOCK_SIZE * width * (bands * itemsize + 2)
    return rasterio.Env(GDAL_CACHEMAX=max(64 * 2**20, 3 * block_row))


class StreamingRasterWriter:
    """Write a single-band uint8 raster row band by row band, ending as a Cloud-Optimized GeoTIFF.

    Use as a context manager; call :meth:`write_rows` with consecutive bands of rows from the top
    (any heights). On a clean exit the stage file becomes a COG at ``out_path`` (atomically, with
    ``<out_path>.aux.xml`` holding category names when ``classes`` is given) and a QGIS style
    ``<stem>.qml`` is written beside it: paletted with exactly the classes (and 255 "Not
    observed" when ``classes.not_observed``), or without ``classes`` (the confidence raster, 0..255)
    a grey ramp; on an error nothing is left at ``out_path`` and the stage file is removed.

    Args:
        out_path: the final GeoTIFF.
        grid: the output grid (the scene's CRS, transform, width, height).
        classes: class table for a class raster (colour table, names); None for other bands.
        description: band description.
        nodata: the no-data value written in the file (0).
        overview_resampling: GDAL resampling of the overviews ("MODE" or "NEAREST" for classes).
    """

    def __init__(
        self,
        out_path: str | Path,
        grid: Grid,
        classes: ClassTable | None = None,
        description: str | None = None,
        nodata: int = 0,
        overview_resampling: str = "NEAREST",
    ) -> None:
        self.out_path = Path(out_path)
        self.grid = grid
        self.classes = classes
        self.description = description
        self.nodata = nodata
        self.overview_resampling = overview_resampling
        self._writer: Any = None
        self._rows_written = 0
        self._buffer: np.ndarray | None = None
        self._buffered = 0

    def __enter__(self) -> StreamingRasterWriter:
        # The stage: zstd level 1 without predictor (fast to write); the COG: DEFLATE level 6 with
        # a predictor, re-encoded by GDAL's COG driver, which builds the overviews
        # (RasterWriter with cog_options). Free space for the stage and the COG (uint8,
        # compressed: a rough lower bound) is checked and leftovers of a killed run removed,
        # the stage included, before anything is written.
        self._writer = RasterWriter(
            self.out_path,
            self.grid,
            1,
            "uint8",
            self.nodata,
            cog=True,
            profile={"compress": "zstd", "zstd_level": 1, "zlevel": None, "predictor": None},
            cog_options={
                "COMPRESS": "DEFLATE",
                "LEVEL": 6,
                "PREDICTOR": "YES",
                "OVERVIEW_RESAMPLING": self.overview_resampling,
            },
            classes=self.classes,
            descriptions=[self.description] if self.classes is None and self.description else None,
            compressed_fraction=0.05,
            style=self._style,
        )
        self._writer.__enter__()
        self._buffer = np.zeros((self._writer.profile["blockysize"], self.grid.width), np.uint8)
        return self

    @property
    def _dataset(self) -> Any:
        """The open stage dataset (tags may be added to it until the writer is closed)."""
        return self._writer.dataset

    def _style(self, final: Path) -> None:
        if self.classes is not None:
            write_class_style(final, self.classes)
        else:
            write_confidence_style(final)

    def write_rows(self, row_off: int, rows: np.ndarray) -> None:
        """Write rows ``[row_off, row_off + len(rows))`` (uint8, shape (n, scene width)); bands of
        rows must come in order without gaps. Rows are buffered to whole block rows so that
        no compressed block is written twice."""
        if row_off != self._rows_written + self._buffered:
            raise ValueError(
                f"rows must come in order: got row {row_off}, "
                f"expected {self._rows_written + self._buffered}"
            )
        if rows.shape[-1] != self.grid.width or row_off + rows.shape[0] > self.grid.height:
            raise ValueError(
                f"rows {row_off}..{row_off + rows.shape[0]} x {rows.shape[-1]} "
                f"do not fit {self.grid.describe()}"
            )
        assert self._buffer is not None
        done = 0
        while done < rows.shape[0]:
            take = min(rows.shape[0] - done, self._buffer.shape[0] - self._buffered)
            self._buffer[self._buffered : self._buffered + take] = rows[done : done + take]
            self._buffered += take
            done += take
            if (
                self._buffered == self._buffer.shape[0]
                or self._rows_written + self._buffered == self.grid.height
            ):
                self._flush()

    def _flush(self) -> None:
        if self._buffered == 0:
            return
        assert self._buffer is not None
        window = Window(0, self._rows_written, self.grid.width, self._buffered)
        self._dataset.write(self._buffer[: self._buffered], 1, window=window)
        self._rows_written += self._buffered
        self._buffered = 0

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if exc is None:
            try:
                self._flush()
                if self._rows_written != self.grid.height:
                    raise RuntimeError(
                        f"only {self._rows_written} of {self.grid.height} rows were written"
                    )
            except BaseException as error:
                return self._writer.__exit__(type(error), error, error.__traceback__)
        return self._writer.__exit__(exc_type, exc, tb)
