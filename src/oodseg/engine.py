"""The fold engine: train on the annotations of the known classes, fit the detectors, calibrate the
threshold, and score the test pixels, on any collection of images.

Every data set reaches the engine as a :class:`Collection`: a list of images (any size, any band
count), each with a training-annotation mask, a calibration-annotation mask and a truth mask. A single
scene is a collection of one image whose regions are split; a frame set is split by image or video.
A :class:`Fold` says which classes are known (ID) and which truth values are OOD (a held-out class,
or the declared background). ``crossval`` (every data set and protocol), ``oodseg train`` and the
baselines all run through the functions here; data-set modules only build collections and folds.

One K+1 convention everywhere inside: class indices 0..K-1 for the known classes, K for OOD. (Label
maps written for users, and panels, use the data set's ids with 0 = OOD.)

Memory is bounded by a few images at a time and the sparse annotated pixels: images are read one by
one (training patches from a bounded cache of images), detectors are fitted from streamed batches,
test scores are tallied exactly up to ``metrics.EXACT_LIMIT`` pixels per detector and in a streaming
histogram beyond, segmentation counts in confusion matrices, and only a handful of panel images'
maps are kept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from oodseg.config import (
    BACKGROUND,
    DEFAULT_RULE,
    MAX_CLASSES,
    PRESETS,
    RULES,
    ScoringConfig,
    TrainConfig,
    preset_for,
)
from oodseg.datasets import BandNormaliser
from oodseg.detectors import KnownHead, LogitDetector, PixelOutputs, make_detector
from oodseg.distributed import gather_by_image, my_images
from oodseg.encoders import IMAGENET_MEAN, IMAGENET_STD
from oodseg.inference import Inference, Predictor, Scorer
from oodseg.metrics import (
    OPERATING_METRICS,
    ScoreTally,
    confusion_matrix,
    segmentation_from_confusion,
)
from oodseg.model import Ensemble, Segmenter, build_network
from oodseg.progress import Stages, bars, lines, stage, track
from oodseg.threshold import OperatingPoints, operating_points
from oodseg.training import IGNORE, fit

ROLES = ("train", "calibration", "truth", "dense")  # the masks of a sample


@dataclass(frozen=True)
class Sample:
    """One image of a collection. Masks are uint8 (H, W) of the data set's class ids 1..K:
    ``train`` / ``calibration`` the annotations (0 elsewhere), ``truth`` the test pixels (a class,
    or :data:`BACKGROUND`; 0 = not scored), ``dense`` a training image's dense labels (for the fully
    supervised baseline; None where there are none), ``normalise`` the pixels whose intensities
    may shape the input normalisation (None: none of them) and ``calibration_truth`` a calibration
    image's dense labels (None: unknown), read only to report the true share of ID pixels among
    its unlabelled ones next to the estimate."""

    name: str
    image: np.ndarray  # (H, W, C), raw values (a memory map is fine)
    train: np.ndarray
    calibration: np.ndarray
    truth: np.ndarray
    dense: np.ndarray | None = None
    normalise: np.ndarray | None = None
    calibration_truth: np.ndarray | None = None


@dataclass
class Collection:
    """A data set as the engine sees it: ``size`` samples produced one at a time by ``load``, with
    what was counted over them once (see :func:`collect`)."""

    name: str
    class_names: tuple[str, ...]
    size: int
    load: Callable[[int], Sample]
    description: str
    credit: str = ""
    rgb_bands: tuple[int, int, int] | None = None  # shown as red, green, blue; None: RGB images
    patch: int | None = None  # a training patch side suited to the data (None: the preset's)
    panel_count: int = 4
    # Filled by collect():
    normaliser: BandNormaliser | None = None
    per_sample: dict[str, np.ndarray] = field(default_factory=dict)  # role -> (N, 256) counts
    roles: list[frozenset[str]] = field(default_factory=list)  # per sample: the roles it holds
    sides: list[tuple[int, int]] = field(default_factory=list)
    bands: int = 0
    top: float = 0.0  # the largest value of the pixels the input normalisation was fitted on

    @property
    def counts(self) -> dict[str, np.ndarray]:
        """Role -> (256,) pixel counts per mask value, over all samples."""
        return {role: c.sum(0) for role, c in self.per_sample.items()}

    @property
    def declares_background(self) -> bool:
        """Whether the test truth holds declared background pixels (the background protocol)."""
        return bool(self.counts["truth"][BACKGROUND] > 0)

    def ids(self, role: str) -> list[int]:
        """The samples holding ``role`` (``train``, ``calibration``, ``truth``, ``dense``)."""
        return [i for i, r in enumerate(self.roles) if role in r]

    @property
    def panel_ids(self) -> list[int]:
        """A fixed handful of test samples, evenly spread, drawn as they are scored."""
        tests = self.ids("truth")
        if len(tests) <= self.panel_count:
            return tests
        picks = np.linspace(0, len(tests) - 1, self.panel_count).round().astype(int)
        return [tests[i] for i in picks]

    def class_counts(self, role: str) -> dict[int, int]:
        """Pixels per class id (and BACKGROUND) in a role's masks."""
        c = self.counts[role]
        return {v: int(c[v]) for v in np.flatnonzero(c) if v != 0}


