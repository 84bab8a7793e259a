"""The class table: source codes -> class index 1..K, names, colours, water flags.

Index 0 is reserved for "no data / ignore" in masks, chips and predictions; 255
(:data:`NOT_OBSERVED`) marks predicted pixels the validity raster calls cloud, cloud shadow, cirrus
or no data ("Not observed", not a land-cover class).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

NODATA_CLASS = 0
NOT_OBSERVED = 255
NOT_OBSERVED_NAME = "Not observed"
NOT_OBSERVED_COLOR = "#ff00ff"


def hex_to_rgb(color: str) -> tuple[int, int, int]:
    """'#RRGGBB' -> (r, g, b) with 0..255 integers."""
    color = color.lstrip("#")
    return int(color[0:2], 16), int(color[2:4], 16), int(color[4:6], 16)


@dataclass(frozen=True)
class ClassTable:
    """Classes 1..K of a run (index order), with their source codes, names and colours."""

    names: tuple[str, ...]
    colors: tuple[str, ...]  # '#RRGGBB', one per class
    codes: tuple[tuple[int, ...], ...]  # source codes per class
    water: tuple[bool, ...]
    # True for rasters that may hold NOT_OBSERVED (predictions made with a validity raster): the
    # colour table and category names then carry it too.
    not_observed: bool = False

    @classmethod
    def from_config(cls, classes: Sequence[Mapping[str, Any]]) -> ClassTable:
        """Build from the validated ``classes`` list of the config (any order of entries)."""
        ordered = sorted(classes, key=lambda c: c["index"])
        return cls(
            names=tuple(c["name"] for c in ordered),
            colors=tuple(c.get("color", "#808080") for c in ordered),
            codes=tuple(tuple(c["codes"]) for c in ordered),
            water=tuple(bool(c.get("water", False)) for c in ordered),
        )

    @property
    def num_classes(self) -> int:
        """K, the number of real classes (not counting no data)."""
        return len(self.names)

    @property
    def indices(self) -> list[int]:
        """Class indices 1..K."""
        return list(range(1, self.num_classes + 1))

    @property
    def water_indices(self) -> list[int]:
        """Indices of the classes that count as water."""
        return [i for i, w in zip(self.indices, self.water, strict=True) if w]

    def code_to_index(self) -> dict[int, int]:
        """Mapping source code -> class index."""
        return {
            code: i for i, codes in zip(self.indices, self.codes, strict=True) for code in codes
        }

    def colormap(self) -> dict[int, tuple[int, int, int, int]]:
        """GDAL colour table entries {value: (r, g, b, alpha)}; 0 (no data) is transparent black."""
        table = {NODATA_CLASS: (0, 0, 0, 0)}
        for index, color in zip(self.indices, self.colors, strict=True):
            table[index] = (*hex_to_rgb(color), 255)
        if self.not_observed:
            table[NOT_OBSERVED] = (*hex_to_rgb(NOT_OBSERVED_COLOR), 255)
        return table

    def rgb_array(self) -> np.ndarray:
        """(K + 1, 3) float array of colours in 0..1, row 0 for no data (white), for plotting."""
        rows = [(1.0, 1.0, 1.0)] + [tuple(v / 255 for v in hex_to_rgb(c)) for c in self.colors]
        return np.asarray(rows, dtype=float)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (stored in checkpoints and raster tags)."""
        return {
            "names": list(self.names),
            "colors": list(self.colors),
            "codes": [list(c) for c in self.codes],
            "water": list(self.water),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClassTable:
        """Inverse of :meth:`to_dict`."""
        return cls(
            names=tuple(data["names"]),
            colors=tuple(data["colors"]),
            codes=tuple(tuple(c) for c in data["codes"]),
            water=tuple(data["water"]),
        )
