"""oodseg: segmentation from sparse positive-only annotations, with pixel-wise OOD detection.

The pipeline, one module per stage: ``datasets`` → ``annotate`` / ``splits`` → ``model`` → ``train``
→ ``detectors`` (OOD scoring) → ``threshold`` → ``metrics`` (evaluation) → ``report``;
``crossval`` runs the held-out-class protocol and ``cli`` exposes it as ``oodseg crossval``.
"""

__version__ = "0.1.0"

from oodseg.annotate import Annotations, simulate_annotations
from oodseg.crossval import CrossvalConfig, CrossvalResult, crossval
from oodseg.datasets import DATASETS, BandNormaliser, Scene, load_dataset
from oodseg.detectors import (
    DETECTORS,
    Detector,
    InputDetector,
    LogitDetector,
    PixelOutputs,
    StreamingDetector,
    make_detector,
    register,
)
from oodseg.metrics import ood_metrics, segmentation_metrics
from oodseg.model import PRESETS, Segmenter, build_network
from oodseg.splits import Split, make_split
from oodseg.threshold import calibrate_threshold, open_set_labels
from oodseg.train import TrainConfig, fit, infer

__all__ = [
    "DATASETS",
    "DETECTORS",
    "PRESETS",
    "Annotations",
    "BandNormaliser",
    "CrossvalConfig",
    "CrossvalResult",
    "Detector",
    "InputDetector",
    "LogitDetector",
    "PixelOutputs",
    "Scene",
    "Segmenter",
    "Split",
    "StreamingDetector",
    "TrainConfig",
    "build_network",
    "calibrate_threshold",
    "crossval",
    "fit",
    "infer",
    "load_dataset",
    "make_detector",
    "make_split",
    "ood_metrics",
    "open_set_labels",
    "register",
    "segmentation_metrics",
    "simulate_annotations",
]
