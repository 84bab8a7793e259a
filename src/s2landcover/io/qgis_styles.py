"""QGIS styles (``.qml``) written beside the pipeline's rasters and vector layers.

QGIS loads ``<file stem>.qml`` beside a file automatically when the file is added to a project
(``results/scenes/S1.tif`` -> ``results/scenes/S1.qml``), so every product opens as it should be
read:

- scene stacks in true colour: the bands named ``B04``, ``B03``, ``B02`` (found by band
  description, never by position) as red, green, blue, each stretched between its 2nd and 98th
  percentile, computed from a decimated read (GDAL serves it from the overviews) of the pixels with
  data, converted to the units QGIS renders (stored value x the band's scale + offset: QGIS
  applies a band's GDAL scale and offset, so a scene stack is rendered as reflectance);
- class rasters (masks, predictions, chip-level predictions, validity and SCL rasters) as paletted
  ("unique values") with exactly the configured classes named and coloured, plus 255
  "Not observed" where the raster can hold it; 0 (no data) has no entry and stays transparent;
- the confidence raster as a black-to-white ramp over its fixed 1..255 range;
- chip footprints (``footprints.gpkg``, ``chips.gpkg``) outlined, without fill, coloured by split.
  The style is also stored in the GeoPackage's ``layer_styles`` table (QGIS's own place for a
  default style), so a copy of the ``.gpkg`` alone keeps it.

The files follow QGIS 3's style format (``<qgis>`` root, ``<pipe><rasterrenderer>`` for rasters,
``<renderer-v2 type="categorizedSymbol">`` for vectors); symbol layer properties are written as
``<prop k v>`` elements, which QGIS 3.0 onwards reads.
"""

from __future__ import annotations

import datetime
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling

from s2landcover.classes import (
    NOT_OBSERVED,
    NOT_OBSERVED_COLOR,
    NOT_OBSERVED_NAME,
    ClassTable,
    hex_to_rgb,
)
from s2landcover.io.atomic import atomic_path
from s2landcover.io.rasters import open_raster

QGIS_VERSION = "3.22.0-Białowieża"  # the oldest QGIS these styles were written for
TRUE_COLOUR_BANDS = ("B04", "B03", "B02")  # red, green, blue
STRETCH_PERCENTILES = (2.0, 98.0)
# Longest side of the decimated read the stretch is computed from (px): GDAL answers it from the
# overview closest to that size, so the cost does not grow with the scene.
STRETCH_SAMPLE_SIDE = 1024
# Outline colours of chip footprints by split; other values present get grey.
SPLIT_COLORS = {
    "train": "#1f78b4",
    "val": "#ff7f00",
    "test": "#e31a1c",
    "excluded": "#b15928",
    "dropped": "#9e9e9e",
}
OTHER_SPLIT_COLOR = "#636363"
# Sen2Cor scene classification colours (ESA's SCL legend), index = SCL code.
SCL_COLORS = (
    "#000000",
    "#ff0000",
    "#2f2f2f",
    "#643200",
    "#00a000",
    "#ffe65a",
    "#0000ff",
    "#808080",
    "#c0c0c0",
    "#ffffff",
    "#64c8ff",
    "#ff96ff",
)


@dataclass(frozen=True)
class PaletteEntry:
    """One value of a class raster as QGIS shows it: value, label, '#RRGGBB' colour, alpha."""

    value: int
    label: str
    color: str
    alpha: int = 255


def style_path(data_path: str | Path) -> Path:
    """The ``.qml`` QGIS loads with ``data_path``: ``<stem>.qml`` beside it."""
    return Path(data_path).with_suffix(".qml")


def class_palette(classes: ClassTable) -> list[PaletteEntry]:
    """The palette of a class raster: classes 1..K, then 255 "Not observed" when it can occur."""
    entries = [
        PaletteEntry(index, name, color)
        for index, name, color in zip(classes.indices, classes.names, classes.colors, strict=True)
    ]
    if classes.not_observed:
        entries.append(PaletteEntry(NOT_OBSERVED, NOT_OBSERVED_NAME, NOT_OBSERVED_COLOR))
    return entries


