"""Sentinel-2 products on disk: SAFE folders and zips (L2A, L1C) and per-band folders.

Band names are ESA's (``B01`` ... ``B12``, ``B8A``); the metadata XML names them ``B1`` ... ``B8A``
and numbers them by ``band_id`` 0..12 (B01=0 ... B08=7, B8A=8, B09=9, B10=10, B11=11, B12=12).
"""

from __future__ import annotations

import datetime as dt
import re
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import numpy as np
from rasterio.windows import Window

from s2landcover.errors import InputError
from s2landcover.io.documents import read_json, write_text
from s2landcover.io.rasters import Grid, atomic_path
from s2landcover.io.windowed import jp2_band_writers

ALL_BANDS = (
    "B01",
    "B02",
    "B03",
    "B04",
    "B05",
    "B06",
    "B07",
    "B08",
    "B8A",
    "B09",
    "B10",
    "B11",
    "B12",
)
L2A_BANDS = tuple(b for b in ALL_BANDS if b != "B10")  # Sen2Cor drops the cirrus band B10
NATIVE_RESOLUTION = {
    "B01": 60,
    "B02": 10,
    "B03": 10,
    "B04": 10,
    "B05": 20,
    "B06": 20,
    "B07": 20,
    "B08": 10,
    "B8A": 20,
    "B09": 60,
    "B10": 60,
    "B11": 20,
    "B12": 20,
}
BAND_ID = {band: i for i, band in enumerate(ALL_BANDS)}  # metadata band_id
PHYSICAL_BAND = {band: band if band == "B8A" else f"B{int(band[1:])}" for band in ALL_BANDS}
SCL_RESOLUTION = 20


@dataclass(frozen=True)
class SafeProductInfo:
    """What names and describes a SAFE product: level, tile, sensing time, baseline, scaling."""

    level: str  # "L2A" or "L1C"
    tile_id: str  # e.g. "T31TCG"
    sensing_time: dt.datetime
    processing_baseline: str = "05.10"
    quantification: int = 10000
    add_offset: int = -1000  # 0 before baseline 04.00 (then no offset list is written)
    spacecraft: str = "Sentinel-2B"

    @property
    def stamp(self) -> str:
        return self.sensing_time.strftime("%Y%m%dT%H%M%S")

    @property
    def product_name(self) -> str:
        baseline = "N" + self.processing_baseline.replace(".", "")
        return f"S2B_MSI{self.level}_{self.stamp}_{baseline}_R051_{self.tile_id}_{self.stamp}.SAFE"

    @property
    def granule_id(self) -> str:
        return f"{self.level}_{self.tile_id}_A037000_{self.stamp}"

    def has_offset(self) -> bool:
        return tuple(int(p) for p in self.processing_baseline.split(".")) >= (4, 0)


def band_file_stem(info: SafeProductInfo, band: str, resolution: int | None = None) -> str:
    """ESA's image file name without extension: ``T31TCG_20240615T105031_B02_10m`` (L2A) or
    ``T31TCG_20240615T105031_B02`` (L1C)."""
    stem = f"{info.tile_id}_{info.stamp}_{band}"
    return f"{stem}_{resolution}m" if info.level == "L2A" else stem


def band_relative_path(info: SafeProductInfo, band: str) -> Path:
    """Path of a band's JP2 inside the SAFE folder (``SCL`` allowed for L2A)."""
    img = Path("GRANULE") / info.granule_id / "IMG_DATA"
    if info.level == "L2A":
        resolution = SCL_RESOLUTION if band == "SCL" else NATIVE_RESOLUTION[band]
        return img / f"R{resolution}m" / f"{band_file_stem(info, band, resolution)}.jp2"
    return img / f"{band_file_stem(info, band)}.jp2"


