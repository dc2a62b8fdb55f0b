"""Evaluation: exact ID-vs-OOD separation metrics and segmentation quality of the K+1 map.

Convention: **ID pixels are the positive class** and a higher score means more in-distribution.
AUPR-In is the area under the precision-recall curve with ID positive, AUPR-Out with OOD positive
(scores negated); both by the trapezoidal rule over the curve's points, as in pytorch-ood and OpenOOD.
AP is the step-wise average precision with ID positive (scikit-learn's ``average_precision_score``).
FPR95 is the share of OOD pixels kept (score >= threshold) at the first threshold whose TPR >= 0.95.

Everything works on counts per group of tied scores: ``ood_metrics`` groups by exact value (each
side sorted once, in its own precision; exact for ties and for scores of any magnitude);
:class:`ScoreHistogram` groups by fine, order-preserving bins and streams, for 10^8 pixels and more
in bounded memory with a reported AUROC error bound. The curves are summed in float64 over chunks
of groups, so memory stays a few times the scores' own size. We write them ourselves because no
library gives all of them from one sort, nor a streaming form with a stated error.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from oodseg.config import RULES

# The metrics of a results row, per fold and detector (what cross-validation reports).
METRICS = (
    "auroc",
    "aupr_in",
    "aupr_out",
    "ap",
    "fpr95",
    "threshold",
    "id_accuracy",
    "closed_set_accuracy",
    "ood_recall",
    "test_tpr",
    "balanced_accuracy",
    "miou_k_plus_1",
    "mdice_k_plus_1",
)
# Each threshold rule's operating point and the oracle's (``RULE:METRIC`` in a fold row), and the
# ID share among the unlabelled pixels: estimated (per detector) and true.
OPERATING_METRICS = ("threshold", "test_tpr", "ood_recall", "balanced_accuracy", "miou_k_plus_1")
OPERATING = tuple(f"{rule}:{m}" for rule in (*RULES, "oracle") for m in OPERATING_METRICS) + (
    "id_share_estimate",
    "id_share_true",
)
BASELINE_METRICS = (
    "auroc",
    "fpr95",
    "id_accuracy",
    "test_tpr",
    "ood_recall",
    "balanced_accuracy",
    "miou_k_plus_1",
    "mdice_k_plus_1",
)

CHUNK = 1 << 20  # scores merged, and groups of tied scores summed, at a time
CURVE_POINTS = 2000  # ROC points kept for figures: a step of 1/2000 in FPR or TPR


@dataclass(frozen=True)
class Roc:
    """A ROC curve from (0, 0) to (1, 1), thinned for figures to the points where the FPR or the
    TPR crosses a multiple of 1 / ``CURVE_POINTS`` (the metrics use every point)."""

    fpr: np.ndarray
    tpr: np.ndarray


def _finite(scores: np.ndarray) -> np.ndarray:
    s = np.asarray(scores).ravel()
    if not np.issubdtype(s.dtype, np.floating):
        s = s.astype(np.float64)
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinity")
    return s


def tie_groups(positive: np.ndarray, negative: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positive and negative counts per distinct score, highest score first (exact). Each side is
    sorted once, in the precision of both (float32 scores stay float32); then, block by block of
    scores, one search places the negatives among the positives, a linear merge of the two sorted
    runs finds the runs of equal values, and a block without ties (continuous scores) is counted
    without a reduction (``np.union1d`` and its two searches took about a third of the time at
    3 x 10^7, ``np.add.reduceat`` over the runs another). Blocks are cut at every ``CHUNK``-th
    score of either side, so no run of ties straddles two and the merge's temporaries stay small;
    the counts are int32 where they fit."""
    pos, neg = _finite(positive), _finite(negative)
    if pos.size == 0 or neg.size == 0:
        raise ValueError(f"need both ID and OOD scores, got {pos.size} ID and {neg.size} OOD")
    dtype = np.result_type(pos.dtype, neg.dtype)
    pos, neg = np.sort(pos.astype(dtype, copy=False)), np.sort(neg.astype(dtype, copy=False))
    cuts = np.unique(np.r_[pos[CHUNK - 1 :: CHUNK], neg[CHUNK - 1 :: CHUNK]])
    pos_ends = np.r_[np.searchsorted(pos, cuts, "right"), pos.size]
    neg_ends = np.r_[np.searchsorted(neg, cuts, "right"), neg.size]
    total = pos.size + neg.size
    count = np.int32 if total < 2**31 else np.int64
    n_pos, n_neg = np.empty(total, count), np.empty(total, count)
    groups = p0 = q0 = 0
    for p1, q1 in zip(pos_ends, neg_ends, strict=True):
        p, q = pos[p0:p1], neg[q0:q1]
        if p.size + q.size == 0:  # the last block, when the highest score is a cut
            continue
        is_neg = np.zeros(p.size + q.size, bool)
        is_neg[np.searchsorted(p, q) + np.arange(q.size)] = True  # a negative's merged place
        merged = np.concatenate((p, q))
        merged.sort(kind="stable")  # two sorted runs: one linear merge (timsort)
        tied = merged[1:] == merged[:-1]
        end = groups + merged.size - int(np.count_nonzero(tied))
        if end - groups == merged.size:  # no ties, the common case: one group per score
            n_neg[groups:end], n_pos[groups:end] = is_neg, ~is_neg
        else:
            bounds = np.r_[0, np.flatnonzero(~tied) + 1, merged.size]
            negatives_before = np.r_[0, np.cumsum(is_neg, dtype=count)][bounds]
            n_neg[groups:end] = np.diff(negatives_before)
            n_pos[groups:end] = np.diff(bounds) - n_neg[groups:end]
        groups, p0, q0 = end, p1, q1
    return n_pos[:groups][::-1], n_neg[:groups][::-1]