def collect(
    collection: Collection,
    progress: Stages | None = None,
    *,
    input_pca: int = 0,
    preset: str = "small",
) -> Collection:
    """One pass over the samples: the band count (must agree), the roles each sample holds, pixel
    counts per role and class, and the input normalisation (per-band mean and standard deviation
    over the pixels the samples allow, merged exactly in float64; with ``input_pca``, also their
    covariance, whose leading principal components the network then takes as input when the
    images have more bands than that). Where ``preset`` (resolved by
    :func:`~oodseg.config.preset_for`) is ImageNet-pretrained, ImageNet's channel means and
    deviations instead, on RGB images of 0..255 or 0..1."""
    if len(collection.class_names) > MAX_CLASSES:
        raise ValueError(
            f"{collection.name}: {len(collection.class_names)} classes; at most {MAX_CLASSES}"
        )
    per_sample = {r: np.zeros((collection.size, 256), np.int64) for r in ROLES}
    roles, sides = [], []
    n, mean, m2, co, top = 0, 0.0, 0.0, 0.0, 0.0
    with stage(progress, "checking the images and masks", collection.size) as step:
        for i in range(collection.size):
            s = collection.load(i)
            if i == 0:
                collection.bands = s.image.shape[-1]
            elif s.image.shape[-1] != collection.bands:
                raise ValueError(
                    f"{s.name}: {s.image.shape[-1]} bands, but the first image has "
                    f"{collection.bands}; save every image with the same bands"
                )
            held = set()
            for role in ROLES:
                mask = getattr(s, role)
                if mask is not None:
                    per_sample[role][i] = np.bincount(mask.ravel(), minlength=256)
                    if per_sample[role][i, 1:].any():
                        held.add(role)
            roles.append(frozenset(held))
            sides.append(s.image.shape[:2])
            if s.normalise is not None and s.normalise.any():
                pixels = np.asarray(s.image)[s.normalise].astype(np.float64)
                nb, mb = len(pixels), pixels.sum(0) / len(pixels)
                top = max(top, float(pixels.max()))
                d = pixels - mb
                m2b = (d * d).sum(0)
                cob = d.T @ d if 0 < input_pca < collection.bands else 0.0
                # Chan et al.'s pairwise merge of (count, mean, sum of squared deviations), and
                # of the co-moments alike.
                delta = mb - mean
                total = n + nb
                mean = mean + delta * nb / total if n else mb
                m2 = m2 + m2b + delta**2 * n * nb / total if n else m2b
                co = co + cob + np.outer(delta, delta) * n * nb / total if n else cob
                n = total
            step()
    if n == 0:
        raise ValueError(f"{collection.name}: no training pixel to fit the input normalisation on")
    std = np.sqrt(m2 / n)
    collection.normaliser = BandNormaliser(mean, np.where(std > 0, std, 1.0))
    if 0 < input_pca < collection.bands:
        collection.normaliser = collection.normaliser.with_pca(co / n, input_pca)
    if PRESETS[preset_for(preset, collection.bands, top)].imagenet:
        collection.normaliser = _imagenet_normaliser(collection, top)
    collection.top = top
    collection.per_sample, collection.roles, collection.sides = per_sample, roles, sides
    return collection


