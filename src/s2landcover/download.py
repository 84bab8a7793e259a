"""Scenes from a STAC catalogue: search, choose one item, fetch its band assets into a folder.

The folder (``results/downloads/{scene}/``) is what ingest reads as a ``band_files`` source: one
GeoTIFF per band (``B02.tif``, ``B8A.tif``, ...), ``item.json`` (the STAC item) and ``scene.json``
(item id, date, cloud cover, and per band the scale and offset that turn stored values into
reflectance). It is written atomically: nothing appears under its name until every band is there.

Scene ``source`` keys (type ``stac``): ``mgrs_tile`` ("31TDF"), ``bbox`` ([minx, miny, maxx, maxy]
in EPSG:4326 degrees), ``date_range`` (["YYYY-MM-DD", "YYYY-MM-DD"], both days included),
``max_cloud_cover`` (overrides ``download.max_cloud_cover``), ``item_id`` (pins one item).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pystac
from rasterio.warp import transform_bounds
from rasterio.windows import Window
from shapely.geometry import box, shape

from s2landcover.acquisition.http import download_file, url_exists
from s2landcover.acquisition.stac import (
    copy_remote_window,
    remote_grid,
    remote_raster_env,
    search_items,
    write_remote_mosaic,
)
from s2landcover.acquisition.staging import discard_staging, move_staged_files, staging_folder
from s2landcover.errors import InputError
from s2landcover.io.atomic import NoSpaceError, require_free_space
from s2landcover.io.documents import read_json, write_json
from s2landcover.io.rasters import Grid, atomic_path

log = logging.getLogger(__name__)

# Earth Search v1 keys its Sentinel-2 assets by common name; other catalogues by band id.
COMMON_NAMES = {
    "B01": "coastal",
    "B02": "blue",
    "B03": "green",
    "B04": "red",
    "B05": "rededge1",
    "B06": "rededge2",
    "B07": "rededge3",
    "B08": "nir",
    "B8A": "nir08",
    "B09": "nir09",
    "B10": "cirrus",
    "B11": "swir16",
    "B12": "swir22",
    "SCL": "scl",
}
STAC_SOURCE_KEYS = ("type", "mgrs_tile", "bbox", "date_range", "max_cloud_cover", "item_id")
# Processing baseline 04.00 (deployed 2022-01-25) added a -1000 offset to L2A/L1C digital numbers.
BASELINE_04_START = dt.datetime(2022, 1, 25, tzinfo=dt.UTC)
DEFAULT_SCALE = 1e-4
BASELINE_04_OFFSET = -0.1
WORLDCOVER_VERSIONS = {2020: "v100", 2021: "v200"}


# ---------------------------------------------------------------------------------------------
# search and item choice (pure functions on plain values, except search_scene_items)


def normalize_mgrs_tile(tile: str) -> str:
    """ "31TDF", "T31TDF" or "MGRS-31TDF" -> "31TDF" (raises InputError for anything else)."""
    text = str(tile).strip().upper().removeprefix("MGRS-")
    if text.startswith("T") and len(text) == 6:
        text = text[1:]
    if len(text) == 4:  # single-digit zone: "1CDE" -> "01CDE"
        text = "0" + text
    valid = (
        len(text) == 5
        and text[:2].isdigit()
        and 1 <= int(text[:2]) <= 60
        and text[2].isalpha()
        and text[3:].isalpha()
    )
    if not valid:
        raise InputError(
            f"scene source mgrs_tile: {tile!r} is not an MGRS tile (expected e.g. '31TDF': "
            "UTM zone, latitude band, two-letter square)"
        )
    return text


def item_mgrs_tile(properties: dict[str, Any]) -> str | None:
    """The MGRS tile of a STAC item from ``grid:code`` ("MGRS-31TDF"), ``s2:mgrs_tile`` or the
    ``mgrs:*`` properties; None when the item states none."""
    if isinstance(properties.get("grid:code"), str) and properties["grid:code"].startswith("MGRS-"):
        return normalize_mgrs_tile(properties["grid:code"])
    if properties.get("s2:mgrs_tile"):
        return normalize_mgrs_tile(properties["s2:mgrs_tile"])
    zone, band, square = (
        properties.get(f"mgrs:{k}") for k in ("utm_zone", "latitude_band", "grid_square")
    )
    if zone and band and square:
        return normalize_mgrs_tile(f"{int(zone):02d}{band}{square}")
    return None


def stac_source_settings(source: dict[str, Any], download_cfg: dict[str, Any]) -> dict[str, Any]:
    """Check a ``stac`` scene source; return its settings (tile, bbox, dates, cloud limit, item)."""
    unknown = sorted(set(source) - set(STAC_SOURCE_KEYS))
    if unknown:
        raise InputError(
            f"scene source of type stac: unknown key(s) {unknown}; "
            f"expected {list(STAC_SOURCE_KEYS)}"
        )
    tile = normalize_mgrs_tile(source["mgrs_tile"]) if source.get("mgrs_tile") else None
    bbox = source.get("bbox")
    if bbox is not None:
        if not (isinstance(bbox, Sequence) and len(bbox) == 4):
            raise InputError(f"scene source bbox: {bbox!r} is not [minx, miny, maxx, maxy]")
        bbox = [float(v) for v in bbox]
        minx, miny, maxx, maxy = bbox
        if not (-180 <= minx < maxx <= 180 and -90 <= miny < maxy <= 90):
            raise InputError(
                f"scene source bbox: {bbox} is not [minx, miny, maxx, maxy] in EPSG:4326 degrees "
                "with minx < maxx and miny < maxy"
            )
    dates = source.get("date_range")
    if dates is not None:
        if not (isinstance(dates, Sequence) and len(dates) == 2):
            raise InputError(f"scene source date_range: {dates!r} is not [start, end]")
        try:
            start, end = (dt.date.fromisoformat(str(d)) for d in dates)
        except ValueError:
            raise InputError(
                f"scene source date_range: {dates!r} is not two YYYY-MM-DD dates"
            ) from None
        if end < start:
            raise InputError(f"scene source date_range: end {end} is before start {start}")
        dates = [start.isoformat(), end.isoformat()]
    item_id = source.get("item_id")
    if not (tile or bbox or item_id):
        raise InputError(
            "scene source of type stac needs mgrs_tile, bbox or item_id (found none of them)"
        )
    cloud = source.get("max_cloud_cover", download_cfg["max_cloud_cover"])
    if not (isinstance(cloud, int | float) and 0 <= cloud <= 100):
        raise InputError(f"scene source max_cloud_cover: {cloud!r} is not a percentage (0..100)")
    return {
        "mgrs_tile": tile,
        "bbox": bbox,
        "date_range": dates,
        "max_cloud_cover": float(cloud),
        "item_id": item_id,
    }


def build_searches(settings: dict[str, Any], download_cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """pystac-client search arguments to try in turn (the MGRS tile is a different property in
    different catalogues: ``grid:code`` in Earth Search v1, ``s2:mgrs_tile`` in others)."""
    base: dict[str, Any] = {"collections": [download_cfg["collection"]]}
    if settings["item_id"]:
        return [{**base, "ids": [settings["item_id"]]}]
    if settings["bbox"]:
        base["bbox"] = settings["bbox"]
    if settings["date_range"]:
        start, end = settings["date_range"]
        base["datetime"] = f"{start}T00:00:00Z/{end}T23:59:59Z"
    cloud_query = {"eo:cloud_cover": {"lte": settings["max_cloud_cover"]}}
    tile = settings["mgrs_tile"]
    if not tile:
        return [{**base, "query": cloud_query}]
    by_property = {
        "grid:code": {"grid:code": {"eq": f"MGRS-{tile}"}},
        "s2:mgrs_tile": {"s2:mgrs_tile": {"eq": tile}},
    }
    choice = download_cfg["mgrs_property"]
    names = ["grid:code", "s2:mgrs_tile"] if choice == "auto" else [choice]
    return [{**base, "query": {**cloud_query, **by_property[name]}} for name in names]


def matches_settings(item: pystac.Item, settings: dict[str, Any]) -> bool:
    """Client-side check of tile and cloud limit (a server may ignore the query extension)."""
    if settings["item_id"]:
        return item.id == settings["item_id"]
    tile = item_mgrs_tile(item.properties)
    if settings["mgrs_tile"] and tile is not None and tile != settings["mgrs_tile"]:
        return False
    cloud = item.properties.get("eo:cloud_cover")
    return cloud is None or cloud <= settings["max_cloud_cover"]


def choose_item(items: Sequence[pystac.Item], rule: str = "least_cloud") -> pystac.Item:
    """Pick one item by ``rule``.

    least_cloud: the smallest ``eo:cloud_cover``; among equal cover the most recent; then the
    largest item id (so the choice never depends on the order the API returned). most_recent: the
    latest datetime; among equal times the least cloud; then the largest id. Items without a cloud
    cover count as 100 %.
    """
    if not items:
        raise ValueError("choose_item needs at least one item")

    def cloud(item: pystac.Item) -> float:
        value = item.properties.get("eo:cloud_cover")
        return 100.0 if value is None else float(value)

    def when(item: pystac.Item) -> float:
        moment = item.datetime or item.common_metadata.start_datetime
        return moment.timestamp() if moment else float("-inf")

    if rule == "least_cloud":
        return min(items, key=lambda i: (cloud(i), -when(i), _descending(i.id)))
    if rule == "most_recent":
        return min(items, key=lambda i: (-when(i), cloud(i), _descending(i.id)))
    raise InputError(f"download.item_choice: {rule!r} is not one of ['least_cloud', 'most_recent']")


def covering_items(items: Sequence[pystac.Item], bbox: Sequence[float]) -> list[pystac.Item]:
    """The items whose footprint contains the whole ``bbox`` (EPSG:4326), or all items when none
    does. Sentinel-2 tiles at the edge of a swath hold data on part of the tile only, and their
    ``eo:cloud_cover`` says nothing about the missing part: a full view beats a clear half view."""
    area = box(*bbox)
    covering = [i for i in items if i.geometry and shape(i.geometry).buffer(1e-9).contains(area)]
    if not covering:
        log.warning("no item covers the whole bbox %s; choosing among partial views", list(bbox))
    return covering or list(items)


def _descending(text: str) -> tuple[int, ...]:
    return tuple(-ord(c) for c in text)


def describe_search(api_url: str, collection: str, settings: dict[str, Any]) -> str:
    """What was searched, for error messages."""
    parts = [f"API {api_url}", f"collection {collection!r}"]
    if settings["item_id"]:
        parts.append(f"item_id {settings['item_id']!r}")
    else:
        if settings["mgrs_tile"]:
            parts.append(f"MGRS tile {settings['mgrs_tile']}")
        if settings["bbox"]:
            parts.append(f"bbox {settings['bbox']} (EPSG:4326)")
        dates = settings["date_range"]
        parts.append(f"dates {dates[0]} to {dates[1]}" if dates else "any date")
        parts.append(f"eo:cloud_cover <= {settings['max_cloud_cover']:g} %")
    return ", ".join(parts)


def search_scene_items(settings: dict[str, Any], download_cfg: dict[str, Any]) -> list[pystac.Item]:
    """Items matching a scene's settings (first search form that finds any); InputError if none."""
    items: list[pystac.Item] = []
    for search in build_searches(settings, download_cfg):
        found = search_items(
            download_cfg["api_url"],
            search,
            retries=download_cfg["retries"],
            timeout_s=download_cfg["timeout_s"],
            backoff=download_cfg["backoff_s"],
            max_items=download_cfg["max_items"],
        )
        items = [item for item in found if matches_settings(item, settings)]
        if items:
            break
    if not items:
        raise InputError(
            "STAC search found no item: "
            + describe_search(download_cfg["api_url"], download_cfg["collection"], settings)
            + ". Widen date_range, raise max_cloud_cover, or check the tile/bbox."
        )
    return items


