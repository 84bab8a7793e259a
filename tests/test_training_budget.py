"""Training sized by work: random windows, step budget, early stopping, band jitter, class
weights in the loss, pretrained encoder weights from a local file (issue 19)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from chip_store_helpers import BANDS, CLASSES, write_chip_store, write_split
from s2landcover.config import validate_config
from s2landcover.errors import InputError
from s2landcover.models import PixelBranchNet, build_segmentation_model
from s2landcover.training.data import (
    AugmentSettings,
    ChipDataset,
    EpochSampler,
    SceneInput,
    band_jitter,
    class_balanced_chip_weights,
)
from s2landcover.training.losses import cross_entropy_loss
from s2landcover.training.train import train_model, training_budget

CHIP = 64


@pytest.fixture(scope="module")
def coded_chips(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """8 chips of 64 px whose stored value encodes (chip, row, col): 6 train, 2 val.

    Band 0 holds 1000 + 100 * chip, band 1 the row + 1, band 2 the column + 1, band 3 a constant;
    the mask holds 3 classes in quadrant stripes, so training on them converges a little.
    """
    root = tmp_path_factory.mktemp("coded")
    n = 8
    rows, cols = np.mgrid[0:CHIP, 0:CHIP]
    images = np.zeros((n, 4, CHIP, CHIP), dtype=np.uint16)
    masks = np.zeros((n, CHIP, CHIP), dtype=np.uint8)
    for i in range(n):
        images[i, 0] = 1000 + 100 * i
        images[i, 1] = rows + 1
        images[i, 2] = cols + 1
        images[i, 3] = 500
        masks[i] = 1 + ((rows // 16 + cols // 32 + i) % len(CLASSES))
    write_chip_store(root / "size64" / "sceneA", "sceneA", images, masks, len(CLASSES))
    split = write_split(root / "split.parquet", "sceneA", 6, 2)
    return {"chips_root": root / "size64", "split": root / "split.parquet", "split_table": split}


def make_config(**training: object) -> dict:
    return validate_config(
        {
            "bands": BANDS,
            "classes": CLASSES,
            "tile_size": CHIP,
            "model": {"name": "tiny", "architecture": "Unet", "encoder": "resnet18"},
            "training": {
                "batch_size": 2,
                "num_workers": 0,
                "checkpoint_interval_s": 0,
                "learning_rate": 0.01,
                **training,
            },
        }
    )


def identity_scene(chips_root: Path) -> dict[str, SceneInput]:
    return {"sceneA": SceneInput(str(chips_root / "sceneA"), (1.0,) * 4, (0.0,) * 4, None)}


def test_random_windows_lie_inside_one_training_chip_at_any_offset(coded_chips: dict) -> None:
    """Every 32 px window is a contiguous piece of one training chip (never a val chip), and the
    offsets are not only the chip grid (0 or 32): any of the 33 x 33 positions occur."""
    split = coded_chips["split_table"]
    train = split[split["split"] == "train"].reset_index(drop=True)
    dataset = ChipDataset(
        train,
        identity_scene(coded_chips["chips_root"]),
        [0.0] * 4,
        [1.0] * 4,
        AugmentSettings(flips=False, rotate90=False),
        seed=3,
        crop_size=32,
    )
    train_ids = {1000 + 100 * int(i) for i in train["store_index"]}
    offsets = set()
    sampler = EpochSampler(len(dataset), seed=3, num_samples=60)
    for key in sampler:
        image, target = dataset[key]
        assert image.shape == (4, 32, 32) and target.shape == (32, 32)
        chip_value = np.unique(image[0].numpy())
        assert len(chip_value) == 1 and int(chip_value[0]) in train_ids
        top, left = int(image[1, 0, 0]) - 1, int(image[2, 0, 0]) - 1
        assert 0 <= top <= CHIP - 32 and 0 <= left <= CHIP - 32
        expected_rows = np.arange(top + 1, top + 33, dtype=np.float32)[:, None]
        np.testing.assert_array_equal(image[1].numpy(), np.broadcast_to(expected_rows, (32, 32)))
        offsets.add((top, left))
    assert len(offsets) > 20
    assert any(top % 32 or left % 32 for top, left in offsets)


def test_epoch_sampler_repeats_chips_with_distinct_keys() -> None:
    """An epoch of 13 samples over 5 chips: every chip 2-3 times, each draw its own key."""
    keys = [position for _, position in EpochSampler(5, seed=1, num_samples=13)]
    assert len(keys) == 13 and len(set(keys)) == 13
    counts = np.bincount(np.asarray(keys) % 5, minlength=5)
    assert counts.min() >= 2 and counts.max() <= 3
    # The default (one pass) is the plain permutation: resume keys of older runs are unchanged.
    assert sorted(p for _, p in EpochSampler(5, seed=1)) == list(range(5))


def test_budget_derives_epochs_from_steps() -> None:
    base = {**validate_config({})["training"], "batch_size": 4, "epochs": 30}
    assert training_budget(base, 10)["epochs"] == 30
    assert training_budget(base, 10)["steps_per_epoch"] == 3
    sized = training_budget({**base, "steps": 100, "steps_per_epoch": 25}, 10)
    assert (sized["epochs"], sized["max_steps"], sized["samples_per_epoch"]) == (4, 100, 100)


@pytest.mark.slow
def test_step_budget_stops_at_exactly_n_steps(
    coded_chips: dict, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """steps 5, 2 steps per epoch: 5 optimizer steps (the schedule spans them), 3 validations;
    the progress lines count the 3 epochs of the budget, not training.epochs."""
    caplog.set_level("INFO", logger="s2landcover.training")
    summary = train_model(
        coded_chips["split"],
        coded_chips["chips_root"],
        tmp_path / "model",
        make_config(steps=5, steps_per_epoch=2, crop_size=32, epochs=99),
        progress=False,
    )
    assert summary["steps_completed"] == 5
    assert summary["steps_per_epoch"] == 2
    assert summary["epochs_completed"] == 3
    with open(tmp_path / "model" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert "epoch 1/3," in caplog.text and "/99," not in caplog.text


@pytest.mark.slow
def test_early_stopping_ends_training_when_val_miou_stalls(
    coded_chips: dict, tmp_path: Path
) -> None:
    """A learning rate too small to change the weights (only BatchNorm statistics move): val mIoU
    stalls, and patience 2 stops 2 validations after the best one, far before epoch 20."""
    summary = train_model(
        coded_chips["split"],
        coded_chips["chips_root"],
        tmp_path / "model",
        make_config(
            steps=40,
            steps_per_epoch=2,
            early_stopping_patience=2,
            learning_rate=1e-12,
            scheduler="none",
            crop_size=32,
        ),
        progress=False,
    )
    assert summary["epochs_completed"] == summary["best_epoch"] + 2 < 20
    assert summary["steps_completed"] == 2 * summary["epochs_completed"]


def test_band_jitter_is_a_per_band_reflectance_gain_and_offset_deterministic_per_seed() -> None:
    mean, std = [0.1, 0.2, 0.3], [0.05, 0.1, 0.2]
    reflectance = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.4
    mean_t, std_t = torch.tensor(mean)[:, None, None], torch.tensor(std)[:, None, None]
    standardised = (reflectance - mean_t) / std_t
    nodata = torch.zeros(8, 8, dtype=torch.bool)
    nodata[0, :3] = True
    standardised[:, nodata] = 0.0

    def jitter(seed: int, gain: float = 0.1, offset: float = 0.02) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return band_jitter(standardised.clone(), mean, std, gain, offset, generator, nodata)

    out = jitter(5)
    assert out.shape == standardised.shape and out.dtype == standardised.dtype
    assert torch.equal(out, jitter(5)) and not torch.equal(out, jitter(6))
    assert torch.all(out[:, nodata] == 0)
    # Back in reflectance, each band is g * r + o with g in [0.9, 1.1], o in [-0.02, 0.02].
    gain_only = jitter(5, offset=0.0) * std_t + mean_t
    ratio = gain_only[:, ~nodata] / reflectance[:, ~nodata].clamp(min=1e-6)
    for band in range(3):
        valid = reflectance[band][~nodata] > 0.01
        g = ratio[band][valid]
        assert torch.allclose(g, g.median().expand_as(g), atol=1e-3)
        assert 0.9 <= float(g.median()) <= 1.1
    shift = jitter(5, gain=0.0) * std_t + mean_t - reflectance
    for band in range(3):
        s = shift[band][~nodata]
        assert torch.allclose(s, s.mean().expand_as(s), atol=1e-5)
        assert abs(float(s.mean())) <= 0.02 + 1e-6


def test_jittered_training_samples_are_the_same_for_the_same_key(coded_chips: dict) -> None:
    """Jitter, window and flips come from the (seed, epoch, key) generator: two datasets (a
    resumed run's fresh one) give identical samples, another epoch gives other ones."""
    split = coded_chips["split_table"]
    train = split[split["split"] == "train"].reset_index(drop=True)
    settings = AugmentSettings(True, True, 0.0, 0.05, 0.01)
    scenes = identity_scene(coded_chips["chips_root"])

    def dataset() -> ChipDataset:
        return ChipDataset(train, scenes, [900.0] * 4, [300.0] * 4, settings, seed=9, crop_size=32)

    first, second = dataset(), dataset()
    for key in [(0, 0), (0, 7), (3, 2)]:
        assert torch.equal(first[key][0], second[key][0])
        assert torch.equal(first[key][1], second[key][1])
    assert not torch.equal(first[(0, 1)][0], first[(1, 1)][0])


def test_class_weights_scale_each_pixels_share_of_the_cross_entropy() -> None:
    """Weighted cross-entropy is sum(w_y * l) / sum(w_y): doubling a class's weight doubles its
    pixels' share, and weights of 1 give the plain mean."""
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, -0.5]])
    target = torch.tensor([0, 1, 1, 0])
    per_pixel = torch.nn.functional.cross_entropy(logits, target, reduction="none")
    plain = cross_entropy_loss(logits, target)
    assert torch.isclose(plain, per_pixel.mean())
    weights = torch.tensor([1.0, 3.0])
    weighted = cross_entropy_loss(logits, target, weights)
    w = weights[target]
    assert torch.isclose(weighted, (w * per_pixel).sum() / w.sum())
    # The rare class's pixels (here class 1, the larger losses) pull the loss up.
    assert weighted > plain
    assert torch.isclose(cross_entropy_loss(logits, target, torch.ones(2)), plain)


