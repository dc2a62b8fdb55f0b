"""Evaluation: exact ID-vs-OOD separation metrics and segmentation quality of the K+1 map.

Convention: **ID pixels are the positive class** and a higher score means more in-distribution.
AUPR-In is the area under the precision-recall curve with ID positive, AUPR-Out with OOD positive
(scores negated); both by the trapezoidal rule over the curve's points, as in pytorch-ood and OpenOOD.
AP is the step-wise average precision with ID positive (scikit-learn's ``average_precision_score``).
FPR95 is the share of OOD pixels kept (score >= threshold) at the first threshold whose TPR >= 0.95.

Everything works on counts per group of tied scores, in float64: ``ood_metrics`` groups by exact value
after one sort (exact for ties and for scores of any magnitude); :class:`ScoreHistogram` groups by
fine, order-preserving bins and streams, for 10^8 pixels and more in bounded memory with a reported
AUROC error bound. We write them ourselves because no library gives all of them from one sort, nor a
streaming form with a stated error.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Curve:
    """Cumulative true and false positives at each distinct threshold, highest score first."""

    tps: np.ndarray
    fps: np.ndarray

    @classmethod
    def from_counts(cls, pos: np.ndarray, neg: np.ndarray) -> Curve:
        """From positive and negative counts per group of tied scores, highest score first."""
        return cls(np.cumsum(pos, dtype=np.float64), np.cumsum(neg, dtype=np.float64))

    @property
    def tpr(self) -> np.ndarray:
        return np.r_[0.0, self.tps / self.tps[-1]]

    @property
    def fpr(self) -> np.ndarray:
        return np.r_[0.0, self.fps / self.fps[-1]]


def tie_groups(positive: np.ndarray, negative: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positive and negative counts per distinct score, highest score first (exact, one sort)."""
    pos = np.asarray(positive, np.float64).ravel()
    neg = np.asarray(negative, np.float64).ravel()
    if pos.size == 0 or neg.size == 0:
        raise ValueError(f"need both ID and OOD scores, got {pos.size} ID and {neg.size} OOD")
    if not (np.isfinite(pos).all() and np.isfinite(neg).all()):
        raise ValueError("scores contain NaN or infinity")
    scores = np.concatenate([pos, neg])
    is_pos = np.concatenate([np.ones(pos.size, np.int64), np.zeros(neg.size, np.int64)])
    order = np.argsort(-scores, kind="stable")
    scores, is_pos = scores[order], is_pos[order]
    starts = np.r_[0, np.flatnonzero(np.diff(scores)) + 1]
    n_pos = np.add.reduceat(is_pos, starts)
    return n_pos, np.diff(np.r_[starts, scores.size]) - n_pos


def _aupr(curve: Curve) -> tuple[float, float]:
    """(area under the PR curve by trapezoids, step-wise average precision) of a curve."""
    precision = curve.tps / (curve.tps + curve.fps)
    recall = curve.tps / curve.tps[-1]
    # Stop at the first point of full recall, and start from (recall 0, precision 1).
    stop = int(np.searchsorted(curve.tps, curve.tps[-1])) + 1
    p, r = np.r_[1.0, precision[:stop]], np.r_[0.0, recall[:stop]]
    return float(np.trapezoid(p, r)), float(np.sum(np.diff(r) * p[1:]))


def metrics_from_counts(
    pos: np.ndarray, neg: np.ndarray, tpr_level: float = 0.95
) -> dict[str, float]:
    """AUROC, AUPR-In, AUPR-Out, AP and FPR at ``tpr_level`` from ID (``pos``) and OOD (``neg``)
    counts per group of tied scores, highest score first."""
    if pos.sum() == 0 or neg.sum() == 0:
        raise ValueError(
            f"need both ID and OOD scores, got {int(pos.sum())} ID and {int(neg.sum())} OOD"
        )
    curve = Curve.from_counts(pos, neg)
    tpr, fpr = curve.tpr, curve.fpr
    aupr_in, ap = _aupr(curve)
    # OOD as the positive class with negated scores: the same groups in reverse order.
    aupr_out, _ = _aupr(Curve.from_counts(neg[::-1], pos[::-1]))
    return {
        "auroc": float(np.trapezoid(tpr, fpr)),
        "aupr_in": aupr_in,
        "aupr_out": aupr_out,
        "ap": ap,
        "fpr95": float(fpr[np.searchsorted(tpr, tpr_level - 1e-12)]),
    }


