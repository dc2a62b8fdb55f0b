"""oodseg: segmentation from sparse positive-only annotations, with pixel-wise OOD detection.

The pipeline, one module per stage: ``datasets`` / ``manifest`` / ``io`` → ``annotate`` / ``splits``
→ ``model`` → ``training`` → ``detectors`` (OOD scoring) → ``threshold`` → ``metrics`` (evaluation)
→ ``report``; ``crossval`` and ``crossval_frames`` run the evaluation protocols, ``bundle`` trains,
saves, loads and predicts with a model on your own data, and ``cli`` exposes all of it.
"""

__version__ = "0.1.0"

from oodseg.annotate import Annotations, simulate_annotations
from oodseg.bundle import Bundle, load_bundle, train
from oodseg.crossval import CrossvalConfig, CrossvalResult, crossval
from oodseg.crossval_frames import FramesConfig, crossval_frames
from oodseg.datasets import DATASETS, BandNormaliser, FrameSet, Scene, load_dataset, load_endoscapes
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
from oodseg.manifest import ImageDataset, from_folders, load_manifest
from oodseg.metrics import ood_metrics, segmentation_metrics
from oodseg.model import PRESETS, Segmenter, build_network
from oodseg.splits import Split, make_split
from oodseg.threshold import calibrate_threshold, open_set_labels
from oodseg.training import TrainConfig, fit, infer

__all__ = [
    "DATASETS",
    "DETECTORS",
    "PRESETS",
    "Annotations",
    "BandNormaliser",
    "Bundle",
    "FrameSet",
    "FramesConfig",
    "ImageDataset",
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
    "crossval_frames",
    "from_folders",
    "load_bundle",
    "load_endoscapes",
    "load_manifest",
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
    "train",
]
