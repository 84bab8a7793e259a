"""Atomic writes: fixed temporary names that the next run removes, free space, disk-full errors.

Every writer of the package writes its output under a temporary name beside it and renames it when
complete (:func:`atomic_path`). The temporary name is fixed per output
(``.<name>.partial<suffix>``, :func:`partial_path`; scratch files of a writer
``.<name>.stage<suffix>``), so a run killed outright (SIGKILL, out of memory, a lost node) leaves
something that the next run of the same output recognises and removes before it starts
(:func:`remove_leftovers`), instead of a uniquely named file or folder that nothing ever removes.
One writer per output at a time (Snakemake never runs two jobs with the same output).

A full disk is an :class:`NoSpaceError` (an :class:`~s2landcover.errors.InputError`: the command
line prints it without a traceback) saying "no space left on device at <path> (needs about N MB,
M MB free)", raised before anything is written where the size is known
(:func:`require_free_space`) and in place of the raw error when a write fails on a full disk
(``OSError`` ENOSPC, GDAL's ``TIFFWriteDirectoryTagData:IO error``, a C++ ``basic_ios::clear:
iostream error``); what was written is removed either way.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

from s2landcover.errors import InputError

MB = 1 << 20
# Free space (bytes) under which a failed or suspicious write counts as "disk full": a write fails
# when the next block does not fit, so at most a block (512 x 512 px x 2 bytes) is left.
LOW_SPACE_BYTES = 2 * MB
# Messages of a write that failed for want of space (when the device is also nearly full): GDAL and
# libtiff (``TIFFWriteDirectoryTagData:IO error``, ``Write error at scanline``), rasterio ("Write
# failed"), the C++ streams of Arrow and torch (``basic_ios::clear: iostream error``).
_WRITE_FAILURE = re.compile(
    r"no space left|disk quota|errno 28|enospc|iostream error|io error|write error|"
    r"write failed|writeencoded|seek error|short write|cannot write|failed to write",
    re.IGNORECASE,
)
_SURELY_FULL = re.compile(r"no space left|errno 28|enospc|disk quota", re.IGNORECASE)


class NoSpaceError(InputError):
    """The device holding an output has no room for it; nothing of the output is left behind."""


def partial_path(final: str | Path, tag: str = "partial") -> Path:
    """The fixed temporary name of ``final``: ``.<name>.<tag><suffix>`` beside it.

    The suffix is kept so that GDAL and pandas pick the right format from the name.
    """
    final = Path(final)
    return final.with_name(f".{final.name}.{tag}{final.suffix}")


def _leftover_pattern(final: Path) -> re.Pattern[str]:
    # This module's names (.partial, .stage) and the random ones of earlier versions
    # (.<name>.<8 hex>.tmp<suffix>, .<name>.<8 hex>.stage.tif), with their GDAL sidecars.
    return re.compile(rf"^\.{re.escape(final.name)}\.(partial|stage|[0-9a-f]{{8}}\.(tmp|stage))")


def remove_leftovers(final: str | Path, keep: Iterable[str | Path] = ()) -> list[Path]:
    """Remove what an interrupted earlier write of ``final`` left beside it; return the paths.

    Only this output's temporary names are touched (never ``final`` itself, never a download
    staging folder ``.<name>.download`` that a later run resumes from).
    """
    final = Path(final)
    if not final.parent.is_dir():
        return []
    pattern = _leftover_pattern(final)
    kept = {Path(k).name for k in keep}
    removed = []
    for entry in final.parent.iterdir():
        if pattern.match(entry.name) and entry.name not in kept:
            _remove(entry)
            removed.append(entry)
    return removed


def free_bytes(path: str | Path) -> int:
    """Bytes available to this user on the file system that holds ``path`` (or would hold it)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def no_space_error(path: str | Path, needs_bytes: float | None) -> NoSpaceError:
    """The error of a full device at ``path``: what is needed (about) and what is free."""
    free = free_bytes(path)
    needs = f"needs about {_mb(needs_bytes)} MB, " if needs_bytes else ""
    return NoSpaceError(
        f"no space left on device at {path} ({needs}{_mb(free)} MB free); free some space or "
        "write the results to another disk, then run again (nothing half-written was left)"
    )


