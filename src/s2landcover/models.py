"""Networks by name, and the input normalisation every model sees.

Segmentation models come from segmentation-models-pytorch's registry (``smp.create_model``): the
architecture and encoder are names, input channels are the configured bands, outputs are the K
classes (logit channel ``i`` is class ``i + 1``; class 0, no data, has no channel). Nothing is
downloaded: encoder weights are either none or a local file.
"""

from __future__ import annotations

from pathlib import Path

import segmentation_models_pytorch as smp
from torch import nn

from s2landcover.errors import InputError
from s2landcover.io.checkpoints import load_encoder_state


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
) -> nn.Module:
    """A segmentation network with ``in_channels`` inputs and ``num_classes`` logit channels.

    Args:
        architecture: smp architecture name, case-insensitive (``Unet``, ``UnetPlusPlus``, ...).
        encoder: smp encoder name (``resnet34``, ...).
        in_channels: number of input bands.
        num_classes: K, the number of classes without no data.
        encoder_weights: None (random initialisation) or a local weights file for the encoder.

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
    model = smp.create_model(
        by_lower[architecture.lower()],
        encoder_name=encoder,
        encoder_weights=None,
        in_channels=in_channels,
        classes=num_classes,
    )
    if encoder_weights is not None:
        load_encoder_weights(model.encoder, encoder_weights, in_channels)
    return model


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
