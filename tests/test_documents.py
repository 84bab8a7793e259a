"""The one JSON / text / bytes writer (s2landcover.io.documents)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from s2landcover.errors import InputError
from s2landcover.io.documents import read_json, write_bytes, write_json, write_string


def test_write_json_plain_values_numpy_paths_and_nan_as_null(tmp_path: Path) -> None:
    data = {
        "n": np.int64(3),
        "x": np.float32(0.5),
        "ok": np.bool_(True),
        "iou": [0.25, float("nan"), np.float64("inf")],
        "a": np.arange(3, dtype=np.uint8),
        "p": tmp_path / "f.tif",
        1: (1, 2),
    }
    out = write_json(data, tmp_path / "m.json")
    text = out.read_text()
    assert text.endswith("}\n") and "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {
        "n": 3,
        "x": 0.5,
        "ok": True,
        "iou": [0.25, None, None],
        "a": [0, 1, 2],
        "p": str(tmp_path / "f.tif"),
        "1": [1, 2],
    }
    assert read_json(out)["iou"][1] is None
    assert text == json.dumps(json.loads(text), indent=2) + "\n"  # indented by 2, key order kept


def test_write_json_nan_error_policy_names_key_and_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"m\.json: \$\.scores\[1\] is nan"):
        write_json({"scores": [1.0, float("nan")]}, tmp_path / "m.json", nan="error")
    with pytest.raises(TypeError, match=r"\$\.when is a object"):
        write_json({"when": object()}, tmp_path / "m.json")
    assert list(tmp_path.iterdir()) == []


def test_writers_take_data_first_and_refuse_a_path_first(tmp_path: Path) -> None:
    assert write_string("héllo\n", tmp_path / "a.txt").read_text(encoding="utf-8") == "héllo\n"
    assert write_bytes(b"\x89PNG", tmp_path / "b.png").read_bytes() == b"\x89PNG"
    for writer, payload in ((write_string, "x"), (write_json, {}), (write_bytes, b"x")):
        with pytest.raises(TypeError, match="got a path"):
            writer(tmp_path / "c", payload)  # the old (path, data) order
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.png"]


def test_read_json_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"cannot read JSON file .*missing\.json"):
        read_json(tmp_path / "missing.json")
    (tmp_path / "list.json").write_text("[1]")
    with pytest.raises(InputError, match="must hold an object, found list"):
        read_json(tmp_path / "list.json")