def _mb(value: float) -> str:
    mb = value / MB
    return f"{mb:.2f}" if mb < 1 else f"{mb:.1f}" if mb < 10 else f"{mb:.0f}"


def require_free_space(path: str | Path, needs_bytes: float) -> None:
    """:class:`NoSpaceError` when the device of ``path`` has less than ``needs_bytes`` free."""
    if needs_bytes > 0 and free_bytes(path) < needs_bytes:
        raise no_space_error(path, needs_bytes)


def is_disk_full(error: BaseException, path: str | Path) -> bool:
    """True when ``error`` (of a write under ``path``) is a full device.

    ``OSError`` ENOSPC / EDQUOT always; a GDAL, Arrow or C++ stream write failure (by its message,
    which rarely says why) when the device is also nearly full (below :data:`LOW_SPACE_BYTES`).
    """
    if isinstance(error, NoSpaceError):
        return False  # already the right error
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = f"{type(error).__name__}: {error}"
    if _SURELY_FULL.search(text):
        return True
    if isinstance(error, Exception) and _WRITE_FAILURE.search(text):
        try:
            return free_bytes(path) < LOW_SPACE_BYTES
        except OSError:
            return False
    return False


def check_written(
    path: str | Path, needs_more_bytes: float = 0, output_bytes: float | None = None
) -> None:
    """After a file was written and closed: :class:`NoSpaceError` when the device is (nearly) full.

    GDAL does not always report a block it failed to flush when a dataset is closed (the error goes
    to its log, the call succeeds); a device left with less than :data:`LOW_SPACE_BYTES` free has
    most likely cut the file. ``needs_more_bytes``: what the next step (overviews, a copy) will
    write, checked before it runs: GDAL's overview builder crashed (segmentation fault) on a full
    device. ``output_bytes``: the size of the whole output, for the message.
    """
    free = free_bytes(path)
    if free < LOW_SPACE_BYTES or free < needs_more_bytes:
        raise no_space_error(path, output_bytes or needs_more_bytes or None)


@contextlib.contextmanager
def atomic_path(
    final: str | Path, needs_bytes: float | None = None, keep: Iterable[str | Path] = ()
) -> Iterator[Path]:
    """Yield the temporary path of ``final``; rename it to ``final`` only if the block succeeds.

    Works for files and folders. Leftovers of an interrupted earlier write of ``final`` are removed
    first. ``needs_bytes``: the (estimated) size of what will be written; the device must have that
    much free (:func:`require_free_space`); ``keep``: this writer's own scratch files beside
    ``final``, made before (not leftovers). On error the temporary (and its GDAL sidecars
    ``<tmp>.aux.xml``, ``<tmp>.ovr``) is removed; a write that failed on a full device is re-raised
    as :class:`NoSpaceError`. An interrupted or failed run never leaves something that looks
    complete, and never anything that the next run does not remove.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(final, keep)
    tmp = partial_path(final)
    if needs_bytes:
        require_free_space(final.parent, needs_bytes)
    try:
        yield tmp
    except BaseException as error:
        full = is_disk_full(error, final.parent)  # before the temporary frees the space
        _remove(tmp)
        for sidecar in tmp.parent.glob(glob.escape(tmp.name) + ".*"):
            _remove(sidecar)
        if full:
            raise no_space_error(final.parent, needs_bytes) from error
        raise
    if final.is_dir() and not final.is_symlink():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for sidecar in tmp.parent.glob(glob.escape(tmp.name) + ".*"):
        os.replace(sidecar, final.with_name(final.name + sidecar.name[len(tmp.name) :]))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


__all__ = [
    "NoSpaceError",
    "atomic_path",
    "check_written",
    "free_bytes",
    "is_disk_full",
    "no_space_error",
    "partial_path",
    "remove_leftovers",
    "require_free_space",
]
