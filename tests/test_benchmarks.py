"""The prepared GPU benchmark runs (on the CPU, tiny sizes): it cannot rot between GPU sessions."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


@pytest.mark.slow
def test_gpu_benchmark_smoke_mode_writes_its_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import bench_gpu

    out = tmp_path / "gpu.md"
    bench_gpu.main(["--smoke", "--device", "cpu", "--out", str(out)])
    table = out.read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    cases = [row.split("|")[1].strip() for row in rows[1:]]
    assert len(cases) == 5, table
    assert sum(case.startswith("network only") for case in cases) == 2
    assert sum(case.startswith("predict_scene") for case in cases) == 2
    assert cases[-1].startswith("training")
    for row in rows[1:]:
        value = float(row.split("|")[2].split()[0].rstrip(","))
        assert value > 0, row
    assert "device cpu" in table
    sys.modules.pop("bench_gpu", None)
