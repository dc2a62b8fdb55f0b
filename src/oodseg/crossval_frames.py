"""Open-set protocols on a collection of frames with an official split (Endoscapes-Seg50).

The known background of a surgical data set gives a real OOD test, next to the held-out-class one:

* ``background``: train on sparse strokes of the K classes on the training frames (never on
  background); on the test frames ID = the K classes' pixels, OOD = background pixels.
* ``loco``: leave one class out; ID = the other classes' pixels, OOD = the held-out class's pixels;
  background pixels are not scored.

In both, the threshold keeps the target TPR of the strokes simulated on the validation frames, and
ignore pixels (255) are never scored. Two baselines frame what the method adds: the closed-set
network's arg-max (no OOD at all) and a fully supervised network given background as a class on the
dense training masks (the upper bound that needs the expensive labels).
"""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import track

from oodseg.annotate import Annotations, simulate_annotations
from oodseg.crossval import (
    DEFAULT_DETECTORS,
    FoldFigures,
    fold_row,
    iou_by_class,
    package_versions,
    score_map_of,
    summarise,
    torch_device,
)
from oodseg.datasets import IGNORE_LABEL, BandNormaliser, FrameSet, class_id, load_endoscapes
from oodseg.detectors import DETECTORS, Detector, InputDetector, PixelOutputs, make_detector
from oodseg.metrics import metrics_from_counts, segmentation_metrics, tie_groups
from oodseg.model import FEATURES, PRESETS, build_network
from oodseg.threshold import calibrate_threshold, open_set_labels
from oodseg.training import IGNORE, TrainConfig, fit, infer, network_input

PROTOCOLS = ("background", "loco")
PANEL_FRAMES = 4
HISTOGRAM_SAMPLE = 200_000  # scores kept per fold and side for the histograms (ROC uses all)


