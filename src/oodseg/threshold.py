"""Threshold: turns ID-ness scores into a K+1 label map, chosen without any OOD label.

Two rules, both from what a user has (annotated pixels and unlabelled ones):

* ``tpr`` (the paper's): keep a target share (TPR) of the held-out calibration annotations.
* ``pu``: the pixels a user left unannotated are a mixture of ID and OOD (positive-unlabelled
  learning). Best-bin estimation (BBE; Garg, Wu, Smola, Balakrishnan, Lipton, "Mixture Proportion
  Estimation and PU Learning: A Modern Approach", NeurIPS 2021, arXiv:2111.00980) estimates the
  share of ID pixels among them from the scores of the calibration annotations and of a sample of
  unlabelled pixels; the threshold then flags the estimated OOD share of the unlabelled pixels.

Cross-validation also reports the *oracle* threshold (best balanced accuracy on the test truth)
beside each rule, to show each rule's gap; it is never used to predict.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SWEEP_LEVELS = 1001  # quantiles of the unlabelled sample among the candidate thresholds


def calibrate_threshold(id_scores: np.ndarray, tpr: float = 0.95) -> float:
    """The largest threshold that keeps at least ``tpr`` of the calibration ID pixels
    (a pixel is kept, i.e. called ID, when its score >= threshold)."""
    if not 0 < tpr < 1:
        raise ValueError(f"target TPR must be strictly between 0 and 1, got {tpr}")
    scores = np.sort(np.asarray(id_scores, np.float64).ravel())
    if scores.size == 0:
        raise ValueError("no calibration pixel to choose the threshold from")
    # Keeping the top ceil(tpr * n) scores: the threshold is the smallest of them.
    n_keep = int(np.ceil(tpr * scores.size - 1e-9))
    return float(scores[scores.size - n_keep])


def mixture_proportion(
    positive: np.ndarray, unlabelled: np.ndarray, *, delta: float = 0.1, gamma: float = 0.01
) -> float:
    """BBE estimate of the share of positives (ID) among ``unlabelled``, from scores where higher
    means more ID. For a cut-off c, q_p(c) and q_u(c) are the shares of positive and unlabelled
    scores >= c; their ratio is at least the ID share, with equality where only ID pixels score
    so high. BBE takes the ratio at the cut-off that minimises its upper confidence bound,
    q_u/q_p + (1 + gamma) / q_p * (sqrt(log(4/delta) / 2 n_u) + sqrt(log(4/delta) / 2 n_p))."""
    p = np.sort(np.asarray(positive, np.float64).ravel())
    u = np.sort(np.asarray(unlabelled, np.float64).ravel())
    if not len(p) or not len(u):
        raise ValueError(
            f"mixture proportion estimation needs positive and unlabelled scores, got {len(p)} "
            f"and {len(u)}"
        )
    cuts = np.unique(p)  # every positive score is a candidate cut-off
    q_p = (len(p) - np.searchsorted(p, cuts, side="left")) / len(p)
    q_u = (len(u) - np.searchsorted(u, cuts, side="left")) / len(u)
    slack = np.sqrt(np.log(4 / delta) / (2 * len(u))) + np.sqrt(np.log(4 / delta) / (2 * len(p)))
    best = int(np.argmin((q_u + (1 + gamma) * slack) / q_p))
    return float(min(1.0, q_u[best] / q_p[best]))


def share_threshold(unlabelled: np.ndarray, id_share: float) -> float:
    """The threshold that flags the lowest-scoring ``1 - id_share`` of the unlabelled scores as
    OOD (one of the scores, so that it is exact in their precision)."""
    u = np.sort(np.asarray(unlabelled).ravel())
    n_flag = int(round((1 - id_share) * len(u)))
    if n_flag >= len(u):
        return float(np.nextafter(u[-1], np.inf))
    return float(u[n_flag])


@dataclass(frozen=True)
class OperatingPoints:
    """One detector's thresholds by rule, the ID share among the unlabelled pixels that BBE
    estimated (None without an unlabelled sample), and the candidate thresholds at which a test
    pass measures the K+1 map (the rules' thresholds among them)."""

    thresholds: dict[str, float]
    id_share: float | None
    candidates: np.ndarray


def operating_points(
    calibration: np.ndarray, unlabelled: np.ndarray | None, tpr: float
) -> OperatingPoints:
    """Every rule's threshold from the calibration ID scores and a sample of unlabelled scores
    (the ``pu`` rule needs the latter; without it only ``tpr`` is available)."""
    thresholds = {"tpr": calibrate_threshold(calibration, tpr)}
    grids = [np.quantile(calibration, np.linspace(0, 1, 201))]
    share = None
    if unlabelled is not None and len(unlabelled):
        share = mixture_proportion(calibration, unlabelled)
        thresholds["pu"] = share_threshold(unlabelled, share)
        grids.append(np.quantile(unlabelled, np.linspace(0, 1, SWEEP_LEVELS)))
    candidates = np.unique(np.r_[np.concatenate(grids), list(thresholds.values())])
    return OperatingPoints(thresholds, share, candidates.astype(np.float32))


def open_set_labels(logits: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """K+1 labels: the arg-max class index 0..K-1 where ``scores >= threshold``, K (OOD) elsewhere.
    ``logits`` has the classes on its first axis."""
    k = logits.shape[0]
    return np.where(scores >= threshold, logits.argmax(axis=0), k)
