"""QGIS styles beside every product, class names inside the GeoTIFF, COG scene stack and mask."""

from __future__ import annotations

import json
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pyogrio
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.windows import Window
from rio_cogeo.cogeo import cog_validate

from s2landcover.classes import NOT_OBSERVED, NOT_OBSERVED_NAME, ClassTable, hex_to_rgb
from s2landcover.config import validate_config
from s2landcover.io.chip_rasters import write_chip_class_raster
from s2landcover.io.chipstore import write_footprints
from s2landcover.io.prediction_writer import StreamingRasterWriter
from s2landcover.io.qgis_styles import SPLIT_COLORS, style_path
from s2landcover.io.rasters import Grid, geotiff_profile
from s2landcover.io.stack import StackWriter
from s2landcover.io.warp import write_mask
from s2landcover.validity import VALIDITY_CODES, VALIDITY_COLORS, write_validity

CONFIG = validate_config({})
CLASSES = ClassTable.from_config(CONFIG["classes"])
CRS_UTM = CRS.from_epsg(32631)


def grid(width: int, height: int) -> Grid:
    return Grid(CRS_UTM, Affine(10, 0, 500000, 0, -10, 5000000), width, height)


def parse(path: Path) -> ET.Element:
    """The style's root, checked to be a QGIS style document."""
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE qgis")
    root = ET.fromstring(text.split("\n", 1)[1])
    assert root.tag == "qgis" and root.get("version", "").startswith("3.")
    return root


def renderer(root: ET.Element) -> ET.Element:
    element = root.find("pipe/rasterrenderer")
    assert element is not None
    return element


def palette(root: ET.Element) -> list[tuple[int, str, str, int]]:
    entries = renderer(root).findall("colorPalette/paletteEntry")
    return [
        (int(e.get("value")), e.get("label"), e.get("color"), int(e.get("alpha"))) for e in entries
    ]


def expected_palette(classes: ClassTable) -> list[tuple[int, str, str, int]]:
    entries = [
        (i, name, color.lower(), 255)
        for i, name, color in zip(classes.indices, classes.names, classes.colors, strict=True)
    ]
    if classes.not_observed:
        entries.append((NOT_OBSERVED, NOT_OBSERVED_NAME, "#ff00ff", 255))
    return entries


def write_prediction(path: Path, classes: ClassTable, confidence: bool = False) -> Path:
    g = grid(300, 200)
    rows = (np.arange(300 * 200).reshape(200, 300) % (classes.num_classes + 1)).astype(np.uint8)
    rows[:10] = NOT_OBSERVED if classes.not_observed else 0
    with StreamingRasterWriter(path, g, classes=None if confidence else classes) as writer:
        writer.write_rows(0, rows)
    return path


def test_prediction_style_names_exactly_the_configured_classes_and_not_observed(tmp_path):
    classes = ClassTable(**{**CLASSES.__dict__, "not_observed": True})
    out = write_prediction(tmp_path / "scene.tif", classes)
    root = parse(style_path(out))
    assert style_path(out) == tmp_path / "scene.qml"  # <stem>.qml: QGIS loads it by itself
    assert renderer(root).get("type") == "paletted" and renderer(root).get("band") == "1"
    assert palette(root) == expected_palette(classes)  # no 0 entry: no data stays transparent
    assert 0 not in [value for value, *_ in palette(root)]


def test_confidence_style_is_a_grey_ramp_over_its_fixed_range(tmp_path):
    out = write_prediction(tmp_path / "scene_confidence.tif", CLASSES, confidence=True)
    r = renderer(parse(tmp_path / "scene_confidence.qml"))
    assert r.get("type") == "singlebandgray" and r.get("grayBand") == "1"
    assert r.get("gradient") == "BlackToWhite"
    assert float(r.findtext("contrastEnhancement/minValue")) == 1
    assert float(r.findtext("contrastEnhancement/maxValue")) == 255
    assert out.exists()


def test_mask_is_a_cog_with_a_style_of_the_classes_only(tmp_path):
    g = grid(1100, 900)  # larger than a block: overviews, several tiles
    out = tmp_path / "mask.tif"
    data = (np.arange(g.width * g.height).reshape(g.height, g.width) % 5).astype(np.uint8)
    with write_mask(out, g, CLASSES, Resampling.nearest) as dst:
        for row in range(0, g.height, 300):
            rows = min(300, g.height - row)
            dst.write(data[row : row + rows], 1, window=Window(0, row, g.width, rows))
    valid, errors, _ = cog_validate(str(out))
    assert valid, errors
    with rasterio.open(out) as src:
        assert (src.read(1) == data).all() and src.overviews(1) == [2, 4]  # the policy
        assert src.colormap(1)[1][:3] == hex_to_rgb(CLASSES.colors[0])
        assert src.tags(1)["CLASS_001"] == CLASSES.names[0]
    assert palette(parse(tmp_path / "mask.qml")) == expected_palette(CLASSES)  # no 255 here
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "mask.qml",
        "mask.tif",
        "mask.tif.aux.xml",
    ]