def separation(
    pos: np.ndarray, neg: np.ndarray, tpr_level: float = 0.95
) -> tuple[dict[str, float], Roc]:
    """AUROC, AUPR-In, AUPR-Out, AP and FPR at ``tpr_level`` from ID (``pos``) and OOD (``neg``)
    counts per group of tied scores, highest score first, and the thinned ROC curve.

    Each area is a sum over the groups (a trapezoid, or AP's step, as wide as the group's share of
    one side), so one pass over the cumulative counts, chunk by chunk, gives them all. The
    cumulative counts are float64, exact below 2^53."""
    n_pos, n_neg = float(np.sum(pos, dtype=np.float64)), float(np.sum(neg, dtype=np.float64))
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"need both ID and OOD scores, got {int(n_pos)} ID and {int(n_neg)} OOD")
    auroc = aupr_in = ap = aupr_out = 0.0
    fpr95 = 0.0 if tpr_level - 1e-12 <= 0 else None
    # Precision of the point before the first group: the PR curves start at (recall 0, precision
    # 1); for OOD positive that point holds every pixel, seen from the lowest score up.
    last_in, last_out = 1.0, n_neg / (n_pos + n_neg)
    # Figures keep the first point at or past each multiple of 1 / CURVE_POINTS in TPR or FPR.
    steps = np.arange(1, CURVE_POINTS + 1) / CURVE_POINTS
    kept_fpr, kept_tpr = [np.zeros(1)], [np.zeros(1)]
    tp = fp = 0.0
    for a in range(0, len(pos), CHUNK):
        p, q = pos[a : a + CHUNK].astype(np.float64), neg[a : a + CHUNK].astype(np.float64)
        tps, fps = tp + np.cumsum(p), fp + np.cumsum(q)
        seen = tps + fps
        auroc += 2 * float(q @ tps) - float(q @ p)  # q wide, (TP before + TP after) / 2 high
        precision = tps / seen
        step = float(p @ precision)  # AP's steps: each group's precision after it
        ap += step
        aupr_in += step + float(p[1:] @ precision[:-1]) + float(p[0] * last_in)
        # OOD positive: precision of the pixels below each group (none below the lowest: 1).
        below = (n_pos + n_neg) - seen
        with np.errstate(invalid="ignore", divide="ignore"):
            out = (n_neg - fps) / below
        if below[-1] == 0:
            out[below == 0] = 1.0
        aupr_out += float(q @ out) + float(q[1:] @ out[:-1]) + float(q[0] * last_out)
        if fpr95 is None and tps[-1] / n_pos >= tpr_level - 1e-12:
            i = int(np.searchsorted(tps / n_pos, tpr_level - 1e-12))
            fpr95 = float(fps[i] / n_neg)
        moved = np.unique(
            np.r_[
                np.searchsorted(tps, steps[steps * n_pos > tp] * n_pos),
                np.searchsorted(fps, steps[steps * n_neg > fp] * n_neg),
            ]
        )
        moved = moved[moved < len(tps)]
        kept_fpr.append(fps[moved] / n_neg)
        kept_tpr.append(tps[moved] / n_pos)
        tp, fp, last_in, last_out = tps[-1], fps[-1], precision[-1], out[-1]
    roc = Roc(np.r_[np.concatenate(kept_fpr), 1.0], np.r_[np.concatenate(kept_tpr), 1.0])
    return {
        "auroc": auroc / (2 * n_pos * n_neg),
        "aupr_in": aupr_in / (2 * n_pos),
        "aupr_out": aupr_out / (2 * n_neg),
        "ap": ap / n_pos,
        "fpr95": 1.0 if fpr95 is None else fpr95,
    }, roc


