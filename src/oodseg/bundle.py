"""The model bundle: train once on your images, save, load anywhere, predict K+1 maps.

A bundle is a folder: ``model.safetensors`` (the network), ``detector.safetensors`` (the fitted
detector's tensors) and ``bundle.json`` (class names, band count, normalisation, network preset,
detector name, parameters and numbers, threshold and its target TPR, versions). Loading never
unpickles anything.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from scipy import ndimage

from oodseg.config import ScoringConfig, TrainConfig
from oodseg.datasets import BandNormaliser
from oodseg.detectors import DETECTORS, Detector
from oodseg.distributed import broadcast_module
from oodseg.engine import Collection, Sample, collect, fit_scorer, train_network
from oodseg.inference import WINDOW, Inference, Predictor, Scorer
from oodseg.io import write_folder
from oodseg.manifest import ImageDataset, colour_bands, read_all
from oodseg.model import Ensemble, Segmenter, build_network
from oodseg.progress import Stages
from oodseg.runtime import package_versions
from oodseg.suggest import Region, suggest_regions

FORMAT_VERSION = 1
OOD_LABEL = 0  # in predicted label maps: 0 = OOD / unknown, 1..K = the classes


@dataclass
class Maps:
    """One image's per-pixel outputs: arg-max class (1..K), ID-ness score and, where asked, the
    softmax margin between the two likeliest classes."""

    classes: np.ndarray
    scores: np.ndarray
    threshold: float
    margin: np.ndarray | None = None

    @property
    def labels(self) -> np.ndarray:
        """The K+1 map: the class where the score passes the threshold, 0 (OOD) elsewhere."""
        return np.where(self.scores >= self.threshold, self.classes, OOD_LABEL).astype(
            self.classes.dtype
        )


@dataclass
class Bundle:
    """A trained network, its fitted detector and threshold, and what prediction needs."""

    net: Segmenter | Ensemble
    detector: Detector
    class_names: tuple[str, ...]
    normaliser: BandNormaliser
    threshold: float
    tpr: float
    preset: str
    features: str
    info: dict = field(default_factory=dict)  # training set-up and data description
    threshold_rule: str = "tpr"  # how the threshold was chosen (oodseg.threshold.RULES)
    id_share: float | None = None  # BBE's estimate of the ID share among unlabelled pixels
    smooth: float = 0.0  # score-map smoothing the threshold was calibrated with
    smooth_classes: float = 0.0  # class-probability smoothing before the arg-max

    @property
    def bands(self) -> int:
        return len(self.normaliser.mean)

    def predict(
        self,
        image: np.ndarray,
        *,
        device: str = "cpu",
        tile: int = WINDOW,
        precision: str = "32",
        channels_last: bool = False,
        source: str = "image",
    ) -> tuple[np.ndarray, np.ndarray]:
        """K+1 labels (H, W) (0 = OOD, 1..K the classes) and ID-ness scores (H, W) float32 of an
        (H, W, bands) image, from :meth:`maps`."""
        maps = self.maps(
            image,
            device=device,
            tile=tile,
            precision=precision,
            channels_last=channels_last,
            source=source,
        )
        return maps.labels, maps.scores

    def maps(
        self,
        image: np.ndarray,
        *,
        device: str = "cpu",
        tile: int = WINDOW,
        precision: str = "32",
        channels_last: bool = False,
        source: str = "image",
        margin: bool = False,
    ) -> Maps:
        """Each pixel's arg-max class and ID-ness score (the K+1 map before the threshold) and,
        with ``margin``, the softmax margin between its two likeliest classes (what
        :meth:`suggest` and the viewer need). The image is read in strips of rows, each with a
        margin of context on either side that fill a window of side ``tile``, so a memory-mapped
        cube larger than memory works (:meth:`oodseg.inference.Scorer.image_maps`); a strip
        wider than ``tile`` goes through MONAI's sliding window. ``precision="bf16-mixed"`` and
        ``channels_last`` are for GPUs."""
        if image.ndim != 3 or image.shape[-1] != self.bands:
            raise ValueError(
                f"{source}: expected (H, W, {self.bands}) for this model, got shape {image.shape}"
            )
        run = Inference(device, tile, precision, channels_last, self.smooth, self.smooth_classes)
        scorer = Scorer(
            Predictor(self.net, self.normaliser, self.preset, run), {"d": self.detector}
        )
        maps, argmax, margins = scorer.image_maps(image, source, margin=margin)
        kind = np.uint8 if len(self.class_names) < 256 else np.uint16
        classes, scores = (argmax + 1).astype(kind), maps["d"]
        return Maps(classes, scores, self.threshold, margins)

    def suggest(
        self,
        image: np.ndarray,
        *,
        annotated: np.ndarray | None = None,
        name: str = "image",
        top: int = 10,
        min_area: int = 9,
        gap: int = 2,
        device: str = "cpu",
    ) -> tuple[list[Region], Maps]:
        """The ``top`` regions of ``image`` most worth a new stroke (:mod:`oodseg.suggest`), away
        from the ``annotated`` pixels (H, W, true where annotated), and the maps they came from."""
        maps = self.maps(image, device=device, source=name, margin=True)
        regions = suggest_regions(
            name,
            maps.classes,
            maps.margin,
            maps.scores,
            self.threshold,
            self.class_names,
            annotated=annotated,
            top=top,
            min_area=min_area,
            gap=gap,
        )
        return regions, maps

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the bundle folder atomically: a sibling temporary folder renamed into place."""
        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; choose a new folder or pass --overwrite")
        write_folder(path, self._write)
        return path

    def _write(self, folder: Path) -> None:
        state = {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
        save_file(state, folder / "model.safetensors")
        tensors, numbers = self.detector.fitted_state()
        save_file(
            {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()},
            folder / "detector.safetensors",
        )
        meta = {
            "format_version": FORMAT_VERSION,
            "class_names": list(self.class_names),
            "bands": self.bands,
            "normalisation": {
                "mean": self.normaliser.mean.tolist(),
                "std": self.normaliser.std.tolist(),
                "projection": None
                if self.normaliser.projection is None
                else self.normaliser.projection.tolist(),
            },
            "preset": self.preset,
            "features": self.features,
            "known_head": self.net.known_head is not None,
            "ensemble": len(self.net.members) if isinstance(self.net, Ensemble) else 1,
            "detector": {"name": self.detector.name, "params": self.detector.params()},
            "detector_numbers": numbers,
            "threshold": self.threshold,
            "threshold_rule": self.threshold_rule,
            "tpr": self.tpr,
            "id_share_estimate": self.id_share,
            "smooth": self.smooth,
            "smooth_classes": self.smooth_classes,
            "info": self.info,
            "versions": package_versions(),
        }
        (folder / "bundle.json").write_text(json.dumps(meta, indent=2))


def load_bundle(path: str | Path) -> Bundle:
    """A bundle saved by :meth:`Bundle.save`: JSON and safetensors only, nothing unpickled."""
    path = Path(path)
    meta_path = path / "bundle.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{path}: not a model bundle (no bundle.json)")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{meta_path}: corrupt bundle description: {e}") from None
    version = meta.get("format_version")
    if not isinstance(version, int):
        raise ValueError(f"{meta_path}: not a model bundle description (no format_version)")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{meta_path}: bundle format {version} is newer than this oodseg reads "
            f"({FORMAT_VERSION}); upgrade oodseg"
        )
    removed = {k: meta[k] for k in ("stem", "tta") if meta.get(k) not in (None, 0, "none")}
    if removed:
        raise ValueError(
            f"{meta_path}: made with {', '.join(f'--{k} {v}' for k, v in removed.items())}, an "
            "option oodseg 1.0 no longer has; retrain the model with this version"
        )
    try:
        name = meta["detector"]["name"]
        if name not in DETECTORS:
            raise ValueError(f"{meta_path}: unknown detector {name!r} (a plug-in not imported?)")
        norm = meta["normalisation"]
        projection = norm.get("projection")
        normaliser = BandNormaliser(
            np.asarray(norm["mean"]),
            np.asarray(norm["std"]),
            None if projection is None else np.asarray(projection),
        )
        torch.manual_seed(0)
        members = [
            build_network(
                meta["preset"],
                normaliser.channels,
                len(meta["class_names"]),
                features=meta["features"],
                known_head=meta.get("known_head", False),
                imagenet_weights=False,  # the bundle's own weights follow
            )
            for _ in range(meta.get("ensemble", 1))
        ]
        net = members[0] if len(members) == 1 else Ensemble(members)
        net.load_state_dict(_tensors(path / "model.safetensors"))
        detector = DETECTORS[name].restore(
            meta["detector"]["params"],
            _tensors(path / "detector.safetensors"),
            meta["detector_numbers"],
        )
        return Bundle(
            net.eval(),
            detector,
            tuple(meta["class_names"]),
            normaliser,
            float(meta["threshold"]),
            float(meta["tpr"]),
            meta["preset"],
            meta["features"],
            meta.get("info", {}),
            meta.get("threshold_rule", "tpr"),
            meta.get("id_share_estimate"),
            meta.get("smooth", 0.0),
            meta.get("smooth_classes", 0.0),
        )
    except KeyError as e:
        raise ValueError(f"{meta_path}: the bundle description lacks {e}") from None


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing from the bundle")
    try:
        return load_file(path)
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise ValueError(f"{path}: corrupt or truncated weights: {e}") from None


