"""Chips as training samples: reflectance, normalisation, augmentation, padding, loaders.

A sample is one chip of a scene's chip store (``results/chips/size{tile}/{scene}/``, read through
:class:`s2landcover.io.chipstore.ChipStore`): the stored uint16 values become surface reflectance
(``stored * scale + offset`` with the scene's own scales and offsets), then are standardised per
band with the training split's mean and std. Pixels where every band holds the image no-data value
are set to 0 after standardisation (the band mean) and their target to :data:`IGNORE_INDEX`.

Randomness is keyed, not streamed: the order of the training chips in epoch ``e`` is a permutation
drawn from ``(seed, e)`` (:class:`EpochSampler`), and the augmentation of a chip (random flips,
90-degree rotations, optional brightness/contrast jitter, the random crop) from its own generator
seeded with ``(seed, e, position)`` (:func:`sample_seed`). The same geometric transform goes to
image and mask. So an epoch's batches do not depend on the data-loader workers (their number, or
their random state after a restart), and a resumed run sees exactly the batches an uninterrupted
run would.

smp U-Nets need sides divisible by 32: training chips are cropped at a random offset to the largest
multiple of 32 that fits (300 -> 288, :func:`random_crop_pair`); validation chips are padded at the
bottom and right to the next multiple (300 -> 320), the image by reflection, the mask with
:data:`IGNORE_INDEX` so padded pixels count neither in the loss nor in the metrics.

Memory: a sample is one chip (C x T x T float32, 1.4 MB for 4 bands at 300 px); the stores are
memory maps opened lazily in each worker process (never pickled into it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from s2landcover.errors import InputError
from s2landcover.io.chipstore import ChipStore
from s2landcover.radiometry import to_network_input
from s2landcover.training.losses import IGNORE_INDEX

PAD_MULTIPLE = 32
ORDER_KEY = 2**32  # the position key of an epoch's order (chip positions are smaller)


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """A 64-bit seed for the augmentation of chip ``position`` in ``epoch`` (SeedSequence mix)."""
    entropy = [int(seed) % 2**64, int(epoch), int(position)]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0])


class EpochSampler(Sampler):
    """Training order: a permutation of ``size`` chips drawn from ``(seed, epoch)``.

    Yields ``(epoch, position)`` keys (the dataset seeds a chip's augmentation from them). With
    ``num_samples`` (the samples of an epoch, when training is sized in steps) larger than ``size``,
    further permutations follow the first (permutation ``k`` drawn from ``(seed, epoch, k)``) until
    ``num_samples`` keys are drawn; the key of chip ``i`` in permutation ``k`` is ``i + k * size``
    (the dataset reads chip ``key % size`` and seeds its window and augmentation from the whole
    key, so each repetition of a chip gets its own random window). ``num_samples`` smaller than
    ``size`` takes the first ``num_samples`` keys of the permutation. Under
    several processes (``world_size`` > 1), rank ``r`` takes every ``world_size``-th key of the
    permutation, padded by its first keys to a multiple of ``world_size`` (as torch's
    ``DistributedSampler`` does). Lightning calls :meth:`set_epoch` before each epoch.

    With ``weights`` (one per chip, >= 0; :func:`class_balanced_chip_weights`), the epoch's
    ``num_samples`` chips are drawn with replacement in proportion to them instead (draw ``j``
    of chip ``i`` has key ``i + j * size``), so chips holding rare classes come more often.
    """

    def __init__(
        self,
        size: int,
        seed: int,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
        num_samples: int | None = None,
        weights: Sequence[float] | np.ndarray | None = None,
    ) -> None:
        self.size, self.seed, self.shuffle = int(size), int(seed), shuffle
        self.rank, self.world_size = int(rank), int(world_size)
        self.num_samples = int(size if num_samples is None else num_samples)
        self.weights = None
        if weights is not None:
            w = torch.as_tensor(np.asarray(weights, dtype=np.float64))
            if w.shape != (self.size,) or not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
                raise ValueError(f"sampling weights must be {self.size} finite values >= 0")
            self.weights = w if float(w.sum()) > 0 else None
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """The epoch (from 0) whose order and augmentations to draw."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return -(-self.num_samples // self.world_size)

    def _weighted_order(self) -> list[int]:
        # Draws with replacement in proportion to the weights; draw j of chip i gets key
        # i + j * size, so every draw has its own window and augmentation seed.
        assert self.weights is not None
        generator = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, ORDER_KEY))
        chips = torch.multinomial(self.weights, self.num_samples, True, generator=generator)
        return [int(chip) + draw * self.size for draw, chip in enumerate(chips.tolist())]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order: list[int] = []
        if self.weights is not None and self.shuffle:
            order = self._weighted_order()
        repetition = 0
        while len(order) < self.num_samples:
            if self.shuffle:
                generator = torch.Generator().manual_seed(
                    sample_seed(self.seed, self.epoch, ORDER_KEY + repetition)
                )
                permutation = torch.randperm(self.size, generator=generator).tolist()
            else:
                permutation = list(range(self.size))
            order += [p + repetition * self.size for p in permutation]
            repetition += 1
        order = order[: self.num_samples]
        total = len(self) * self.world_size
        order += (order * (total // max(1, len(order)) + 1))[: total - len(order)]
        for position in order[self.rank : total : self.world_size]:
            yield (self.epoch, position)


def class_balanced_chip_weights(counts: np.ndarray, power: float = 1.0) -> np.ndarray:
    """Sampling weights of the training chips that lift rare classes (``training.sampling``).

    ``counts`` (chips x K) holds each chip's labelled pixels per class (the chip index's
    ``px_1..px_K``). A pixel of class k is worth ``(1 / f_k) ** power`` with ``f_k`` the class's
    share of all the chips' labelled pixels; a chip's weight is the mean worth of its pixels
    (0 for a chip without labelled pixels), rescaled to mean 1 over the chips. With ``power`` 1
    every class is drawn about equally often in expectation (as far as the chips allow);
    ``power`` 0 gives uniform weights.
    """
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum(axis=0)
    shares = total / max(float(total.sum()), 1.0)
    worth = np.where(shares > 0, np.maximum(shares, 1e-12) ** -float(power), 0.0)
    pixels = counts.sum(axis=1)
    weights = np.where(pixels > 0, (counts @ worth) / np.maximum(pixels, 1.0), 0.0)
    mean = weights.mean() if len(weights) else 0.0
    return weights / mean if mean > 0 else np.ones(len(counts))


def open_chip_store(chip_dir: str | Path) -> ChipStore:
    """The chip store reader of the chips stage."""
    return ChipStore(chip_dir)


@dataclass(frozen=True)
class SceneInput:
    """How a scene's stored values become reflectance: the store folder, scales, offsets, nodata."""

    chip_dir: str
    scales: tuple[float, ...]
    offsets: tuple[float, ...]
    nodata: float | None

    @classmethod
    def from_meta(cls, chip_dir: str | Path, meta: Mapping[str, Any]) -> SceneInput:
        """From a chip store's ``meta.json`` content."""
        nodata = meta.get("nodata")
        return cls(
            str(chip_dir),
            tuple(float(s) for s in meta["scales"]),
            tuple(float(o) for o in meta["offsets"]),
            None if nodata is None else float(nodata),
        )


@dataclass(frozen=True)
class AugmentSettings:
    """The ``training.augment`` section: flips, 90-degree rotations, brightness/contrast jitter,
    per-band reflectance gain and offset jitter (:func:`band_jitter`)."""

    flips: bool = True
    rotate90: bool = True
    brightness_contrast: float = 0.0
    band_gain: float = 0.0
    band_offset: float = 0.0

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> AugmentSettings:
        """From the validated ``training.augment`` dict."""
        return cls(
            bool(section["flips"]),
            bool(section["rotate90"]),
            float(section["brightness_contrast"]),
            float(section["band_gain"]),
            float(section["band_offset"]),
        )


def band_jitter(
    image: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    gain: float,
    offset: float,
    generator: torch.Generator | None = None,
    nodata: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-band gain and offset jitter in reflectance, applied to a standardised image (C, H, W).

    Each band's reflectance ``r`` becomes ``g * r + o`` with ``g ~ U(1 - gain, 1 + gain)`` and
    ``o ~ U(-offset, offset)`` (reflectance units, e.g. 0.01), drawn per band from ``generator``:
    the calibration, atmosphere and date differences between Sentinel-2 scenes. On the
    standardised values ``x = (r - mean) / std`` that is ``g * x + ((g - 1) * mean + o) / std``.
    No-data pixels (``nodata``, H x W) stay 0. Shapes and dtype are kept.
    """
    bands = image.shape[0]
    g = 1.0 + gain * (2.0 * torch.rand(bands, generator=generator) - 1.0)
    o = offset * (2.0 * torch.rand(bands, generator=generator) - 1.0)
    mean_ = torch.as_tensor(mean, dtype=torch.float32)
    std_ = torch.as_tensor(std, dtype=torch.float32)
    shift = ((g - 1.0) * mean_ + o) / std_
    out = image * g[:, None, None].to(image.dtype) + shift[:, None, None].to(image.dtype)
    if nodata is not None and bool(nodata.any()):
        out[:, nodata] = 0.0
    return out


def stored_to_input(
    stored: np.ndarray,
    scene: SceneInput,
    mean: Sequence[float],
    std: Sequence[float],
) -> tuple[np.ndarray, np.ndarray]:
    """Stored values (C, H, W) -> standardised reflectance (float32) and image no-data mask (H, W).

    Pixels where all bands equal ``scene.nodata`` are set to 0 (the band means): the arithmetic
    and the no-data rule of :func:`s2landcover.radiometry.to_network_input`.
    """
    image, valid = to_network_input(stored, scene.scales, scene.offsets, mean, std, scene.nodata)
    return image, ~valid


def augment_pair(
    image: torch.Tensor,
    target: torch.Tensor | None,
    settings: AugmentSettings,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The same random flips and 90-degree rotation on image (C, H, W) and target (H, W).

    ``target`` may be None (chip-level targets): only the image is transformed. Brightness and
    contrast jitter (amplitude ``a``): ``x * U(1-a, 1+a) + U(-a, a)`` per band on the standardised
    image, image only.
    """

    def draw(high: int) -> int:
        return int(torch.randint(high, (1,), generator=generator))

    if settings.flips:
        if draw(2):
            image = image.flip(-1)
            target = None if target is None else target.flip(-1)
        if draw(2):
            image = image.flip(-2)
            target = None if target is None else target.flip(-2)
    if settings.rotate90:
        turns = draw(4)
        if turns:
            image = torch.rot90(image, turns, dims=(-2, -1))
            target = None if target is None else torch.rot90(target, turns, dims=(-2, -1))
    amplitude = settings.brightness_contrast
    if amplitude > 0:
        bands = image.shape[0]
        contrast = 1.0 + amplitude * (2.0 * torch.rand(bands, 1, 1, generator=generator) - 1.0)
        brightness = amplitude * (2.0 * torch.rand(bands, 1, 1, generator=generator) - 1.0)
        image = image * contrast + brightness
    return image.contiguous(), None if target is None else target.contiguous()


def padded_size(size: int, multiple: int = PAD_MULTIPLE) -> int:
    """The next multiple of ``multiple`` at or above ``size`` (300 -> 320)."""
    return -(-size // multiple) * multiple


def pad_pair(
    image: torch.Tensor, target: torch.Tensor | None, multiple: int = PAD_MULTIPLE
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Pad image (C, H, W) by reflection and target (H, W) with IGNORE_INDEX to multiples of 32.

    Padding goes to the bottom and the right, so pixel (0, 0) stays the chip's corner.
    """
    height, width = image.shape[-2:]
    pad_bottom = padded_size(height, multiple) - height
    pad_right = padded_size(width, multiple) - width
    if pad_bottom == 0 and pad_right == 0:
        return image, target
    mode = "reflect" if pad_bottom < height and pad_right < width else "replicate"
    image = F.pad(image[None], (0, pad_right, 0, pad_bottom), mode=mode)[0]
    if target is not None:
        target = F.pad(target, (0, pad_right, 0, pad_bottom), value=IGNORE_INDEX)
    return image, target


def random_crop_pair(
    image: torch.Tensor,
    target: torch.Tensor | None,
    multiple: int = PAD_MULTIPLE,
    generator: torch.Generator | None = None,
    size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Crop image (C, H, W) and target (H, W) to the largest multiple of ``multiple`` that fits, at
    a random offset (training: 300 -> 288); with ``size`` (a multiple of ``multiple``), to a
    ``size`` x ``size`` window at a random offset when it fits (the random training windows of
    ``training.crop_size``: a 96 px chip gives 64 px windows at any of 33 x 33 offsets).

    Training on crops instead of padded chips matters: a network that always sees a mirrored strip
    at the bottom and right of its input learns to expect one there, and then mislabels the real
    content at the bottom and right edges of a scene in prediction (seen as false Built-up stripes
    on the demo). The random offset also teaches it that content may sit anywhere in its window.
    Sides shorter than ``multiple`` are padded as in :func:`pad_pair` instead.
    """
    height, width = image.shape[-2:]
    crop_height, crop_width = (height // multiple) * multiple, (width // multiple) * multiple
    if size is not None:
        crop_height, crop_width = min(crop_height, int(size)), min(crop_width, int(size))
    if crop_height == 0 or crop_width == 0:
        return pad_pair(image, target, multiple)
    top = int(torch.randint(height - crop_height + 1, (1,), generator=generator))
    left = int(torch.randint(width - crop_width + 1, (1,), generator=generator))
    rows, cols = slice(top, top + crop_height), slice(left, left + crop_width)
    image = image[..., rows, cols].contiguous()
    return image, None if target is None else target[rows, cols].contiguous()


class ChipDataset(Dataset):
    """Chips of one split as (image float32 (C, H', W'), target) pairs.

    Args:
        chips: one row per sample with columns ``scene`` and ``store_index``.
        scenes: per scene name, where its store is and how its values become reflectance.
        mean, std: per-band reflectance statistics of the training split.
        augment: augmentation settings (training: then a random crop to a multiple of
            ``pad_multiple``), or None (validation: the whole chip, padded).
        chip_targets: per-row class positions for chip-level tasks; None: the target is the mask
            (int64 (H', W'), class index - 1, -1 for no data and padding).
        pad_multiple: pad sides to a multiple of this (32 for smp U-Nets; 1 = no padding).
        seed: the augmentation seed (with the epoch and the position: :func:`sample_seed`).
        crop_size: training window side (a multiple of ``pad_multiple``), or None: the largest
            multiple of ``pad_multiple`` that fits the chip. The window lies inside the chip,
            so it never reaches a buffer, validation or test chip.
    """

    def __init__(
        self,
        chips: pd.DataFrame,
        scenes: Mapping[str, SceneInput],
        mean: Sequence[float] | np.ndarray,
        std: Sequence[float] | np.ndarray,
        augment: AugmentSettings | None = None,
        chip_targets: np.ndarray | None = None,
        pad_multiple: int = PAD_MULTIPLE,
        seed: int = 0,
        crop_size: int | None = None,
    ) -> None:
        self.seed = int(seed)
        self.crop_size = None if crop_size is None else int(crop_size)
        self.scene_names = chips["scene"].astype(str).to_numpy()
        self.store_indices = chips["store_index"].to_numpy(dtype=np.int64)
        self.scenes = dict(scenes)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.augment = augment
        self.chip_targets = (
            None if chip_targets is None else np.asarray(chip_targets, dtype=np.int64)
        )
        self.pad_multiple = pad_multiple
        self._stores: dict[str, Any] = {}

    def __len__(self) -> int:
        return len(self.store_indices)

    def __getstate__(self) -> dict[str, Any]:
        # Worker processes open their own memory maps instead of receiving copies of the arrays.
        state = self.__dict__.copy()
        state["_stores"] = {}
        return state

    def _store(self, scene: str) -> Any:
        if scene not in self._stores:
            self._stores[scene] = open_chip_store(self.scenes[scene].chip_dir)
        return self._stores[scene]

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample ``position`` or ``(epoch, position)`` (augmentation key; epoch 0 if none).

        ``position`` may exceed the number of chips (an epoch of more samples than chips, see
        :class:`EpochSampler`): chip ``position % len(self)`` is read, the augmentation is seeded
        from ``position`` itself.
        """
        epoch, key_position = (0, key) if isinstance(key, int | np.integer) else key
        key_position = int(key_position)
        position = key_position % len(self.store_indices)
        scene_name = self.scene_names[position]
        scene = self.scenes[scene_name]
        stored, mask = self._store(scene_name).read(int(self.store_indices[position]))
        array, nodata = stored_to_input(np.asarray(stored), scene, self.mean, self.std)
        image = torch.from_numpy(array)
        if self.chip_targets is None:
            target_array = np.asarray(mask).astype(np.int64) - 1  # class index i -> position i - 1
            target_array[nodata] = IGNORE_INDEX
            target: torch.Tensor | None = torch.from_numpy(target_array)
        else:
            target = None
        if self.augment is not None:  # training: random flips/rotations, then a random crop
            generator = torch.Generator().manual_seed(sample_seed(self.seed, epoch, key_position))
            if self.augment.band_gain > 0 or self.augment.band_offset > 0:
                image = band_jitter(
                    image,
                    self.mean,
                    self.std,
                    self.augment.band_gain,
                    self.augment.band_offset,
                    generator,
                    torch.from_numpy(nodata),
                )
            image, target = augment_pair(image, target, self.augment, generator)
            image, target = random_crop_pair(
                image, target, self.pad_multiple, generator, self.crop_size
            )
        else:  # validation: the whole chip, padded
            image, target = pad_pair(image, target, self.pad_multiple)
        if target is None:  # chip classification: the chip's own class vector
            assert self.chip_targets is not None
            target = torch.tensor(self.chip_targets[position], dtype=torch.int64)
        return image, target


def band_statistics(
    chips: pd.DataFrame,
    scenes: Mapping[str, SceneInput],
    max_chips: int = 512,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and std of reflectance over the given (training) chips, no-data excluded.

    At most ``max_chips`` chips, evenly spaced over the table, are read (one at a time: memory is
    one chip); sums are accumulated in float64. A band value equal to the scene's no-data value is
    left out of that band's statistics. Std is floored at 1e-6 (a constant band cannot divide by 0).
    """
    if len(chips) == 0:
        raise ValueError("band_statistics needs at least one chip")
    take = np.unique(np.linspace(0, len(chips) - 1, min(max_chips, len(chips))).round().astype(int))
    stores: dict[str, Any] = {}
    total = total_sq = count = None
    for position in take:
        row = chips.iloc[int(position)]
        scene = scenes[str(row["scene"])]
        if scene.chip_dir not in stores:
            stores[scene.chip_dir] = open_chip_store(scene.chip_dir)
        stored, _ = stores[scene.chip_dir].read(int(row["store_index"]))
        stored = np.asarray(stored)
        bands = stored.shape[0]
        if total is None:
            total, total_sq, count = np.zeros(bands), np.zeros(bands), np.zeros(bands)
        values = stored.reshape(bands, -1).astype(np.float64)
        valid = np.ones_like(values, dtype=bool) if scene.nodata is None else values != scene.nodata
        reflectance = (
            values * np.asarray(scene.scales)[:, None] + np.asarray(scene.offsets)[:, None]
        )
        reflectance = np.where(valid, reflectance, 0.0)
        total += reflectance.sum(axis=1)
        total_sq += (reflectance**2).sum(axis=1)
        count += valid.sum(axis=1)
    assert total is not None and total_sq is not None and count is not None
    count = np.maximum(count, 1)
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    return mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32)


GPU_AUTO_WORKERS = 4  # loader processes per GPU under training.num_workers: auto


def resolve_num_workers(setting: int | str, on_cuda: bool, cpus: int | None = None) -> int:
    """Loader worker processes for ``training.num_workers`` (a count, or ``auto``).

    ``auto``: none on a CPU: the chips are read and augmented in the training process itself.
    There the loader costs under 1 % of a training step (a 300 px chip is read and augmented in
    2-3 ms of CPU, a step of 4 chips takes 3-4 s of CPU), and worker processes would only take
    cores from the network while each holds a copy-on-write image of the training process (its
    imported torch, the model), counted again in every worker's RSS: training on the default
    demo's chips peaked at 5.8-6.0 GiB RSS summed over the processes with 2 workers per loader,
    2.1 GiB without (docs/benchmarks/training.md, section (g)). On CUDA, where
    the network is fast and the loader is the limit: 4 per device, at most the CPUs less one
    (``cpus``: those this process may use).
    """
    if isinstance(setting, str):
        if setting != "auto":
            raise InputError(
                f"training.num_workers is {setting!r}; expected a count (0, 1, 2, ...) or 'auto'"
            )
        if not on_cuda:
            return 0
        if cpus is None:
            affinity = getattr(os, "sched_getaffinity", None)  # Linux; elsewhere all CPUs
            cpus = len(affinity(0)) if affinity else (os.cpu_count() or 1)
        return max(0, min(GPU_AUTO_WORKERS, int(cpus) - 1))
    if int(setting) < 0:
        raise InputError(f"training.num_workers is {setting}; expected 0 or more, or 'auto'")
    return int(setting)


def _worker_init(worker_id: int) -> None:
    # Workers only decode chips; one intra-op thread each leaves the cores to the model.
    torch.set_num_threads(1)


class ChipDataModule(L.LightningDataModule):
    """Training and validation loaders over two :class:`ChipDataset` objects.

    Loaders use ``num_workers`` processes (persistent between epochs) and pinned memory on CUDA; the
    last incomplete batch is kept (small training splits are common). The training order comes from
    :class:`EpochSampler` (seeded by ``seed`` and the epoch), ``samples_per_epoch`` samples an
    epoch (None: one pass over the training chips; more: chips repeated, each draw with its own
    window and augmentation; ``chip_weights``: chips drawn in proportion to them, see
    :class:`EpochSampler`). Under DDP each process takes its share
    of the chips itself (the Trainer runs with ``use_distributed_sampler=False``): training through
    :class:`EpochSampler`, validation through torch's ``DistributedSampler`` without shuffling.
    """

    def __init__(
        self,
        train_dataset: ChipDataset,
        val_dataset: ChipDataset,
        batch_size: int,
        num_workers: int = 0,
        pin_memory: bool = False,
        seed: int = 0,
        samples_per_epoch: int | None = None,
        chip_weights: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        self.samples_per_epoch = samples_per_epoch
        self.chip_weights = chip_weights
        self.train_dataset = train_dataset
        self.val_dataset = val_dataset
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.seed = int(seed)

    def _ranks(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1
        return int(trainer.global_rank), int(trainer.world_size)

    def _loader(self, dataset: ChipDataset, sampler: Sampler | None) -> DataLoader:
        workers = self.num_workers
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=workers,
            pin_memory=self.pin_memory,
            persistent_workers=workers > 0,
            worker_init_fn=_worker_init if workers > 0 else None,
            prefetch_factor=4 if workers > 0 else None,
        )

    def train_dataloader(self) -> DataLoader:
        """Training chips in an order drawn per epoch, augmented."""
        rank, world_size = self._ranks()
        sampler = EpochSampler(
            len(self.train_dataset),
            self.seed,
            True,
            rank,
            world_size,
            self.samples_per_epoch,
            self.chip_weights,
        )
        return self._loader(self.train_dataset, sampler)

    def val_dataloader(self) -> DataLoader:
        """Validation chips in split order, not augmented (each process its share under DDP)."""
        rank, world_size = self._ranks()
        sampler: DistributedSampler | None = None
        if world_size > 1:
            sampler = DistributedSampler(
                self.val_dataset, num_replicas=world_size, rank=rank, shuffle=False
            )
        return self._loader(self.val_dataset, sampler)
