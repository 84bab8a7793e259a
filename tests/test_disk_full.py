"""A full disk (issue 15 case 5): a clear "no space left on device at <path> (needs about N MB)",
never a segmentation fault or a raw GDAL/iostream traceback, and nothing left that keeps the disk
full.

Two ways to fill a disk: a real 1 MiB tmpfs mounted by the test (root only; skipped with the reason
elsewhere), and an injected ENOSPC or GDAL write error (everywhere) for each large writer: scene
stack, mask, chip store, prediction, download.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.errors import RasterioIOError

from litter_stages import CLASSES, make_inputs, run
from raster_helpers import write_geotiff
from s2landcover.io import atomic, chipstore, stack
from s2landcover.io.atomic import NoSpaceError, atomic_path, is_disk_full

MESSAGE = r"no space left on device at .* \(needs about [0-9.]+ MB, [0-9.]+ MB free\)"
SRC = Path(__file__).parents[1] / "src"


@pytest.fixture
def small_disk(tmp_path: Path) -> Path:
    """A 1 MiB tmpfs at ``tmp_path/disk``, unmounted afterwards."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no `mount` command to make a small file system")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", str(disk)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(
            f"mounting a tmpfs is not allowed here ({done.stderr.decode().strip()}); the "
            "injected-ENOSPC tests below cover every writer"
        )
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def _fill(disk: Path, leave_bytes: int) -> None:
    """Fill ``disk`` so that about ``leave_bytes`` stay free."""
    free = shutil.disk_usage(disk).free
    with open(disk / "filler.bin", "wb") as stream:
        stream.write(b"\0" * max(0, free - leave_bytes))


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ---------------------------------------------------------------------------------------------
# A real full file system (tmpfs)
# ---------------------------------------------------------------------------------------------

INGEST_SCRIPT = """
import sys
sys.path[:0] = [{src!r}, {tests!r}]
import s2landcover.io.stack as stack
stack.COMPRESSED_FRACTION = {fraction}  # 0: the free-space check passes, the write must fail
from s2landcover.ingest import ingest_scene
from litter_stages import BANDS
source = {{"type": "geotiff", "path": {source!r}, "scale": 1e-4}}
try:
    ingest_scene(source, BANDS, {out!r}, {{"block_size": 32}})
except Exception as error:
    print(type(error).__name__, error, file=sys.stderr)
    sys.exit(2)
"""


@pytest.mark.parametrize(
    ("size", "fraction"),
    [(160, 0.4), (160, 0.0), (300, 0.0)],
    ids=["checked-before", "failing-write", "failing-write-with-overviews"],
)
def test_ingest_on_a_full_disk_says_so_and_leaves_nothing(
    small_disk: Path, tmp_path: Path, size: int, fraction: float
) -> None:
    """Before: exit 139 (segmentation fault in GDAL's overview building), an empty log, and a
    hidden temporary file that kept the disk full; or, without overviews, a cut stack renamed
    into place as if complete (exit 0)."""
    rng = np.random.default_rng(0)  # 4 bands of noise: 200 KB (160 px), 720 KB (300 px)
    write_geotiff(
        tmp_path / "in" / "source.tif",
        rng.integers(1, 10000, (4, size, size), dtype=np.uint16),
        rasterio.Affine(10, 0, 4e5, 0, -10, 5e6),
        nodata=None,
        block=None,
        names=["B02", "B03", "B04", "B08"],
    )  # striped, uncompressed: the sizes above
    _fill(small_disk, 100_000)
    script = INGEST_SCRIPT.format(
        src=str(SRC), tests=str(Path(__file__).parent), fraction=fraction,
        source=str(tmp_path / "in" / "source.tif"), out=str(small_disk / "scene.tif"),
    )  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2, done.stderr[-3000:]  # an error, not a crash (139 / -11)
    assert "NoSpaceError" in done.stderr and f"at {small_disk}" in done.stderr
    assert re.search(MESSAGE, done.stderr)
    assert _names(small_disk) == ["filler.bin"]


