"""The demo's synthetic Sentinel-2 products: SAFE folders written the way ESA lays them out.

Used only by the demo (:func:`s2landcover.demo.make_demo_scene`, which computes the synthetic
reflectance) and by the ingest benchmark; the pipeline itself only reads products
(:mod:`s2landcover.io.sentinel2`). Kept in ``io/`` because it writes files (lossless JP2 per band,
the product metadata XML, ``manifest.safe``), and beside the reader so that the two share ESA's
band tables and stay readable by each other: the names, folder layout and metadata fields here are
those the reader parses.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.windows import Window

from s2landcover.io.documents import write_string
from s2landcover.io.rasters import Grid, atomic_path
from s2landcover.io.sentinel2 import (
    ALL_BANDS,
    BAND_ID,
    NATIVE_RESOLUTION,
    PHYSICAL_BAND,
    SCL_RESOLUTION,
)
from s2landcover.io.windowed import jp2_band_writers


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
        write_string(product_metadata_xml(info, spectral), tmp_safe / mtd_name)
        (tmp_safe / "GRANULE" / info.granule_id / "QI_DATA").mkdir(exist_ok=True)
        write_string(_manifest(info), tmp_safe / "manifest.safe")


def _chain(first: Any, rest: Iterable[Any]) -> Iterator[Any]:
    yield first
    yield from rest


def _manifest(info: SafeProductInfo) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<xfdu:XFDU xmlns:xfdu="urn:ccsds:schema:xfdu:1" version="esa/safe/sentinel/1.1">\n'
        f"  <!-- {info.product_name}: synthetic product written by s2landcover -->\n"
        "</xfdu:XFDU>\n"
    )