@dataclass(frozen=True)
class Fold:
    """Which classes are known (ID) and which truth values are OOD in one fold of a protocol."""

    protocol: str  # "loco" (a held-out class) or "background" (the declared background)
    name: str  # the held-out class's name, or "background"
    known: tuple[int, ...]  # class ids trained on and scored as ID
    ood: tuple[int, ...]  # truth values scored as OOD

    @property
    def k(self) -> int:
        return len(self.known)

    @property
    def key(self) -> str:
        return f"{self.protocol}-{self.name}"

    def index(self) -> np.ndarray:
        """Mask value -> K+1 index: known classes 0..K-1, OOD K, everything else IGNORE."""
        table = np.full(256, IGNORE, np.int64)
        table[list(self.known)] = np.arange(self.k)
        table[list(self.ood)] = self.k
        return table


def _imagenet_normaliser(collection: Collection, top: float) -> BandNormaliser:
    """ImageNet's normalisation, for RGB images whose values run to ``top`` (8-bit or 0..1)."""
    if collection.bands != 3 or top > 255:
        raise ValueError(
            f"{collection.name}: ImageNet-pretrained weights take RGB images of 0..255 or 0..1; "
            f"these have {collection.bands} bands up to {top:g}: choose --preset small or "
            "reference"
        )
    scale = 1.0 if top <= 1 else 255.0
    return BandNormaliser(scale * np.array(IMAGENET_MEAN), scale * np.array(IMAGENET_STD))


def train_network(
    collection: Collection,
    known: Sequence[int],
    config: TrainConfig,
    *,
    dense: bool = False,
    background_class: bool = False,
    checkpoint_dir=None,
    resume: bool = False,
    progress: Stages | None = None,
    label: str = "",
) -> Segmenter | Ensemble:
    """A network trained on the annotations of the ``known`` classes (seeded: the same initial
    weights in every fold; with ``config.ensemble`` > 1, that many networks as one
    :class:`Ensemble`). ``dense`` trains on the dense labels instead of the strokes, and
    ``background_class`` adds the background as a last class (the fully supervised baseline).
    ``progress``: Lightning's bar where it draws bars, else one line (``label`` names the run)."""
    with stage(lines(progress), f"{label}training"):
        return _train_network(
            collection, known, config, dense, background_class, checkpoint_dir, resume, progress
        )


def _train_network(
    collection: Collection,
    known: Sequence[int],
    config: TrainConfig,
    dense: bool,
    background_class: bool,
    checkpoint_dir,
    resume: bool,
    progress: Stages | None,
) -> Segmenter | Ensemble:
    config = config.resolved(collection.declares_background, collection.bands, collection.top)
    k = len(known)
    table = np.full(256, IGNORE, np.int64)
    table[list(known)] = np.arange(k)
    if background_class:
        table[BACKGROUND] = k
    role = "dense" if dense else "train"
    annotated = collection.per_sample[role][:, table != IGNORE].sum(1)
    ids = [i for i in collection.ids(role) if annotated[i]]
    if not ids:
        raise ValueError(f"{collection.name}: no annotated pixel of the known classes to train on")
    images = _TrainingImages(collection, ids, table, role)
    patch = config.patch_side([collection.sides[i] for i in ids], collection.patch)
    members = []
    for j in range(config.ensemble):
        seed = config.seed + j
        torch.manual_seed(seed)
        net = build_network(
            config.preset,
            collection.normaliser.channels,
            k + background_class,
            features=config.features,
            encoder_weights=config.encoder_weights,
            known_head=config.known_head,
            dropout=config.dropout,
        )
        member_dir = checkpoint_dir
        if checkpoint_dir is not None and j:
            member_dir = checkpoint_dir / f"member{j}"
        members.append(
            fit(
                net,
                images,
                replace(config, seed=seed),
                patch=patch,
                counts=[int(annotated[i]) for i in ids],
                areas=[collection.sides[i][0] * collection.sides[i][1] for i in ids],
                checkpoint_dir=member_dir,
                resume=resume,
                progress=bars(progress),
            )
        )
    return members[0] if len(members) == 1 else Ensemble(members).eval()


