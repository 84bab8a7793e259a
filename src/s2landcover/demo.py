"""The synthetic demo: a 1 m land-cover map and Sentinel-2-like L2A products of the same area.

The landscape is defined by geometry and smooth noise fields in metres (east and south of the
scene's upper-left corner, ``demo.origin`` in ``demo.crs``), so it can be evaluated for any window
at any resolution without ever holding the whole map:

- a coast along the west edge (sea wider than 26 % of the scene everywhere, so whole chips of water
  exist) with a beach of bare soil;
- a meandering river from the east edge to the sea, a lake;
- agricultural parcels (a rotated grid of staggered rectangles) of crops and grassland;
- forest where a smooth noise field is high (more inland), small woodlots;
- a town on the river and villages (built-up), quarries (bare soil).

Codes follow ESA WorldCover (10 tree cover, 30 grassland, 40 cropland, 50 built-up, 60 bare,
80 water), the default class table of the config. The SAFE products mix per-class Sentinel-2 spectra
by the class fractions of each 10 m pixel (computed from the 1 m map), vary them per field / patch
and with the acquisition date (phenology of four crop types, grass drying in summer, deciduous
trees leafless until late April; water, built-up and bare soil stay the same), and add noise.
Everything is deterministic for ``demo.seed`` (and the scene name for the scene's own noise).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window
from scipy.ndimage import gaussian_filter

from s2landcover.errors import InputError
from s2landcover.io.demo_products import SafeProductInfo, write_safe_product
from s2landcover.io.rasters import Grid
from s2landcover.io.sentinel2 import L2A_BANDS, NATIVE_RESOLUTION
from s2landcover.io.windowed import read_window, write_geotiff_windows

FOREST, GRASSLAND, CROPLAND, BUILT_UP, BARE, WATER = 10, 30, 40, 50, 60, 80
DEMO_CODES = (FOREST, GRASSLAND, CROPLAND, BUILT_UP, BARE, WATER)
# ESA WorldCover legend colours, so the 1 m map looks familiar in QGIS.
WORLDCOVER_COLORS = {
    0: (0, 0, 0, 0),
    FOREST: (0, 100, 0, 255),
    GRASSLAND: (255, 255, 76, 255),
    CROPLAND: (240, 150, 255, 255),
    BUILT_UP: (250, 0, 0, 255),
    BARE: (180, 180, 180, 255),
    WATER: (0, 100, 200, 255),
}
SCENE_RESOLUTION = 10.0  # metres
WINDOW_1M = 1024  # window side of the land-cover generator, pixels (bounds its memory)
STRIP_10M = 120  # rows of 10 m pixels per strip of the scene generator (multiple of 6)

# Reflectance spectra (0..1) in the order of L2A_BANDS:
# B01 B02 B03 B04 B05 B06 B07 B08 B8A B09 B11 B12.
SPECTRA = {
    "sea": [0.060, 0.050, 0.038, 0.022, 0.018, 0.014, 0.012, 0.010, 0.009, 0.005, 0.005, 0.003],
    "inland_water": [
        0.060,
        0.055,
        0.062,
        0.042,
        0.036,
        0.022,
        0.019,
        0.016,
        0.014,
        0.008,
        0.006,
        0.004,
    ],
    "broadleaf": [
        0.030,
        0.026,
        0.050,
        0.025,
        0.080,
        0.250,
        0.310,
        0.340,
        0.350,
        0.330,
        0.170,
        0.080,
    ],
    "conifer": [0.025, 0.020, 0.035, 0.018, 0.055, 0.160, 0.200, 0.220, 0.230, 0.220, 0.110, 0.050],
    "green_crop": [
        0.030,
        0.028,
        0.075,
        0.030,
        0.110,
        0.330,
        0.420,
        0.460,
        0.470,
        0.440,
        0.210,
        0.100,
    ],
    "brown_soil": [
        0.060,
        0.065,
        0.085,
        0.115,
        0.135,
        0.155,
        0.175,
        0.195,
        0.205,
        0.205,
        0.280,
        0.230,
    ],
    "golden_stubble": [
        0.080,
        0.090,
        0.125,
        0.150,
        0.180,
        0.210,
        0.230,
        0.250,
        0.265,
        0.260,
        0.330,
        0.260,
    ],
    "grass_green": [
        0.035,
        0.034,
        0.072,
        0.048,
        0.105,
        0.230,
        0.280,
        0.310,
        0.320,
        0.300,
        0.230,
        0.130,
    ],
    "dry_grass": [
        0.060,
        0.062,
        0.090,
        0.100,
        0.140,
        0.190,
        0.220,
        0.240,
        0.255,
        0.250,
        0.300,
        0.220,
    ],
    "bare_soil": [
        0.110,
        0.120,
        0.160,
        0.210,
        0.240,
        0.260,
        0.275,
        0.290,
        0.305,
        0.300,
        0.390,
        0.340,
    ],
    # Leafless deciduous canopy: bark and branches over leaf litter (brown, low NIR).
    "leafless": [
        0.045,
        0.045,
        0.060,
        0.075,
        0.095,
        0.125,
        0.140,
        0.155,
        0.165,
        0.165,
        0.210,
        0.160,
    ],
    "sand": [0.160, 0.180, 0.230, 0.280, 0.300, 0.320, 0.330, 0.340, 0.350, 0.350, 0.400, 0.350],
    "built": [0.110, 0.115, 0.125, 0.135, 0.150, 0.165, 0.175, 0.185, 0.190, 0.185, 0.210, 0.190],
}
CROP_TYPES = ("cereal", "maize", "sunflower", "alfalfa")
CROP_SHARES = (0.4, 0.3, 0.15, 0.15)


# ----------------------------------------------------------------------------------------------
# Deterministic building blocks
# ----------------------------------------------------------------------------------------------


def _hash_uniform(ids: np.ndarray, salt: int) -> np.ndarray:
    """A uniform number in [0, 1) per integer id (splitmix64), the same for the same id and salt."""
    with np.errstate(over="ignore"):
        x = ids.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(salt & 0xFFFFFFFF)
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return (x >> np.uint64(11)).astype(np.float64) / float(2**53)


def _text_seed(*parts: object) -> int:
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "little")


def _cubic_weights(positions: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Catmull-Rom interpolation of nodes 0..n-1 at ``positions`` (in node units).

    Returns ``(nodes, weights, first, count)``: ``nodes`` (4, len) indices relative to ``first``
    and ``weights`` (4, len), so a value is ``sum_k weights[k] * values[first + nodes[k]]``; the
    nodes used lie in ``[first, first + count)``. Nodes are clamped to the grid.
    """
    base = np.floor(positions).astype(np.int64)
    t = (positions - base).astype(np.float32)
    t2, t3 = t * t, t * t * t
    weights = np.stack(
        (
            -0.5 * t3 + t2 - 0.5 * t,
            1.5 * t3 - 2.5 * t2 + 1.0,
            -1.5 * t3 + 2.0 * t2 + 0.5 * t,
            0.5 * t3 - 0.5 * t2,
        )
    )
    nodes = np.clip(base[None, :] - 1 + np.arange(4)[:, None], 0, n - 1)
    first = int(nodes.min())
    return nodes - first, weights, first, int(nodes.max()) - first + 1


