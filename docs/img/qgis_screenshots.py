"""The screenshots of docs/qgis.md: the Aberystwyth scene, its mask and a grid of chip footprints,
written by the pipeline's writers and drawn by QGIS (headless) with the styles written beside them.

Usage (from the repository root; needs the real test data and Debian's python3-qgis)::

    PYTHONPATH=src python docs/img/qgis_screenshots.py OUT_DIR

The files go to OUT_DIR; the two images are written to docs/img/.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio

from s2landcover.classes import ClassTable
from s2landcover.config import validate_config
from s2landcover.ingest import ingest_scene
from s2landcover.io.chipstore import write_footprints
from s2landcover.masks import downsample_mask

REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "real" / "aberystwyth"
IMAGES = Path(__file__).resolve().parent
BANDS = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"]
CLASSES = [
    {"index": 1, "name": "Forest", "codes": [1], "color": "#1b6e2a"},
    {"index": 2, "name": "Grass", "codes": [2], "color": "#a6d96a"},
    {"index": 3, "name": "Urban", "codes": [3], "color": "#d7301f"},
    {"index": 4, "name": "Water", "codes": [4], "color": "#2171b5", "water": True},
]
RENDER = """
import os, sys
from qgis.core import (QgsApplication, QgsMapRendererSequentialJob, QgsMapSettings,
                       QgsRasterLayer, QgsVectorLayer)
from qgis.PyQt.QtCore import QSize
from qgis.PyQt.QtGui import QColor
out, images = sys.argv[1], sys.argv[2]
app = QgsApplication([], False)
app.initQgis()
scene = QgsRasterLayer(out + "/scene.tif", "scene")
mask = QgsRasterLayer(out + "/mask.tif", "mask")
chips = QgsVectorLayer(out + "/footprints.gpkg|layername=chips", "chips", "ogr")
for layers, name in (([chips, scene], "qgis_scene_footprints.jpg"), ([mask], "qgis_mask.png")):
    settings = QgsMapSettings()
    settings.setLayers(layers)
    settings.setDestinationCrs(scene.crs())
    settings.setExtent(scene.extent())
    settings.setOutputSize(QSize(600, 611))
    settings.setBackgroundColor(QColor("white"))
    job = QgsMapRendererSequentialJob(settings)
    job.start()
    job.waitForFinished()
    job.renderedImage().save(images + "/" + name, None, 85)
del job, scene, mask, chips
app.exitQgis()
os._exit(0)
"""


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    source = {"type": "geotiff", "path": str(REAL / "aber_s2_10band_10m.tif"), "scale": 1e-3}
    ingest_scene(source, BANDS, out / "scene.tif", {})
    classes = ClassTable.from_config(CLASSES)
    mask_cfg = validate_config({})["mask"]
    downsample_mask(
        REAL / "aber_cls_4class.tif", out / "scene.tif", out / "mask.tif", classes, mask_cfg,
        progress=False,
    )  # fmt: skip
    with rasterio.open(out / "scene.tif") as src:
        bounds, crs = src.bounds, src.crs.to_string()
    rng = np.random.default_rng(0)  # a 1,280 m chip grid with splits drawn at random
    splits = ["train"] * 5 + ["val", "test", "dropped", "excluded"]
    rows = [
        {"minx": x, "miny": y, "maxx": x + 1280, "maxy": y + 1280, "crs": crs,
         "chip_id": f"c{i}_{j}", "split": rng.choice(splits)}
        for i, y in enumerate(np.arange(bounds.bottom, bounds.top - 1280, 1280))
        for j, x in enumerate(np.arange(bounds.left, bounds.right - 1280, 1280))
    ]  # fmt: skip
    write_footprints(pd.DataFrame(rows), out / "footprints.gpkg", ["chip_id", "split"])
    env = {"PATH": "/usr/bin:/bin", "QT_QPA_PLATFORM": "offscreen", "HOME": str(out)}
    subprocess.run(
        ["/usr/bin/python3", "-c", RENDER, str(out.resolve()), str(IMAGES)], env=env, check=True
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