# ---------------------------------------------------------------------------------------------
# assets, scale and offset


def band_asset(item: pystac.Item, band: str) -> tuple[str, pystac.Asset]:
    """The asset of ``band`` ("B02", "SCL"...): keyed by common name (Earth Search v1: "blue"), else
    by band id ("B02", "b02"). JP2 twins ("blue-jp2") are not used: the common-name key is the
    cloud-optimised GeoTIFF."""
    keys = [COMMON_NAMES.get(band, band.lower()), band, band.lower()]
    for key in keys:
        if key in item.assets:
            return key, item.assets[key]
    raise InputError(
        f"STAC item {item.id} has no asset for band {band} (looked for keys {keys}); "
        f"its assets are {sorted(item.assets)}"
    )


def check_asset_href(item_id: str, key: str, href: str, allow_s3: bool) -> str:
    """``href`` when a catalogue asset may be followed; :class:`InputError` otherwise.

    Only remote hrefs are followed: ``http://`` and ``https://`` always, ``s3://`` where the reader
    supports it (``allow_s3``: GDAL's ``/vsis3/`` in area-of-interest reads). A ``file://`` URL, an
    absolute or relative local path or any other scheme would let a catalogue copy any file the
    user can read into the results (or read it as a band), so it is refused, naming the item and
    the asset.
    """
    scheme = urlsplit(href).scheme.lower() if "://" in href else ""
    allowed = ("http", "https", "s3") if allow_s3 else ("http", "https")
    if scheme in allowed and urlsplit(href).netloc:
        return href
    what = f"{scheme}:// URL" if scheme else "a local path" if href else "empty"
    hint = (
        "; s3:// hrefs are read only with download.area_of_interest_only and a bbox (GDAL /vsis3/)"
        if scheme == "s3"
        else ""
    )
    raise InputError(
        f"STAC item {item_id} asset {key!r} has href {href!r} ({what}); only "
        f"{', '.join(s + '://' for s in allowed)} hrefs are followed: a catalogue may not point "
        f"the download at local files{hint}"
    )


