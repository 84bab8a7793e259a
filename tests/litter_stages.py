"""Stages that write large files, run on tiny inputs, optionally killed (SIGKILL) midway.

``python tests/litter_stages.py STAGE FOLDER KILL_AT`` runs STAGE on the inputs in FOLDER and kills
its own process at the KILL_AT-th window written, as an out-of-memory kill or a lost node would:
no ``except``, no ``finally``, no atexit handler runs. The tests (tests/test_litter.py) then run
the stage again in-process (:func:`run`) and check that nothing is left beside its outputs.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine

SRC = Path(__file__).parents[1] / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

from raster_helpers import write_geotiff  # noqa: E402
from s2landcover.classes import ClassTable  # noqa: E402
from s2landcover.config import validate_config  # noqa: E402

CONFIG = validate_config({})
CLASSES = ClassTable.from_config(CONFIG["classes"])
BANDS = ["B02", "B03", "B04", "B08"]
SIZE = 160  # scene pixels a side
TRANSFORM = Affine(10.0, 0.0, 400000.0, 0.0, -10.0, 4600000.0)
OUTPUTS = {  # what each stage leaves in its folder (inputs included)
    "ingest": ["source.tif", "scene.tif", "scene.qml"],
    "mask": ["map.tif", "scene.tif", "mask.tif", "mask.tif.aux.xml", "mask.qml"],
    "tile": ["scene.tif", "mask.tif", "chips"],
    "prediction": ["prediction.tif", "prediction.tif.aux.xml", "prediction.qml"],
}


def _write(path: Path, data: np.ndarray, transform: Affine = TRANSFORM, **extra: Any) -> Path:
    return write_geotiff(path, data, transform, block=32, **extra)


def make_inputs(stage: str, folder: Path) -> None:
    """Write the inputs of ``stage`` into ``folder`` (deterministic)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    image = rng.integers(1, 10000, (4, SIZE, SIZE), dtype=np.uint16)
    mask = rng.integers(1, CLASSES.num_classes + 1, (SIZE, SIZE), dtype=np.uint8)
    if stage == "ingest":
        _write(folder / "source.tif", image)
        with rasterio.open(folder / "source.tif", "r+") as dst:
            dst.descriptions = tuple(BANDS)
    if stage in ("mask", "tile"):
        _write(folder / "scene.tif", image)
        with rasterio.open(folder / "scene.tif", "r+") as dst:
            dst.descriptions = tuple(BANDS)
            dst.scales, dst.offsets = [1e-4] * 4, [-0.1] * 4
    if stage == "mask":  # a 2 m land-cover map of the class codes
        codes = np.array([c for cls in CONFIG["classes"] for c in cls["codes"][:1]], np.uint8)
        fine = np.kron(codes[rng.integers(0, len(codes), (SIZE, SIZE))], np.ones((5, 5), np.uint8))
        _write(folder / "map.tif", fine, Affine(2.0, 0.0, 400000.0, 0.0, -2.0, 4600000.0))
    if stage == "tile":
        _write(folder / "mask.tif", mask)


def _kill_at(owner: object, name: str, count: int) -> None:
    """Replace ``owner.name`` by a wrapper that SIGKILLs this process on call number ``count``."""
    original = getattr(owner, name)
    calls = [0]

    def wrapper(*args: object, **kwargs: object) -> object:
        calls[0] += 1
        if calls[0] == count:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)

    setattr(owner, name, wrapper)


def run(stage: str, folder: Path, kill_at: int | None = None, out: Path | None = None) -> None:
    """Run ``stage`` on the inputs in ``folder``, writing into ``out`` (default: ``folder``); with
    ``kill_at``, die at that window."""
    out = out or folder
    from s2landcover.chips import tile_scene
    from s2landcover.ingest import ingest_scene
    from s2landcover.io import chipstore, stack
    from s2landcover.io import prediction_writer as pw
    from s2landcover.masks import _Tally, downsample_mask

    if stage == "ingest":
        if kill_at:
            _kill_at(stack.StackWriter, "write", kill_at)
        source = {"type": "geotiff", "path": str(folder / "source.tif"), "scale": 1e-4}
        ingest_scene(source, BANDS, out / "scene.tif", {"block_size": 32})
    elif stage == "mask":
        if kill_at:  # windows are written right after they are counted
            _kill_at(_Tally, "add", kill_at)
        cfg = {**CONFIG["mask"], "block_size": 32}
        downsample_mask(
            folder / "map.tif", folder / "scene.tif", out / "mask.tif", CLASSES, cfg,
            progress=False,
        )  # fmt: skip
    elif stage == "tile":
        if kill_at:
            _kill_at(chipstore.ChipStoreWriter, "write", kill_at)
        tile_scene(
            folder / "scene.tif", folder / "mask.tif", "scene", out / "chips", 32,
            CONFIG["chips"], CLASSES,
        )  # fmt: skip
    elif stage == "prediction":
        if kill_at:
            _kill_at(pw._BlockRowWriter, "flush", kill_at)  # the stage's and the levels' block rows
        from s2landcover.io.rasters import Grid

        grid = Grid(rasterio.crs.CRS.from_epsg(32631), TRANSFORM, SIZE, SIZE)
        rng = np.random.default_rng(3)
        classes = rng.integers(1, CLASSES.num_classes + 1, (SIZE, SIZE), dtype=np.uint8)
        with pw.StreamingRasterWriter(out / "prediction.tif", grid, classes=CLASSES) as writer:
            for row in range(0, SIZE, 16):
                writer.write_rows(row, classes[row : row + 16])
    else:
        raise ValueError(stage)


if __name__ == "__main__":
    run(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]))
