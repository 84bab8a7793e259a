"""Temporary files: fixed names per output, removed by the next run after a kill (issue 15 case 7).

A killed ``tile_scene`` left a 264 MB hidden folder, killed mask and prediction jobs left temporary
files, and nothing removed them. Each stage here is killed with SIGKILL midway through writing (no
cleanup code can run), must have left its temporary behind (so the test does kill it mid-write),
and is run again: afterwards only the outputs are there, equal byte for byte to those of a run that
was never interrupted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from litter_stages import OUTPUTS, make_inputs, run
from s2landcover.io.atomic import atomic_path, partial_path, remove_leftovers

RUNNER = Path(__file__).parent / "litter_stages.py"


def _files(folder: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every file under ``folder``."""
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.mark.parametrize("stage", sorted(OUTPUTS))
def test_killed_stage_leaves_nothing_after_the_rerun(stage: str, tmp_path: Path) -> None:
    folder = tmp_path / "work"  # the same path for both runs: the scene stack records its source
    make_inputs(stage, folder)
    run(stage, folder)
    assert sorted(p.name for p in folder.iterdir()) == sorted(OUTPUTS[stage])
    reference = folder.rename(tmp_path / "uninterrupted")

    make_inputs(stage, folder)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(RUNNER.parent), *sys.path])}
    killed = subprocess.run(
        [sys.executable, str(RUNNER), stage, str(folder), "2"], env=env, capture_output=True,
        timeout=300,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    left = sorted(p.name for p in folder.iterdir() if p.name not in OUTPUTS[stage])
    assert left and all(name.startswith(".") for name in left)  # the kill did leave litter

    run(stage, folder)  # the next run finds and removes it
    assert sorted(p.name for p in folder.iterdir()) == sorted(OUTPUTS[stage])
    assert _files(folder) == _files(reference)


def test_atomic_path_removes_its_own_leftovers_only(tmp_path: Path) -> None:
    final = tmp_path / "scene [1].tif"
    ours = [
        partial_path(final),  # .scene [1].tif.partial.tif
        Path(f"{partial_path(final)}.aux.xml"),
        partial_path(final, "stage").with_suffix(".tif"),  # a writer's scratch file
        tmp_path / ".scene [1].tif.0a1b2c3d.tmp.tif",  # the random names of earlier versions
        tmp_path / ".scene [1].tif.0a1b2c3d.stage.tif",
    ]
    others = [
        tmp_path / ".other.tif.partial.tif",  # another output's, maybe being written now
        tmp_path / ".scene [1].tif.download",  # a download staging folder, resumed later
        tmp_path / "scene [1].tif.aux.xml",
    ]
    for path in [*ours, *others]:
        path.write_text("x")
    with atomic_path(final) as tmp:
        assert tmp == partial_path(final) and not tmp.exists()
        assert not any(p.exists() for p in ours)
        tmp.write_text("done")
    assert final.read_text() == "done"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [final.name, *(o.name for o in others)]
    )


def test_atomic_path_removes_a_temporary_folder_on_error(tmp_path: Path) -> None:
    final = tmp_path / "chips" / "scene"
    with pytest.raises(RuntimeError), atomic_path(final) as tmp:
        tmp.mkdir()
        (tmp / "images.npy").write_bytes(b"0" * 1000)
        raise RuntimeError("stage failed")
    assert list((tmp_path / "chips").iterdir()) == []


def test_remove_leftovers_of_a_missing_folder() -> None:
    assert remove_leftovers(Path("/nonexistent/folder/x.tif")) == []
