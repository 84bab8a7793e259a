"""Window planners (s2landcover.windows): pure functions, no files."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from rasterio.windows import Window

from s2landcover.windows import aligned_windows, block_windows, grid_windows, window_starts


def coverage(windows: list[Window], height: int, width: int) -> np.ndarray:
    cover = np.zeros((height, width), dtype=int)
    for w in windows:
        cover[w.toslices()] += 1
    return cover


def test_block_windows_tile_the_raster_once_row_major_with_clipped_edges() -> None:
    windows = block_windows(1000, 700, 256)
    assert (coverage(windows, 700, 1000) == 1).all()
    assert max(w.width for w in windows) == 256
    assert windows[1] == Window(256, 0, 256, 256)  # width first: the next window is to the right
    assert windows[-1] == Window(768, 512, 232, 188)  # clipped to the raster
    assert block_windows(10, 7, 4, 3)[:2] == [Window(0, 0, 4, 3), Window(4, 0, 4, 3)]


def test_aligned_windows_tile_the_raster_once_on_block_multiples() -> None:
    windows = aligned_windows(1000, 700, 256, 128, 500)
    for w in windows:
        assert w.col_off % 256 == 0 and w.row_off % 128 == 0
    assert (coverage(windows, 700, 1000) == 1).all()
    assert windows[0] == Window(0, 0, 512, 512)  # 500 px -> 2 blocks of 256 x 4 blocks of 128
    assert aligned_windows(100, 100, 512, 512, 64)[0] == Window(0, 0, 100, 100)  # >= one block


def test_window_starts_shift_covers_every_pixel_and_drop_keeps_whole_windows() -> None:
    assert window_starts(50, 16, 16) == [0, 16, 32, 34]
    assert window_starts(50, 16, 16, edge="drop") == [0, 16, 32]
    assert window_starts(48, 16, 16) == [0, 16, 32]  # exact fit: no extra window
    assert window_starts(50, 16, 8) == [0, 8, 16, 24, 32, 34]
    for size, tile, stride in itertools.product([16, 17, 50, 99], [16], [5, 16]):
        covered = np.zeros(size, dtype=bool)
        for offset in window_starts(size, tile, stride):
            assert 0 <= offset and offset + tile <= size
            covered[offset : offset + tile] = True
        assert covered.all()


@pytest.mark.parametrize("length", [64, 65, 100, 129, 300, 1000])
@pytest.mark.parametrize("shift", [0, 32])
def test_window_starts_with_shift_cover_the_axis_inside_it(length: int, shift: int) -> None:
    window, stride = 64, 48
    starts = window_starts(length, window, stride, shift)
    covered = np.zeros(length, dtype=int)
    for s in starts:
        covered[s : s + window] += 1
    assert covered.min() >= 1
    assert starts[0] == 0 and starts[-1] + window == length  # last window shifted inside
    assert all(0 < b - a <= stride for a, b in itertools.pairwise(starts))
    if shift and length > 2 * window:
        assert starts[1] == shift  # inner windows on the shifted stride grid


def test_window_starts_short_axis_one_padded_window_or_none_when_dropping() -> None:
    assert window_starts(40, 64, 48) == [0]  # the caller pads the axis to the window
    assert window_starts(40, 64, 48, edge="drop") == []
    with pytest.raises(ValueError, match="edge"):
        window_starts(100, 16, 16, edge="pad")
    with pytest.raises(ValueError, match="stride"):
        window_starts(100, 16, 0)


def test_grid_windows_are_rows_of_square_windows_width_first() -> None:
    rows = grid_windows(50, 70, 16, 16, edge="drop")  # 50 px wide, 70 px high
    assert len(rows) == 4 and all(len(r) == 3 for r in rows)
    assert rows[1][2] == Window(32, 16, 16, 16)
    assert all(w.row_off == r[0].row_off for r in rows for w in r)
    shifted = grid_windows(50, 70, 16, 16)
    assert [r[0].row_off for r in shifted] == [0, 16, 32, 48, 54]
    assert [w.col_off for w in shifted[0]] == [0, 16, 32, 34]