# --- pretrained encoders from a local weights file ------------------------------------------------


def imagenet_like_weights(path: Path) -> dict[str, torch.Tensor]:
    """A resnet18 encoder state dict with an RGB first convolution and a classifier head (the
    layout of torchvision's ImageNet file), saved with torch.save."""
    reference = build_segmentation_model("Unet", "resnet18", 3, 2)
    generator = torch.Generator().manual_seed(4)
    state = {
        k: torch.randn(v.shape, generator=generator) if v.is_floating_point() else v
        for k, v in reference.encoder.state_dict().items()
    }
    state["fc.weight"] = torch.randn(1000, 512, generator=generator)
    state["fc.bias"] = torch.zeros(1000)
    torch.save(state, path)
    return state


@pytest.mark.parametrize("bands", [4, 10, 13])
def test_encoder_weights_are_loaded_and_the_first_conv_adapted(tmp_path: Path, bands: int) -> None:
    path = tmp_path / "resnet18_imagenet.pth"
    state = imagenet_like_weights(path)
    model = build_segmentation_model("Unet", "resnet18", bands, 4, encoder_weights=path)
    loaded = model.encoder.state_dict()
    assert torch.equal(loaded["layer3.1.conv2.weight"], state["layer3.1.conv2.weight"])
    rgb = state["conv1.weight"]
    conv1 = loaded["conv1.weight"]
    assert conv1.shape[1] == bands
    for channel in range(bands):  # RGB kernels cycled over the bands, scaled by 3 / bands
        torch.testing.assert_close(conv1[:, channel], rgb[:, channel % 3] * 3 / bands)