@pytest.mark.parametrize("stage", ["mask", "tile", "prediction"])
def test_large_writers_on_a_full_disk(
    small_disk: Path, tmp_path: Path, stage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each writer on a full device: refused up front by its size, or (with the estimate forced
    to 0) failing midway; either way the message, and nothing left on the device."""
    make_inputs(stage, tmp_path / "in")
    _fill(small_disk, 20_000)
    for estimate in ("checked", "zero"):
        if estimate == "zero":
            monkeypatch.setattr(atomic, "require_free_space", lambda *a, **k: None)
        with pytest.raises(NoSpaceError, match=MESSAGE):
            run(stage, tmp_path / "in", out=small_disk)
        assert _names(small_disk) == ["filler.bin"], estimate


def test_download_on_a_full_disk_removes_the_partial_file(small_disk: Path, monkeypatch) -> None:
    from s2landcover.acquisition import http
    from stac_server import StacTestServer

    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    payload = os.urandom(2_000_000)
    with StacTestServer() as server:
        server.files["big.bin"] = payload
        with pytest.raises(NoSpaceError, match=r"needs about 1\.9 MB"):  # refused up front
            http.download_file(server.file_url("big.bin"), small_disk / "big.bin", retries=1)
        assert server.count("GET", "/files/big.bin") == 1  # the answer's length, then stop
        monkeypatch.setattr(http, "require_free_space", lambda *a, **k: None)
        with pytest.raises(NoSpaceError, match=r"no space left on device at"):  # ENOSPC midway
            http.download_file(server.file_url("big.bin"), small_disk / "big.bin", retries=1)
    assert _names(small_disk) == []  # no .part (it would keep the disk full), no state file


# ---------------------------------------------------------------------------------------------
# Injected failures (no mount needed)
# ---------------------------------------------------------------------------------------------


def _enospc(*args: object, **kwargs: object) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_chip_store_enospc_midway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_inputs("tile", tmp_path)
    monkeypatch.setattr(chipstore.os, "pwrite", _enospc)
    with pytest.raises(NoSpaceError, match=r"no space left on device at .* \(needs about"):
        run("tile", tmp_path)
    assert _names(tmp_path) == ["mask.tif", "scene.tif"]


@pytest.mark.parametrize(
    "error",
    [
        RasterioIOError("Write failed. See previous exception for details."),
        RasterioIOError("TIFFWriteDirectoryTagData:IO error writing tag data"),
        RuntimeError("basic_ios::clear: iostream error"),
    ],
    ids=["write-failed", "tiff-directory", "iostream"],
)
def test_gdal_write_errors_on_a_full_device_become_no_space(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    make_inputs("ingest", tmp_path)

    def failing_write(self: object, window: object, array: object) -> None:
        raise error

    monkeypatch.setattr(stack.StackWriter, "write", failing_write)
    monkeypatch.setattr(atomic, "free_bytes", lambda path: 300_000)  # a nearly full device
    with pytest.raises(NoSpaceError, match=MESSAGE):
        run("ingest", tmp_path)
    assert _names(tmp_path) == ["source.tif"]
    # The same error with room to spare is something else: reported as it is
    monkeypatch.setattr(atomic, "free_bytes", lambda path: 50 << 30)
    with pytest.raises(type(error), match=re.escape(str(error))):
        run("ingest", tmp_path)
    assert _names(tmp_path) == ["source.tif"]


def test_free_space_is_checked_before_writing(tmp_path: Path, monkeypatch) -> None:
    make_inputs("ingest", tmp_path)
    monkeypatch.setattr(atomic, "free_bytes", lambda path: 10_000)
    with pytest.raises(NoSpaceError, match=r"needs about 0\.\d\d MB, 0\.01 MB free"):
        run("ingest", tmp_path)
    assert _names(tmp_path) == ["source.tif"]


def test_prediction_stage_enospc_removes_stage_and_cog(tmp_path: Path, monkeypatch) -> None:
    from s2landcover.io import prediction_writer as pw
    from s2landcover.io import windowed

    real_copy = pw.rasterio.shutil.copy

    def copy_then_fail(source: str, dest: str, **options: object) -> None:
        real_copy(source, dest, **options)  # the COG is written, then the disk fills
        raise RasterioIOError("TIFFWriteDirectoryTagData:IO error writing tag data")

    monkeypatch.setattr(pw.rasterio.shutil, "copy", copy_then_fail)
    monkeypatch.setattr(atomic, "free_bytes", lambda path: 100_000)
    monkeypatch.setattr(windowed, "check_written", lambda *a, **k: None)
    with pytest.raises(NoSpaceError):
        run("prediction", tmp_path)
    assert _names(tmp_path) == []


def test_is_disk_full_rules(tmp_path: Path, monkeypatch) -> None:
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"), tmp_path)
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"), tmp_path)
    assert is_disk_full(RuntimeError("[Errno 28] No space left on device"), tmp_path)
    assert not is_disk_full(RasterioIOError("Write failed"), tmp_path)  # room to spare here
    assert not is_disk_full(ValueError("bad value"), tmp_path)
    assert not is_disk_full(KeyboardInterrupt(), tmp_path)
    monkeypatch.setattr(atomic, "free_bytes", lambda path: 0)
    assert is_disk_full(RasterioIOError("Write failed"), tmp_path)
    assert not is_disk_full(ValueError("bad value"), tmp_path)


def test_atomic_path_reports_enospc_and_removes_the_temporary(tmp_path: Path) -> None:
    with pytest.raises(NoSpaceError, match=r"at .*out \(needs about 5\.0 MB"):
        with atomic_path(tmp_path / "out" / "x.npy", needs_bytes=5 << 20) as tmp:
            tmp.write_bytes(b"0" * 1000)
            _enospc()
    assert _names(tmp_path / "out") == []


def test_mask_writer_estimate_and_rasterio_output_unchanged(tmp_path: Path) -> None:
    """The writers' outputs are still complete GeoTIFFs with overviews after the change to build
    overviews after closing (flushed): a 600 px mask has its overviews and class table."""
    from affine import Affine

    from s2landcover.io.rasters import Grid
    from s2landcover.io.warp import write_mask

    grid = Grid(rasterio.crs.CRS.from_epsg(32631), Affine(10, 0, 0, 0, -10, 0), 600, 600)
    with write_mask(tmp_path / "m.tif", grid, CLASSES) as dst:
        dst.write(np.ones((600, 600), np.uint8), 1)
    with rasterio.open(tmp_path / "m.tif") as src:
        assert src.overviews(1) == [2] and src.compression.name.lower() == "deflate"
        assert src.tags()["OVERVIEW_RESAMPLING"] == "nearest"  # the COG keeps default tags
        assert src.read(1, out_shape=(300, 300)).min() == 1
    assert _names(tmp_path) == ["m.qml", "m.tif", "m.tif.aux.xml"]
