"""Progress of a long raster stage as plain log lines with an ETA (mask, tiling).

A stage's stderr goes to its log file in the workflow (``2> results/logs/...``), where a redrawn
progress bar is one unreadable line; :class:`ProgressLog` logs a line at most every
``interval_s`` seconds and one at the end, readable with ``tail -f``::

    mask demo.tif: 120/480 windows (25 %), 12 s, ETA 36 s

Thread-safe: worker threads may call :meth:`ProgressLog.advance` at once.
"""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger("s2landcover.progress")

DEFAULT_INTERVAL_S = 10.0


def format_duration(seconds: float) -> str:
    """``seconds`` as ``"42 s"``, ``"12 min"`` or ``"3.5 h"`` (rounded for a progress line)."""
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        return "unknown"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def progress_line(what: str, done: int, total: int, unit: str, elapsed_s: float) -> str:
    """``"{what}: {done}/{total} {unit} (p %), {elapsed}, ETA {left}"``; the ETA assumes the rest
    goes at the mean pace so far (``"done"`` when ``done == total``)."""
    share = done / total if total else 1.0
    parts = f"{what}: {done}/{total} {unit} ({100 * share:.0f} %), {format_duration(elapsed_s)}"
    if done >= total:
        return f"{parts}, done"
    if done == 0:
        return f"{parts}, ETA unknown"
    return f"{parts}, ETA {format_duration(elapsed_s * (total - done) / done)}"


class ProgressLog:
    """Counts finished work items and logs :func:`progress_line` now and then.

    Args:
        what: what is being done (``"mask demo.tif"``).
        total: items to do.
        unit: the items' name, plural (``"windows"``).
        interval_s: least seconds between two lines (the last line is always written).
        enabled: False logs nothing.
        logger: where the lines go (INFO).
    """

    def __init__(
        self,
        what: str,
        total: int,
        unit: str,
        interval_s: float = DEFAULT_INTERVAL_S,
        enabled: bool = True,
        logger: logging.Logger = log,
    ) -> None:
        self.what, self.total, self.unit = what, int(total), unit
        self.interval_s = float(interval_s)
        self.enabled = enabled
        self.logger = logger
        self.done = 0
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._last = self._started

    def advance(self, count: int = 1) -> None:
        """Record ``count`` more finished items; log when ``interval_s`` has passed or all done."""
        with self._lock:
            self.done += count
            now = time.monotonic()
            if not self.enabled:
                return
            if self.done >= self.total or now - self._last >= self.interval_s:
                self._last = now
                self.logger.info(
                    "%s",
                    progress_line(self.what, self.done, self.total, self.unit, now - self._started),
                )