def _root() -> ET.Element:
    return ET.Element(
        "qgis",
        version=QGIS_VERSION,
        styleCategories="AllStyleCategories",
        hasScaleBasedVisibilityFlag="0",
        minScale="1e+08",
        maxScale="0",
    )


def _raster_pipe(
    root: ET.Element, renderer_attrs: Mapping[str, str], resampling: str
) -> ET.Element:
    pipe = ET.SubElement(root, "pipe")
    provider = ET.SubElement(pipe, "provider")
    ET.SubElement(
        provider,
        "resampling",
        enabled="false",
        zoomedInResamplingMethod=resampling,
        zoomedOutResamplingMethod=resampling,
        maxOversampling="2",
    )
    renderer = ET.SubElement(
        pipe,
        "rasterrenderer",
        {"opacity": "1", "alphaBand": "-1", "nodataColor": "", **renderer_attrs},
    )
    ET.SubElement(renderer, "rasterTransparency")
    return renderer


def _finish_raster(root: ET.Element) -> None:
    pipe = root.find("pipe")
    assert pipe is not None
    ET.SubElement(pipe, "brightnesscontrast", brightness="0", contrast="0", gamma="1")
    ET.SubElement(
        pipe,
        "huesaturation",
        saturation="0",
        grayscaleMode="0",
        colorizeOn="0",
        colorizeRed="255",
        colorizeGreen="128",
        colorizeBlue="128",
        colorizeStrength="100",
        invertColors="0",
    )
    ET.SubElement(pipe, "rasterresampler", maxOversampling="2")
    ET.SubElement(pipe, "resamplingStage").text = "resamplingFilter"
    ET.SubElement(root, "blendMode").text = "0"


def _min_max_origin(parent: ET.Element, limits: str) -> None:
    origin = ET.SubElement(parent, "minMaxOrigin")
    for tag, text in (
        ("limits", limits),
        ("extent", "WholeRaster"),
        ("statAccuracy", "Estimated"),
        ("cumulativeCutLower", f"{STRETCH_PERCENTILES[0] / 100:g}"),
        ("cumulativeCutUpper", f"{STRETCH_PERCENTILES[1] / 100:g}"),
        ("stdDevFactor", "2"),
    ):
        ET.SubElement(origin, tag).text = text


def _contrast(parent: ET.Element, tag: str, low: float, high: float) -> None:
    element = ET.SubElement(parent, tag)
    ET.SubElement(element, "minValue").text = repr(float(low))
    ET.SubElement(element, "maxValue").text = repr(float(high))
    ET.SubElement(element, "algorithm").text = "StretchToMinimumMaximum"