@dataclass(frozen=True)
class FramesConfig:
    """Everything that defines a run on a frame data set (stored in ``results.json``)."""

    data_root: str
    protocols: tuple[str, ...] = PROTOCOLS
    detectors: tuple[str, ...] = DEFAULT_DETECTORS
    classes: tuple[str, ...] | None = None  # classes held out in ``loco`` (default: all)
    tpr: float = 0.95
    preset: str = "small"
    features: str = "last"
    encoder_weights: str | None = None
    scale: float = 0.5
    max_frames: int | None = None
    budget: float = 0.02
    stroke_length: int = 40
    patch: int = 128
    baselines: bool = True
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        unknown = [p for p in self.protocols if p not in PROTOCOLS]
        if unknown or not self.protocols:
            raise ValueError(
                f"unknown protocol {', '.join(unknown) or '(none)'}; choose from: "
                + ", ".join(PROTOCOLS)
            )
        unknown = [d for d in self.detectors if d not in DETECTORS]
        if unknown or not self.detectors:
            raise ValueError(
                f"unknown detector {', '.join(unknown) or '(none)'}; choose from: {', '.join(DETECTORS)}"
            )
        if not 0 < self.tpr < 1:
            raise ValueError(f"target TPR must be strictly between 0 and 1, got {self.tpr}")
        if self.preset not in PRESETS:
            raise ValueError(
                f"unknown network preset {self.preset!r}; choose one of: {', '.join(PRESETS)}"
            )
        if self.features not in FEATURES:
            raise ValueError(
                f"unknown feature choice {self.features!r}; choose one of: {', '.join(FEATURES)}"
            )
        if not 0 < self.scale <= 1:
            raise ValueError(f"frame scale must be in (0, 1], got {self.scale}")
        if not 0 < self.budget <= 1:
            raise ValueError(f"annotation budget must be in (0, 1], got {self.budget}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"--max-frames must be at least 1, got {self.max_frames}")


@dataclass
class FramePanel:
    """One test frame as the report draws it, for one detector of the background protocol."""

    name: str
    image: np.ndarray  # (H, W, 3) uint8
    mask: np.ndarray  # (H, W) dataset ids, 255 ignore
    prediction: np.ndarray  # (H, W) dataset ids 1..K, 0 = OOD
    score_map: np.ndarray
    threshold: float


@dataclass
class FramesResult:
    """``results`` is what ``results.json`` holds; the rest feeds the figures."""

    results: dict
    folds: dict[str, list[dict]]  # per protocol: {"held_out": name, "figures": {det: FoldFigures}}
    panels: dict[str, list[FramePanel]]  # per detector, a few test frames (background protocol)
    class_names: tuple[str, ...]


@dataclass(frozen=True)
class _Prepared:
    """The frames of one run, normalised, with their simulated strokes."""

    data: FrameSet
    images: dict[str, np.ndarray]  # split -> (N, H, W, 3) float32, normalised
    strokes: dict[str, np.ndarray]  # "train" / "val" -> (N, H, W) annotated class ids, 0 elsewhere


def crossval_frames(
    config: FramesConfig, *, checkpoint_root: Path | None = None, console: Console | None = None
) -> FramesResult:
    """Run the requested protocols (and baselines) on a frame data set."""
    console = console or Console()
    start = time.perf_counter()
    if config.encoder_weights and not Path(config.encoder_weights).is_file():
        raise FileNotFoundError(f"{config.encoder_weights}: encoder weights file not found")
    data = load_endoscapes(config.data_root, scale=config.scale, max_frames=config.max_frames)
    prep = _prepare(data, config)
    device = torch_device(config.train.device)
    divisor = PRESETS[config.preset].divisor
    side = min(config.patch, min(data.resolution) // divisor * divisor)
    train_config = TrainConfig(**{**asdict(config.train), "patch": side})
    names = data.class_names
    all_ids = list(range(1, data.num_classes + 1))

    protocols, folds, panels, baselines = {}, {}, {}, []
    for protocol in config.protocols:
        if protocol == "background":
            plan = [("background", all_ids, 0)]
        else:
            held = (
                [class_id(names, c, data.name) for c in config.classes]
                if config.classes
                else all_ids
            )
            plan = [(names[h - 1], [c for c in all_ids if c != h], h) for h in held]
        rows, protocol_folds = [], []
        for i, (fold_name, known, ood_label) in enumerate(plan):
            console.rule(f"{protocol} {i + 1}/{len(plan)}: OOD = {fold_name}")
            fold = _Fold(prep, known, ood_label, config, train_config, device, divisor)
            ckpt = checkpoint_root / f"{protocol}_{fold_name}" if checkpoint_root else None
            fold_rows, figures = fold.run(fold_name, ckpt)
            rows += fold_rows
            protocol_folds.append({"held_out": fold_name, "figures": figures})
            if protocol == "background":
                panels = fold.panels
                baselines.append(fold.closed_set_row())
        protocols[protocol] = _protocol_results(protocol, rows, config, data)
        folds[protocol] = protocol_folds
    if config.baselines:
        console.rule("baseline: fully supervised, background as a class")
        baselines.append(
            _fully_supervised(prep, config, train_config, device, divisor, checkpoint_root)
        )
    results = {
        "dataset": data.name,
        "credit": data.credit,
        "resolution": list(data.resolution),
        "frames": {split: len(frames) for split, frames in data.splits.items()},
        "annotated_pixels": {s: int((a > 0).sum()) for s, a in prep.strokes.items()},
        "protocols": protocols,
        "baselines": baselines,
        "config": {**asdict(config), "train": asdict(train_config)},
        "versions": package_versions(),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, {device}",
        "seconds": round(time.perf_counter() - start, 1),
    }
    return FramesResult(results, folds, panels, names)


def _prepare(data: FrameSet, config: FramesConfig) -> _Prepared:
    """Normalise with training-frame statistics and simulate strokes on the training and
    validation frames (classes only: background and ignore pixels are never annotated)."""
    stacks = {s: np.stack([f.image for f in frames]) for s, frames in data.splits.items()}
    norm = BandNormaliser.fit(stacks["train"], np.ones(stacks["train"].shape[:3], bool))
    images = {s: norm(x.astype(np.float32)) for s, x in stacks.items()}
    strokes = {}
    for s, offset in (("train", 0), ("val", 1_000_000)):
        strokes[s] = np.stack(
            [
                _strokes(f.mask, config, seed=config.train.seed * 7_919 + offset + i).labels
                for i, f in enumerate(data.splits[s])
            ]
        )
    return _Prepared(data, images, strokes)


def _strokes(mask: np.ndarray, config: FramesConfig, seed: int) -> Annotations:
    classes = np.where(mask == IGNORE_LABEL, 0, mask).astype(np.int64)
    return simulate_annotations(
        classes,
        mode="strokes",
        budget=config.budget,
        stroke_length=config.stroke_length,
        seed=seed,
    )


class _Fold:
    """Train on the ``known`` classes' strokes, then score ``ood_label``'s pixels against theirs."""

    def __init__(
        self,
        prep: _Prepared,
        known: list[int],
        ood_label: int,
        config: FramesConfig,
        train_config: TrainConfig,
        device: torch.device,
        divisor: int,
    ):
        self.prep, self.known, self.ood_label = prep, known, ood_label
        self.config, self.train_config = config, train_config
        self.device, self.divisor = device, divisor
        self.to_index = np.full(256, IGNORE)
        self.to_index[known] = np.arange(len(known))
        self.panels: dict[str, list[FramePanel]] = {}

    def _outputs(self, net: torch.nn.Module, split: str, i: int):
        x = network_input(self.prep.images[split][i], self.divisor, self.device)
        logits, features = infer(net, x, self.prep.data.resolution, self.train_config.precision)
        return x, logits, features

    def _pixels(self, net: torch.nn.Module, split: str) -> tuple[PixelOutputs, torch.Tensor]:
        """Outputs and class indices at the annotated pixels of the known classes."""
        parts, labels = [], []
        for i in track(range(len(self.prep.images[split])), f"{split} outputs", transient=True):
            target = self.to_index[self.prep.strokes[split][i]]
            if (target != IGNORE).any():
                _, logits, features = self._outputs(net, split, i)
                mask = torch.from_numpy(target != IGNORE)
                parts.append(PixelOutputs.from_maps(logits, features, mask, head=net.head))
                labels.append(torch.from_numpy(target[target != IGNORE]))
        if not parts:
            raise ValueError(f"no annotated pixel of the known classes on the {split} frames")
        return PixelOutputs.concat(parts), torch.cat(labels)

    def run(self, fold_name: str, ckpt: Path | None) -> tuple[list[dict], dict[str, FoldFigures]]:
        cfg, k = self.config, len(self.known)
        target = self.to_index[self.prep.strokes["train"]]
        torch.manual_seed(cfg.train.seed)
        net = build_network(
            cfg.preset,
            3,
            k,
            features=cfg.features,
            encoder_weights=Path(cfg.encoder_weights) if cfg.encoder_weights else None,
        )
        fit(net, self.prep.images["train"], target, self.train_config, checkpoint_dir=ckpt)
        train = self._pixels(net, "train")
        detectors: dict[str, Detector] = {}
        seconds: dict[str, float] = {}
        for name in cfg.detectors:
            t = time.perf_counter()
            det = make_detector(name)
            detectors[name] = det if isinstance(det, InputDetector) else det.fit(*train)
            seconds[name] = time.perf_counter() - t
        thresholds = self._calibrate(net, detectors)

        # Test frames: scores at ID and OOD pixels and the K+1 map, per detector.
        scores: dict[str, tuple[list, list]] = {d: ([], []) for d in detectors}
        preds: dict[str, list] = {d: [] for d in detectors}
        truths, closed = [], []
        test_frames = self.prep.data.splits["test"]
        panel_at = set(np.linspace(0, len(test_frames) - 1, PANEL_FRAMES).round().astype(int))
        for i in track(range(len(test_frames)), "scoring test frames", transient=True):
            mask = test_frames[i].mask
            truth = np.where(mask == self.ood_label, k, self.to_index[mask])
            scored = truth != IGNORE
            x, logits, features = self._outputs(net, "test", i)
            every = PixelOutputs.from_maps(logits, features, head=net.head)
            lg = logits.numpy()
            truths.append(truth[scored])
            closed.append(lg.argmax(0)[scored])
            for name, det in detectors.items():
                t = time.perf_counter()
                smap = score_map_of(det, net, x, mask.shape, every)
                seconds[name] += time.perf_counter() - t
                pred = open_set_labels(lg, smap, thresholds[name])
                is_ood = truth[scored] == k
                scores[name][0].append(smap[scored][~is_ood].astype(np.float32))
                scores[name][1].append(smap[scored][is_ood].astype(np.float32))
                preds[name].append(pred[scored].astype(np.int8))
                if i in panel_at:
                    panel = self._panel(test_frames[i], pred, smap, thresholds[name])
                    self.panels.setdefault(name, []).append(panel)
        truth_all = np.concatenate(truths)
        self.closed_set = (truth_all, np.concatenate(closed), k)

        rows, figures = [], {}
        rng = np.random.default_rng(cfg.train.seed)
        for name in detectors:
            id_s = np.concatenate(scores[name][0]).astype(np.float64)
            ood_s = np.concatenate(scores[name][1]).astype(np.float64)
            row, curve = fold_row(
                fold_name,
                name,
                id_s,
                ood_s,
                thresholds[name],
                truth_all,
                np.concatenate(preds[name]),
                self.closed_set[1],
                self._names(),
                seconds[name],
            )
            rows.append(row)
            figures[name] = FoldFigures(
                thresholds[name], _sample(id_s, rng), _sample(ood_s, rng), (curve.fpr, curve.tpr)
            )
        return rows, figures

    def _names(self) -> list[str]:
        return [self.prep.data.class_names[c - 1] for c in self.known]

    def _calibrate(self, net: torch.nn.Module, detectors: dict[str, Detector]) -> dict[str, float]:
        """Thresholds from the known classes' strokes on the validation frames."""
        val, _ = self._pixels(net, "val")
        h, w = self.prep.data.resolution
        thresholds = {}
        for name, det in detectors.items():
            if isinstance(det, InputDetector):
                scores = []
                for i in range(len(self.prep.images["val"])):
                    target = self.to_index[self.prep.strokes["val"][i]]
                    if (target != IGNORE).any():
                        x = network_input(self.prep.images["val"][i], self.divisor, self.device)
                        smap = det.score_image(net, x)[0, :h, :w].cpu().numpy()
                        scores.append(smap[target != IGNORE])
                calibration = np.concatenate(scores)
            else:
                calibration = det.score(val).numpy()
            thresholds[name] = calibrate_threshold(calibration, self.config.tpr)
        return thresholds

    def _panel(self, frame, pred: np.ndarray, smap: np.ndarray, threshold: float) -> FramePanel:
        ids = np.r_[np.asarray(self.known), 0]  # K+1 index -> dataset id, OOD -> 0
        return FramePanel(frame.name, frame.image, frame.mask, ids[pred], smap, threshold)

    def closed_set_row(self) -> dict:
        """The closed-set network: every pixel takes its arg-max class, nothing is OOD."""
        truth, closed, k = self.closed_set
        seg = segmentation_metrics(truth, closed, k + 1)
        id_test = truth < k
        return {
            "method": "closed-set arg-max (no OOD)",
            "auroc": None,
            "fpr95": None,
            "id_accuracy": float((closed[id_test] == truth[id_test]).mean()),
            "ood_recall": 0.0,
            "miou_k_plus_1": seg["miou"],
            "mdice_k_plus_1": seg["mdice"],
            "iou_k_plus_1": iou_by_class(seg["iou"], self._names() + ["OOD"]),
        }


def _fully_supervised(
    prep: _Prepared,
    config: FramesConfig,
    train_config: TrainConfig,
    device: torch.device,
    divisor: int,
    checkpoint_root: Path | None,
) -> dict:
    """A network trained on the dense training masks with background as class 0; a test pixel is
    OOD where background wins, and 1 - P(background) ranks pixels for the AUROC."""
    data = prep.data
    k = data.num_classes
    dense = np.stack([f.mask for f in data.splits["train"]]).astype(np.int64)
    target = np.where(dense == IGNORE_LABEL, IGNORE, dense)
    torch.manual_seed(config.train.seed)
    net = build_network(config.preset, 3, k + 1, features=config.features)
    ckpt = checkpoint_root / "fully_supervised" if checkpoint_root else None
    fit(net, prep.images["train"], target, train_config, checkpoint_dir=ckpt)
    truths, preds, scores = [], [], []
    for i, frame in enumerate(track(data.splits["test"], "fully supervised: test", transient=True)):
        x = network_input(prep.images["test"][i], divisor, device)
        logits, _ = infer(net, x, data.resolution, train_config.precision)
        scored = frame.mask != IGNORE_LABEL
        # Dataset ids 1..K -> 0..K-1, background -> K (OOD), as in the open-set maps.
        truths.append(np.where(frame.mask == 0, k, frame.mask.astype(np.int64) - 1)[scored])
        label = logits.numpy().argmax(0)
        preds.append(np.where(label == 0, k, label - 1)[scored])
        scores.append(1 - logits.softmax(0)[0].numpy()[scored].astype(np.float64))
    truth, pred, score = np.concatenate(truths), np.concatenate(preds), np.concatenate(scores)
    id_test = truth < k
    ood = metrics_from_counts(*tie_groups(score[id_test], score[~id_test]))
    seg = segmentation_metrics(truth, pred, k + 1)
    return {
        "method": "fully supervised, background as a class (dense masks)",
        "auroc": ood["auroc"],
        "fpr95": ood["fpr95"],
        "id_accuracy": float((pred[id_test] == truth[id_test]).mean()),
        "ood_recall": float((pred[~id_test] == k).mean()),
        "miou_k_plus_1": seg["miou"],
        "mdice_k_plus_1": seg["mdice"],
        "iou_k_plus_1": iou_by_class(seg["iou"], [*data.class_names, "OOD"]),
    }


def _protocol_results(
    protocol: str, rows: list[dict], config: FramesConfig, data: FrameSet
) -> dict:
    """One protocol's results, shaped like a single-scene run's so the same tables apply."""
    what = {
        "background": "ID = the six classes' pixels, OOD = background pixels of the test frames",
        "loco": "leave one class out: ID = the other classes' pixels, OOD = the held-out class's; "
        "background not scored",
    }[protocol]
    h, w = data.resolution
    return {
        "title": f"{data.name}: {protocol} protocol",
        "dataset": data.name,
        "split": protocol,
        "protocol": f"{what}; official video split, {h}x{w} frames, strokes on "
        f"{config.budget:.0%} of each class's pixels per frame",
        "folds": rows,
        "summary": summarise(rows, config.detectors),
        "skipped_folds": [],
        "left_out_classes": {},
        "config": {"network": PRESETS[config.preset].description, "tpr": config.tpr},
    }


def _sample(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if len(values) <= HISTOGRAM_SAMPLE:
        return values
    return values[rng.choice(len(values), HISTOGRAM_SAMPLE, replace=False)]