def product_metadata_xml(info: SafeProductInfo, bands: Iterable[str]) -> str:
    """The product metadata (``MTD_MSIL2A.xml`` / ``MTD_MSIL1C.xml``) with the fields readers use.

    Same element names and nesting as ESA's files: PROCESSING_LEVEL, PRODUCT_TYPE,
    PROCESSING_BASELINE, the image file list, QUANTIFICATION_VALUES_LIST and (baseline >= 04.00)
    the per-band BOA_ADD_OFFSET (L2A) or RADIO_ADD_OFFSET (L1C) lists.
    """
    l2a = info.level == "L2A"
    start = info.sensing_time.strftime("%Y-%m-%dT%H:%M:%S.024Z")
    files = "\n".join(
        "            <IMAGE_FILE>"
        f"{band_relative_path(info, b).with_suffix('').as_posix()}</IMAGE_FILE>"
        for b in bands
    )
    if l2a:
        quant = (
            "      <QUANTIFICATION_VALUES_LIST>\n"
            '        <BOA_QUANTIFICATION_VALUE unit="none">'
            f"{info.quantification}</BOA_QUANTIFICATION_VALUE>\n"
            '        <AOT_QUANTIFICATION_VALUE unit="none">1000.0</AOT_QUANTIFICATION_VALUE>\n'
            '        <WVP_QUANTIFICATION_VALUE unit="cm">1000.0</WVP_QUANTIFICATION_VALUE>\n'
            "      </QUANTIFICATION_VALUES_LIST>\n"
        )
        offset_tag, list_tag = "BOA_ADD_OFFSET", "BOA_ADD_OFFSET_VALUES_LIST"
    else:
        quant = (
            '      <QUANTIFICATION_VALUE unit="none">'
            f"{info.quantification}</QUANTIFICATION_VALUE>\n"
        )
        offset_tag, list_tag = "RADIO_ADD_OFFSET", "Radiometric_Offset_List"
    offsets = ""
    if info.has_offset():
        rows = "".join(
            f'        <{offset_tag} band_id="{BAND_ID[b]}">{info.add_offset}</{offset_tag}>\n'
            for b in ALL_BANDS
        )
        offsets = f"      <{list_tag}>\n{rows}      </{list_tag}>\n"
    spectral = "".join(
        f'        <Spectral_Information bandId="{BAND_ID[b]}" physicalBand="{PHYSICAL_BAND[b]}">'
        f"<RESOLUTION>{NATIVE_RESOLUTION[b]}</RESOLUTION></Spectral_Information>\n"
        for b in ALL_BANDS
    )
    level = "2A" if l2a else "1C"
    namespace = f"https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-{level}.xsd"
    return (
        '<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n'
        f'<n1:Level-{level}_User_Product xmlns:n1="{namespace}">\n'
        "  <n1:General_Info>\n"
        "    <Product_Info>\n"
        f"      <PRODUCT_START_TIME>{start}</PRODUCT_START_TIME>\n"
        f"      <PRODUCT_STOP_TIME>{start}</PRODUCT_STOP_TIME>\n"
        f"      <PRODUCT_URI>{info.product_name}</PRODUCT_URI>\n"
        f"      <PROCESSING_LEVEL>Level-{level}</PROCESSING_LEVEL>\n"
        f"      <PRODUCT_TYPE>S2MSI{level}</PRODUCT_TYPE>\n"
        f"      <PROCESSING_BASELINE>{info.processing_baseline}</PROCESSING_BASELINE>\n"
        f"      <GENERATION_TIME>{start}</GENERATION_TIME>\n"
        "      <Datatake>\n"
        f"        <SPACECRAFT_NAME>{info.spacecraft}</SPACECRAFT_NAME>\n"
        f"        <DATATAKE_SENSING_START>{start}</DATATAKE_SENSING_START>\n"
        "        <SENSING_ORBIT_NUMBER>51</SENSING_ORBIT_NUMBER>\n"
        "        <SENSING_ORBIT_DIRECTION>DESCENDING</SENSING_ORBIT_DIRECTION>\n"
        "      </Datatake>\n"
        "      <Product_Organisation>\n"
        "        <Granule_List>\n"
        f'          <Granule granuleIdentifier="{info.granule_id}" imageFormat="JPEG2000">\n'
        f"{files}\n"
        "          </Granule>\n"
        "        </Granule_List>\n"
        "      </Product_Organisation>\n"
        "    </Product_Info>\n"
        "    <Product_Image_Characteristics>\n"
        "      <Special_Values><SPECIAL_VALUE_TEXT>NODATA</SPECIAL_VALUE_TEXT>"
        "<SPECIAL_VALUE_INDEX>0</SPECIAL_VALUE_INDEX></Special_Values>\n"
        "      <Special_Values><SPECIAL_VALUE_TEXT>SATURATED</SPECIAL_VALUE_TEXT>"
        "<SPECIAL_VALUE_INDEX>65535</SPECIAL_VALUE_INDEX></Special_Values>\n"
        f"{quant}{offsets}"
        "      <Spectral_Information_List>\n"
        f"{spectral}"
        "      </Spectral_Information_List>\n"
        "    </Product_Image_Characteristics>\n"
        "  </n1:General_Info>\n"
        f"</n1:Level-{level}_User_Product>\n"
    )