class _TrainingImages(Sequence):
    """The training images of a fold, read one at a time: (normalised image, class indices)."""

    def __init__(self, collection: Collection, ids: list[int], table: np.ndarray, role: str):
        self.collection, self.ids, self.table, self.role = collection, ids, table, role

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        s = self.collection.load(self.ids[n])
        return self.collection.normaliser(s.image), self.table[getattr(s, self.role)]


def _per_image(
    ids: Sequence[int], compute: Callable[[int], torch.Tensor], width: int, dtype: torch.dtype
) -> Iterator[torch.Tensor]:
    """``compute(i)`` for every sample of ``ids``, in order. One process: computed lazily, one at
    a time. Several (DDP): each process computes its share and every process gets all of them in
    order, so what follows is exactly what one process would compute."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        local = {j: compute(ids[j]) for j in my_images(len(ids))}
        yield from gather_by_image(local, len(ids), width, dtype)
    else:
        for i in ids:
            yield compute(i)


UNLABELLED_SAMPLE = 200_000  # unlabelled pixels of the calibration images scored per fold, at most


@dataclass
class FittedScorer:
    """A scorer with its detectors fitted, each detector's operating points (thresholds by rule),
    the rule the K+1 map uses, the share of calibration pixels that rule keeps and, where the
    calibration images' labels are known, the true ID share among their unlabelled pixels (for
    reporting the estimate next to it; never used to fit or to choose)."""

    scorer: Scorer
    points: dict[str, OperatingPoints]
    rule: str
    calibration_tpr: dict[str, float]
    id_share_true: float | None = None

    @property
    def thresholds(self) -> dict[str, float]:
        """Each detector's threshold under the chosen rule."""
        return {d: p.thresholds[self.rule] for d, p in self.points.items()}


