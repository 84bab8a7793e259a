"""Overviews built while the rows stream (io.prediction_writer.OverviewPyramid): the class map's
MODE and the confidence raster's NEAREST, equal to GDAL's own (COG driver), nothing left behind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rio_cogeo.cogeo import cog_validate

from s2landcover.classes import ClassTable
from s2landcover.io import prediction_writer
from s2landcover.io.prediction_writer import (
    StreamingRasterWriter,
    _ModeLevel,
    _NearestLevel,
    cog_overview_sizes,
    gdal_chunk_rows,
    gdal_overview_windows,
    mode_of_stack,
    prediction_cog_options,
)
from s2landcover.io.rasters import Grid, overview_factors
from s2landcover.io.windowed import RasterWriter

CLASSES = ClassTable.from_dict(
    {
        "names": ["A", "B", "C"],
        "colors": ["#112233", "#445566", "#778899"],
        "codes": [[1], [2], [3]],
        "water": [],
    }
)
STAGE = {"compress": "zstd", "zstd_level": 1, "zlevel": None, "predictor": None}
COG = prediction_cog_options(categorical=True, overview_resampling="MODE")


def grid(width: int, height: int) -> Grid:
    return Grid(CRS.from_epsg(32631), Affine(10, 0, 4e5, 0, -10, 5e6), width, height)


def class_map(width: int, height: int, seed: int) -> np.ndarray:
    """Few values (many ties in a window), no data (0) in a corner and scattered, 255 too."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, (height, width)).astype(np.uint8)
    labels[rng.random((height, width)) < 0.05] = 255
    labels[: height // 5, : width // 3] = 0
    return labels


def overviews(path: Path) -> list[np.ndarray]:
    with rasterio.open(path) as src:
        count = len(src.overviews(1))
    levels = []
    for level in range(count):
        with rasterio.open(path, overview_level=level) as src:
            levels.append(src.read(1))
    return levels


@pytest.mark.parametrize(
    "size,band",
    [
        ((301, 203), 1),  # odd both ways (windows of 3 px), rows one by one
        ((517, 334), 37),
        ((600, 400), 400),
        ((2051, 600), 100),  # three levels: 1025 x 300 (odd, from full), 512 x 150, 256 x 75
    ],
)
def test_streamed_mode_overviews_equal_gdals_and_the_file_is_byte_identical(
    tmp_path: Path, size: tuple[int, int], band: int
) -> None:
    width, height = size
    labels = class_map(width, height, seed=width)
    ours, gdals = tmp_path / "ours.tif", tmp_path / "gdal.tif"
    with StreamingRasterWriter(
        ours, grid(width, height), classes=CLASSES, overview_resampling="MODE"
    ) as writer:
        for row in range(0, height, band):
            writer.write_rows(row, labels[row : row + band])
    # the path before: GDAL's COG driver builds the MODE overviews from the full-resolution stage
    with RasterWriter(
        gdals, grid(width, height), 1, "uint8", 0, cog=True, profile=STAGE, cog_options=COG,
        classes=CLASSES,
    ) as writer:  # fmt: skip
        writer.dataset.write(labels, 1)
    ours_levels, gdal_levels = overviews(ours), overviews(gdals)
    assert len(ours_levels) == len(overview_factors(width, height)) >= 1
    for ours_level, gdal_level, (w, h) in zip(
        ours_levels, gdal_levels, cog_overview_sizes(width, height, len(gdal_levels)), strict=True
    ):
        assert ours_level.shape == gdal_level.shape == (h, w)
        np.testing.assert_array_equal(ours_level, gdal_level)
    assert ours.read_bytes() == gdals.read_bytes()
    assert cog_validate(str(ours))[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "gdal.tif",
        "gdal.tif.aux.xml",
        "ours.qml",
        "ours.tif",
        "ours.tif.aux.xml",
    ]  # no level stage or VRT left


def test_the_cogs_overviews_are_the_streamed_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GDAL copies the level stages (OVERVIEWS=FORCE_USE_EXISTING), it does not recompute them."""
    monkeypatch.setattr(
        prediction_writer, "mode_of_stack", lambda values, nodata=0: np.full_like(values[0], 7)
    )
    labels = class_map(600, 400, seed=1)
    out = tmp_path / "pred.tif"
    with StreamingRasterWriter(
        out, grid(600, 400), classes=CLASSES, overview_resampling="MODE"
    ) as w:
        w.write_rows(0, labels)
    levels = overviews(out)
    assert len(levels) == 2 and all((level == 7).all() for level in levels)


@pytest.mark.parametrize(
    "window,expected",
    [
        ([1, 2, 2, 1], 2),  # tie 2-2: 2 reaches two votes first (scan position 2)
        ([1, 2, 1, 2], 1),
        ([2, 1, 1, 2], 1),
        ([1, 2, 3, 4], 1),  # all tied at one vote: the first
        ([0, 3, 0, 0], 3),  # no data never votes
        ([0, 2, 3, 2], 2),
        ([0, 0, 0, 0], 0),  # no data only where everything is no data
        ([255, 255, 4, 0], 255),  # 'not observed' is a class like any other
        ([1, 2, 3, 3, 2, 1, 1, 2, 0], 1),  # a 3 x 3 window (odd sizes): 1 reaches 3 first
    ],
)
def test_mode_rule_ties_and_no_data(window: list[int], expected: int) -> None:
    values = [np.array([[v]], np.uint8) for v in window]
    assert mode_of_stack(values, nodata=0)[0, 0] == expected


def test_a_level_streams_with_a_few_rows_in_memory() -> None:
    labels = class_map(41, 203, seed=3)
    whole = _ModeLevel((41, 203), (20, 101), nodata=0).push(labels)
    level = _ModeLevel((41, 203), (20, 101), nodata=0)
    parts = []
    for row in range(0, 203, 5):
        parts.append(level.push(labels[row : row + 5]))
        assert len(level.buffer) <= 2  # at most the rows the next window shares (odd height)
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    assert whole.shape == (101, 20)


def test_level_stages_are_removed_on_error_and_after_a_killed_run(tmp_path: Path) -> None:
    out = tmp_path / "pred.tif"
    labels = class_map(600, 400, seed=2)
    with pytest.raises(RuntimeError, match="boom"):
        with StreamingRasterWriter(
            out, grid(600, 400), classes=CLASSES, overview_resampling="MODE"
        ) as w:
            w.write_rows(0, labels[:300])
            assert (tmp_path / ".pred.tif.stage.ovr2.tif").exists()
            assert (tmp_path / ".pred.tif.stage.ovr4.tif").exists()
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError, match="only 300 of 400 rows"):
        with StreamingRasterWriter(
            out, grid(600, 400), classes=CLASSES, overview_resampling="MODE"
        ) as w:
            w.write_rows(0, labels[:300])
    assert list(tmp_path.iterdir()) == []
    # what a killed run leaves (level stages, the VRT) goes with the next run
    for name in (".pred.tif.stage.ovr2.tif", ".pred.tif.stage.vrt", ".pred.tif.stage.tif"):
        (tmp_path / name).write_bytes(b"x")
    with StreamingRasterWriter(
        out, grid(600, 400), classes=CLASSES, overview_resampling="MODE"
    ) as w:
        w.write_rows(0, labels)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "pred.qml",
        "pred.tif",
        "pred.tif.aux.xml",
    ]


def test_gdal_chunk_edges_cut_the_windows_of_an_odd_level() -> None:
    """A 10,980 px tile: the 1/8 overview (1,372 rows) from the 1/4 (2,745 rows, odd): GDAL
    computes it in chunks of 2,048 source rows; row 1,023's window (2,046..2,048) loses row
    2,048 (measured: a vote over three rows differs from GDAL's in 2 % of that row)."""
    chunk = gdal_chunk_rows((2745, 2745), (1372, 1372), 128)
    assert chunk == 2048
    start, end = gdal_overview_windows(2745, 1372, chunk)
    assert (start[1023], end[1023]) == (2046, 2048)
    assert (start[1024], end[1024]) == (2048, 2051)
    assert (start[1022], end[1022]) == (2044, 2047)
    free_start, free_end = gdal_overview_windows(2745, 1372)
    assert free_end[1023] == 2049 and end[-1] == free_end[-1] == 2745
    assert (start != free_start).sum() == 0 and (end != free_end).sum() == 1


def test_byte_identical_across_a_chunk_edge(tmp_path: Path) -> None:
    """3,001 x 2,999 px: GDAL's first level is computed in chunks of 2,048 rows of the odd full
    resolution; overview row 1,023 is cut at the chunk's edge."""
    width, height = 3001, 2999
    labels = class_map(width, height, seed=11)
    ours, gdals = tmp_path / "ours.tif", tmp_path / "gdal.tif"
    with StreamingRasterWriter(
        ours, grid(width, height), classes=CLASSES, overview_resampling="MODE"
    ) as writer:
        for row in range(0, height, 1000):
            writer.write_rows(row, labels[row : row + 1000])
    with RasterWriter(
        gdals, grid(width, height), 1, "uint8", 0, cog=True, profile=STAGE, cog_options=COG,
        classes=CLASSES,
    ) as writer:  # fmt: skip
        writer.dataset.write(labels, 1)
    assert ours.read_bytes() == gdals.read_bytes()


@pytest.mark.parametrize("size", [(301, 203), (600, 400), (2051, 600), (3001, 2999)])
def test_streamed_nearest_overviews_of_the_confidence_raster_are_gdals(
    tmp_path: Path, size: tuple[int, int]
) -> None:
    width, height = size
    confidence = np.random.default_rng(width).integers(0, 256, (height, width)).astype(np.uint8)
    ours, gdals = tmp_path / "ours.tif", tmp_path / "gdal.tif"
    with StreamingRasterWriter(ours, grid(width, height), description="confidence") as writer:
        for row in range(0, height, 333):
            writer.write_rows(row, confidence[row : row + 333])
    with RasterWriter(
        gdals, grid(width, height), 1, "uint8", 0, cog=True, profile=STAGE,
        cog_options=prediction_cog_options(False, "NEAREST"), descriptions=["confidence"],
    ) as writer:  # fmt: skip
        writer.dataset.write(confidence, 1)
    assert len(overviews(ours)) == len(overview_factors(width, height))
    assert ours.read_bytes() == gdals.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gdal.tif", "ours.qml", "ours.tif"]


def test_a_nearest_level_streams_row_by_row() -> None:
    values = np.random.default_rng(4).integers(0, 256, (203, 41)).astype(np.uint8)
    whole = _NearestLevel((41, 203), (20, 101)).push(values)
    level = _NearestLevel((41, 203), (20, 101))
    parts = []
    for row in range(203):
        parts.append(level.push(values[row : row + 1]))
        assert len(level.buffer) <= 1  # only a picked row not yet used
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    picks = [int(0.5 + i * 203 / 101) for i in range(101)]  # GDAL: int(0.5 + i * ratio)
    np.testing.assert_array_equal(whole[:, 0], values[picks, 0])


def test_the_room_checked_before_the_cog_copy_counts_the_level_stages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from s2landcover.io import windowed

    calls: list[tuple[float, int, int]] = []
    real = windowed.check_written

    def recording(
        path: Path, needs_more_bytes: float = 0, output_bytes: float | None = None
    ) -> None:
        stage = (tmp_path / ".pred.tif.stage.tif").stat().st_size
        levels = sum(p.stat().st_size for p in tmp_path.glob(".pred.tif.stage.ovr*.tif"))
        calls.append((needs_more_bytes, stage, levels))
        real(path, needs_more_bytes, output_bytes)

    monkeypatch.setattr(windowed, "check_written", recording)
    out = tmp_path / "pred.tif"
    with StreamingRasterWriter(
        out, grid(600, 400), classes=CLASSES, overview_resampling="MODE"
    ) as w:
        w.write_rows(0, class_map(600, 400, seed=3))
    ((needs, stage, levels),) = calls
    assert levels > 0 and needs == pytest.approx(1.4 * (stage + levels))