class SmoothNoise:
    """A smooth random field (zero mean, unit variance) over the scene, in metres.

    Defined on a coarse node grid (``spacing`` metres, Gaussian-smoothed white noise) and evaluated
    by separable cubic interpolation: rows by a small matrix product, columns by four gathers, so a
    window costs a few passes over its pixels.
    """

    def __init__(self, rng: np.random.Generator, extent_m: float, spacing: float, smooth: float):
        margin = 4 * spacing
        n = math.ceil((extent_m + 2 * margin) / spacing) + 1
        values = gaussian_filter(rng.standard_normal((n, n)), smooth, mode="wrap")
        self.values = ((values - values.mean()) / values.std()).astype(np.float32)
        self.spacing = spacing
        self.origin = -margin
        self.n = n

    def __call__(self, east: np.ndarray, south: np.ndarray) -> np.ndarray:
        """Field values (float32, len(south) x len(east)) at the grid of 1-D coordinates."""
        ny, wy, cy, my = _cubic_weights((south - self.origin) / self.spacing, self.n)
        nx, wx, cx, mx = _cubic_weights((east - self.origin) / self.spacing, self.n)
        rows = np.zeros((south.size, my), dtype=np.float32)
        index = np.arange(south.size)
        for k in range(4):
            np.add.at(rows, (index, ny[k]), wy[k])
        partial = rows @ self.values[cy : cy + my, cx : cx + mx]  # (len(south), mx)
        out = partial[:, nx[0]] * wx[0]
        for k in range(1, 4):
            out += partial[:, nx[k]] * wx[k]
        return out


@dataclass
class _Blob:
    east: float
    south: float
    radius: float
    aspect: float
    angle: float