def test_encoder_weights_loading_is_reported_and_missing_tensors_warned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The log names the file, how many tensors it filled and the adapted first convolution; a
    file without some of the encoder's tensors (here layer4) loads with a warning saying so."""
    path = tmp_path / "partial.pth"
    state = imagenet_like_weights(path)
    torch.save({k: v for k, v in state.items() if not k.startswith("layer4.")}, path)
    with caplog.at_level("INFO", logger="s2landcover.models"):
        build_segmentation_model("Unet", "resnet18", 10, 4, encoder_weights=path)
    assert f"encoder weights from {path}" in caplog.text
    assert "conv1.weight 3 -> 10 channels" in caplog.text
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert warnings and "not in the file keep their random start" in warnings[0].getMessage()
    assert "layer4." in warnings[0].getMessage()


def test_encoder_weights_are_read_weights_only(tmp_path: Path) -> None:
    """A weights file with a pickled object is refused without running it."""
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": Payload()}, path)
    with pytest.raises(InputError, match="encoder_weights"):
        build_segmentation_model("Unet", "resnet18", 4, 3, encoder_weights=path)
    assert not marker.exists()


def test_encoder_weights_of_another_encoder_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save({"features.0.weight": torch.zeros(8, 3, 3, 3)}, path)
    with pytest.raises(InputError, match="does not fit the encoder"):
        build_segmentation_model("Unet", "resnet18", 4, 3, encoder_weights=path)