def test_chip_level_prediction_gets_the_class_style(tmp_path):
    labels = np.array([[0, 1, 2], [3, 4, 1]], dtype=np.uint8)
    out = write_chip_class_raster(tmp_path / "S1.tif", labels, grid(3, 2), CLASSES)
    root = parse(style_path(out))
    assert renderer(root).get("type") == "paletted"
    assert palette(root) == expected_palette(CLASSES)


def test_validity_raster_gets_its_codes_as_a_style(tmp_path, geotiff):
    g = grid(64, 64)
    scene = geotiff(
        "scene.tif", np.full((1, 64, 64), 500, np.uint16), **geotiff_profile(g, 1, "uint16", 0)
    )
    scl = geotiff(
        "scl.tif",
        np.tile(np.arange(12, dtype=np.uint8), (64, 6))[None, :, :64],
        **geotiff_profile(g, 1, "uint8", 0),
    )
    cfg = json.loads(json.dumps(CONFIG["validity"])) | {"source": "scl"}
    out = tmp_path / "validity.tif"
    write_validity(scene, out, cfg, "s", None, scl)
    entries = palette(parse(tmp_path / "validity.qml"))
    assert [(v, label) for v, label, *_ in entries] == [
        (code, name) for code, name in VALIDITY_CODES.items() if code != 0
    ]
    for value, _, color, alpha in entries:
        assert (*hex_to_rgb(color), alpha) == VALIDITY_COLORS[value]


def write_stack(path: Path, names: list[str], data: np.ndarray) -> Path:
    g = grid(data.shape[2], data.shape[1])
    with StackWriter(
        path,
        g,
        len(names),
        "uint16",
        descriptions=names,
        scales=[1e-4] * len(names),
        offsets=[-0.1] * len(names),
        tags={"DATE": "2024-06-01"},
        overview_factors=[2, 4],
        overview_resampling=Resampling.nearest,
        tile_size=256,
    ) as writer:
        for row in range(0, g.height, 256):
            for col in range(0, g.width, 256):
                window = Window(col, row, min(256, g.width - col), min(256, g.height - row))
                writer.write(window, data[:, row : row + 256, col : col + 256])
    return path