def fit_scorer(
    collection: Collection,
    net: Segmenter | Ensemble,
    known: Sequence[int],
    detectors: Sequence[str],
    tpr: float,
    run: Inference,
    *,
    rule: str = DEFAULT_RULE,
    ood: Sequence[int] = (),
    seed: int = 0,
    progress: Stages | None = None,
    label: str = "",
) -> FittedScorer:
    """Fit the detectors on the training annotations' outputs (streamed, image by image), then
    score the calibration images once: their held-out annotations and a seeded sample of their
    unlabelled pixels give every rule's threshold (:func:`oodseg.threshold.operating_points`).
    ``ood``: the truth values that are OOD in this fold (only to report the true ID share);
    ``label`` names the run in the progress."""
    if rule not in RULES:
        raise ValueError(f"unknown threshold rule {rule!r}; choose one of: {', '.join(RULES)}")
    k = len(known)
    table = np.full(256, IGNORE, np.int64)
    table[list(known)] = np.arange(k)
    predictor = Predictor(net.eval(), collection.normaliser, net.preset, run)
    scorer = Scorer(predictor, {d: make_detector(d) for d in detectors})
    head = net.head

    f, has_known = net.feature_channels, net.known_head is not None
    width = k + f + has_known + 1  # logits, features, known-vs-unknown logit, class index
    w, b = head.weight.detach()[:, :, 0, 0].cpu(), head.bias.detach().cpu()

    def annotated_pixels(role: str) -> Callable[[int], torch.Tensor]:
        """An image's outputs at its ``role`` annotations of the known classes, as rows."""

        def rows(i: int) -> torch.Tensor:
            s = collection.load(i)
            target = table[getattr(s, role)]
            mask = target != IGNORE
            if not mask.any():  # e.g. only the held-out class is annotated on this image
                return torch.zeros(0, width)
            out = predictor.pixels(s.image, mask, s.name)
            label = torch.from_numpy(target[mask]).float()[:, None]
            known_logit = [out.known[:, None]] if has_known else []
            return torch.cat([out.logits, out.features, *known_logit, label], 1)

        return rows

    def stream(role: str, what: str) -> Iterator[tuple[PixelOutputs, torch.Tensor]]:
        ids = collection.ids(role)
        parts = _per_image(ids, annotated_pixels(role), width, torch.float32)
        for p in track(parts, progress, f"{label}{what}", len(ids)):
            if len(p):
                known_logit = p[:, k + f] if has_known else None
                yield PixelOutputs(p[:, :k], p[:, k : k + f], w, b, known_logit), p[:, -1].long()

    scorer.fit(stream("train", "fitting the detectors"))
    if scorer.needs_calibration:
        scorer.calibrate(outputs for outputs, _ in stream("calibration", "calibrating detectors"))

    calibration_ids = collection.ids("calibration")
    per_image = -(-UNLABELLED_SAMPLE // max(1, len(calibration_ids)))
    truth_code = np.full(256, -1.0, np.float32)  # unlabelled pixels' truth: known 0, OOD 1
    truth_code[list(known)], truth_code[list(ood)] = 0, 1

    def calibration_scores(i: int) -> torch.Tensor:
        """Rows of (every detector's score, 0 for an annotation / 1 for an unlabelled pixel,
        its truth code)."""
        s = collection.load(i)
        cal = table[s.calibration] != IGNORE
        if not cal.any():
            return torch.zeros(0, len(detectors) + 2)
        unlabelled = np.flatnonzero((s.train == 0) & (s.calibration == 0))
        if len(unlabelled) > per_image:
            rng = np.random.default_rng([seed, i])
            unlabelled = np.sort(rng.choice(unlabelled, per_image, replace=False))
        at = np.r_[np.flatnonzero(cal), unlabelled]
        maps, _, _ = scorer.image_maps(s.image, s.name, classes=False)
        codes = (
            truth_code[s.calibration_truth.ravel()[unlabelled]]
            if s.calibration_truth is not None
            else np.full(len(unlabelled), -1, np.float32)
        )
        rows = np.c_[
            np.stack([maps[d].ravel()[at] for d in detectors], 1),
            np.r_[np.zeros(cal.sum()), np.ones(len(unlabelled))],
            np.r_[np.full(cal.sum(), -1), codes],
        ]
        return torch.from_numpy(rows.astype(np.float32))

    parts = list(
        track(
            _per_image(calibration_ids, calibration_scores, len(detectors) + 2, torch.float32),
            progress,
            f"{label}scoring the calibration images",
            len(calibration_ids),
        )
    )
    rows = torch.cat(parts).numpy() if parts else np.zeros((0, len(detectors) + 2), np.float32)
    is_unlabelled = rows[:, -2] == 1
    cal = rows[~is_unlabelled]
    if not len(cal):
        raise ValueError(
            f"{collection.name}: no calibration annotation of the known classes: the threshold "
            "needs held-out strokes (or val images)"
        )
    unl = rows[is_unlabelled]
    if rule == "pu" and not len(unl):
        raise ValueError(
            f"{collection.name}: the pu threshold rule needs unlabelled pixels in the "
            "calibration images; every pixel there is annotated"
        )
    points = {
        d: operating_points(cal[:, j], unl[:, j] if len(unl) else None, tpr)
        for j, d in enumerate(detectors)
    }
    kept = {
        d: float((cal[:, j] >= points[d].thresholds[rule]).mean()) for j, d in enumerate(detectors)
    }
    codes = unl[:, -1]
    known_truth = (codes >= 0).sum()
    share = float((codes == 0).sum() / known_truth) if known_truth else None
    return FittedScorer(scorer, points, rule, kept, share)


@dataclass
class Panel:
    """One test image's maps for the report: the K+1 prediction in the data set's ids (0 = OOD)
    and the score map of the first detector, with its threshold; for the viewer, the arg-max
    class (data set ids) and the softmax margin between the two likeliest classes."""

    sample: int
    prediction: np.ndarray
    score_map: np.ndarray
    threshold: float
    classes: np.ndarray
    margin: np.ndarray


@dataclass
class FoldResult:
    """One fold: a row per detector (``results.json``), what the figures need, and the panels."""

    fold: Fold
    rows: list[dict]
    figures: dict[str, dict[str, np.ndarray]]  # detector -> threshold, fpr, tpr, id / ood sample
    panels: list[Panel]
    closed_set: dict
    fully_supervised: dict | None = None  # the baseline trained on dense labels, where run


def test_pass(
    collection: Collection,
    fold: Fold,
    scorer: Scorer,
    thresholds: dict[str, float],
    *,
    seed: int = 0,
    candidates: dict[str, np.ndarray] | None = None,
    background_class: bool = False,
    progress: Stages | None = None,
    label: str = "",
) -> tuple[dict[str, ScoreTally], np.ndarray, list[Panel]]:
    """Score every test image once: per detector a tally of the ID and OOD test pixels' scores
    and of the K+1 map (the arg-max where the score passes the threshold, K elsewhere; with
    ``background_class``, the arg-max of a network whose class K is the background) and, given
    ``candidates`` (detector -> thresholds), the K+1 map's quality at each of them; the
    closed-set confusion matrix; and the panels. ``label`` names the run in the progress."""
    k, table = fold.k, fold.index()
    candidates = candidates or {}
    tallies = {d: ScoreTally(k, seed, candidates.get(d)) for d in scorer.detectors}
    closed = np.zeros((k + 1, k + 1), np.int64)
    panels = []
    first = next(iter(scorer.detectors))
    panel_ids = set(collection.panel_ids)
    for i in track(collection.ids("truth"), progress, f"{label}scoring the test images"):
        s = collection.load(i)
        truth = table[s.truth]
        scored = truth != IGNORE
        if not scored.any() and i not in panel_ids:
            continue
        maps, argmax, margin = scorer.image_maps(s.image, s.name, margin=i in panel_ids)
        t, is_ood = truth[scored], truth[scored] == k
        closed += confusion_matrix(t, argmax[scored], k + 1)
        for name, smap in maps.items():
            pred = argmax if background_class else np.where(smap >= thresholds[name], argmax, k)
            v = smap[scored]
            tallies[name].add(v[~is_ood], v[is_ood], t, pred[scored], v, argmax[scored])
            if name == first and i in panel_ids:
                ids_of = np.r_[np.asarray(fold.known), 0]  # K+1 index -> data set id, OOD -> 0
                panels.append(
                    Panel(
                        i,
                        ids_of[pred],
                        smap.astype(np.float32),
                        thresholds[name],
                        ids_of[argmax],
                        margin,
                    )
                )
    return tallies, closed, panels


def fold_rows(
    collection: Collection,
    fold: Fold,
    tallies: dict[str, ScoreTally],
    closed: np.ndarray,
    fitted: FittedScorer,
) -> tuple[list[dict], dict[str, dict[str, np.ndarray]]]:
    """A results row and the figure data per detector. Besides the metrics at the chosen rule's
    threshold, a row holds each rule's operating point and the oracle's (the candidate threshold
    with the best balanced accuracy on the test truth) as ``RULE:METRIC``."""
    names = [*(collection.class_names[c - 1] for c in fold.known), "OOD"]
    closed_miou = segmentation_from_confusion(closed)["miou"]
    rows, figures = [], {}
    for det, tally in tallies.items():
        ood, roc = tally.ood_result()
        cm = tally.confusion
        seg = segmentation_from_confusion(cm)
        n_id, n_ood = int(cm[:-1].sum()), int(cm[-1].sum())
        id_kept = cm[:-1, :-1].sum() / max(n_id, 1)
        ood_recall = cm[-1, -1] / max(n_ood, 1)
        points = fitted.points[det]
        row = {
            "held_out": fold.name,
            "detector": det,
            **ood,
            "threshold": fitted.thresholds[det],
            "threshold_rule": fitted.rule,
            "id_accuracy": float(np.trace(cm[:-1, :-1]) / max(n_id, 1)),
            "closed_set_accuracy": float(np.trace(closed[:-1, :-1]) / max(n_id, 1)),
            "closed_set_miou": closed_miou,  # the K+1 map with nothing rejected
            "ood_recall": float(ood_recall),
            "test_tpr": float(id_kept),
            "balanced_accuracy": float((id_kept + ood_recall) / 2),
            "miou_k_plus_1": seg["miou"],
            "mdice_k_plus_1": seg["mdice"],
            "calibration_tpr": fitted.calibration_tpr[det],
            "id_share_estimate": points.id_share,
            "id_share_true": fitted.id_share_true,
            "detector_seconds": fitted.scorer.seconds[det],
            "n_id": n_id,
            "n_ood": n_ood,
            "iou_k_plus_1": iou_by_class(seg["iou"], names),
        }
        operating = {r: tally.sweep.at(t) for r, t in points.thresholds.items()}
        operating["oracle"] = tally.sweep.best()
        for rule, values in operating.items():
            row |= {f"{rule}:{m}": values[m] for m in OPERATING_METRICS}
        if len(tally.per_image) > 1 or collection.size > 1:
            row["auroc_per_image"] = (
                float(np.mean(tally.per_image)) if tally.per_image else float("nan")
            )
            row["images_with_both"] = len(tally.per_image)
        rows.append(row)
        figures[det] = {
            "threshold": np.asarray(fitted.thresholds[det]),
            # (FPR, TPR) of each rule's operating point and the oracle's, NaN for a rule not run.
            "operating": np.array(
                [
                    [1 - operating[r]["ood_recall"], operating[r]["test_tpr"]]
                    if r in operating
                    else [np.nan, np.nan]
                    for r in (*RULES, "oracle")
                ]
            ),
            "fpr": roc.fpr,
            "tpr": roc.tpr,
            "id_scores": tally.sample[0],
            "ood_scores": tally.sample[1],
        }
    return rows, figures


def iou_by_class(iou: np.ndarray, names: list[str]) -> dict[str, float | None]:
    """Per-class IoU for JSON: None where a class has no pixel in truth or prediction."""
    return {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, iou, strict=True)}


