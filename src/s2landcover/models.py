"""Networks by name, and the input normalisation every model sees.

Segmentation models come from segmentation-models-pytorch's registry (``smp.create_model``): the
architecture and encoder are names, input channels are the configured bands, outputs are the K
classes (logit channel ``i`` is class ``i + 1``; class 0, no data, has no channel). Nothing is
downloaded: encoder weights are either none or a local file.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
from torch import nn

from s2landcover.errors import InputError
from s2landcover.io.checkpoints import load_encoder_state

log = logging.getLogger(__name__)

DECODER_CHANNELS = (256, 128, 64, 32, 16)  # smp's Unet decoder channels at encoder depth 5


def segmentation_architectures() -> list[str]:
    """Architecture names known to segmentation-models-pytorch (e.g. Unet, UnetPlusPlus, FPN)."""
    return sorted(cls.__name__ for cls in smp.MODEL_ARCHITECTURES_MAPPING.values())


def encoder_names() -> list[str]:
    """Encoder names known to segmentation-models-pytorch (resnet18, resnet34, ...)."""
    return sorted(smp.encoders.get_encoder_names())


def build_segmentation_model(
    architecture: str,
    encoder: str,
    in_channels: int,
    num_classes: int,
    encoder_weights: str | Path | None = None,
    encoder_depth: int = 5,
    pixel_branch: int = 0,
    pixel_branch_indices: Sequence[tuple[int, int]] = (),
    pixel_branch_batch_norm: bool = True,
) -> nn.Module:
    """A segmentation network with ``in_channels`` inputs and ``num_classes`` logit channels.

    Args:
        architecture: smp architecture name, case-insensitive (``Unet``, ``UnetPlusPlus``, ...).
        encoder: smp encoder name (``resnet34``, ...).
        in_channels: number of input bands.
        num_classes: K, the number of classes without no data.
        encoder_weights: None (random initialisation) or a local weights file for the encoder.
        encoder_depth: encoder stages used, 3 to 5 (5: the deepest features are 1/32 of the input
            side; 3: 1/8, a lighter and finer-grained network). Unet and UnetPlusPlus then get
            the last ``encoder_depth`` of smp's decoder channels (256, 128, 64, 32, 16).
        pixel_branch: 0 (none) or the width of a per-pixel branch whose logits are added to the
            network's (:class:`PixelBranchNet`): smp's encoders start with a stride-2
            convolution, so no full-resolution path reaches the output otherwise.
        pixel_branch_indices: band positions ``(a, b)`` of normalised differences
            ``(a - b) / (a + b)`` of reflectance the per-pixel branch sees besides the bands
            (:func:`branch_index_pairs`; empty: none).
        pixel_branch_batch_norm: batch norm between the branch's convolutions (False: biases
            instead). Batch statistics of random windows vary with their class mix, which a
            per-pixel classifier then learns poorly (docs/benchmarks/training.md section (f)).

    Raises:
        InputError: for an unknown architecture or encoder (listing the valid names) or a weights
            file that is missing or does not fit the encoder.
    """
    by_lower = {name.lower(): name for name in segmentation_architectures()}
    if architecture.lower() not in by_lower:
        raise InputError(
            f"model.architecture {architecture!r} is not a segmentation-models-pytorch "
            f"architecture; valid: {', '.join(segmentation_architectures())}"
        )
    if encoder not in encoder_names():
        raise InputError(
            f"model.encoder {encoder!r} is not a segmentation-models-pytorch encoder; valid: "
            f"{', '.join(encoder_names())}"
        )
    depth = int(encoder_depth)
    if not 3 <= depth <= 5:
        raise InputError(f"model.encoder_depth = {encoder_depth!r}; expected 3, 4 or 5")
    extra: dict[str, object] = {}
    if depth != 5:  # depth 5: smp's defaults, exactly the network of before the key existed
        extra["encoder_depth"] = depth
        if by_lower[architecture.lower()] in ("Unet", "UnetPlusPlus"):
            extra["decoder_channels"] = DECODER_CHANNELS[-depth:]
    model = smp.create_model(
        by_lower[architecture.lower()],
        encoder_name=encoder,
        encoder_weights=None,
        in_channels=in_channels,
        classes=num_classes,
        **extra,
    )
    if encoder_weights is not None:
        load_encoder_weights(model.encoder, encoder_weights, in_channels)
    if int(pixel_branch) < 0:
        raise InputError(f"model.pixel_branch = {pixel_branch!r}; expected 0 (none) or a width")
    if int(pixel_branch) > 0:
        return PixelBranchNet(
            model,
            in_channels,
            num_classes,
            int(pixel_branch),
            pixel_branch_indices,
            bool(pixel_branch_batch_norm),
        )
    if pixel_branch_indices:
        raise InputError(
            "model.pixel_branch_indices needs a per-pixel branch; set model.pixel_branch > 0"
        )
    return model


def branch_index_pairs(bands: Sequence[str]) -> list[tuple[int, int]]:
    """Band positions ``(a, b)`` of the pixel baseline's indices (NDVI, NDWI, NDBI: one
    definition, :data:`s2landcover.pixel_model.INDICES`) whose two bands are among ``bands``."""
    from s2landcover.pixel_model import _index_inputs

    position = {band: i for i, band in enumerate(bands)}
    return [(position[a], position[b]) for _, a, b in _index_inputs(list(bands))]


class PixelBranchNet(nn.Module):
    """A segmentation network plus a per-pixel branch: ``logits = net(x) + pixel(x)``.

    The branch is three 1 x 1 convolutions (``in_channels -> width -> width -> classes``, batch
    norm (``batch_norm``) and ReLU between): a small per-pixel classifier of the bands at full
    resolution. The network (``net``, e.g. a U-Net whose encoder starts with a stride-2
    convolution) adds the spatial context. Input (N, C, H, W) standardised reflectance; output
    (N, K, H, W) logits.

    With ``indices`` (band position pairs ``(a, b)``), the branch also sees the normalised
    differences ``(r_a - r_b) / (r_a + r_b)`` of reflectance ``r = x * std + mean`` (NDVI, NDWI,
    NDBI as the pixel baseline computes them; 0 where ``r_a + r_b`` is 0). ``band_mean`` and
    ``band_std`` (C, reflectance) are buffers: set by training (:meth:`set_band_statistics`),
    stored with the weights in model.pt.
    """

    band_mean: torch.Tensor  # buffers (with indices): reflectance mean and std per band
    band_std: torch.Tensor

    def __init__(
        self,
        net: nn.Module,
        in_channels: int,
        num_classes: int,
        width: int,
        indices: Sequence[tuple[int, int]] = (),
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        self.net = net
        self.indices = [(int(a), int(b)) for a, b in indices]
        for a, b in self.indices:
            if not (0 <= a < in_channels and 0 <= b < in_channels):
                raise InputError(
                    f"per-pixel branch index bands {(a, b)} outside the {in_channels} bands"
                )
        if self.indices:
            self.register_buffer("band_mean", torch.zeros(in_channels))
            self.register_buffer("band_std", torch.ones(in_channels))
        inputs = in_channels + len(self.indices)
        if batch_norm:
            self.pixel = nn.Sequential(
                nn.Conv2d(inputs, width, 1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.Conv2d(width, width, 1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.Conv2d(width, num_classes, 1),
            )
        else:  # a pixel's logits then depend on its bands alone, not on the batch's other pixels
            self.pixel = nn.Sequential(
                nn.Conv2d(inputs, width, 1),
                nn.ReLU(inplace=True),
                nn.Conv2d(width, width, 1),
                nn.ReLU(inplace=True),
                nn.Conv2d(width, num_classes, 1),
            )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Logits of the network plus those of the per-pixel branch."""
        context, pixel = self.parts(image)
        return context + pixel

    def parts(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two summands of :meth:`forward`: the network's logits and the branch's, each
        (N, K, H, W), for a loss on the branch alone (``training.pixel_branch_loss``)."""
        return self.net(image), self.pixel(self.branch_input(image))

    def branch_input(self, image: torch.Tensor) -> torch.Tensor:
        """The bands, then the normalised differences of :attr:`indices` (see the class)."""
        if not self.indices:
            return image
        a_index = torch.tensor([a for a, _ in self.indices], device=image.device)
        b_index = torch.tensor([b for _, b in self.indices], device=image.device)
        reflectance = image.float() * self.band_std[:, None, None] + self.band_mean[:, None, None]
        a, b = reflectance[:, a_index], reflectance[:, b_index]
        total = a + b
        safe = torch.where(total == 0, torch.ones_like(total), total)
        ratio = torch.where(total == 0, torch.zeros_like(total), (a - b) / safe)
        return torch.cat([image, ratio.to(image.dtype)], dim=1)

    def set_band_statistics(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Reflectance mean and std per band (those that standardised the input)."""
        if self.indices:
            self.band_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
            self.band_std.copy_(torch.as_tensor(std, dtype=torch.float32))


def load_encoder_weights(encoder: nn.Module, path: str | Path, in_channels: int) -> None:
    """Initialise an encoder from a local file (.pth/.pt state dict or .safetensors).

    Weights of a 3-channel (RGB ImageNet) first convolution are adapted to ``in_channels`` the way
    smp does it: the RGB kernels are cycled over the new channels and rescaled by 3 / in_channels.
    Keys of a classifier head (``fc.*``) are ignored.
    """
    state = load_encoder_state(path)
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    own = encoder.state_dict()
    adapted = []
    for key, value in list(state.items()):
        if (
            key in own
            and value.ndim == 4
            and own[key].ndim == 4
            and value.shape[1] != own[key].shape[1]
        ):
            adapted.append(f"{key} {value.shape[1]} -> {in_channels} channels")
            repeats = -(-in_channels // value.shape[1])
            state[key] = value.repeat(1, repeats, 1, 1)[:, :in_channels] * (
                value.shape[1] / in_channels
            )
    # nn.Module's own method: smp encoders override load_state_dict (dropping fc.*) and return
    # None, which hid every mismatch.
    missing, unexpected = nn.Module.load_state_dict(encoder, state, strict=False)
    if len(missing) > len(own) // 2:
        raise InputError(
            f"model.encoder_weights: {path} does not fit the encoder ({len(missing)} of {len(own)} "
            f"tensors missing, e.g. {missing[:3]}; unexpected {unexpected[:3]})"
        )
    log.info(
        "encoder weights from %s: %d of %d tensors loaded%s",
        path, len(own) - len(missing), len(own),
        f", adapted: {'; '.join(adapted)}" if adapted else "",
    )  # fmt: skip
    if missing:
        log.warning(
            "encoder weights from %s: %d tensors not in the file keep their random start, e.g. %s",
            path, len(missing), missing[:3],
        )  # fmt: skip