def processing_baseline(properties: dict[str, Any]) -> float | None:
    """``s2:processing_baseline`` ("05.09") as a number, None when absent or unreadable."""
    try:
        return float(properties["s2:processing_baseline"])
    except (KeyError, TypeError, ValueError):
        return None


def band_scale_offset(item: pystac.Item, asset: pystac.Asset, band: str) -> tuple[float, float]:
    """(scale, offset) with reflectance = stored * scale + offset for ``band`` of ``item``.

    From the asset's ``raster:bands`` scale/offset when given; else the L2A rule: scale 1e-4, offset
    -0.1 from processing baseline 04.00 (by ``s2:processing_baseline``, or by date when the item
    does not state it: from 2022-01-25), 0 before it or when Earth Search says the offset was
    already applied (``earthsearch:boa_offset_applied``). SCL is a class band: scale 1, offset 0.
    """
    if band == "SCL":
        return 1.0, 0.0
    raster_bands = asset.extra_fields.get("raster:bands") or []
    if raster_bands and ("scale" in raster_bands[0] or "offset" in raster_bands[0]):
        first = raster_bands[0]
        return float(first.get("scale", 1.0)), float(first.get("offset", 0.0))
    properties = item.properties
    if properties.get("earthsearch:boa_offset_applied") is True:
        return DEFAULT_SCALE, 0.0
    baseline = processing_baseline(properties)
    if baseline is not None:
        return DEFAULT_SCALE, BASELINE_04_OFFSET if baseline >= 4.0 else 0.0
    when = item.datetime or item.common_metadata.start_datetime
    after = when is not None and when.astimezone(dt.UTC) >= BASELINE_04_START
    return DEFAULT_SCALE, BASELINE_04_OFFSET if after else 0.0