def test_scene_stack_is_a_cog_in_true_colour_with_a_percentile_stretch(tmp_path):
    rng = np.random.default_rng(3)
    names = ["B02", "B03", "B04", "B08"]  # B04 is band 3: red found by name, not position
    base = np.array([500, 1000, 2000, 4000], dtype=np.float64)[:, None, None]
    data = (base + rng.integers(0, 1000, (4, 700, 800))).astype(np.uint16)
    data[:, :50, :] = 0  # no data: left out of the stretch
    out = write_stack(tmp_path / "S1.tif", names, data)
    valid, errors, _ = cog_validate(str(out))
    assert valid, errors
    with rasterio.open(out) as src:
        assert src.descriptions == tuple(names) and src.scales[0] == pytest.approx(1e-4)
        assert src.overviews(1) == [2, 4] and src.interleaving.name == "band"
        assert src.tags()["DATE"] == "2024-06-01" and (src.read() == data).all()
    r = renderer(parse(tmp_path / "S1.qml"))
    assert r.get("type") == "multibandcolor"
    assert (r.get("redBand"), r.get("greenBand"), r.get("blueBand")) == ("3", "2", "1")
    for tag, band in (("red", 2), ("green", 1), ("blue", 0)):
        low = float(r.findtext(f"{tag}ContrastEnhancement/minValue"))
        high = float(r.findtext(f"{tag}ContrastEnhancement/maxValue"))
        # in the units QGIS renders: stored x scale + offset (reflectance), inside the data
        values = data[band][data[band] > 0] * 1e-4 - 0.1
        assert values.min() <= low < high <= values.max()
        expected = np.percentile(values, [2, 98])  # the decimated read's estimate is close
        assert low == pytest.approx(expected[0], abs=0.004) and high == pytest.approx(
            expected[1], abs=0.004
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["S1.qml", "S1.tif"]


def test_scene_without_true_colour_bands_opens_grey(tmp_path):
    data = np.full((2, 40, 40), 300, np.uint16)
    data[:, :, 20:] = 900
    out = write_stack(tmp_path / "S2.tif", ["B08", "B03"], data)
    r = renderer(parse(style_path(out)))
    assert r.get("type") == "singlebandgray" and r.get("grayBand") == "2"  # B03, the first present
    assert float(r.findtext("contrastEnhancement/minValue")) == pytest.approx(300e-4 - 0.1)
    assert float(r.findtext("contrastEnhancement/maxValue")) == pytest.approx(900e-4 - 0.1)


def footprint_table() -> pd.DataFrame:
    splits = ["train", "val", "test", "dropped", "excluded", "train"]
    x = np.arange(len(splits)) * 100.0
    return pd.DataFrame(
        {
            "minx": x,
            "miny": 0.0,
            "maxx": x + 100,
            "maxy": 100.0,
            "crs": "EPSG:32631",
            "chip_id": [f"c{i}" for i in range(len(splits))],
            "split": splits,
        }
    )


def check_split_style(root: ET.Element) -> None:
    r = root.find("renderer-v2")
    assert r is not None and r.get("type") == "categorizedSymbol" and r.get("attr") == "split"
    categories = {c.get("value"): c.get("symbol") for c in r.findall("categories/category")}
    assert {"train", "val", "test", "dropped"} <= set(categories)
    for value, symbol_name in categories.items():
        symbol = r.find(f"symbols/symbol[@name='{symbol_name}']")
        props = {p.get("k"): p.get("v") for p in symbol.findall("layer/prop")}
        assert symbol.get("type") == "fill" and props["style"] == "no"  # outlined, no fill
        assert props["color"].endswith(",0")  # fully transparent fill colour
        rgb = tuple(int(v) for v in props["outline_color"].split(",")[:3])
        assert rgb == hex_to_rgb(SPLIT_COLORS[value])
        assert props["outline_style"] == ("dash" if value == "dropped" else "solid")


def test_footprints_outlined_by_split_in_qml_and_inside_the_geopackage(tmp_path):
    out = tmp_path / "footprints.gpkg"
    write_footprints(footprint_table(), out, ["chip_id", "split"])
    check_split_style(parse(tmp_path / "footprints.qml"))
    # the GeoPackage alone carries it: QGIS's layer_styles table, default style of layer chips
    copy = tmp_path / "copy" / "footprints.gpkg"
    copy.parent.mkdir()
    shutil.copy(out, copy)
    styles = pyogrio.read_dataframe(copy, layer="layer_styles")
    assert len(styles) == 1
    row = styles.iloc[0]
    assert row["f_table_name"] == "chips" and bool(row["useAsDefault"])
    assert row["f_geometry_column"] == pyogrio.read_info(copy, layer="chips")["geometry_name"]
    check_split_style(ET.fromstring(row["styleQML"].split("\n", 1)[1]))


def test_gdalinfo_on_a_lone_copy_of_the_prediction_shows_the_class_names(tmp_path):
    gdalinfo = shutil.which("gdalinfo")
    if gdalinfo is None:
        pytest.skip("gdalinfo not installed")
    classes = ClassTable(**{**CLASSES.__dict__, "not_observed": True})
    out = write_prediction(tmp_path / "scene.tif", classes)
    lone = tmp_path / "elsewhere" / "scene.tif"
    lone.parent.mkdir()
    shutil.copy(out, lone)  # no .aux.xml, no .qml
    text = subprocess.run([gdalinfo, str(lone)], capture_output=True, text=True, check=True).stdout
    assert "scene.tif.aux.xml" not in text
    for index, name in zip(classes.indices, classes.names, strict=True):
        assert f"CLASS_{index:03d}={name}" in text
    assert f"CLASS_255={NOT_OBSERVED_NAME}" in text
    assert "Color Table" in text and "ColorInterp=Palette" in text
    with rasterio.open(lone) as src:
        assert src.tags(1)["CLASS_001"] == classes.names[0]
        assert src.colormap(1)[1][:3] == hex_to_rgb(classes.colors[0])


# Run by the system Python, where Debian's python3-qgis puts the bindings (the project's virtual
# environment does not see them): loads each layer as QGIS does when a file is added, the default
# style included, and prints what QGIS made of it.
QGIS_SCRIPT = """
import json, os, sys
from qgis.core import (QgsApplication, QgsMapRendererSequentialJob, QgsMapSettings,
                       QgsRasterLayer, QgsVectorLayer)
from qgis.PyQt.QtCore import QSize
from qgis.PyQt.QtGui import QColor
app = QgsApplication([], False)
app.initQgis()
raster = QgsRasterLayer(sys.argv[1], "prediction")
scene = QgsRasterLayer(sys.argv[2], "scene")
vector = QgsVectorLayer(sys.argv[3] + "|layername=chips", "chips", "ogr")
settings = QgsMapSettings()  # the scene drawn as QGIS draws it: mean grey of a 64 x 64 image
settings.setLayers([scene])
settings.setDestinationCrs(scene.crs())
settings.setExtent(scene.extent())
settings.setOutputSize(QSize(64, 64))
job = QgsMapRendererSequentialJob(settings)
job.start()
job.waitForFinished()
image = job.renderedImage()
colors = [QColor(image.pixel(x, y)) for x in range(64) for y in range(64)]
grey = [(c.red() + c.green() + c.blue()) / 3 for c in colors]
categories = vector.renderer().categories()  # kept: a temporary's symbol would be freed
symbol = categories[0].symbol()
print(json.dumps({
    "raster": [raster.isValid(), raster.renderer().type(),
               [[c.value, c.label, c.color.name()] for c in raster.renderer().classes()]],
    "scene": [scene.isValid(), scene.renderer().type(), scene.renderer().redBand(),
              sum(grey) / len(grey)],
    "vector": [vector.isValid(), vector.renderer().type(), [c.value() for c in categories],
               int(symbol.symbolLayer(0).brushStyle())],
}))
sys.stdout.flush()
del colors, job, symbol, categories, vector, scene, raster
app.exitQgis()
os._exit(0)  # PyQGIS outside QGIS may crash while the interpreter tears down its Qt objects
"""


def qgis_python() -> str | None:
    """A Python that imports QGIS's bindings, or None."""
    for exe in ("/usr/bin/python3", shutil.which("python3")):
        if (
            exe
            and subprocess.run(
                [exe, "-c", "import qgis.core"], capture_output=True, env={"PATH": "/usr/bin:/bin"}
            ).returncode
            == 0
        ):
            return exe
    return None


def test_qgis_loads_the_styles_headless(tmp_path):
    """Runs where QGIS's Python bindings are installed (Debian: python3-qgis); skipped otherwise."""
    exe = qgis_python()
    if exe is None:
        pytest.skip("QGIS's Python bindings (python3-qgis) are not installed")
    classes = ClassTable(**{**CLASSES.__dict__, "not_observed": True})
    prediction = write_prediction(tmp_path / "pred.tif", classes)
    rng = np.random.default_rng(1)
    data = (1000 + rng.integers(0, 500, (3, 300, 300))).astype(np.uint16)
    scene = write_stack(tmp_path / "S1.tif", ["B02", "B03", "B04"], data)
    write_footprints(footprint_table(), tmp_path / "footprints.gpkg", ["chip_id", "split"])
    footprints = tmp_path / "alone" / "footprints.gpkg"  # no .qml beside it: layer_styles only
    footprints.parent.mkdir()
    shutil.copy(tmp_path / "footprints.gpkg", footprints)
    result = subprocess.run(
        [exe, "-c", QGIS_SCRIPT, str(prediction), str(scene), str(footprints)],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "QT_QPA_PLATFORM": "offscreen", "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    valid, kind, entries = loaded["raster"]
    assert valid and kind == "paletted"
    assert [(v, label, color) for v, label, color in entries] == [
        (value, label, color) for value, label, color, _ in expected_palette(classes)
    ]
    valid, kind, red, mean_grey = loaded["scene"]
    # B04 as red (a 3-band default would take band 1), and a stretch on the values QGIS draws:
    # uniform noise stretched 2-98 % averages mid-grey (limits in the wrong units: black or white)
    assert valid and kind == "multibandcolor" and red == 3 and 100 < mean_grey < 160
    valid, kind, values, brush = loaded["vector"]
    assert (
        valid and kind == "categorizedSymbol" and values[:4] == ["train", "val", "test", "excluded"]
    )
    assert brush == 0  # Qt.NoBrush: outlined, not filled


def test_scl_band_gets_the_sen2cor_classes(tmp_path):
    names = ["no data", "saturated or defective", "dark area pixels", "cloud shadows"]
    out = tmp_path / "S1_scl.tif"
    with StackWriter(
        out, grid(32, 32), 1, "uint8", descriptions=["SCL"], tags={"CLASS_NAMES": ",".join(names)}
    ) as writer:
        writer.write(Window(0, 0, 32, 32), np.full((1, 32, 32), 3, np.uint8))
    entries = palette(parse(tmp_path / "S1_scl.qml"))
    assert [(value, label) for value, label, *_ in entries] == list(enumerate(names))[1:]
    assert entries[-1][2] == "#643200"  # ESA's colour of cloud shadows
