"""Training runtime choices: loader workers, precision and memory layout (issue 20)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from chip_store_helpers import (
    BANDS,
    CLASSES,
    class_block_chips,
    write_chip_store,
    write_split,
)
from s2landcover.cli import build_parser
from s2landcover.config import ConfigError, validate_config
from s2landcover.errors import InputError
from s2landcover.training import train as train_module
from s2landcover.training.data import ChipDataModule, resolve_num_workers
from s2landcover.training.module import LandCoverModule
from s2landcover.training.train import resolve_layout, resolve_precision, train_model

CHIP = 64


def test_auto_workers_are_none_on_cpu_and_four_per_gpu_within_the_cpus() -> None:
    assert resolve_num_workers("auto", on_cuda=False, cpus=16) == 0
    assert resolve_num_workers("auto", on_cuda=True, cpus=16) == 4
    assert resolve_num_workers("auto", on_cuda=True, cpus=2) == 1
    assert resolve_num_workers("auto", on_cuda=True, cpus=1) == 0
    assert resolve_num_workers(3, on_cuda=False) == 3  # a count is taken as given
    with pytest.raises(InputError, match=r"training\.num_workers.*'many'"):
        resolve_num_workers("many", on_cuda=False)


def test_num_workers_config_and_flag_take_a_count_or_auto() -> None:
    assert validate_config({})["training"]["num_workers"] == "auto"
    assert validate_config({"training": {"num_workers": 2}})["training"]["num_workers"] == 2
    with pytest.raises(ConfigError, match="num_workers"):
        validate_config({"training": {"num_workers": "many"}})
    parser = build_parser()
    base = ["train", "--split", "s", "--chips-root", "c", "--out-dir", "o"]
    assert parser.parse_args([*base, "--num-workers", "auto"]).num_workers == "auto"
    assert parser.parse_args([*base, "--num-workers", "3"]).num_workers == 3


@pytest.mark.parametrize(
    ("setting", "on_cuda", "native_bf16", "expected"),
    [
        ("auto", False, True, "bf16-mixed"),
        ("auto", False, False, "32-true"),
        ("auto", True, True, "bf16-mixed"),
        ("auto", True, False, "16-mixed"),
        ("float32", False, True, "32-true"),
        ("bfloat16", False, False, "bf16-mixed"),
        ("float16", True, True, "16-mixed"),
        ("32", False, True, "32-true"),  # Lightning's names are still accepted
        ("bf16-mixed", False, False, "bf16-mixed"),
    ],
)
def test_precision_names_and_auto_per_device(
    monkeypatch: pytest.MonkeyPatch, setting: str, on_cuda: bool, native_bf16: bool, expected: str
) -> None:
    import s2landcover.predict

    monkeypatch.setattr(s2landcover.predict, "cpu_has_native_bf16", lambda: native_bf16)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: native_bf16)
    assert resolve_precision(setting, on_cuda) == expected
    # With CPU_AUTO_BF16 off, auto on a CPU is float32 whatever the CPU.
    monkeypatch.setattr(train_module, "CPU_AUTO_BF16", False)
    if setting == "auto" and not on_cuda:
        assert resolve_precision(setting, on_cuda) == "32-true"


def test_layout_auto_is_channels_last_on_gpu_and_with_bf16() -> None:
    assert resolve_layout("auto", on_cuda=False, precision="bf16-mixed") is True
    assert resolve_layout("auto", on_cuda=False, precision="32-true") is False
    assert resolve_layout("auto", on_cuda=True, precision="32-true") is True
    assert resolve_layout("contiguous", on_cuda=True, precision="bf16-mixed") is False
    assert resolve_layout("channels_last", on_cuda=False, precision="32-true") is True
    with pytest.raises(InputError, match=r"training\.layout"):
        resolve_layout("nhwc", on_cuda=False, precision="32-true")
    with pytest.raises(InputError, match=r"training\.precision"):
        resolve_precision("fp8", on_cuda=False)


@pytest.fixture(scope="module")
def chip_data(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """6 chips of 64 x 64 px, 4 bands; 4 train, 2 val."""
    root = tmp_path_factory.mktemp("chips")
    n = 6
    images, masks = class_block_chips(n, CHIP, seed=1)
    write_chip_store(root / "size64" / "sceneA", "sceneA", images, masks, len(CLASSES))
    split_path = root / "split.parquet"
    write_split(split_path, "sceneA", 4, 2)
    return {"chips_root": root / "size64", "split": split_path}


def tiny_config(**training: object) -> dict:
    return validate_config(
        {
            "bands": BANDS,
            "classes": CLASSES,
            "tile_size": CHIP,
            "model": {"name": "tiny", "architecture": "Unet", "encoder": "resnet18"},
            "training": {"epochs": 1, "batch_size": 2, "checkpoint_interval_s": 0, **training},
        }
    )


def test_bf16_channels_last_training_runs_the_network_so_and_reports_it(
    chip_data: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[torch.dtype, bool, int]] = []
    original_forward = LandCoverModule.forward
    original_loader = ChipDataModule._loader

    def forward(self: LandCoverModule, image: torch.Tensor) -> torch.Tensor:
        logits = original_forward(self, image)
        weight = next(self.net.parameters())
        seen.append(
            (logits.dtype, weight.is_contiguous(memory_format=torch.channels_last), weight.ndim)
        )
        return logits

    workers: list[int] = []

    def loader(self: ChipDataModule, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        made = original_loader(self, *args, **kwargs)
        workers.append(made.num_workers)
        return made

    monkeypatch.setattr(LandCoverModule, "forward", forward)
    monkeypatch.setattr(ChipDataModule, "_loader", loader)
    config = tiny_config(precision="bfloat16", layout="channels_last", num_workers="auto")
    summary = train_model(
        chip_data["split"], chip_data["chips_root"], tmp_path / "m", config, progress=False
    )
    assert summary["precision"] == "bf16-mixed" and summary["channels_last"] is True
    assert seen and all(dtype == torch.bfloat16 and last for dtype, last, _ in seen)
    assert workers and set(workers) == {0}  # auto on a CPU: no worker processes
    assert np.isfinite(pd.read_csv(tmp_path / "m" / "metrics.csv")["train_loss"]).all()

    seen.clear()
    config = tiny_config(precision="float32", layout="contiguous", num_workers=1)
    summary = train_model(
        chip_data["split"], chip_data["chips_root"], tmp_path / "f", config, progress=False
    )
    assert summary["precision"] == "32-true" and summary["channels_last"] is False
    assert seen and all(dtype == torch.float32 and not last for dtype, last, _ in seen)
    assert workers[-1] == 1


def test_precision_and_layout_do_not_invalidate_the_resume_state() -> None:
    base = tiny_config()
    changed = tiny_config(precision="float32", layout="contiguous", num_workers=3)
    assert train_module.config_digest(base) == train_module.config_digest(changed)