# ----------------------------------------------------------------------------------------------
# The landscape
# ----------------------------------------------------------------------------------------------


class DemoLandscape:
    """The demo's land cover as functions of map position (metres east / south of the upper-left).

    ``codes(east, south)`` gives WorldCover codes; ``field_ids`` the parcel id used to vary crops
    per field. Both take 1-D coordinate arrays of pixel centres and return (len(south), len(east))
    arrays.
    Memory per call: a few float64 arrays of the window's size.
    """

    def __init__(self, extent_m: float, seed: int):
        self.extent = float(extent_m)
        self.seed = int(seed)
        rng = np.random.default_rng(seed)
        length = self.extent
        # Coast: x of the shoreline as a function of y (west edge is sea).
        self.coast_phase = rng.uniform(0, 2 * np.pi, 2)
        # River: y of the centre line as a function of x.
        self.river_phase = rng.uniform(0, 2 * np.pi, 3)
        self.river_base = length * rng.uniform(0.5, 0.62)
        # Fields: rotated grid with irregular columns and staggered rows.
        self.field_angle = math.radians(rng.uniform(12, 28))
        span = 1.5 * length + 2000
        widths = rng.uniform(110, 380, size=int(span / 110) + 2)
        self.column_edges = np.cumsum(widths) - span / 2
        self.column_edges = self.column_edges.astype(np.float32)
        self.row_height = rng.uniform(120, 420, size=self.column_edges.size + 1).astype(np.float32)
        self.row_offset = rng.uniform(0, 420, size=self.column_edges.size + 1).astype(np.float32)
        # Noise fields.
        self.forest_noise = SmoothNoise(rng, length, spacing=60.0, smooth=4.0)
        self.detail_noise = SmoothNoise(rng, length, spacing=15.0, smooth=2.0)
        self.forest_type_noise = SmoothNoise(rng, length, spacing=100.0, smooth=3.0)
        # Town on the river, villages and quarries on land, a lake north of the river.
        town_east = length * rng.uniform(0.45, 0.6)
        self.town = _Blob(
            town_east,
            float(self.river_centre(np.array([town_east]))[0]) + rng.uniform(-60, 60),
            min(900.0, 0.09 * length),
            rng.uniform(0.7, 1.0),
            rng.uniform(0, np.pi),
        )
        villages = max(2, round(length * length / 1e6 / 30))
        self.villages = [
            _Blob(
                length * rng.uniform(0.4, 0.95),
                length * rng.uniform(0.05, 0.95),
                min(rng.uniform(200, 400), 0.05 * length),
                rng.uniform(0.6, 1.0),
                rng.uniform(0, np.pi),
            )
            for _ in range(villages)
        ]
        self.quarries = [
            _Blob(
                length * rng.uniform(0.45, 0.95),
                length * rng.uniform(0.05, 0.95),
                min(rng.uniform(180, 380), 0.04 * length),
                rng.uniform(0.5, 0.9),
                rng.uniform(0, np.pi),
            )
            for _ in range(max(1, round(length * length / 1e6 / 25)))
        ]
        lake_radius = min(600.0, 0.07 * length)
        self.lake = _Blob(
            length * rng.uniform(0.62, 0.85),
            length * rng.uniform(0.12, 0.3),
            lake_radius,
            rng.uniform(0.5, 0.75),
            rng.uniform(0, np.pi),
        )

    # -- geometry -----------------------------------------------------------------------------

    def coast(self, south: np.ndarray) -> np.ndarray:
        """East coordinate (m) of the shoreline for each ``south`` (m); sea lies west of it."""
        length = self.extent
        p = self.coast_phase
        return length * (
            0.30
            + 0.025 * np.sin(2 * np.pi * south / (0.6 * length) + p[0])
            + 0.008 * np.sin(2 * np.pi * south / (0.17 * length) + p[1])
        )

    def river_centre(self, east: np.ndarray) -> np.ndarray:
        """South coordinate (m) of the river's centre line for each ``east`` (m)."""
        length = self.extent
        p = self.river_phase
        return (
            self.river_base
            + length * 0.06 * np.sin(2 * np.pi * east / (0.7 * length) + p[0])
            + length * 0.02 * np.sin(2 * np.pi * east / (0.23 * length) + p[1])
            + min(length * 0.006, 60.0) * np.sin(2 * np.pi * east / 900.0 + p[2])
        )

    def _river_slope(self, east: np.ndarray) -> np.ndarray:
        step = 1.0
        return (self.river_centre(east + step) - self.river_centre(east - step)) / (2 * step)

    def field_ids(self, east: np.ndarray, south: np.ndarray) -> np.ndarray:
        """Parcel id (int64) of each position of the grid ``east`` x ``south`` (metres).

        Columns of irregular width along the rotated axis u; in each column, rows of the column's
        own height and offset along v, and about half of those split once more at a random fraction.
        """
        c, s = math.cos(self.field_angle), math.sin(self.field_angle)
        e = east[None, :].astype(np.float32)
        n = south[:, None].astype(np.float32)
        column = np.searchsorted(self.column_edges, e * c + n * s)
        position = (-e * s + n * c - self.row_offset[column]) / self.row_height[column]
        row = np.floor(position)
        ids = column.astype(np.int64) * 100_000 + (row.astype(np.int64) + 50_000)
        split = _hash_uniform(ids, self.seed + 7)
        second = (split < 0.5) & (position - row > 0.25 + split)
        return ids * 2 + second

    def _blob_value(
        self, blob: _Blob, east: np.ndarray, south: np.ndarray, wobble: np.ndarray
    ) -> np.ndarray:
        de = (east[None, :] - blob.east).astype(np.float32)
        ds = (south[:, None] - blob.south).astype(np.float32)
        c, s = math.cos(blob.angle), math.sin(blob.angle)
        a = (de * c + ds * s) * (1 / blob.radius)
        b = (ds * c - de * s) * (1 / (blob.radius * blob.aspect))
        return np.sqrt(a * a + b * b) + 0.25 * wobble

    @staticmethod
    def _near(blob: _Blob, east: np.ndarray, south: np.ndarray) -> bool:
        """Whether the window ``east`` x ``south`` can touch the blob (wobble clipped to +-2)."""
        reach = 1.5 * blob.radius
        de = max(east[0] - blob.east, blob.east - east[-1], 0.0)
        ds = max(south[0] - blob.south, blob.south - south[-1], 0.0)
        return de * de + ds * ds <= reach * reach

    def codes(self, east: np.ndarray, south: np.ndarray) -> np.ndarray:
        """WorldCover codes (uint8) at the pixel centres ``east`` x ``south`` (m, increasing).

        Features whose reach does not touch the window are skipped, so most windows only evaluate
        the parcels and the forest field.
        """
        fields = self.field_ids(east, south)
        u = _hash_uniform(fields, self.seed)
        del fields
        codes = np.where(u < 0.56, CROPLAND, GRASSLAND).astype(np.uint8)
        codes[u > 0.95] = FOREST  # woodlots
        del u
        detail = np.clip(self.detail_noise(east, south).astype(np.float32), -2, 2)
        inland = np.clip(east / self.extent - 0.3, 0, 1).astype(np.float32)[None, :]
        forest = self.forest_noise(east, south).astype(np.float32) + 0.15 * detail + 1.2 * inland
        codes[forest > 1.45] = FOREST
        del forest
        for blob in self.quarries:
            if self._near(blob, east, south):
                codes[self._blob_value(blob, east, south, detail) < 1.0] = BARE
        for blob in [self.town, *self.villages]:
            if self._near(blob, east, south):
                codes[self._blob_value(blob, east, south, detail) < 1.0] = BUILT_UP
        if self._near(self.lake, east, south):
            codes[self._blob_value(self.lake, east, south, 0.6 * detail) < 1.0] = WATER
        # River: perpendicular distance to the centre line below half its width (wider downstream).
        centre = self.river_centre(east)
        slope = self._river_slope(east)
        half_width = (14.0 + 12.0 * (1 - east / self.extent)) / np.sqrt(1 + slope * slope)
        if (
            south[0] <= (centre + 1.5 * half_width).max()
            and south[-1] >= (centre - 1.5 * half_width).min()
        ):
            offset = np.abs(south[:, None] - centre[None, :]).astype(np.float32)
            codes[offset < half_width.astype(np.float32)[None, :] * (1 + 0.2 * detail)] = WATER
        coast = self.coast(south)[:, None]
        if east[0] < coast.max() + 100.0:
            beach = np.clip(35.0 + 30.0 * detail, 0, None)
            codes[(east[None, :] >= coast) & (east[None, :] < coast + beach)] = BARE
            codes[east[None, :] < coast] = WATER
        return codes

    def is_sea(self, east: np.ndarray, south: np.ndarray) -> np.ndarray:
        """True west of the shoreline (the sea, as opposed to the river and lake)."""
        return east[None, :] < self.coast(south)[:, None]