def ood_metrics(
    id_scores: np.ndarray, ood_scores: np.ndarray, tpr_level: float = 0.95
) -> dict[str, float]:
    """Exact AUROC, AUPR-In, AUPR-Out, AP and FPR at ``tpr_level`` TPR of ID vs OOD scores."""
    return metrics_from_counts(*tie_groups(id_scores, ood_scores), tpr_level)


def per_image_ood_metrics(
    images: Iterable[tuple[np.ndarray, np.ndarray]], tpr_level: float = 0.95
) -> dict[str, float]:
    """Each metric averaged over the images (ID scores, OOD scores) that hold both kinds of pixel;
    ``n_images`` says how many did."""
    per_image = [ood_metrics(i, o, tpr_level) for i, o in images if np.size(i) and np.size(o)]
    if not per_image:
        raise ValueError("no image holds both ID and OOD pixels")
    mean = {k: float(np.mean([m[k] for m in per_image])) for k in per_image[0]}
    return {**mean, "n_images": len(per_image)}


class ScoreHistogram:
    """Streaming ID / OOD score counts for metrics over 10^8 pixels and more in bounded memory.

    Scores are cast to float32 and binned by the top ``bits`` bits of their order-preserving integer
    key, so bins are ordered like the scores and *relatively* narrow at every magnitude (``bits`` − 9
    mantissa bits): no score range is needed in advance and huge offsets (Energy of 10^4) lose
    nothing but float32 precision. Each bin counts as one group of tied scores; the AUROC can differ
    from the exact value only through ID/OOD pairs sharing a bin, at most half of them:
    ``auroc_error_bound`` reports that bound for the data seen.
    """

    def __init__(self, bits: int = 22):
        if not 10 <= bits <= 26:
            raise ValueError(f"histogram bits must be between 10 and 26, got {bits}")
        self.bits = bits
        self.id_counts_ = np.zeros(2**bits, np.int64)
        self.ood_counts_ = np.zeros(2**bits, np.int64)

    def _bins(self, scores: np.ndarray) -> np.ndarray:
        s = np.asarray(scores, np.float32).ravel()
        if not np.isfinite(s).all():
            raise ValueError("scores contain NaN or infinity")
        key = s.view(np.uint32)
        # Order-preserving map of float32 bit patterns: flip every bit of negatives, the sign of others.
        key = np.where(key >> 31 == 1, ~key, key | np.uint32(0x80000000))
        return key >> np.uint32(32 - self.bits)

    def update(self, id_scores: np.ndarray, ood_scores: np.ndarray) -> ScoreHistogram:
        """Add a batch of ID and OOD scores (either may be empty)."""
        self.id_counts_ += np.bincount(self._bins(id_scores), minlength=2**self.bits)
        self.ood_counts_ += np.bincount(self._bins(ood_scores), minlength=2**self.bits)
        return self

    def compute(self, tpr_level: float = 0.95) -> dict[str, float]:
        """The metrics of every score seen, and the AUROC error bound."""
        used = (self.id_counts_ + self.ood_counts_) > 0
        pos, neg = self.id_counts_[used][::-1], self.ood_counts_[used][::-1]
        result = metrics_from_counts(pos, neg, tpr_level)
        shared = float(np.dot(pos.astype(np.float64), neg)) / (float(pos.sum()) * float(neg.sum()))
        return {**result, "auroc_error_bound": 0.5 * shared}


EXACT_LIMIT = 10_000_000  # scored pixels kept for exact metrics before the histogram takes over
FIGURE_SAMPLE = 200_000  # scores kept per side for histogram figures (seeded, uniform)


