"""Sentinel-2 products on disk: SAFE folders and zips (L2A, L1C) and per-band folders.

Band names are ESA's (``B01`` ... ``B12``, ``B8A``); the metadata XML names them ``B1`` ... ``B8A``
and numbers them by ``band_id`` 0..12 (B01=0 ... B08=7, B8A=8, B09=9, B10=10, B11=11, B12=12).
This module reads products; the demo's synthetic SAFE writer is :mod:`s2landcover.io.demo_products`.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from s2landcover.errors import InputError
from s2landcover.io.documents import read_json

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