def metrics_from_counts(
    pos: np.ndarray, neg: np.ndarray, tpr_level: float = 0.95
) -> dict[str, float]:
    """:func:`separation`'s metrics alone."""
    return separation(pos, neg, tpr_level)[0]


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
    ``auroc_error_bound`` reports that bound for the data seen. Counts are int32 (16 MiB a side at
    22 bits) until a bin would overflow, then int64.
    """

    def __init__(self, bits: int = 22):
        if not 10 <= bits <= 26:
            raise ValueError(f"histogram bits must be between 10 and 26, got {bits}")
        self.bits = bits
        self.id_counts_ = np.zeros(2**bits, np.int32)
        self.ood_counts_ = np.zeros(2**bits, np.int32)

    def _bins(self, scores: np.ndarray) -> np.ndarray:
        s = np.asarray(scores, np.float32).ravel()
        if not np.isfinite(s).all():
            raise ValueError("scores contain NaN or infinity")
        key = s.view(np.uint32)
        # Order-preserving map of float32 bit patterns: flip every bit of negatives, the sign of others.
        key = np.where(key >> 31 == 1, ~key, key | np.uint32(0x80000000))
        return key >> np.uint32(32 - self.bits)

    def _add(self, counts: np.ndarray, scores: np.ndarray) -> np.ndarray:
        bins, n = np.unique(self._bins(scores), return_counts=True)
        if len(n) and counts.dtype == np.int32 and int(counts[bins].max()) + int(n.max()) >= 2**31:
            counts = counts.astype(np.int64)
        counts[bins] += n.astype(counts.dtype)
        return counts

    def update(self, id_scores: np.ndarray, ood_scores: np.ndarray) -> ScoreHistogram:
        """Add a batch of ID and OOD scores (either may be empty)."""
        self.id_counts_ = self._add(self.id_counts_, id_scores)
        self.ood_counts_ = self._add(self.ood_counts_, ood_scores)
        return self

    def groups(self) -> tuple[np.ndarray, np.ndarray]:
        """ID and OOD counts per occupied bin, highest score first."""
        used = np.flatnonzero((self.id_counts_ > 0) | (self.ood_counts_ > 0))[::-1]
        return self.id_counts_[used].astype(np.int64), self.ood_counts_[used].astype(np.int64)

    def error_bound(self) -> float:
        """Half the share of ID / OOD pairs that share a bin: the most the AUROC can be off."""
        pos, neg = self.groups()
        shared = float(np.dot(pos.astype(np.float64), neg))
        return 0.5 * shared / (float(pos.sum()) * float(neg.sum()))

    def compute(self, tpr_level: float = 0.95) -> dict[str, float]:
        """The metrics of every score seen, and the AUROC error bound."""
        result = metrics_from_counts(*self.groups(), tpr_level)
        return {**result, "auroc_error_bound": self.error_bound()}


EXACT_LIMIT = 2_000_000  # scored pixels kept for exact metrics before the histogram takes over
FIGURE_SAMPLE = 200_000  # scores kept per side for histogram figures (seeded, uniform)


class Reservoir:
    """A seeded uniform sample of at most ``size`` values of a stream: every value draws a random
    key and the values with the smallest keys are kept."""

    def __init__(self, size: int, rng: np.random.Generator):
        self.size, self.rng = size, rng
        self.keys = np.zeros(0)
        self.values = np.zeros(0, np.float32)

    def add(self, values: np.ndarray) -> None:
        keys = np.r_[self.keys, self.rng.random(len(values))]
        kept = np.r_[self.values, np.asarray(values, np.float32).ravel()]
        if len(keys) > self.size:
            keep = np.argpartition(keys, self.size)[: self.size]
            keys, kept = keys[keep], kept[keep]
        self.keys, self.values = keys, kept


class ScoreTally:
    """One detector's test results, streamed image by image: ID / OOD scores (exact up to
    :data:`EXACT_LIMIT` pixels, then a :class:`ScoreHistogram`), a seeded subsample for the
    histograms, the K+1 confusion matrix at the threshold, per-image AUROCs and, given candidate
    thresholds, a :class:`ThresholdSweep`."""

    def __init__(self, k: int, seed: int, candidates: np.ndarray | None = None):
        self.k = k
        self.exact: tuple[list, list] | None = ([], [])
        self.histogram: ScoreHistogram | None = None
        self.n = 0
        self.confusion = np.zeros((k + 1, k + 1), np.int64)
        self.per_image: list[float] = []
        rng = np.random.default_rng(seed)
        self.samples = (Reservoir(FIGURE_SAMPLE, rng), Reservoir(FIGURE_SAMPLE, rng))
        self.sweep = ThresholdSweep(candidates, k) if candidates is not None else None

    @property
    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        """The seeded subsample of ID and OOD scores (for figures)."""
        return self.samples[0].values, self.samples[1].values

    def add(
        self,
        id_s: np.ndarray,
        ood_s: np.ndarray,
        truth: np.ndarray,
        pred: np.ndarray,
        scores: np.ndarray | None = None,
        argmax: np.ndarray | None = None,
    ) -> None:
        """One image's scored pixels: ID and OOD scores, the K+1 truth and prediction, and (for
        the sweep) every scored pixel's score and closed-set class in the order of ``truth``."""
        self.confusion += confusion_matrix(truth, pred, self.k + 1)
        if self.sweep is not None:
            self.sweep.add(scores, truth, argmax)
        if len(id_s) and len(ood_s):
            self.per_image.append(ood_metrics(id_s, ood_s)["auroc"])
        self.n += len(id_s) + len(ood_s)
        if self.exact is not None:
            self.exact[0].append(id_s.astype(np.float32))
            self.exact[1].append(ood_s.astype(np.float32))
            if self.n > EXACT_LIMIT:
                self.histogram = ScoreHistogram()
                for i, o in zip(*self.exact, strict=True):
                    self.histogram.update(i, o)
                self.exact = None
        else:
            self.histogram.update(id_s, ood_s)
        self.samples[0].add(id_s)
        self.samples[1].add(ood_s)

    def groups(self) -> tuple[np.ndarray, np.ndarray]:
        """ID and OOD counts per group of tied scores, highest first (bins beyond the limit)."""
        if self.exact is not None:
            return tie_groups(np.concatenate(self.exact[0]), np.concatenate(self.exact[1]))
        return self.histogram.groups()

    def ood_result(self) -> tuple[dict, Roc]:
        """The separation metrics, with the AUROC error bound where the histogram was taken,
        and the (thinned) ROC curve."""
        result, roc = separation(*self.groups())
        result["auroc_error_bound"] = (
            0.0 if self.exact is not None else self.histogram.error_bound()
        )
        return result, roc