class ScoreTally:
    """One detector's test results, streamed image by image: ID / OOD scores (exact up to
    :data:`EXACT_LIMIT` pixels, then a :class:`ScoreHistogram`), a seeded subsample for the
    histograms, the K+1 confusion matrix and per-image AUROCs."""

    def __init__(self, k: int, seed: int):
        self.k = k
        self.exact: tuple[list, list] | None = ([], [])
        self.histogram: ScoreHistogram | None = None
        self.n = 0
        self.confusion = np.zeros((k + 1, k + 1), np.int64)
        self.per_image: list[float] = []
        self.sample = [np.zeros(0, np.float32), np.zeros(0, np.float32)]
        self.keys = [np.zeros(0), np.zeros(0)]
        self.rng = np.random.default_rng(seed)

    def add(self, id_s: np.ndarray, ood_s: np.ndarray, truth: np.ndarray, pred: np.ndarray):
        self.confusion += confusion_matrix(truth, pred, self.k + 1)
        if len(id_s) and len(ood_s):
            self.per_image.append(ood_metrics(id_s, ood_s)["auroc"])
        self.n += len(id_s) + len(ood_s)
        if self.exact is not None:
            self.exact[0].append(id_s.astype(np.float32))
            self.exact[1].append(ood_s.astype(np.float32))
            if self.n > EXACT_LIMIT:
                self.histogram = ScoreHistogram()
                self.histogram.update(np.concatenate(self.exact[0]), np.concatenate(self.exact[1]))
                self.exact = None
        else:
            self.histogram.update(id_s, ood_s)
        for side, s in enumerate((id_s, ood_s)):
            keys = np.r_[self.keys[side], self.rng.random(len(s))]
            values = np.r_[self.sample[side], s.astype(np.float32)]
            if len(keys) > FIGURE_SAMPLE:
                keep = np.argpartition(keys, FIGURE_SAMPLE)[:FIGURE_SAMPLE]
                keys, values = keys[keep], values[keep]
            self.keys[side], self.sample[side] = keys, values

    def groups(self) -> tuple[np.ndarray, np.ndarray]:
        """ID and OOD counts per group of tied scores, highest first (bins beyond the limit)."""
        if self.exact is not None:
            return tie_groups(np.concatenate(self.exact[0]), np.concatenate(self.exact[1]))
        used = (self.histogram.id_counts_ + self.histogram.ood_counts_) > 0
        return self.histogram.id_counts_[used][::-1], self.histogram.ood_counts_[used][::-1]

    def ood_result(self) -> tuple[dict, Curve]:
        """The separation metrics, with the AUROC error bound where the histogram was taken."""
        groups = self.groups()
        result = metrics_from_counts(*groups)
        result["auroc_error_bound"] = (
            0.0 if self.exact is not None else self.histogram.compute()["auroc_error_bound"]
        )
        return result, Curve.from_counts(*groups)


def confusion_matrix(truth: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) counts, rows = truth."""
    truth, pred = np.asarray(truth, np.int64).ravel(), np.asarray(pred, np.int64).ravel()
    return np.bincount(truth * num_classes + pred, minlength=num_classes**2).reshape(
        num_classes, num_classes
    )


def segmentation_metrics(
    truth: np.ndarray, pred: np.ndarray, num_classes: int
) -> dict[str, np.ndarray | float]:
    """Per-class IoU and Dice (NaN for a class in neither map), their means over the classes present,
    and overall accuracy."""
    return segmentation_from_confusion(confusion_matrix(truth, pred, num_classes))


def segmentation_from_confusion(confusion: np.ndarray) -> dict[str, np.ndarray | float]:
    """:func:`segmentation_metrics` from a confusion matrix (rows = truth), so that it can be
    accumulated image by image."""
    cm = np.asarray(confusion, np.float64)
    tp = np.diag(cm)
    in_truth, in_pred = cm.sum(axis=1), cm.sum(axis=0)
    union = in_truth + in_pred - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        dice = np.where(union > 0, 2 * tp / (in_truth + in_pred), np.nan)
    return {
        "iou": iou,
        "dice": dice,
        "miou": float(np.nanmean(iou)),
        "mdice": float(np.nanmean(dice)),
        "accuracy": float(tp.sum() / cm.sum()),
    }