def _demo_grid(demo_cfg: Mapping[str, Any], pixel_size: float) -> Grid:
    size_m = int(demo_cfg["size"]) * SCENE_RESOLUTION
    width = round(size_m / pixel_size)
    x0, y0 = (float(v) for v in demo_cfg["origin"])
    return Grid(
        CRS.from_user_input(demo_cfg["crs"]),
        Affine(pixel_size, 0, x0, 0, -pixel_size, y0),
        width,
        width,
    )


def _check_demo_cfg(demo_cfg: Mapping[str, Any]) -> dict[str, Any]:
    cfg = {
        "seed": 42,
        "size": 1500,
        "mask_factor": 10,
        "crs": "EPSG:32631",
        "origin": [400000.0, 4600000.0],
    }
    cfg.update(demo_cfg)
    try:
        crs = CRS.from_user_input(cfg["crs"])
    except Exception as error:
        raise InputError(f"demo.crs {cfg['crs']!r} is not a CRS GDAL knows ({error})") from None
    if not crs.is_projected:
        raise InputError(
            f"demo.crs {cfg['crs']!r} must be a projected CRS in metres (e.g. a UTM zone)"
        )
    return cfg


def _prefetched(function: Any, items: Sequence[Any], workers: int) -> Iterator[Any]:
    """``function(item)`` for each item, in order, computed by ``workers`` threads at most
    ``2 * workers`` items ahead (numpy releases the GIL; memory stays bounded)."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(function, item))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _pixel_centres(start: int, count: int, pixel: float) -> np.ndarray:
    return (start + np.arange(count) + 0.5) * pixel


def make_demo_landcover(out_path: str | Path, demo_cfg: Mapping[str, Any]) -> None:
    """Write the demo's fine land-cover GeoTIFF (uint8 WorldCover codes, nodata 0).

    The map covers the whole demo scene: ``demo.size * demo.mask_factor`` pixels a side, pixel
    ``10 / mask_factor`` m (1 m by default), CRS ``demo.crs``, upper-left corner ``demo.origin``.
    Tiled and DEFLATE-compressed with overviews. Generated window by window (1024 x 1024 px), so
    peak memory is a few tens of MB whatever the size.
    """
    cfg = _check_demo_cfg(demo_cfg)
    pixel = SCENE_RESOLUTION / int(cfg["mask_factor"])
    grid = _demo_grid(cfg, pixel)
    landscape = DemoLandscape(grid.width * pixel, int(cfg["seed"]))

    def codes_of(window: Window) -> tuple[Window, np.ndarray]:
        east = _pixel_centres(window.col_off, window.width, pixel)
        south = _pixel_centres(window.row_off, window.height, pixel)
        return window, landscape.codes(east, south)

    windows = [
        Window(col, row, min(WINDOW_1M, grid.width - col), min(WINDOW_1M, grid.height - row))
        for row in range(0, grid.height, WINDOW_1M)
        for col in range(0, grid.width, WINDOW_1M)
    ]

    write_geotiff_windows(
        out_path,
        grid,
        "uint8",
        0,
        _prefetched(codes_of, windows, workers=2),
        descriptions=["land cover (ESA WorldCover codes)"],
        tags={
            "DEMO_SEED": str(cfg["seed"]),
            "CODES": "10 tree cover, 30 grassland, 40 cropland, 50 built-up, 60 bare, 80 water",
        },
        colormap=WORLDCOVER_COLORS,
        overview_factors=[f for f in (2, 4, 8, 16, 32) if grid.width / f >= 128],
    )


# ----------------------------------------------------------------------------------------------
# The scene
# ----------------------------------------------------------------------------------------------


def _day_of_year(date: str) -> int:
    if not date:
        return 167  # mid June, the default demo date
    try:
        return dt.date.fromisoformat(date).timetuple().tm_yday
    except ValueError:
        raise InputError(f"scene date {date!r} is not a date YYYY-MM-DD") from None


def _bump(doy: np.ndarray, peak: float, width: float) -> np.ndarray:
    return np.exp(-(((doy - peak) / width) ** 2))


def crop_state(crop: np.ndarray, doy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Green cover (0..1) and how golden (0..1, stubble / ripe straw) the soil is, per field.

    ``crop`` indexes :data:`CROP_TYPES`; ``doy`` is the day of year (per field, jittered). Cereals
    are green in spring, ripe in June and harvested to stubble in July; maize greens from June to a
    peak in August; sunflowers peak in July; alfalfa stays green with cuts.
    """
    cereal_green = 0.1 + 0.85 * _bump(doy, 115, 40)
    ripe = np.clip((doy - 140) / 40, 0, 1)
    maize_green = 0.04 + 0.92 * _bump(doy, 220, 40)
    sunflower_green = 0.05 + 0.9 * _bump(doy, 190, 32)
    alfalfa_green = 0.72 + 0.22 * np.sin(doy / 9.0)
    green = np.choose(
        crop, [cereal_green * (1 - ripe), maize_green, sunflower_green, alfalfa_green]
    )
    golden = np.choose(crop, [ripe, 0 * doy, np.clip((doy - 215) / 30, 0, 1), 0 * doy])
    # Push green cover away from the middle: fields are mostly clearly green or clearly soil.
    green = np.clip((green - 0.5) * 1.6 + 0.5, 0.03, 0.96)
    return green, golden