def closed_set_row(collection: Collection, fold: Fold, closed: np.ndarray) -> dict:
    """The closed-set network: every pixel takes its arg-max class, nothing is OOD."""
    seg = segmentation_from_confusion(closed)
    names = [*(collection.class_names[c - 1] for c in fold.known), "OOD"]
    n_id = max(int(closed[:-1].sum()), 1)
    return {
        "method": "closed-set arg-max (no OOD)",
        "auroc": None,
        "fpr95": None,
        "id_accuracy": float(np.trace(closed[:-1, :-1]) / n_id),
        "test_tpr": 1.0,
        "ood_recall": 0.0,
        "balanced_accuracy": 0.5,
        "miou_k_plus_1": seg["miou"],
        "mdice_k_plus_1": seg["mdice"],
        "iou_k_plus_1": iou_by_class(seg["iou"], names),
    }


def run_fold(
    collection: Collection,
    fold: Fold,
    config: TrainConfig,
    scoring: ScoringConfig,
    detectors: Sequence[str],
    *,
    baseline: bool = False,
    progress: Stages | None = None,
    net: Segmenter | Ensemble | None = None,
) -> FoldResult:
    """Train without the OOD classes, fit and calibrate every detector (the K+1 map at the
    threshold of ``scoring``'s rule), score the test pixels; with ``baseline``, also the fully
    supervised network of the fold (:func:`fully_supervised`). ``net``: the fold's network,
    already trained by :func:`train_network` (scoring levers are then compared on one network)."""
    run = Inference.of(config, scoring)
    if net is None:
        net = train_network(collection, fold.known, config, progress=progress)
    fitted = fit_scorer(
        collection,
        net,
        fold.known,
        detectors,
        scoring.tpr,
        run,
        rule=scoring.threshold,
        ood=fold.ood,
        seed=config.seed,
        progress=progress,
    )
    tallies, closed, panels = test_pass(
        collection,
        fold,
        fitted.scorer,
        fitted.thresholds,
        seed=config.seed,
        candidates={d: p.candidates for d, p in fitted.points.items()},
        progress=progress,
    )
    rows, figures = fold_rows(collection, fold, tallies, closed, fitted)
    # The dense baseline learns no known-vs-unknown head: its map takes the first other detector.
    dense_detector = next((d for d in detectors if d != KnownHead.name), "gen")
    full = (
        fully_supervised(collection, fold, config, scoring, dense_detector, progress=progress)
        if baseline
        else None
    )
    return FoldResult(fold, rows, figures, panels, closed_set_row(collection, fold, closed), full)