def write_safe_product(
    out_path: str | Path,
    info: SafeProductInfo,
    grids: Mapping[int, Grid],
    strips: Iterable[tuple[int, Mapping[str, np.ndarray]]],
) -> None:
    """Write a SAFE folder: one lossless JP2 per band at its native resolution + product metadata.

    ``grids`` maps 10/20/60 (m) to the band grids. ``strips`` yields ``(row, arrays)``: ``row`` is
    the first row of the strip on the 10 m grid (a multiple of 6) and ``arrays[band]`` the strip's
    pixels on that band's grid (rows ``row // k`` onwards, ``k`` = resolution / 10); arrays may
    extend past the grid's right / bottom edge (cropped here). Bands are those first yielded
    (``SCL`` allowed for L2A). Memory: one strip plus the JP2 conversion's 1024 x 1024 blocks.
    """
    strips = iter(strips)
    first = next(strips, None)
    if first is None:
        raise ValueError("no data to write")
    bands = list(first[1])
    mtd_name = "MTD_MSIL2A.xml" if info.level == "L2A" else "MTD_MSIL1C.xml"
    with atomic_path(out_path) as tmp_safe:
        tmp_safe.mkdir(parents=True)
        targets = {}
        for band in bands:
            res = SCL_RESOLUTION if band == "SCL" else NATIVE_RESOLUTION[band]
            targets[band] = (tmp_safe / band_relative_path(info, band), grids[res])
        with jp2_band_writers(targets) as writers:
            for row, arrays in _chain(first, strips):
                for band, array in arrays.items():
                    grid = targets[band][1]
                    k = round(grid.resolution[0] / grids[10].resolution[0])
                    r0 = row // k
                    h = min(array.shape[0], grid.height - r0)
                    w = min(array.shape[1], grid.width)
                    if h > 0:
                        writers[band].write(Window(0, r0, w, h), array[:h, :w])
        spectral = [b for b in bands if b != "SCL"]
        write_text(product_metadata_xml(info, spectral), tmp_safe / mtd_name)
        (tmp_safe / "GRANULE" / info.granule_id / "QI_DATA").mkdir(exist_ok=True)
        write_text(_manifest(info), tmp_safe / "manifest.safe")


def _chain(first, rest):  # type: ignore[no-untyped-def]
    yield first
    yield from rest


def _manifest(info: SafeProductInfo) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<xfdu:XFDU xmlns:xfdu="urn:ccsds:schema:xfdu:1" version="esa/safe/sentinel/1.1">\n'
        f"  <!-- {info.product_name}: synthetic product written by s2landcover -->\n"
        "</xfdu:XFDU>\n"
    )


# ----------------------------------------------------------------------------------------------
# Reading products
# ----------------------------------------------------------------------------------------------

_BAND_PATTERN = re.compile(r"(?:^|_)(B0?[1-9]|B1[0-2]|B8A|SCL)(?:_(\d+)m)?$", re.IGNORECASE)
_RASTER_SUFFIXES = (".tif", ".tiff", ".jp2")


def normalize_band_name(name: str) -> str | None:
    """``B2``/``b02``/``B02`` -> ``B02``, ``B8a`` -> ``B8A``, ``SCL``; None if not a band name."""
    text = name.strip().upper()
    if text in ("SCL", "B8A"):
        return text
    match = re.fullmatch(r"B0?(\d{1,2})", text)
    if match and 1 <= int(match.group(1)) <= 12:
        return f"B{int(match.group(1)):02d}"
    return None


