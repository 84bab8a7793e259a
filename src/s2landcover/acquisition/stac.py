"""STAC catalogue access and reads of cloud-optimised assets over HTTP.

Two kinds of network I/O live here: item searches through pystac-client (with urllib3 retries on
connection errors, 429 and 5xx), and windowed reads of cloud-optimised GeoTIFFs through GDAL's
``/vsicurl/`` (HTTP range requests: only the blocks that cover the window travel).
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np
import pystac
import rasterio
from pystac_client import Client
from pystac_client.exceptions import APIError
from pystac_client.stac_api_io import StacApiIO
from rasterio.errors import RasterioIOError
from rasterio.windows import Window, from_bounds
from urllib3.util.retry import Retry

from s2landcover.acquisition.http import DownloadError
from s2landcover.errors import InputError
from s2landcover.io.atomic import partial_path, remove_leftovers
from s2landcover.io.rasters import Grid, geotiff_profile

ROWS_PER_READ = 512  # rows of a window read and written at once (bounds memory)


def search_items(
    api_url: str,
    search: dict[str, Any],
    retries: int = 5,
    timeout_s: float = 60.0,
    backoff: float = 1.0,
    max_items: int | None = 500,
) -> list[pystac.Item]:
    """Run a STAC item search (POST /search) and return all matching items (at most ``max_items``).

    ``search`` holds pystac-client ``Client.search`` arguments (collections, ids, bbox in EPSG:4326
    degrees, datetime, query). Connection errors, 429 and 5xx answers are retried ``retries`` times
    with exponential back-off; an API that still fails raises :class:`DownloadError` naming it.
    """
    retry = Retry(
        total=retries,
        backoff_factor=backoff,
        status_forcelist=(408, 429, 500, 502, 503, 504),
        allowed_methods=None,  # retry POST /search too: a search has no side effects
        raise_on_status=False,
    )
    stac_io = StacApiIO(timeout=timeout_s, max_retries=retry)
    try:
        client = Client.open(api_url, stac_io=stac_io)
        return list(client.search(max_items=max_items, **search).items())
    except APIError as error:
        raise DownloadError(f"STAC API {api_url} answered an error to {search}: {error}") from None
    except (
        OSError,
        ValueError,
    ) as error:  # requests' errors are OSErrors; bad JSON is a ValueError
        raise DownloadError(
            f"STAC API {api_url} could not be searched ({search}): {error}"
        ) from None


@contextlib.contextmanager
def remote_raster_env(
    retries: int = 5, timeout_s: float = 60.0, backoff: float = 1.0
) -> Iterator[None]:
    """GDAL settings for ``/vsicurl/`` reads: retries with back-off, timeouts, no directory listing.

    ``GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR`` avoids listing the bucket to look for sidecars (one
    request saved per file, and deterministic); ``GDAL_HTTP_MAX_RETRY`` / ``GDAL_HTTP_RETRY_DELAY``
    retry 429, 5xx and connection errors; the allowed-extension list stops probing ``.aux.xml``.
    """
    with rasterio.Env(
        GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR",
        CPL_VSIL_CURL_ALLOWED_EXTENSIONS=".tif,.tiff,.TIF,.TIFF,.vrt",
        GDAL_HTTP_MAX_RETRY=str(retries),
        GDAL_HTTP_RETRY_DELAY=str(backoff),
        GDAL_HTTP_TIMEOUT=str(int(timeout_s)),
        GDAL_HTTP_CONNECTTIMEOUT=str(int(timeout_s)),
        GDAL_HTTP_MERGE_CONSECUTIVE_RANGES="YES",
        VSI_CACHE="TRUE",
    ):
        yield


def vsicurl_path(href: str) -> str:
    """The GDAL path of a remote file (``/vsicurl/https://...``; ``s3://`` becomes ``/vsis3/``).

    Anything else (a local path, ``file://``) raises :class:`InputError`: this module reads
    remote files only, so a catalogue cannot make it read a local file.
    """
    if href.lower().startswith(("http://", "https://")):
        return f"/vsicurl/{href}"
    if href.lower().startswith("s3://"):
        return f"/vsis3/{href[5:]}"
    raise InputError(
        f"{href!r} is not an http://, https:// or s3:// URL; only remote rasters are read here"
    )


def remote_grid(href: str) -> tuple[Grid, str, float | None]:
    """(grid, dtype, nodata) of a remote raster from its header (call inside remote_raster_env)."""
    try:
        with rasterio.open(vsicurl_path(href)) as src:
            return Grid(src.crs, src.transform, src.width, src.height), src.dtypes[0], src.nodata
    except RasterioIOError as error:
        raise DownloadError(f"cannot open the remote raster {href}: {error}") from None


def copy_remote_window(
    href: str,
    window: Window,
    out_path: str | Path,
    band_name: str,
    scale: float,
    offset: float,
    nodata: float | None = 0,
) -> Path:
    """Copy ``window`` of band 1 of a remote raster into a local tiled GeoTIFF (call inside
    remote_raster_env). The copy keeps the source's pixel grid (the window's transform) and dtype,
    records the band name as description and the scale/offset (reflectance = stored*scale+offset).

    Memory: ``ROWS_PER_READ`` rows of the window at a time.
    """
    out_path = Path(out_path)
    try:
        with rasterio.open(vsicurl_path(href)) as src:
            grid = Grid(
                src.crs, src.window_transform(window), int(window.width), int(window.height)
            )
            dtype = src.dtypes[0]
            profile = geotiff_profile(
                grid, 1, dtype, src.nodata if src.nodata is not None else nodata
            )
            with rasterio.open(out_path, "w", **profile) as dst:
                dst.set_band_description(1, band_name)
                dst.scales = (scale,)
                dst.offsets = (offset,)
                for row in range(0, grid.height, ROWS_PER_READ):
                    rows = min(ROWS_PER_READ, grid.height - row)
                    part = Window(window.col_off, window.row_off + row, grid.width, rows)
                    data = src.read(1, window=part)
                    dst.write(
                        np.asarray(data, dtype=dtype), 1, window=Window(0, row, grid.width, rows)
                    )
    except RasterioIOError as error:
        out_path.unlink(missing_ok=True)
        raise DownloadError(
            f"cannot read window {window} of the remote raster {href}: {error}"
        ) from None
    return out_path


def mosaic_vrt_xml(hrefs: list[str]) -> str:
    """A GDAL VRT mosaic of single-band remote rasters on one grid (same CRS and pixel size), e.g.
    ESA WorldCover tiles. Reads only each file's header (call inside remote_raster_env)."""
    headers = []
    for href in hrefs:
        try:
            with rasterio.open(vsicurl_path(href)) as src:
                colormap = None
                with contextlib.suppress(ValueError):
                    colormap = src.colormap(1)
                headers.append(
                    (
                        href,
                        src.crs,
                        src.transform,
                        src.width,
                        src.height,
                        src.dtypes[0],
                        src.nodata,
                        src.block_shapes[0],
                        colormap,
                    )
                )
        except RasterioIOError as error:
            raise DownloadError(f"cannot open the remote raster {href}: {error}") from None
    crs, first = headers[0][1], headers[0][2]
    xres, yres = first.a, first.e
    lefts = [h[2].c for h in headers]
    tops = [h[2].f for h in headers]
    rights = [h[2].c + h[3] * xres for h in headers]
    bottoms = [h[2].f + h[4] * yres for h in headers]
    left, top = min(lefts), max(tops)
    width = round((max(rights) - left) / xres)
    height = round((min(bottoms) - top) / yres)
    gdal_types = {
        "uint8": "Byte",
        "uint16": "UInt16",
        "int16": "Int16",
        "uint32": "UInt32",
        "int32": "Int32",
        "float32": "Float32",
        "float64": "Float64",
    }
    dtype, nodata, colormap = headers[0][5], headers[0][6], headers[0][8]
    lines = [
        f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">',
        f"  <SRS>{escape(crs.to_wkt())}</SRS>",
        f"  <GeoTransform>{left!r}, {xres!r}, 0.0, {top!r}, 0.0, {yres!r}</GeoTransform>",
        f'  <VRTRasterBand dataType="{gdal_types[dtype]}" band="1">',
    ]
    if nodata is not None:
        lines.append(f"    <NoDataValue>{nodata:g}</NoDataValue>")
    if colormap:
        lines.append("    <ColorInterp>Palette</ColorInterp>\n    <ColorTable>")
        for index in range(max(colormap) + 1):
            r, g, b, a = colormap.get(index, (0, 0, 0, 0))
            lines.append(f'      <Entry c1="{r}" c2="{g}" c3="{b}" c4="{a}"/>')
        lines.append("    </ColorTable>")
    for href, _, transform, w, h, _, _, (block_h, block_w), _ in headers:
        x_off = round((transform.c - left) / xres)
        y_off = round((transform.f - top) / yres)
        lines += [
            "    <SimpleSource>",
            '      <SourceFilename relativeToVRT="0">'
            f"{escape(vsicurl_path(href))}</SourceFilename>",
            "      <SourceBand>1</SourceBand>",
            f'      <SourceProperties RasterXSize="{w}" RasterYSize="{h}" '
            f'DataType="{gdal_types[dtype]}" BlockXSize="{block_w}" BlockYSize="{block_h}"/>',
            f'      <SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>',
            f'      <DstRect xOff="{x_off}" yOff="{y_off}" xSize="{w}" ySize="{h}"/>',
            "    </SimpleSource>",
        ]
    lines += ["  </VRTRasterBand>", "</VRTDataset>", ""]
    return "\n".join(lines)


def write_remote_mosaic(
    hrefs: list[str], out_path: str | Path, bounds: tuple[float, ...] | list[float] | None = None
) -> Path:
    """Write a VRT mosaic of ``hrefs`` to ``out_path``; with ``bounds`` (in the rasters' CRS) write
    instead a local tiled GeoTIFF of the mosaic's window covering them (outward to whole pixels),
    streamed ``ROWS_PER_READ`` rows at a time. Call inside remote_raster_env."""
    out_path = Path(out_path)
    xml = mosaic_vrt_xml(hrefs)
    if bounds is None:
        out_path.write_text(xml)
        return out_path
    # A fixed scratch folder (``.<name>.stage``), removed at the start if a killed run left it.
    folder = partial_path(out_path, "stage").with_suffix("")
    remove_leftovers(out_path)
    folder.mkdir(parents=True)
    try:
        vrt = folder / "mosaic.vrt"
        vrt.write_text(xml)
        try:
            with rasterio.open(vrt) as src:
                window = from_bounds(*bounds, transform=src.transform)
                window = window.round_offsets(op="floor").round_lengths(op="ceil")
                window = window.intersection(Window(0, 0, src.width, src.height))
                grid = Grid(
                    src.crs, src.window_transform(window), int(window.width), int(window.height)
                )
                profile = geotiff_profile(grid, 1, src.dtypes[0], src.nodata)
                colormap = None
                with contextlib.suppress(ValueError):
                    colormap = src.colormap(1)
                with rasterio.open(out_path, "w", **profile) as dst:
                    if colormap:
                        dst.write_colormap(1, colormap)
                    for row in range(0, grid.height, ROWS_PER_READ):
                        rows = min(ROWS_PER_READ, grid.height - row)
                        part = Window(window.col_off, window.row_off + row, grid.width, rows)
                        dst.write(
                            src.read(1, window=part), 1, window=Window(0, row, grid.width, rows)
                        )
        except RasterioIOError as error:
            raise DownloadError(f"cannot read the mosaic of {hrefs}: {error}") from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return out_path