def _asset_extension(href: str) -> str:
    name = href.split("?")[0].rsplit("/", 1)[-1]
    suffix = Path(name).suffix.lower()
    return ".tif" if suffix in ("", ".tif", ".tiff") else suffix


# ---------------------------------------------------------------------------------------------
# windows of the area of interest (pure)


def snapped_bounds(
    bounds: tuple[float, float, float, float], grid: Grid, snap: float
) -> tuple[float, float, float, float]:
    """``bounds`` (CRS units of ``grid``) grown outwards to multiples of ``snap`` metres from the
    grid's origin and clipped to the grid's extent, so that the 10, 20 and 60 m bands of a tile
    (which share their upper-left corner) all get windows with exactly these bounds."""
    x0, y0 = grid.transform.c, grid.transform.f
    minx, miny, maxx, maxy = bounds
    left = x0 + math.floor((minx - x0) / snap + 1e-9) * snap
    right = x0 + math.ceil((maxx - x0) / snap - 1e-9) * snap
    top = y0 - math.floor((y0 - maxy) / snap + 1e-9) * snap
    bottom = y0 - math.ceil((y0 - miny) / snap - 1e-9) * snap
    gl, gb, gr, gt = grid.bounds
    left, right, bottom, top = max(left, gl), min(right, gr), max(bottom, gb), min(top, gt)
    if left >= right or bottom >= top:
        raise InputError(
            f"the area of interest {bounds} does not overlap the asset ({grid.describe()})"
        )
    return left, bottom, right, top