def write_qml(path: str | Path, root: ET.Element) -> Path:
    """Write a style to ``path`` (a ``.qml``), atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(qml_text(root) + "\n", encoding="utf-8")
    return path


def paletted_qml(entries: Sequence[PaletteEntry], band: int = 1) -> ET.Element:
    """A paletted ("unique values") raster style with exactly ``entries``; other values (the
    no-data 0 among them) have no entry and are not drawn."""
    root = _root()
    renderer = _raster_pipe(root, {"type": "paletted", "band": str(band)}, "nearestNeighbour")
    _min_max_origin(renderer, "None")
    palette = ET.SubElement(renderer, "colorPalette")
    for entry in entries:
        ET.SubElement(
            palette,
            "paletteEntry",
            value=str(int(entry.value)),
            color=entry.color.lower(),
            alpha=str(int(entry.alpha)),
            label=entry.label,
        )
    _finish_raster(root)
    return root


def write_paletted_style(
    data_path: str | Path, entries: Sequence[PaletteEntry], band: int = 1
) -> Path:
    """Write ``<stem>.qml`` beside a class raster (see :func:`paletted_qml`)."""
    return write_qml(style_path(data_path), paletted_qml(entries, band))


def write_class_style(data_path: str | Path, classes: ClassTable, band: int = 1) -> Path:
    """Write the paletted style of a class raster of ``classes`` (mask, prediction, chip level)."""
    return write_paletted_style(data_path, class_palette(classes), band)


def write_code_style(
    data_path: str | Path,
    names: Mapping[int, str],
    colors: Mapping[int, tuple[int, ...] | str],
    skip: Iterable[int] = (0,),
) -> Path:
    """Paletted style for a raster of codes (validity, SCL): ``names`` and ``colors`` by code
    (colours '#RRGGBB' or (r, g, b[, a]) 0..255); codes in ``skip`` (no data) get no entry."""
    skipped = set(skip)
    entries = []
    for value in sorted(names):
        if value in skipped:
            continue
        color = colors[value]
        if isinstance(color, str):
            entries.append(PaletteEntry(value, names[value], color))
        else:
            r, g, b = color[:3]
            alpha = color[3] if len(color) > 3 else 255
            entries.append(PaletteEntry(value, names[value], f"#{r:02x}{g:02x}{b:02x}", alpha))
    return write_paletted_style(data_path, entries)


def write_scl_style(data_path: str | Path, names: Sequence[str]) -> Path:
    """Paletted style of a Sen2Cor scene classification (SCL) raster, ``names`` by code."""
    return write_code_style(
        data_path,
        dict(enumerate(names)),
        {code: SCL_COLORS[code % len(SCL_COLORS)] for code in range(len(names))},
    )


def gray_qml(low: float, high: float, band: int = 1) -> ET.Element:
    """A single-band grey style stretched from ``low`` (black) to ``high`` (white)."""
    root = _root()
    renderer = _raster_pipe(
        root,
        {"type": "singlebandgray", "grayBand": str(band), "gradient": "BlackToWhite"},
        "bilinear",
    )
    _min_max_origin(renderer, "None")
    _contrast(renderer, "contrastEnhancement", low, high)
    _finish_raster(root)
    return root


def write_gray_style(data_path: str | Path, low: float, high: float, band: int = 1) -> Path:
    """Write ``<stem>.qml``: band ``band`` as a grey ramp from ``low`` to ``high`` (file units)."""
    return write_qml(style_path(data_path), gray_qml(low, high, band))


def write_confidence_style(data_path: str | Path) -> Path:
    """The confidence raster (max class probability x 255, 0 = no data): grey over 1..255, so
    that the same grey means the same probability in every scene."""
    return write_gray_style(data_path, 1, 255)


def multiband_qml(
    bands: tuple[int, int, int], stretch: Sequence[tuple[float, float]]
) -> ET.Element:
    """A red/green/blue style of bands ``bands`` (1-based), each stretched over (low, high)."""
    root = _root()
    red, green, blue = bands
    renderer = _raster_pipe(
        root,
        {
            "type": "multibandcolor",
            "redBand": str(red),
            "greenBand": str(green),
            "blueBand": str(blue),
        },
        "bilinear",
    )
    _min_max_origin(renderer, "CumulativeCut")
    for tag, (low, high) in zip(
        ("redContrastEnhancement", "greenContrastEnhancement", "blueContrastEnhancement"),
        stretch,
        strict=True,
    ):
        _contrast(renderer, tag, low, high)
    _finish_raster(root)
    return root


def percentile_stretch(
    dataset: rasterio.io.DatasetReaderBase,
    indexes: Sequence[int],
    percentiles: tuple[float, float] = STRETCH_PERCENTILES,
    sample_side: int = STRETCH_SAMPLE_SIDE,
) -> list[tuple[float, float]]:
    """(low, high) percentiles of each band in ``indexes``, in the file's stored units.

    Computed from a decimated nearest read whose longest side is at most ``sample_side`` pixels
    (GDAL serves it from the overview nearest that size), over the pixels that are not the file's
    no-data value in any of the bands (0 when the file declares none: the scene stacks' no data).
    A band without valid pixels gets (0, 1).
    """
    scale = max(1.0, max(dataset.width, dataset.height) / sample_side)
    shape = (max(1, round(dataset.height / scale)), max(1, round(dataset.width / scale)))
    data = dataset.read(
        list(indexes), out_shape=(len(indexes), *shape), resampling=Resampling.nearest
    )
    nodata = dataset.nodata if dataset.nodata is not None else 0
    valid = np.all(data != nodata, axis=0)
    stretch = []
    for band in data:
        values = band[valid]
        if values.size == 0:
            stretch.append((0.0, 1.0))
            continue
        low, high = np.percentile(values, percentiles)
        if high <= low:
            high = low + 1
        stretch.append((float(low), float(high)))
    return stretch


def display_units(
    stretch: Sequence[tuple[float, float]], scales: Sequence[float], offsets: Sequence[float]
) -> list[tuple[float, float]]:
    """Stretch limits in the units QGIS renders: stored value x the band's GDAL scale + offset.

    QGIS's GDAL provider applies a band's scale and offset when it reads the band (a uint16 scene
    stack with scale 1e-4 is rendered as Float32 reflectance; checked with QGIS 3.22.16: data type
    Float32, values 0.001-1.111 on the Aberystwyth stack stored as 1-1111 with scale 0.001), so
    limits in stored units would render the scene black.
    """
    return [
        (low * scale + offset, high * scale + offset)
        for (low, high), scale, offset in zip(stretch, scales, offsets, strict=True)
    ]


def write_scene_style(data_path: str | Path) -> Path:
    """Write ``<stem>.qml`` beside a scene stack: true colour from the bands described ``B04``,
    ``B03``, ``B02`` with a 2-98 % stretch each (:func:`percentile_stretch`, converted to the units
    QGIS renders by :func:`display_units`); a stack lacking one of them opens as grey of the
    first present (else band 1), stretched the same way."""
    with open_raster(data_path) as src:
        by_name = {name: i + 1 for i, name in enumerate(src.descriptions) if name}
        present = [by_name[name] for name in TRUE_COLOUR_BANDS if name in by_name]
        bands = present if len(present) == 3 else [present[0] if present else 1]
        stretch = display_units(
            percentile_stretch(src, bands),
            [src.scales[b - 1] for b in bands],
            [src.offsets[b - 1] for b in bands],
        )
    if len(bands) == 3:
        root = multiband_qml((bands[0], bands[1], bands[2]), stretch)
    else:
        root = gray_qml(*stretch[0], bands[0])
    return write_qml(style_path(data_path), root)


# --- vector layers ------------------------------------------------------------------------------


def _rgba(color: str) -> str:
    return ",".join(str(v) for v in (*hex_to_rgb(color), 255))


def _outline_symbol(parent: ET.Element, name: str, color: str, dashed: bool) -> None:
    symbol = ET.SubElement(
        parent,
        "symbol",
        type="fill",
        name=name,
        alpha="1",
        clip_to_extent="1",
        force_rhr="0",
    )
    layer = ET.SubElement(symbol, "layer", {"class": "SimpleFill"}, enabled="1", locked="0")
    layer.set("pass", "0")
    for key, value in (
        ("border_width_map_unit_scale", "3x:0,0,0,0,0,0"),
        ("color", "0,0,0,0"),
        ("joinstyle", "miter"),
        ("offset", "0,0"),
        ("offset_map_unit_scale", "3x:0,0,0,0,0,0"),
        ("offset_unit", "MM"),
        ("outline_color", _rgba(color)),
        ("outline_style", "dash" if dashed else "solid"),
        ("outline_width", "0.4"),
        ("outline_width_unit", "MM"),
        ("style", "no"),
    ):
        ET.SubElement(layer, "prop", k=key, v=value)


def categorized_outline_qml(
    field: str, categories: Sequence[tuple[str, str]], dashed: Iterable[str] = ()
) -> ET.Element:
    """A vector style: polygons outlined (no fill) in a colour per value of ``field``.

    ``categories``: (value, '#RRGGBB') in legend order; values in ``dashed`` get dashed outlines.
    """
    dashed = set(dashed)
    root = ET.Element(
        "qgis",
        version=QGIS_VERSION,
        styleCategories="Symbology",
    )
    renderer = ET.SubElement(
        root,
        "renderer-v2",
        type="categorizedSymbol",
        attr=field,
        forceraster="0",
        symbollevels="0",
        enableorderby="0",
        referencescale="-1",
    )
    cats = ET.SubElement(renderer, "categories")
    symbols = ET.SubElement(renderer, "symbols")
    for i, (value, color) in enumerate(categories):
        ET.SubElement(
            cats, "category", render="true", symbol=str(i), value=value, label=value, type="string"
        )
        _outline_symbol(symbols, str(i), color, value in dashed)
    source = ET.SubElement(renderer, "source-symbol")
    _outline_symbol(source, "0", OTHER_SPLIT_COLOR, False)
    ET.SubElement(root, "blendMode").text = "0"
    ET.SubElement(root, "featureBlendMode").text = "0"
    ET.SubElement(root, "layerGeometryType").text = "2"
    return root


def split_categories(values: Iterable[str]) -> list[tuple[str, str]]:
    """(split value, colour) for the known splits in order, then any other value present."""
    present = {str(v) for v in values}
    known = [(name, color) for name, color in SPLIT_COLORS.items()]
    others = sorted(present - set(SPLIT_COLORS))
    return known + [(value, OTHER_SPLIT_COLOR) for value in others]


def split_qml(values: Iterable[str]) -> ET.Element:
    """Footprint style: outlined by ``split`` (train, val, test, excluded solid; dropped dashed)."""
    return categorized_outline_qml("split", split_categories(values), dashed=("dropped",))


def qml_text(root: ET.Element) -> str:
    """The style as the text QGIS stores (in a ``.qml`` file or a ``layer_styles`` row)."""
    ET.indent(root)
    return "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n" + ET.tostring(
        root, encoding="unicode"
    )


def write_gpkg_default_styles(
    gpkg_path: str | Path, styles: Mapping[str, ET.Element], geometry_column: str = "geom"
) -> None:
    """Store ``styles`` (layer name -> style) as the layers' default styles in the GeoPackage's
    ``layer_styles`` table, the table QGIS itself writes and reads ("Save as default" in the
    database): QGIS applies them when the layer is added, from the ``.gpkg`` alone.

    Writes through GDAL/OGR (pyogrio), so the table is registered in ``gpkg_contents`` as GDAL
    and QGIS expect. ``gpkg_path`` must exist (the layers written first).
    """
    import pandas as pd
    import pyogrio

    # UTC, to the millisecond: GDAL writes "YYYY-MM-DDTHH:MM:SS.SSSZ", the GeoPackage's form
    now = pd.Timestamp(datetime.datetime.now(datetime.UTC)).floor("ms")
    rows = [
        {
            "f_table_catalog": "",
            "f_table_schema": "",
            "f_table_name": layer,
            "f_geometry_column": geometry_column,
            "styleName": layer,
            "styleQML": qml_text(root),
            "styleSLD": "",
            "useAsDefault": True,
            "description": "written by s2landcover",
            "owner": "",
            "ui": "",
            "update_time": now,
        }
        for layer, root in styles.items()
    ]
    pyogrio.write_dataframe(
        pd.DataFrame(rows), str(gpkg_path), layer="layer_styles", driver="GPKG", append=False
    )