def train(
    data: ImageDataset,
    *,
    detector: str | None = None,
    config: TrainConfig | None = None,
    scoring: ScoringConfig | None = None,
    calibration_share: float = 0.25,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    progress: Stages | None = None,
) -> Bundle:
    """Train a bundle on a data set's training images (sparse masks), through the fold engine with
    every class known. ``scoring``'s threshold rule (:mod:`oodseg.threshold`) works from the
    calibration annotations (``tpr``: keep that share of them) and the calibration images'
    unlabelled pixels (``pu``): the ``val`` images' if the data set has some, else a seeded
    ``calibration_share`` of each class's strokes (connected components; at least one of a
    class's strokes once it has two), held out of training. With ``checkpoint_dir``, training
    checkpoints every epoch and ``resume`` continues from there; ``progress`` shows the stages.
    Mask pixels of the data set's ``ood`` values are never trained on.
    ``detector`` None: pu where the network learns the PU head (``config.unlabelled`` auto on RGB
    images whose data declare background), else gen."""
    config = config or TrainConfig()
    scoring = scoring or ScoringConfig()
    if detector is not None and detector not in DETECTORS:
        raise ValueError(f"unknown detector {detector!r}; choose from: {', '.join(DETECTORS)}")
    if detector == "pu" and config.unlabelled == "ignore":
        raise ValueError("the pu detector needs --unlabelled nnpu")
    if not 0 < calibration_share < 1:
        raise ValueError(f"calibration share must be in (0, 1), got {calibration_share}")
    k = len(data.class_names)
    samples = read_all(data, "train", colour_bands(data), progress)
    masks = [np.where(s.mask <= k, s.mask, 0).astype(np.uint8) for s in samples]
    bands = samples[0].image.shape[-1]
    config = config.resolved(bool(data.ood), bands, max(float(s.image.max()) for s in samples))
    detector = detector or ("pu" if config.known_head else "gen")
    if detector == "pu" and not config.known_head:
        raise ValueError(
            "the pu detector needs --unlabelled nnpu: --unlabelled auto trains "
            "the PU head only on RGB images whose data declare background"
        )
    if data.split("val"):
        val = read_all(data, "val", bands, progress)
        empty = [np.zeros_like(m) for m in masks]
        train_masks, cal_masks = (
            masks + [np.zeros(s.mask.shape, np.uint8) for s in val],
            empty + [np.where(s.mask <= k, s.mask, 0).astype(np.uint8) for s in val],
        )
        images = samples + val
    else:
        train_masks, cal_masks = _hold_out_strokes(masks, calibration_share, config.seed)
        images = samples
    if not any((m > 0).any() for m in cal_masks):
        raise ValueError(
            "no annotation left to calibrate the threshold: add a val image or more strokes"
        )
    n_train = len(samples)
    collection = Collection(
        "training data",
        data.class_names,
        len(images),
        lambda i: Sample(
            images[i].name,
            images[i].image,
            train_masks[i],
            cal_masks[i],
            np.zeros_like(train_masks[i]),
            normalise=np.ones(train_masks[i].shape, bool) if i < n_train else None,
        ),
        description="",
    )
    collect(
        collection,
        progress,
        input_pca=config.input_pca,
        preset=config.preset,
    )
    known = tuple(range(1, k + 1))
    net = train_network(
        collection, known, config, checkpoint_dir=checkpoint_dir, resume=resume, progress=progress
    )
    broadcast_module(net)
    run = Inference.of(config, scoring)
    # After distributed training every process holds the same network: each runs its share of
    # the images and the per-image results are gathered in image order, so the detector and the
    # threshold are exactly what one process would compute.
    fitted = fit_scorer(
        collection,
        net,
        known,
        [detector],
        scoring.tpr,
        run,
        rule=scoring.threshold,
        seed=config.seed,
        progress=progress,
    )
    return Bundle(
        net.eval(),
        fitted.scorer.detectors[detector],
        data.class_names,
        collection.normaliser,
        fitted.thresholds[detector],
        scoring.tpr,
        config.preset,
        config.features,
        {
            "train": asdict(config),
            "scoring": asdict(scoring),
            "images": {
                "train": [s.name for s in samples],
                "calibration": [s.name for s, m in zip(images, cal_masks, strict=True) if m.any()],
            },
            "annotated_pixels": {
                "train": int(sum((m > 0).sum() for m in train_masks)),
                "calibration": int(sum((m > 0).sum() for m in cal_masks)),
            },
            "calibration": "val images"
            if data.split("val")
            else f"{calibration_share:.0%} of strokes",
        },
        scoring.threshold,
        fitted.points[detector].id_share,
        scoring.smooth,
        scoring.smooth_classes,
    )


def _hold_out_strokes(
    masks: list[np.ndarray], share: float, seed: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Split each class's connected annotated regions (strokes) into training and calibration
    ones: ``share`` of them, at least one once a class has two; a class with a single stroke
    keeps it for training."""
    rng = np.random.default_rng(seed)
    train, cal = [], []
    for mask in masks:
        t, c = mask.copy(), np.zeros_like(mask)
        for cls in np.unique(mask[mask > 0]):
            regions, n = ndimage.label(mask == cls)
            n_held = min(max(1, round(share * n)), n - 1)
            held = rng.permutation(n)[:n_held] + 1
            chosen = np.isin(regions, held)
            c[chosen], t[chosen] = cls, 0
        train.append(t)
        cal.append(c)
    return train, cal