def pixel_window(bounds: tuple[float, float, float, float], grid: Grid) -> Window:
    """The window of ``grid`` covering ``bounds`` (outward to whole pixels; north-up grids)."""
    xres, yres = grid.resolution
    left, bottom, right, top = bounds
    col0 = math.floor((left - grid.transform.c) / xres + 1e-6)
    col1 = math.ceil((right - grid.transform.c) / xres - 1e-6)
    row0 = math.floor((grid.transform.f - top) / yres + 1e-6)
    row1 = math.ceil((grid.transform.f - bottom) / yres - 1e-6)
    col0, row0 = max(col0, 0), max(row0, 0)
    col1, row1 = min(col1, grid.width), min(row1, grid.height)
    return Window(col0, row0, col1 - col0, row1 - row0)


# ---------------------------------------------------------------------------------------------
# the stage


def download_scene(
    source: dict[str, Any], bands: list[str], download_cfg: dict[str, Any], out_dir: str | Path
) -> dict[str, Any]:
    """Search the STAC API for one scene, choose an item, fetch its band assets into ``out_dir``.

    ``source`` is the scene's ``stac`` source (keys in the module docstring), ``bands`` the band
    ids ("B02"...; "SCL" adds the scene classification), ``download_cfg`` the validated ``download``
    section. Writes ``out_dir/<BAND>.tif`` per band, ``item.json`` and ``scene.json`` (item_id,
    datetime, cloud_cover, scales, offsets, nodata, bounds_wgs84...); returns the scene.json dict.

    With ``download.area_of_interest_only`` and a ``bbox``, each band is read through ``/vsicurl/``
    (HTTP range reads) on its native grid: the window covers the bbox grown outwards to the coarsest
    band's pixel size, so every band file has the same bounds. Otherwise whole assets are downloaded
    with :func:`s2landcover.acquisition.http.download_file` (retries, resume, size/checksum
    checks) into a staging folder ``.<out_dir name>.download`` beside ``out_dir`` that survives a
    failed run, so the next run resumes; it is removed on success.

    Memory: one 1 MiB chunk (whole assets) or 512 rows of one band window (area of interest).
    """
    out_dir = Path(out_dir)
    settings = stac_source_settings(source, download_cfg)
    items = search_scene_items(settings, download_cfg)
    if settings["bbox"] and not settings["item_id"]:
        items = covering_items(items, settings["bbox"])
    item = choose_item(items, download_cfg["item_choice"])
    log.info("chose item %s out of %d (%s)", item.id, len(items), download_cfg["item_choice"])
    assets = {band: band_asset(item, band) for band in bands}
    aoi = settings["bbox"] if download_cfg["area_of_interest_only"] else None
    for key, asset in assets.values():
        check_asset_href(item.id, key, asset.href, allow_s3=aoi is not None)
    scales, offsets = {}, {}
    for band, (_, asset) in assets.items():
        scales[band], offsets[band] = band_scale_offset(item, asset, band)
    retry = {
        "retries": download_cfg["retries"],
        "timeout_s": download_cfg["timeout_s"],
        "backoff": download_cfg["backoff_s"],
    }
    files: dict[str, str] = {}
    staging = staging_folder(out_dir)
    if aoi is None:  # whole assets: into the staging folder first (resumable across runs)
        sizes = [asset.extra_fields.get("file:size") for _, asset in assets.values()]
        stated = [size for size in sizes if isinstance(size, int)]
        try:
            if len(stated) == len(sizes):  # the catalogue states every size
                require_free_space(staging.parent, 1.05 * sum(stated))  # + the JSON files
            for band, (_, asset) in assets.items():
                name = band + _asset_extension(asset.href)
                download_file(
                    asset.href,
                    staging / name,
                    expected_size=asset.extra_fields.get("file:size"),
                    checksum=asset.extra_fields.get("file:checksum"),
                    **retry,
                )
                files[band] = name
        except NoSpaceError:
            discard_staging(staging)  # a full device is not resumed: free it
            raise
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        if aoi is None:
            move_staged_files(staging, files.values(), tmp)
            bounds_wgs84 = list(item.bbox) if item.bbox else None
        else:
            bounds_wgs84 = _copy_area_of_interest(assets, aoi, scales, offsets, tmp, files, retry)
        scene = {
            "item_id": item.id,
            "collection": item.collection_id or download_cfg["collection"],
            "api_url": download_cfg["api_url"],
            "datetime": item.datetime.isoformat() if item.datetime else None,
            "cloud_cover": item.properties.get("eo:cloud_cover"),
            "mgrs_tile": item_mgrs_tile(item.properties),
            "processing_baseline": item.properties.get("s2:processing_baseline"),
            "bands": list(bands),
            "files": files,
            "scales": scales,
            "offsets": offsets,
            "nodata": 0,
            "area_of_interest_only": aoi is not None,
            "bounds_wgs84": bounds_wgs84,
            "item_choice": download_cfg["item_choice"],
            "candidates": len(items),
        }
        write_json(item.to_dict(), tmp / "item.json")
        write_json(scene, tmp / "scene.json")
    discard_staging(staging)
    return scene


