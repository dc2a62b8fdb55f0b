"""Threshold: chosen from held-out *ID* annotated pixels only, then turns scores into a K+1 label map."""

from __future__ import annotations

import numpy as np


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


def open_set_labels(logits: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """K+1 labels: the arg-max class index 0..K-1 where ``scores >= threshold``, K (OOD) elsewhere.
    ``logits`` has the classes on its first axis."""
    k = logits.shape[0]
    return np.where(scores >= threshold, logits.argmax(axis=0), k)