class _BackgroundProbability(LogitDetector):
    """1 - P(background), the background being the network's last class (fully supervised)."""

    name = "background_probability"

    def score_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return 1 - logits.softmax(dim=1)[:, -1]


def fully_supervised(
    collection: Collection,
    fold: Fold,
    config: TrainConfig,
    scoring: ScoringConfig,
    detector: str,
    *,
    progress: Stages | None = None,
) -> dict:
    """The upper bound that needs the expensive labels: a network trained on the dense labels of
    the training images. Where the OOD truth is the declared background, background is one more
    class: a test pixel is OOD where it wins, and 1 - P(background) ranks the pixels. Where it is
    a held-out class (loco), the network learns the known classes' dense labels and ``detector``
    and ``scoring``'s threshold rule make its K+1 map, as for the sparse annotations."""
    config = replace(config, unlabelled="ignore")  # every pixel of a class is labelled here
    with_background = fold.protocol == "background"
    label = "fully supervised: "
    net = train_network(
        collection,
        fold.known,
        config,
        dense=True,
        background_class=with_background,
        progress=progress,
        label=label,
    )
    run = Inference.of(config, scoring)
    rule = scoring.threshold
    if with_background:
        predictor = Predictor(net.eval(), collection.normaliser, net.preset, run)
        scorer = Scorer(predictor, {detector: _BackgroundProbability()})
        thresholds = {detector: 0.5}
        how = "background as a class"
    else:
        fitted = fit_scorer(
            collection,
            net,
            fold.known,
            [detector],
            scoring.tpr,
            run,
            rule=rule,
            seed=config.seed,
            progress=progress,
            label=label,
        )
        scorer, thresholds = fitted.scorer, fitted.thresholds
        how = f"{detector}, {rule} threshold"
    tallies, _, _ = test_pass(
        collection,
        fold,
        scorer,
        thresholds,
        seed=config.seed,
        # With background as a class, background (index K) wins or not: it is the OOD call.
        background_class=with_background,
        progress=progress,
        label=label,
    )
    tally = tallies[detector]
    ood, _ = tally.ood_result()
    seg = segmentation_from_confusion(tally.confusion)
    cm = tally.confusion
    names = [*(collection.class_names[c - 1] for c in fold.known), "OOD"]
    id_kept = cm[:-1, :-1].sum() / max(int(cm[:-1].sum()), 1)
    ood_recall = float(cm[-1, -1] / max(int(cm[-1].sum()), 1))
    return {
        "method": f"fully supervised ({how}; dense masks)",
        "auroc": ood["auroc"],
        "fpr95": ood["fpr95"],
        "id_accuracy": float(np.trace(cm[:-1, :-1]) / max(int(cm[:-1].sum()), 1)),
        "test_tpr": float(id_kept),
        "ood_recall": ood_recall,
        "balanced_accuracy": float((id_kept + ood_recall) / 2),
        "miou_k_plus_1": seg["miou"],
        "mdice_k_plus_1": seg["mdice"],
        "iou_k_plus_1": iou_by_class(seg["iou"], names),
    }