def deciduous_leaf_cover(doy: float) -> float:
    """Leaf cover (0..1) of deciduous broadleaf trees on day of year ``doy``: leaf-out centred on
    day 118 (late April), leaf fall on day 300 (late October); 0.5 on those days."""
    out = 1 / (1 + math.exp(-(doy - 118) / 7.0))
    fall = 1 / (1 + math.exp(-(doy - 300) / 9.0))
    return float(out * (1 - fall))


@dataclass(frozen=True)
class _SceneLook:
    doy: int
    noise_seed: int
    seed: int


def _spectrum(name: str) -> np.ndarray:
    return np.asarray(SPECTRA[name], dtype=np.float32)[:, None, None]


def simulate_reflectance(
    fractions: Mapping[int, np.ndarray],
    fields: np.ndarray,
    forest_type: np.ndarray,
    texture: np.ndarray,
    sea: np.ndarray,
    look: _SceneLook,
    rng: np.random.Generator,
) -> np.ndarray:
    """Surface reflectance (12, h, w) float32 of 10 m pixels in the order of ``L2A_BANDS``.

    ``fractions[code]`` is the share (0..1) of each class in each pixel; ``fields`` the parcel id
    at the pixel centre; ``forest_type`` and ``texture`` smooth fields of unit variance; ``sea``
    whether the pixel is sea. Pixels with no class share get reflectance 0.
    """
    shape = fields.shape
    u_type = _hash_uniform(fields, look.seed + 1)
    u_bright = _hash_uniform(fields, look.seed + 2)
    u_shift = _hash_uniform(fields, look.seed + 3)
    # Crops: type per field, phenology at the scene's date with a per-field shift of +-12 days.
    crop = np.searchsorted(np.cumsum(CROP_SHARES)[:-1], u_type, side="right")
    doy = look.doy + (u_shift - 0.5) * 24
    green, golden = crop_state(crop, doy)
    soil = _spectrum("brown_soil") * (1 - golden) + _spectrum("golden_stubble") * golden
    crop_refl = _spectrum("green_crop") * green + soil * (1 - green)
    crop_refl *= (0.92 + 0.16 * u_bright)[None]
    # Grassland: green in spring, dry in the Mediterranean summer, per field.
    grass_green = np.clip(
        0.35 + 0.55 * _bump(np.asarray(look.doy, float), 120, 60) + (u_type - 0.5) * 0.2, 0, 1
    )
    grass_refl = _spectrum("grass_green") * grass_green + _spectrum("dry_grass") * (1 - grass_green)
    grass_refl = grass_refl * (0.93 + 0.14 * u_bright)[None]
    # Forest: broadleaf / conifer mix from a smooth field, canopy texture. Broadleaf trees are
    # deciduous: leafless branches over litter in winter and early spring (leaf-out mid April to
    # early May, leaf fall in late October); conifers stay green.
    broadleaf = (1 / (1 + np.exp(-2.0 * forest_type))).astype(np.float32)[None]
    season = 0.9 + 0.1 * _bump(np.asarray(look.doy, float), 190, 60)
    leaves = deciduous_leaf_cover(float(look.doy))
    canopy = _spectrum("broadleaf") * season * leaves + _spectrum("leafless") * (1 - leaves)
    forest_refl = canopy * broadleaf + _spectrum("conifer") * (1 - broadleaf)
    forest_refl = forest_refl * (1 + 0.08 * texture)[None]
    # Built-up: roofs and streets with gardens, strongly textured.
    gardens = np.clip(0.25 + 0.12 * texture + 0.1 * rng.standard_normal(shape), 0, 0.7)[None]
    built_refl = _spectrum("built") * (1 - gardens) + _spectrum("grass_green") * gardens
    built_refl = built_refl * (1 + 0.12 * rng.standard_normal(shape))[None]
    # Bare soil: sand near the sea, red-brown soil elsewhere.
    bare_refl = _spectrum("bare_soil") * (1 + 0.07 * texture)[None]
    water_refl = np.where(sea[None], _spectrum("sea"), _spectrum("inland_water"))

    per_class = {
        CROPLAND: crop_refl,
        GRASSLAND: grass_refl,
        FOREST: forest_refl,
        BUILT_UP: built_refl,
        BARE: bare_refl,
        WATER: water_refl,
    }
    reflectance = np.zeros((len(L2A_BANDS), *shape), dtype=np.float32)
    for code, spectrum in per_class.items():
        share = fractions.get(code)
        if share is not None:
            reflectance += spectrum * share[None]
    valid = sum(fractions.values()) > 0
    # Sensor and atmosphere: a little multiplicative and additive noise per band.
    reflectance *= 1 + 0.02 * rng.standard_normal(reflectance.shape, dtype=np.float32)
    reflectance += 0.004 * rng.standard_normal(reflectance.shape, dtype=np.float32)
    reflectance[:, ~valid] = 0
    return np.clip(reflectance, -0.05, 1.2)