def _copy_area_of_interest(
    assets: dict[str, tuple[str, pystac.Asset]],
    bbox: list[float],
    scales: dict[str, float],
    offsets: dict[str, float],
    folder: Path,
    files: dict[str, str],
    retry: dict[str, float],
) -> list[float]:
    """Read the bbox window of each band asset into ``folder``; return the bounds in EPSG:4326."""
    with remote_raster_env(int(retry["retries"]), retry["timeout_s"], retry["backoff"]):
        grids = {band: remote_grid(asset.href)[0] for band, (_, asset) in assets.items()}
        reference = min(grids.values(), key=lambda g: g.resolution[0])
        snap = max(g.resolution[0] for g in grids.values())
        aoi = transform_bounds("EPSG:4326", reference.crs, *bbox, densify_pts=21)
        bounds = snapped_bounds(aoi, reference, snap)
        for band, (_, asset) in assets.items():
            grid = grids[band]
            if grid.crs != reference.crs:
                raise InputError(
                    f"asset {asset.href} of band {band} is in {grid.crs}, the other bands in "
                    f"{reference.crs}: cannot cut one area of interest from both"
                )
            window = pixel_window(bounds, grid)
            name = f"{band}.tif"
            copy_remote_window(asset.href, window, folder / name, band, scales[band], offsets[band])
            files[band] = name
    return list(transform_bounds(reference.crs, "EPSG:4326", *bounds, densify_pts=21))


# ---------------------------------------------------------------------------------------------
# ESA WorldCover