def test_balanced_chip_weights_draw_rare_class_chips_in_proportion() -> None:
    # 3 chips: all class A (common), half A half B, all B; B is 1/4 of the pixels.
    counts = np.array([[100.0, 0.0], [50.0, 50.0], [0.0, 50.0]])
    shares = np.array([150.0, 100.0]) / 250.0
    weights = class_balanced_chip_weights(counts, power=1.0)
    worth = 1.0 / shares
    expected = np.array([worth[0], (worth[0] + worth[1]) / 2, worth[1]])
    np.testing.assert_allclose(weights, expected / expected.mean())
    assert np.allclose(class_balanced_chip_weights(counts, power=0.0), 1.0)
    # a chip without labelled pixels is never drawn
    assert class_balanced_chip_weights(np.array([[10.0, 0.0], [0.0, 0.0]]))[1] == 0.0


def test_weighted_epoch_sampler_draws_by_weight_with_distinct_keys() -> None:
    sampler = EpochSampler(3, seed=5, num_samples=3000, weights=[1.0, 0.0, 3.0])
    sampler.set_epoch(2)
    keys = [position for _, position in sampler]
    assert len(keys) == 3000 and len(set(keys)) == 3000  # each draw its own window/augmentation
    chips = np.bincount(np.array(keys) % 3, minlength=3)
    assert chips[1] == 0
    assert 0.70 < chips[2] / 3000 < 0.80
    again = EpochSampler(3, seed=5, num_samples=3000, weights=[1.0, 0.0, 3.0])
    again.set_epoch(2)
    assert [p for _, p in again] == keys  # keyed by (seed, epoch), not streamed
    with pytest.raises(ValueError, match="3 finite values"):
        EpochSampler(3, seed=5, weights=[1.0, -1.0, 1.0])


def test_training_with_balanced_sampling_and_encoder_depth_3_predicts(
    coded_chips: dict, tmp_path: Path
) -> None:
    from s2landcover.predict import model_from_checkpoint

    config = validate_config(
        {
            "bands": BANDS,
            "classes": CLASSES,
            "tile_size": CHIP,
            "model": {"encoder": "resnet18", "encoder_depth": 3, "pixel_branch": 8},
            "training": {
                "steps": 2,
                "steps_per_epoch": 1,
                "batch_size": 2,
                "crop_size": 32,
                "num_workers": 0,
                "sampling": "inverse_frequency",
            },
        }
    )
    summary = train_model(
        coded_chips["split"], coded_chips["chips_root"], tmp_path / "m", config, progress=False
    )
    assert summary["steps_completed"] == 2
    network, metadata = model_from_checkpoint(summary["model"])  # rebuilt from model.pt alone
    assert metadata["encoder_depth"] == 3 and metadata["pixel_branch"] == 8
    assert isinstance(network, PixelBranchNet) and len(network.net.decoder.blocks) == 3


@pytest.mark.parametrize("depth", [3, 4])
def test_encoder_depth_builds_a_shallower_unet_that_predict_rebuilds(depth: int) -> None:
    shallow = build_segmentation_model("Unet", "resnet18", 4, 3, encoder_depth=depth)
    deep = build_segmentation_model("Unet", "resnet18", 4, 3)
    assert shallow(torch.zeros(1, 4, 32, 32)).shape == (1, 3, 32, 32)
    assert len(shallow.decoder.blocks) == depth and len(deep.decoder.blocks) == 5
    with pytest.raises(InputError, match="encoder_depth"):
        build_segmentation_model("Unet", "resnet18", 4, 3, encoder_depth=2)


def test_pixel_branch_adds_per_pixel_logits_at_full_resolution() -> None:
    torch.manual_seed(0)
    model = build_segmentation_model("Unet", "resnet18", 4, 3, encoder_depth=3, pixel_branch=16)
    assert isinstance(model, PixelBranchNet)
    model.eval()
    image = torch.randn(1, 4, 32, 32)
    changed = image.clone()
    changed[0, :, 10, 20] += 3.0
    with torch.no_grad():
        branch = model.pixel(changed) - model.pixel(image)
        total = model(image) - model.net(image) - model.pixel(image)
    moved = branch.abs().sum(dim=1)[0] > 1e-6
    assert moved[10, 20] and int(moved.sum()) == 1  # the branch sees one pixel's bands only
    assert float(total.abs().max()) < 1e-5  # its logits are added to the network's
    assert not isinstance(build_segmentation_model("Unet", "resnet18", 4, 3), PixelBranchNet)