def class_fractions(
    codes: np.ndarray, factor: int, classes: Sequence[int] = DEMO_CODES
) -> dict[int, np.ndarray]:
    """Share (float32, 0..1) of each class code in each ``factor`` x ``factor`` block."""
    h, w = codes.shape[0] // factor, codes.shape[1] // factor
    blocks = codes[: h * factor, : w * factor].reshape(h, factor, w, factor)
    scale = np.float32(1.0 / (factor * factor))
    return {code: (blocks == code).sum(axis=(1, 3), dtype=np.uint16) * scale for code in classes}


def _block_mean(array: np.ndarray, weights: np.ndarray, factor: int) -> np.ndarray:
    """Weighted mean over ``factor`` x ``factor`` blocks of the last two axes."""
    *lead, h, w = array.shape
    a = (
        (array * weights)
        .reshape(*lead, h // factor, factor, w // factor, factor)
        .sum(axis=(-1, -3))
    )
    wsum = weights.reshape(h // factor, factor, w // factor, factor).sum(axis=(-1, -3))
    return np.where(wsum > 0, a / np.maximum(wsum, 1e-9), 0)


def no_data_corner(rows: np.ndarray, cols: np.ndarray, height: float, width: float) -> np.ndarray:
    """True in the scene's no-data triangle (upper-right, like the edge of a satellite swath).

    ``rows`` / ``cols`` are fractional pixel-centre positions of any grid of the scene whose size
    is ``height`` x ``width``; the triangle's legs are 30 % of the width and 35 % of the height.
    """
    x = cols[None, :] / width
    y = rows[:, None] / height
    return (x - 0.70) / 0.30 + (0.35 - y) / 0.35 > 1.0


def _scl(reflectance: np.ndarray, water_share: np.ndarray) -> np.ndarray:
    """Sen2Cor-like scene classification: 4 vegetation, 5 not vegetated, 6 water, 0 no data."""
    red, nir = reflectance[L2A_BANDS.index("B04")], reflectance[L2A_BANDS.index("B08")]
    ndvi = (nir - red) / np.maximum(nir + red, 1e-6)
    scl = np.where(ndvi > 0.4, 4, 5).astype(np.uint8)
    scl[water_share > 0.5] = 6
    return scl


def reflectance_to_dn(reflectance: np.ndarray, nodata: np.ndarray) -> np.ndarray:
    """L2A digital numbers from baseline 04.00 on: DN = (reflectance + 0.1) * 10000, 0 = no data."""
    dn = np.clip(np.rint((reflectance + 0.1) * 10000.0), 1, 65535).astype(np.uint16)
    dn[..., nodata] = 0
    return dn


def tile_id_for(crs: CRS) -> str:
    """An MGRS-like tile id (``T31TCG`` for the default UTM zone 31N) for file names."""
    epsg = crs.to_epsg() or 0
    zone = epsg % 100 if 32601 <= epsg <= 32760 else 31
    return f"T{zone:02d}TCG"


def make_demo_scene(
    out_path: str | Path,
    landcover_path: str | Path,
    demo_cfg: Mapping[str, Any],
    scene_name: str,
    date: str,
    bands: Sequence[str],
) -> None:
    """Write a synthetic Sentinel-2 L2A product (a ``.SAFE`` folder) of the demo area.

    All 12 L2A bands are written at their native resolution as lossless JP2 with ESA's naming
    (``GRANULE/<id>/IMG_DATA/R10m/T31TCG_20240615T105031_B02_10m.jp2``; 20 m bands and SCL in
    ``R20m``, B01/B09 in ``R60m``), plus ``MTD_MSIL2A.xml`` (baseline 05.10, quantification 10000,
    offset -1000 per band), so ingest takes the real path. Stored DN = (reflectance + 0.1) * 10000;
    0 is no data (an upper-right triangle, like a swath edge). The land cover comes from
    ``landcover_path`` (the map of :func:`make_demo_landcover`, read in strips); the date sets the
    crops' and grass's phenology and ``scene_name`` the noise, so two scenes share one mask and look
    different. ``bands`` must be L2A bands (checked); all bands are written regardless.

    Memory: strips of 120 rows of the scene (a few arrays of 12 bands x 120 x size float32 plus the
    1 m strip of the map; about 150 MB at the default size 1500, growing with the width only).
    """
    cfg = _check_demo_cfg(demo_cfg)
    unknown = [b for b in bands if b not in L2A_BANDS]
    if unknown:
        raise InputError(
            f"bands {unknown} are not in Sentinel-2 L2A products; L2A bands: {list(L2A_BANDS)}"
        )
    factor = int(cfg["mask_factor"])
    grid10 = _demo_grid(cfg, SCENE_RESOLUTION)
    size = grid10.width
    seed = int(cfg["seed"])
    landscape = DemoLandscape(size * SCENE_RESOLUTION, seed)
    look = _SceneLook(
        doy=_day_of_year(date), noise_seed=_text_seed(seed, scene_name, date), seed=seed
    )
    rng = np.random.default_rng(look.noise_seed)
    texture_noise = SmoothNoise(
        np.random.default_rng(look.noise_seed + 1), size * SCENE_RESOLUTION, 20.0, 1.0
    )

    acquired = dt.datetime.combine(
        dt.date.fromisoformat(date) if date else dt.date(2024, 6, 15), dt.time(10, 50, 31)
    )
    info = SafeProductInfo(
        level="L2A",
        tile_id=tile_id_for(grid10.crs),
        sensing_time=acquired,
        processing_baseline="05.10",
        quantification=10000,
        add_offset=-1000,
    )
    grids = {res: _coarser(grid10, res) for res in (10, 20, 60)}
    padded = int(math.ceil(size / 6) * 6)

    def strips() -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        for row in range(0, padded, STRIP_10M):
            h = min(STRIP_10M, padded - row)
            window_1m = Window(0, row * factor, padded * factor, h * factor)
            codes = read_window(landcover_path, window_1m, fill=0)
            fractions = class_fractions(codes, factor)
            del codes
            east = _pixel_centres(0, padded, SCENE_RESOLUTION)
            south = _pixel_centres(row, h, SCENE_RESOLUTION)
            reflectance = simulate_reflectance(
                fractions,
                landscape.field_ids(east, south),
                landscape.forest_type_noise(east, south),
                texture_noise(east, south).astype(np.float32),
                landscape.is_sea(east, south),
                look,
                rng,
            )
            valid = np.asarray(sum(fractions.values()) > 0, dtype=np.float32)
            out: dict[str, np.ndarray] = {}
            for res in (10, 20, 60):
                k = res // 10
                r0 = row // k
                hh = h // k
                rows = np.arange(r0, r0 + hh) + 0.5
                cols = np.arange(padded // k) + 0.5
                nodata = no_data_corner(rows, cols, size / k, size / k) | (
                    _block_mean(valid[None], np.ones_like(valid), k)[0] == 0
                )
                data = reflectance if k == 1 else _block_mean(reflectance, valid[None], k)
                dn = reflectance_to_dn(data, nodata)
                for band in L2A_BANDS:
                    if NATIVE_RESOLUTION[band] == res:
                        out[band] = dn[L2A_BANDS.index(band)]
                if res == 20:
                    water = _block_mean(fractions[WATER][None], np.ones_like(valid), 2)[0]
                    scl = _scl(data, water)
                    scl[nodata] = 0
                    out["SCL"] = scl
            yield row, out

    write_safe_product(out_path, info, grids, strips())


def _coarser(grid10: Grid, resolution: int) -> Grid:
    k = resolution // 10
    t = grid10.transform
    return Grid(
        grid10.crs,
        Affine(t.a * k, 0, t.c, 0, t.e * k, t.f),
        math.ceil(grid10.width / k),
        math.ceil(grid10.height / k),
    )