@dataclass(frozen=True)
class SafeProduct:
    """A SAFE product as read from its metadata: where each band's JP2 is and how to scale it.

    ``files`` maps band names (and ``SCL`` for L2A) to GDAL paths (``/vsizip/...`` inside a zip);
    ``scales`` / ``offsets`` turn stored DN into reflectance (``DN * scale + offset``).
    """

    path: str
    level: str  # "L2A" or "L1C"
    processing_baseline: str
    sensing_time: str
    files: dict[str, str]
    scales: dict[str, float]
    offsets: dict[str, float]
    metadata_file: str


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _find_text(root: ElementTree.Element, name: str) -> str | None:
    for element in root.iter():
        if _local(element.tag) == name and element.text is not None:
            return element.text.strip()
    return None


def parse_product_metadata(xml_bytes: bytes, where: str) -> dict[str, Any]:
    """Level, baseline, sensing time, quantification and per-band offsets of a product metadata XML.

    Returns ``{"level", "processing_baseline", "sensing_time", "quantification", "offsets"}`` with
    ``offsets`` mapping band names to the DN offset (0 where the list is absent: baselines before
    04.00). ``where`` names the file in error messages.
    """
    try:
        root = ElementTree.fromstring(xml_bytes)
    except ElementTree.ParseError as error:
        raise InputError(f"product metadata {where} is not valid XML: {error}") from None
    level_text = (
        (_find_text(root, "PROCESSING_LEVEL") or "")
        + " "
        + (_find_text(root, "PRODUCT_TYPE") or "")
    )
    if "2A" in level_text:
        level = "L2A"
    elif "1C" in level_text:
        level = "L1C"
    else:
        raise InputError(
            f"product metadata {where}: PROCESSING_LEVEL / PRODUCT_TYPE {level_text.strip()!r} is "
            "neither Level-2A nor Level-1C"
        )
    quant_name = "BOA_QUANTIFICATION_VALUE" if level == "L2A" else "QUANTIFICATION_VALUE"
    quant_text = _find_text(root, quant_name)
    if quant_text is None:
        raise InputError(f"product metadata {where} has no {quant_name}; expected e.g. 10000")
    offset_name = "BOA_ADD_OFFSET" if level == "L2A" else "RADIO_ADD_OFFSET"
    by_id = {i: band for band, i in BAND_ID.items()}
    offsets = {band: 0.0 for band in ALL_BANDS}
    for element in root.iter():
        if _local(element.tag) == offset_name and element.text:
            band = by_id.get(int(element.get("band_id", "-1")))
            if band is not None:
                offsets[band] = float(element.text)
    return {
        "level": level,
        "processing_baseline": _find_text(root, "PROCESSING_BASELINE") or "",
        "sensing_time": _find_text(root, "PRODUCT_START_TIME")
        or _find_text(root, "DATATAKE_SENSING_START")
        or "",
        "quantification": float(quant_text),
        "offsets": offsets,
    }


def _safe_listing(path: Path) -> tuple[str, list[str], Callable[[str], bytes]]:
    """(GDAL prefix, member paths under the prefix, member reader) of a SAFE folder or zip."""
    if path.is_dir():
        names = [p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()]
        return str(path), names, lambda name: (path / name).read_bytes()
    if not path.exists():
        raise InputError(f"SAFE product {path} does not exist (expected a .SAFE folder or a .zip)")
    try:
        archive = zipfile.ZipFile(path)
        members = [m for m in archive.namelist() if not m.endswith("/")]
    except (zipfile.BadZipFile, OSError) as error:
        raise InputError(f"SAFE product {path} is not a readable zip file: {error}") from None
    metadata = [m for m in members if re.search(r"(^|/)MTD_MSIL(2A|1C)\.xml$", m)]
    top = metadata[0].rsplit("/", 1)[0] if metadata and "/" in metadata[0] else ""
    prefix = f"/vsizip/{path.resolve()}" + (f"/{top}" if top else "")
    names = [m[len(top) + 1 :] if top else m for m in members if not top or m.startswith(top + "/")]

    def read_member(name: str) -> bytes:
        try:
            with zipfile.ZipFile(path) as zf:
                return zf.read(f"{top}/{name}" if top else name)
        except (zipfile.BadZipFile, OSError, KeyError) as error:
            raise InputError(f"cannot read {name} from zip {path}: {error}") from None

    archive.close()
    return prefix, names, read_member


