"""Model: MONAI U-Net family networks that return per-pixel logits *and* the decoder's last feature map.

Feature-based OOD detectors need one feature vector per pixel, so the MONAI network's own head is
replaced by an identity and a separate head (a 1 x 1 convolution by default: a linear classifier on the
features, which ViM-like detectors need) turns the features into logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from monai.networks.nets import BasicUNet, FlexibleUNet
from torch import nn


@dataclass(frozen=True)
class Preset:
    """A named network configuration."""

    name: str
    description: str
    patch: int  # training patch side, a multiple of ``divisor``
    divisor: int  # input sides are padded to a multiple of this at inference


PRESETS = {
    "small": Preset(
        "small", "MONAI BasicUNet, features (16, 16, 32, 64, 128, 16)", patch=64, divisor=16
    ),
    "reference": Preset(
        "reference",
        "MONAI FlexibleUNet, EfficientNet-B4 encoder (the paper's network)",
        patch=128,
        divisor=32,
    ),
}


class Segmenter(nn.Module):
    """``forward(x) -> (logits, features)``, both (B, ·, H, W) at the input resolution."""

    def __init__(
        self, backbone: nn.Module, feature_channels: int, num_classes: int, head_kernel: int = 1
    ):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Conv2d(feature_channels, num_classes, head_kernel, padding=head_kernel // 2)
        self.feature_channels = feature_channels
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.backbone(x)
        return self.head(features), features


def build_network(
    preset: str,
    in_channels: int,
    num_classes: int,
    *,
    encoder_weights: Path | None = None,
    norm: str = "batch",
) -> Segmenter:
    """The network of a preset. ``encoder_weights`` (reference preset only) is a local safetensors or
    PyTorch state dict for the EfficientNet-B4 encoder; nothing is ever downloaded."""
    if preset not in PRESETS:
        raise ValueError(f"unknown network preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    if preset == "small":
        if encoder_weights is not None:
            raise ValueError("encoder weights apply to the reference preset only")
        features = (16, 16, 32, 64, 128, 16)
        # Batch norm, not MONAI's default instance norm: instance norm would remove each patch's mean
        # spectrum, which is what tells many land-cover and tissue classes apart.
        net = BasicUNet(
            spatial_dims=2,
            in_channels=in_channels,
            out_channels=num_classes,
            features=features,
            norm=norm,
        )
        net.final_conv = nn.Identity()
        return Segmenter(net, features[-1], num_classes)
    decoder_channels = (256, 128, 64, 32, 16)
    net = FlexibleUNet(
        in_channels=in_channels,
        out_channels=num_classes,
        backbone="efficientnet-b4",
        pretrained=False,
        decoder_channels=decoder_channels,
    )
    net.segmentation_head = nn.Identity()
    if encoder_weights is not None:
        load_matching_weights(net.encoder, encoder_weights)
    return Segmenter(net, decoder_channels[-1], num_classes)


def load_matching_weights(module: nn.Module, path: Path) -> int:
    """Copy the tensors of a local state dict whose names and shapes match ``module`` (the stem of a
    3-band ImageNet encoder does not match a 200-band cube and keeps its random init). Returns how many
    tensors were loaded."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: encoder weights file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    own = module.state_dict()
    matching = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not matching:
        raise ValueError(f"{path}: no tensor matches the encoder's names and shapes")
    module.load_state_dict(matching, strict=False)
    return len(matching)
