"""Networks by name, and the input normalisation every model sees.

Segmentation models come from segmentation-models-pytorch's registry (``smp.create_model``): the
architecture and encoder are names, input channels are the configured bands, outputs are the K
classes (logit channel ``i`` is class ``i + 1``; class 0, no data, has no channel). Nothing is
downloaded: encoder weights are either none or a local file.
"""

from __future__ import annotations

from pathlib import Path

import segmentation_models_pytorch as smp
import torch
from torch import nn

from s2landcover.errors import InputError
from s2landcover.io.checkpoints import load_encoder_state

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
        return PixelBranchNet(model, in_channels, num_classes, int(pixel_branch))
    return model


class PixelBranchNet(nn.Module):
    """A segmentation network plus a per-pixel branch: ``logits = net(x) + pixel(x)``.

    The branch is three 1 x 1 convolutions (``in_channels -> width -> width -> classes``, batch
    norm and ReLU between): a small per-pixel classifier of the bands at full resolution. The
    network (``net``, e.g. a U-Net whose encoder starts with a stride-2 convolution) adds the
    spatial context. Input (N, C, H, W) standardised reflectance; output (N, K, H, W) logits.
    """

    def __init__(self, net: nn.Module, in_channels: int, num_classes: int, width: int) -> None:
        super().__init__()
        self.net = net
        self.pixel = nn.Sequential(
            nn.Conv2d(in_channels, width, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, num_classes, 1),
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Logits of the network plus those of the per-pixel branch."""
        return self.net(image) + self.pixel(image)


def load_encoder_weights(encoder: nn.Module, path: str | Path, in_channels: int) -> None:
    """Initialise an encoder from a local file (.pth/.pt state dict or .safetensors).

    Weights of a 3-channel (RGB ImageNet) first convolution are adapted to ``in_channels`` the way
    smp does it: the RGB kernels are cycled over the new channels and rescaled by 3 / in_channels.
    Keys of a classifier head (``fc.*``) are ignored.
    """
    state = load_encoder_state(path)
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    own = encoder.state_dict()
    for key, value in list(state.items()):
        if (
            key in own
            and value.ndim == 4
            and own[key].ndim == 4
            and value.shape[1] != own[key].shape[1]
        ):
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