class ThresholdSweep:
    """The K+1 map's quality at every one of a set of candidate thresholds, streamed: per interval
    between candidates, the scored pixels' counts per truth class, and per closed-set class the
    pixels predicted and those predicted right. A pixel is kept (its arg-max class) when its score
    >= the threshold, else OOD (index K); counts are exact at every candidate."""

    def __init__(self, candidates: np.ndarray, k: int):
        self.candidates = np.unique(np.asarray(candidates, np.float32))
        self.k = k
        n = len(self.candidates) + 1
        self.truth = np.zeros((n, k + 1), np.int64)  # [interval, truth class]
        self.predicted = np.zeros((n, k), np.int64)  # [interval, arg-max class]
        self.right = np.zeros((n, k), np.int64)  # [interval, class]: arg-max == truth

    def add(self, scores: np.ndarray, truth: np.ndarray, argmax: np.ndarray) -> None:
        # Interval j holds the scores in [candidate j-1, candidate j): kept at candidates < j.
        at = np.searchsorted(self.candidates, np.asarray(scores, np.float32), side="right")
        n, k = len(self.candidates) + 1, self.k
        self.truth += np.bincount(at * (k + 1) + truth, minlength=n * (k + 1)).reshape(n, k + 1)
        self.predicted += np.bincount(at * k + argmax, minlength=n * k).reshape(n, k)
        hit = truth == argmax
        self.right += np.bincount(at[hit] * k + argmax[hit], minlength=n * k).reshape(n, k)

    def curves(self) -> dict[str, np.ndarray]:
        """Per candidate threshold: test TPR (ID pixels kept), OOD recall, balanced accuracy, ID
        accuracy and mIoU of the K+1 map (mean over the classes present in truth or prediction)."""
        k = self.k
        # Kept at candidate i: the pixels of intervals i+1.. (scores >= candidate i).
        kept = lambda a: np.cumsum(a[::-1], axis=0)[::-1][1:]  # noqa: E731
        truth_kept, pred_kept, right_kept = kept(self.truth), kept(self.predicted), kept(self.right)
        in_truth = self.truth.sum(0)
        n_id, n_ood = in_truth[:k].sum(), in_truth[k]
        tpr = truth_kept[:, :k].sum(1) / max(n_id, 1)
        recall = (n_ood - truth_kept[:, k]) / max(n_ood, 1)
        rejected = self.truth.sum() - truth_kept.sum(1)
        tp = np.c_[right_kept, n_ood - truth_kept[:, k]].astype(np.float64)
        in_pred = np.c_[pred_kept, rejected]
        union = in_truth[None] + in_pred - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(union > 0, tp / union, np.nan)
        return {
            "threshold": self.candidates.astype(np.float64),
            "test_tpr": tpr,
            "ood_recall": recall,
            "balanced_accuracy": (tpr + recall) / 2,
            "id_accuracy": right_kept.sum(1) / max(n_id, 1),
            "miou_k_plus_1": np.nanmean(iou, axis=1),
        }

    def at(self, threshold: float) -> dict[str, float]:
        """The curves at one of the candidates."""
        i = int(np.searchsorted(self.candidates, np.float32(threshold)))
        if i == len(self.candidates) or self.candidates[i] != np.float32(threshold):
            raise ValueError(f"threshold {threshold} is not one of the sweep's candidates")
        return {name: float(v[i]) for name, v in self.curves().items()}

    def best(self, metric: str = "balanced_accuracy") -> dict[str, float]:
        """The candidate with the best ``metric`` on the test truth (the oracle's threshold)."""
        curves = self.curves()
        i = int(np.nanargmax(curves[metric]))
        return {name: float(v[i]) for name, v in curves.items()}


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
