"""Evaluation: exact ID-vs-OOD separation metrics and segmentation quality of the K+1 map.

Convention: **ID pixels are the positive class** and a higher score means more in-distribution.
AUPR-In is the area under the precision-recall curve with ID positive, AUPR-Out with OOD positive
(scores negated); both by the trapezoidal rule over the curve's points, as in pytorch-ood and OpenOOD.
AP is the step-wise average precision with ID positive (scikit-learn's ``average_precision_score``).
FPR95 is the share of OOD pixels kept (score >= threshold) at the first threshold whose TPR >= 0.95.

Everything works on the sorted scores with tied scores grouped, in float64, so the values are exact
for ties and for scores of any magnitude. We write them ourselves because we need all of them from one
sort, and (later) a streaming form for 10^8 pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Curve:
    """Cumulative true and false positives at each distinct threshold, highest score first."""

    tps: np.ndarray
    fps: np.ndarray
    thresholds: np.ndarray

    @property
    def tpr(self) -> np.ndarray:
        return np.r_[0.0, self.tps / self.tps[-1]]

    @property
    def fpr(self) -> np.ndarray:
        return np.r_[0.0, self.fps / self.fps[-1]]


def binary_curve(positive: np.ndarray, negative: np.ndarray) -> Curve:
    """The ranking curve of positive vs negative scores."""
    pos = np.asarray(positive, np.float64).ravel()
    neg = np.asarray(negative, np.float64).ravel()
    if pos.size == 0 or neg.size == 0:
        raise ValueError(f"need both ID and OOD scores, got {pos.size} ID and {neg.size} OOD")
    if not (np.isfinite(pos).all() and np.isfinite(neg).all()):
        raise ValueError("scores contain NaN or infinity")
    scores = np.concatenate([pos, neg])
    is_pos = np.concatenate([np.ones(pos.size), np.zeros(neg.size)])
    order = np.argsort(-scores, kind="stable")
    scores, is_pos = scores[order], is_pos[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]
    tps = np.cumsum(is_pos)[last_of_tie]
    fps = (last_of_tie + 1) - tps
    return Curve(tps, fps, scores[last_of_tie])


def _aupr(curve: Curve) -> tuple[float, float]:
    """(area under the PR curve by trapezoids, step-wise average precision) of a curve."""
    precision = curve.tps / (curve.tps + curve.fps)
    recall = curve.tps / curve.tps[-1]
    # Stop at the first point of full recall, and start from (recall 0, precision 1).
    stop = int(np.searchsorted(curve.tps, curve.tps[-1])) + 1
    p, r = np.r_[1.0, precision[:stop]], np.r_[0.0, recall[:stop]]
    return float(np.trapezoid(p, r)), float(np.sum(np.diff(r) * p[1:]))


def ood_metrics(
    id_scores: np.ndarray, ood_scores: np.ndarray, tpr_level: float = 0.95
) -> dict[str, float]:
    """AUROC, AUPR-In, AUPR-Out, AP and FPR at ``tpr_level`` TPR of ID vs OOD scores."""
    curve = binary_curve(id_scores, ood_scores)
    tpr, fpr = curve.tpr, curve.fpr
    aupr_in, ap = _aupr(curve)
    aupr_out, _ = _aupr(binary_curve(-np.asarray(ood_scores), -np.asarray(id_scores)))
    return {
        "auroc": float(np.trapezoid(tpr, fpr)),
        "aupr_in": aupr_in,
        "aupr_out": aupr_out,
        "ap": ap,
        "fpr95": float(fpr[np.searchsorted(tpr, tpr_level - 1e-12)]),
    }


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
    cm = confusion_matrix(truth, pred, num_classes).astype(np.float64)
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
