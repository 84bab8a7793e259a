"""Window planning: pure functions from raster sizes to rasterio windows (no file is opened).

Every stage that walks a raster by windows plans them here. All sizes,
offsets and strides are in pixels of the raster being planned (its rows and columns), windows are
listed row-major (top row of windows first, left to right), and arguments come in the order
rasterio uses: width (columns) before height (rows).

Three plans:

- :func:`block_windows`: non-overlapping windows of a fixed side tiling the raster, the windows
  on the right and bottom edges clipped to it (mask downsampling, ingest). :func:`aligned_windows`
  picks that side as a whole multiple of the file's block sides, so that every block is decoded
  once (evaluation).
- :func:`window_starts`: offsets along one axis of same-sized windows at a stride, possibly
  overlapping, the last one shifted inside the axis so that windows never reach past the edge
  (``edge="shift"``) or the windows that do not fit dropped (``edge="drop"``); chips and the
  sliding windows of prediction.
- :func:`grid_windows`: those offsets along both axes, as rows of windows (chips).
"""

from __future__ import annotations

from rasterio.windows import Window

EDGES = ("shift", "drop")


def block_windows(
    width: int, height: int, block_width: int, block_height: int | None = None
) -> list[Window]:
    """Windows of ``block_width`` x ``block_height`` px (square when ``block_height`` is None)
    tiling a ``width`` x ``height`` raster once, row-major; edge windows are clipped to the raster.
    """
    block_height = block_width if block_height is None else block_height
    if block_width < 1 or block_height < 1:
        raise ValueError(f"block sides must be at least 1 px, got {block_width} x {block_height}")
    return [
        Window(col, row, min(block_width, width - col), min(block_height, height - row))
        for row in range(0, height, block_height)
        for col in range(0, width, block_width)
    ]


def aligned_windows(
    width: int, height: int, block_width: int, block_height: int, size: int
) -> list[Window]:
    """Windows of about ``size`` x ``size`` px tiling a ``width`` x ``height`` raster whose blocks
    (the file's internal tiles or strips) are ``block_width`` x ``block_height`` px.

    The window sides are whole multiples of the block sides (at least one block), so that every
    block is decoded exactly once; edge windows are clipped to the raster.
    """
    step_x = max(1, round(size / block_width)) * block_width
    step_y = max(1, round(size / block_height)) * block_height
    return block_windows(width, height, step_x, step_y)


def window_starts(
    length: int, size: int, stride: int, shift: int = 0, *, edge: str = "shift"
) -> list[int]:
    """Start offsets of windows of ``size`` px along an axis of ``length`` px, ``stride`` px apart.

    ``edge="shift"``: windows start at 0, at ``shift + k * stride`` (k any integer) strictly
    inside ``(0, length - size)``, and at ``length - size``: the last window is shifted inside
    the axis instead of reaching past its end, so consecutive starts are at most ``stride`` apart
    and every pixel is covered (an exact fit adds no extra window). An axis not longer than the
    window has one window at 0, which reaches past the end when the axis is shorter (the caller
    pads it, or refuses such an axis before planning).

    ``edge="drop"``: only the windows at ``shift % stride + k * stride`` that fit inside the axis
    (none when the axis is shorter than the window); pixels past the last one are not covered.
    """
    if size < 1 or stride < 1:
        raise ValueError(f"window size and stride must be at least 1 px, got {size} and {stride}")
    if edge not in EDGES:
        raise ValueError(f"edge must be 'shift' or 'drop', got {edge!r}")
    last = length - size
    first = shift % stride
    if edge == "drop":
        return list(range(first, last + 1, stride))
    if last <= 0:
        return [0]
    inner = range(first if first > 0 else stride, last, stride)
    return [0, *inner, last]


def grid_windows(
    width: int, height: int, size: int, stride: int, *, edge: str = "shift"
) -> list[list[Window]]:
    """Square windows of ``size`` px at ``stride`` over a ``width`` x ``height`` raster, as rows
    of windows (one list per row offset, top to bottom; left to right within a row), offsets along
    each axis from :func:`window_starts` with ``edge``. Windows may overlap (``stride < size``)."""
    rows = window_starts(height, size, stride, edge=edge)
    cols = window_starts(width, size, stride, edge=edge)
    return [[Window(col, row, size, size) for col in cols] for row in rows]


__all__ = ["EDGES", "aligned_windows", "block_windows", "grid_windows", "window_starts"]
