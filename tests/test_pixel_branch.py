"""The per-pixel branch's own loss (training.pixel_branch_loss) and its spectral indices
(model.pixel_branch_indices): issue 19, docs/benchmarks/training.md section (f)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from chip_store_helpers import BANDS, CLASSES, write_chip_store, write_split
from s2landcover.config import validate_config
from s2landcover.errors import InputError
from s2landcover.models import PixelBranchNet, branch_index_pairs, build_segmentation_model
from s2landcover.pixel_model import feature_names, pixel_features
from s2landcover.training.module import LandCoverModule
from s2landcover.training.tasks import SegmentationTask
from s2landcover.training.train import train_model


def _module(pixel_branch: int, weight: float, detached: bool = False) -> LandCoverModule:
    config = validate_config(
        {
            "bands": BANDS,
            "classes": CLASSES,
            "model": {"encoder": "resnet18", "encoder_depth": 3, "pixel_branch": pixel_branch},
            "training": {"pixel_branch_loss": weight, "pixel_branch_detached": detached},
        }
    )
    section = {**config["model"], "pixel_branch_indices": []}
    return LandCoverModule(
        SegmentationTask(), section, config["training"], len(BANDS), ["a", "b", "c"]
    )


def test_pixel_branch_loss_adds_the_weighted_loss_of_the_branch_alone() -> None:
    torch.manual_seed(0)
    module = _module(8, 0.5)
    image = torch.randn(2, len(BANDS), 32, 32)
    target = torch.randint(0, 3, (2, 32, 32))
    loss = module.training_step((image, target), 0)
    context, pixel = module.net.net(image), module.net.pixel(image)
    expected = module.loss(context + pixel, target) + 0.5 * module.loss(pixel, target)
    assert torch.allclose(loss, expected, atol=1e-5)
    assert not torch.allclose(loss, module.loss(context + pixel, target), atol=1e-3)
    # off by default: the loss of the sum alone
    off = _module(8, 0.0)
    off.load_state_dict(module.state_dict())
    assert torch.allclose(
        off.training_step((image, target), 0), module.loss(context + pixel, target)
    )


def test_pixel_branch_loss_without_a_branch_is_refused() -> None:
    with pytest.raises(InputError, match="pixel_branch_loss"):
        _module(0, 1.0)
    with pytest.raises(InputError, match="pixel_branch_loss"):
        _module(8, 0.0, detached=True)


def test_detached_branch_learns_from_its_own_loss_alone() -> None:
    torch.manual_seed(0)
    module = _module(8, 0.5, detached=True)
    image = torch.randn(2, len(BANDS), 32, 32)
    target = torch.randint(0, 3, (2, 32, 32))
    module.training_step((image, target), 0).backward()
    got = [p.grad.clone() for p in module.net.pixel.parameters()]
    assert module.net.net.segmentation_head[0].weight.grad is not None  # the U-Net still learns
    module.zero_grad()
    (0.5 * module.loss(module.net.pixel(image), target)).backward()
    for mine, alone in zip(got, module.net.pixel.parameters(), strict=True):
        assert torch.allclose(mine, alone.grad, atol=1e-6)


def test_branch_indices_are_the_baselines_on_destandardised_reflectance() -> None:
    rng = np.random.default_rng(0)
    reflectance = rng.uniform(0.01, 0.5, (len(BANDS), 8 * 8)).astype(np.float32)
    reflectance[:, 0] = 0.0  # a zero denominator gives 0, as in the baseline
    mean, std = reflectance.mean(axis=1), reflectance.std(axis=1)
    pairs = branch_index_pairs(BANDS)
    assert len(pairs) == len(feature_names(BANDS)) - len(BANDS) == 2  # NDVI, NDWI of 4 bands
    model = build_segmentation_model(
        "Unet",
        "resnet18",
        len(BANDS),
        3,
        encoder_depth=3,
        pixel_branch=8,
        pixel_branch_indices=pairs,
    )
    assert isinstance(model, PixelBranchNet)
    model.set_band_statistics(mean, std)
    model.eval()
    image = torch.from_numpy((reflectance - mean[:, None]) / std[:, None]).reshape(1, -1, 8, 8)
    branch = model.branch_input(image)[0].reshape(len(pairs) + len(BANDS), -1).T.numpy()
    np.testing.assert_allclose(
        branch[:, len(BANDS) :], pixel_features(reflectance, BANDS)[:, len(BANDS) :], atol=1e-5
    )
    assert model(image).shape == (1, 3, 8, 8)
    with pytest.raises(InputError, match="pixel_branch"):
        build_segmentation_model("Unet", "resnet18", 4, 3, pixel_branch_indices=pairs)


def test_training_with_branch_indices_and_loss_predicts_from_model_pt(tmp_path: Path) -> None:
    from s2landcover.predict import model_from_checkpoint

    rng = np.random.default_rng(1)
    images = rng.integers(1000, 3000, (4, len(BANDS), 32, 32)).astype(np.uint16)
    masks = rng.integers(1, len(CLASSES) + 1, (4, 32, 32)).astype(np.uint8)
    write_chip_store(tmp_path / "chips" / "sceneA", "sceneA", images, masks, len(CLASSES))
    write_split(tmp_path / "split.parquet", "sceneA", 3, 1)
    config = validate_config(
        {
            "bands": BANDS,
            "classes": CLASSES,
            "tile_size": 32,
            "model": {
                "encoder": "resnet18",
                "encoder_depth": 3,
                "pixel_branch": 8,
                "pixel_branch_indices": True,
                "pixel_branch_batch_norm": False,
            },
            "training": {
                "steps": 1,
                "batch_size": 2,
                "num_workers": 0,
                "pixel_branch_loss": 1.0,
            },
        }
    )
    summary = train_model(
        tmp_path / "split.parquet", tmp_path / "chips", tmp_path / "m", config, progress=False
    )
    network, metadata = model_from_checkpoint(summary["model"])  # rebuilt from model.pt alone
    assert metadata["pixel_branch_indices"] == [list(p) for p in branch_index_pairs(BANDS)]
    assert isinstance(network, PixelBranchNet) and network.indices
    assert metadata["pixel_branch_batch_norm"] is False
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in network.pixel.modules())
    np.testing.assert_allclose(network.band_mean.numpy(), metadata["mean"], rtol=1e-6)
    np.testing.assert_allclose(network.band_std.numpy(), metadata["std"], rtol=1e-6)


def test_pixel_branch_learning_rate_puts_the_branch_in_its_own_group() -> None:
    config = validate_config(
        {
            "bands": BANDS,
            "classes": CLASSES,
            "model": {"encoder": "resnet18", "encoder_depth": 3, "pixel_branch": 8},
            "training": {
                "pixel_branch_learning_rate": 0.03,
                "learning_rate": 0.002,
                "scheduler": "none",
            },
        }
    )
    section = {**config["model"], "pixel_branch_indices": []}
    module = LandCoverModule(
        SegmentationTask(), section, config["training"], len(BANDS), list("abc")
    )
    optimizer = module.configure_optimizers()
    rest, branch = optimizer.param_groups
    assert branch["lr"] == 0.03 and rest["lr"] == 0.002
    assert {id(p) for p in branch["params"]} == {id(p) for p in module.net.pixel.parameters()}
    assert len(rest["params"]) + len(branch["params"]) == len(list(module.parameters()))
    config["training"]["pixel_branch_learning_rate"] = None  # the default: one group
    module = LandCoverModule(
        SegmentationTask(), section, config["training"], len(BANDS), list("abc")
    )
    assert len(module.configure_optimizers().param_groups) == 1


def test_branch_without_batch_norm_classifies_each_pixel_alone() -> None:
    torch.manual_seed(0)
    model = build_segmentation_model(
        "Unet", "resnet18", 4, 3, encoder_depth=3, pixel_branch=8, pixel_branch_batch_norm=False
    )
    assert isinstance(model, PixelBranchNet)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.pixel.modules())
    model.train()  # in training mode too, a pixel's branch logits ignore the other pixels
    image = torch.randn(2, 4, 32, 32)
    other = image.clone()
    other[1] += 5.0
    assert torch.allclose(model.pixel(image)[0], model.pixel(other)[0])
    with_norm = build_segmentation_model("Unet", "resnet18", 4, 3, encoder_depth=3, pixel_branch=8)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in with_norm.pixel.modules())
