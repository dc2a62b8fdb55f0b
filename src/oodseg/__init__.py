"""oodseg: segmentation from sparse positive-only annotations, with pixel-wise OOD detection.

The pipeline, one module per stage: ``config`` (every option, declared once) → ``datasets`` /
``manifest`` / ``io`` → ``annotate`` / ``splits`` → ``model`` → ``training`` → ``detectors`` (OOD
scoring) → ``threshold`` → ``metrics`` (evaluation) → ``runstore`` → ``report`` (with ``figures``
and ``viewer``, its interactive pages); ``engine`` runs one fold on any collection of images,
``sources`` turns data sets into collections and folds, ``crossval`` runs the evaluation
protocols, ``bundle`` trains, saves, loads and predicts with a model on your own data,
``suggest`` ranks where the next stroke would help most, and ``cli`` exposes all of it.
"""

__version__ = "1.0.0"

from oodseg.annotate import Annotations, simulate_annotations, stroke_at
from oodseg.bundle import Bundle, Maps, load_bundle, train
from oodseg.config import (
    PRESETS,
    HardwareConfig,
    NetworkConfig,
    OptimConfig,
    ScoringConfig,
    TrainConfig,
    UnlabelledConfig,
)
from oodseg.crossval import CrossvalConfig, crossval, prepare
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
from oodseg.engine import Collection, Fold, Sample
from oodseg.inference import Predictor, Scorer
from oodseg.manifest import ImageDataset, from_folders, load_manifest
from oodseg.metrics import ood_metrics, segmentation_metrics
from oodseg.model import Ensemble, Segmenter, build_network
from oodseg.splits import Split, make_split
from oodseg.suggest import Region, acquisition, suggest_regions
from oodseg.threshold import (
    calibrate_threshold,
    mixture_proportion,
    open_set_labels,
    operating_points,
)
from oodseg.training import fit, nnpu_risk

__all__ = [
    "DATASETS",
    "DETECTORS",
    "PRESETS",
    "Annotations",
    "BandNormaliser",
    "Bundle",
    "Maps",
    "Region",
    "FrameSet",
    "Collection",
    "Fold",
    "Predictor",
    "Sample",
    "Scorer",
    "ImageDataset",
    "CrossvalConfig",
    "Detector",
    "InputDetector",
    "LogitDetector",
    "PixelOutputs",
    "Scene",
    "Ensemble",
    "Segmenter",
    "Split",
    "StreamingDetector",
    "TrainConfig",
    "NetworkConfig",
    "OptimConfig",
    "UnlabelledConfig",
    "HardwareConfig",
    "ScoringConfig",
    "acquisition",
    "build_network",
    "calibrate_threshold",
    "crossval",
    "prepare",
    "from_folders",
    "load_bundle",
    "load_endoscapes",
    "load_manifest",
    "fit",
    "load_dataset",
    "make_detector",
    "make_split",
    "mixture_proportion",
    "nnpu_risk",
    "ood_metrics",
    "open_set_labels",
    "operating_points",
    "register",
    "segmentation_metrics",
    "simulate_annotations",
    "stroke_at",
    "suggest_regions",
    "train",
]