def worldcover_tile_names(bounds_wgs84: Sequence[float]) -> list[str]:
    """Names (e.g. "N39E000") of the 3 x 3 degree WorldCover tiles that cover ``bounds_wgs84``
    ([minx, miny, maxx, maxy] in degrees); a tile is named by its lower-left corner."""
    minx, miny, maxx, maxy = bounds_wgs84
    names = []
    lat = math.floor(miny / 3) * 3
    while lat < maxy:
        lon = math.floor(minx / 3) * 3
        while lon < maxx:
            ns, ew = ("N" if lat >= 0 else "S"), ("E" if lon >= 0 else "W")
            names.append(f"{ns}{abs(lat):02d}{ew}{abs(lon):03d}")
            lon += 3
        lat += 3
    return names


def worldcover_tile_url(base_url: str, tile: str, year: int) -> str:
    """URL of a WorldCover map tile.

    ``{base}/v200/2021/map/ESA_WorldCover_10m_2021_v200_{tile}_Map.tif`` (2020: v100)."""
    if year not in WORLDCOVER_VERSIONS:
        raise InputError(
            f"WorldCover year {year} does not exist (expected one of {sorted(WORLDCOVER_VERSIONS)})"
        )
    version = WORLDCOVER_VERSIONS[year]
    name = f"ESA_WorldCover_10m_{year}_{version}_{tile}_Map.tif"
    return f"{base_url.rstrip('/')}/{version}/{year}/map/{name}"


def download_worldcover(
    bounds_wgs84: Sequence[float],
    out_path: str | Path,
    year: int = 2021,
    download_cfg: dict[str, Any] | None = None,
) -> Path:
    """Make the ESA WorldCover map covering ``bounds_wgs84`` ([minx, miny, maxx, maxy], degrees).

    ``out_path`` ending in ``.vrt``: a VRT mosaic of the remote tiles (``/vsicurl/`` paths; tiny,
    but reading it needs the network). Ending in ``.tif``: a local tiled GeoTIFF of just the bounds
    (grown to whole pixels, EPSG:4326, ~8.3e-5 degree pixels), read by range requests and written
    512 rows at a time, so later stages need no network. Tiles missing from the bucket (open sea)
    are skipped. The base URL is ``download.worldcover_url``.
    """
    from s2landcover.config import validate_config

    cfg = download_cfg or validate_config({})["download"]
    base_url = cfg["worldcover_url"]
    retry = {
        "retries": cfg["retries"],
        "timeout_s": cfg["timeout_s"],
        "backoff": cfg["backoff_s"],
    }
    urls = [
        worldcover_tile_url(base_url, tile, year) for tile in worldcover_tile_names(bounds_wgs84)
    ]
    present = [url for url in urls if url_exists(url, **retry)]
    if not present:
        raise InputError(
            f"no ESA WorldCover {year} tile covers bounds {list(bounds_wgs84)} (EPSG:4326); "
            f"looked for {urls}"
        )
    out_path = Path(out_path)
    with remote_raster_env(int(retry["retries"]), retry["timeout_s"], retry["backoff"]):
        with atomic_path(out_path) as tmp:
            write_remote_mosaic(
                present, tmp, list(bounds_wgs84) if out_path.suffix != ".vrt" else None
            )
    return out_path


def download_worldcover_for_scenes(
    download_dirs: Sequence[str | Path],
    out_path: str | Path,
    year: int = 2021,
    download_cfg: dict[str, Any] | None = None,
) -> Path:
    """WorldCover covering the union of the scenes downloaded into ``download_dirs`` (their
    scene.json ``bounds_wgs84``), for a workflow rule that runs after the downloads."""
    stated = [read_json(Path(d) / "scene.json").get("bounds_wgs84") for d in download_dirs]
    boxes: list[list[float]] = [b for b in stated if b]
    if not boxes:
        raise InputError(f"none of {list(map(str, download_dirs))} states its bounds (scene.json)")
    union = [
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    ]
    return download_worldcover(union, out_path, year, download_cfg)