def open_safe_product(path: str | Path) -> SafeProduct:
    """Read a SAFE product (folder or zip): its metadata XML and the location of every band JP2.

    L2A bands are taken from ``IMG_DATA/R{10,20,60}m`` at their native resolution (the finest
    resolution present when the native one is missing); L1C bands from ``IMG_DATA``. SCL (L2A) at
    20 m. Raises :class:`InputError` for a missing / unreadable product or metadata file.
    """
    path = Path(path)
    prefix, names, read_member = _safe_listing(path)
    metadata = [n for n in names if re.fullmatch(r"MTD_MSIL(2A|1C)\.xml", n.rsplit("/", 1)[-1])]
    if not metadata:
        raise InputError(
            f"SAFE product {path} has no MTD_MSIL2A.xml or MTD_MSIL1C.xml product metadata; "
            "expected a Sentinel-2 .SAFE folder or its .zip"
        )
    metadata_file = min(metadata, key=len)
    info = parse_product_metadata(read_member(metadata_file), f"{path}/{metadata_file}")
    candidates: dict[str, list[tuple[int, str]]] = {}
    for name in names:
        parts = name.split("/")
        if "IMG_DATA" not in parts or not name.lower().endswith(".jp2"):
            continue
        match = _BAND_PATTERN.search(Path(parts[-1]).stem)
        if not match:
            continue
        band = normalize_band_name(match.group(1))
        if band is None:
            continue
        resolution = (
            int(match.group(2)) if match.group(2) else NATIVE_RESOLUTION.get(band, SCL_RESOLUTION)
        )
        candidates.setdefault(band, []).append((resolution, name))
    files = {}
    for band, options in candidates.items():
        native = SCL_RESOLUTION if band == "SCL" else NATIVE_RESOLUTION[band]
        exact = [n for r, n in options if r == native]
        chosen = exact[0] if exact else min(options)[1]
        files[band] = f"{prefix}/{chosen}"
    scale = 1.0 / info["quantification"]
    return SafeProduct(
        path=str(path),
        level=info["level"],
        processing_baseline=info["processing_baseline"],
        sensing_time=info["sensing_time"],
        files=files,
        scales={band: scale for band in ALL_BANDS},
        offsets={band: info["offsets"][band] * scale for band in ALL_BANDS},
        metadata_file=metadata_file,
    )


def find_band_files(folder: str | Path) -> dict[str, Path]:
    """Band name -> raster file in a folder of one file per band.

    File names end with the band: ``<patch>_B02.tif`` (BigEarthNet), ``B02.tif``,
    ``..._B02_10m.jp2``.
    Raises :class:`InputError` when the folder is missing or holds two files for one band.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"band folder {folder} does not exist or is not a folder")
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in _RASTER_SUFFIXES or path.name.startswith("."):
            continue
        match = _BAND_PATTERN.search(path.stem)
        band = normalize_band_name(match.group(1)) if match else None
        if band is None:
            continue
        if band in files:
            raise InputError(
                f"band folder {folder} holds two files for {band}: {files[band].name}, {path.name}"
            )
        files[band] = path
    return files


def folder_metadata(folder: str | Path) -> dict[str, Any]:
    """Side files of a band folder: ``scene.json`` (download helper) and BigEarthNet's
    ``*_labels_metadata.json`` (its ``acquisition_date``). Empty dict when neither exists."""
    folder = Path(folder)
    meta: dict[str, Any] = {}
    scene_json = folder / "scene.json"
    if scene_json.is_file():
        meta["scene"] = read_json(scene_json)
    labels = sorted(folder.glob("*_labels_metadata.json"))
    if labels:
        meta["labels"] = read_json(labels[0])
    return meta
