"""Evaluating a model bundle on labelled images of your own.

ID pixels are the annotated pixels of the K classes; OOD pixels are those whose mask value the
manifest lists under ``ood`` (an unseen tissue, a new instrument, background where it is known);
unlabelled (0) and ignore pixels are not scored. Metrics pool all images (and are given per image).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from rich.progress import track

from oodseg.bundle import OOD_LABEL, Bundle
from oodseg.crossval import FoldFigures
from oodseg.crossval_frames import FramePanel
from oodseg.datasets import IGNORE_LABEL
from oodseg.manifest import ImageDataset, read_sample
from oodseg.metrics import Curve, metrics_from_counts, segmentation_metrics, tie_groups
from oodseg.report import overlay_rgb

PANELS = 4


@dataclass
class Evaluation:
    """``results`` is what ``results.json`` holds; the rest feeds the figures."""

    results: dict
    figures: FoldFigures
    panels: list[FramePanel]


def evaluate(bundle: Bundle, data: ImageDataset, *, device: str = "cpu") -> Evaluation:
    """Predict every image of ``data`` (its ``test`` split if it has one) and score the result."""
    start = time.perf_counter()
    items = data.split("test") or data.items
    if tuple(data.class_names) != tuple(bundle.class_names):
        raise ValueError(
            f"the data set's classes ({', '.join(data.class_names)}) are not the model's "
            f"({', '.join(bundle.class_names)})"
        )
    k = len(bundle.class_names)
    id_scores, ood_scores, truths, preds, per_image, panels = [], [], [], [], [], []
    for item in track(items, description="evaluating", transient=True):
        sample = read_sample(data, item, bundle.bands)
        labels, scores = bundle.predict(sample.image, device=device, source=str(item.image))
        is_id = (sample.mask >= 1) & (sample.mask <= k)
        is_ood = sample.mask == k + 1
        id_scores.append(scores[is_id].astype(np.float64))
        ood_scores.append(scores[is_ood].astype(np.float64))
        scored = is_id | is_ood
        truths.append(np.where(is_ood, k, sample.mask - 1)[scored])
        preds.append(np.where(labels == OOD_LABEL, k, labels.astype(np.int64) - 1)[scored])
        row = {"image": item.name, "n_id": int(is_id.sum()), "n_ood": int(is_ood.sum())}
        row["id_kept"] = float((scores[is_id] >= bundle.threshold).mean()) if is_id.any() else None
        if is_id.any() and is_ood.any():
            row |= metrics_from_counts(*tie_groups(id_scores[-1], ood_scores[-1]))
        per_image.append(row)
        if len(panels) < PANELS:
            panels.append(_panel(item.name, sample.image, sample.mask, labels, scores, bundle, k))
    id_all, ood_all = np.concatenate(id_scores), np.concatenate(ood_scores)
    truth, pred = np.concatenate(truths), np.concatenate(preds)
    if not len(id_all):
        raise ValueError("no annotated pixel of the model's classes in the evaluation masks")
    pooled = {
        "n_id": len(id_all),
        "n_ood": len(ood_all),
        "id_kept": float((id_all >= bundle.threshold).mean()),
        "id_accuracy": float((pred[truth < k] == truth[truth < k]).mean()),
    }
    roc = (np.array([0.0, 1.0]), np.array([0.0, 1.0]))
    if len(ood_all):
        groups = tie_groups(id_all, ood_all)
        pooled |= metrics_from_counts(*groups)
        pooled["ood_recall"] = float((ood_all < bundle.threshold).mean())
        seg = segmentation_metrics(truth, pred, k + 1)
        pooled |= {"miou_k_plus_1": seg["miou"], "mdice_k_plus_1": seg["mdice"]}
        curve = Curve.from_counts(*groups)
        roc = (curve.fpr, curve.tpr)
    results = {
        "kind": "evaluation",
        "detector": bundle.detector.name,
        "threshold": bundle.threshold,
        "target_tpr": bundle.tpr,
        "classes": list(bundle.class_names),
        "pooled": pooled,
        "per_image": per_image,
        "seconds": round(time.perf_counter() - start, 1),
    }
    return Evaluation(results, FoldFigures(bundle.threshold, id_all, ood_all, roc), panels)


def _panel(name, image, mask, labels, scores, bundle: Bundle, k: int) -> FramePanel:
    """A panel in the frame panels' conventions: OOD truth as 0 (dotted), unlabelled as ignore."""
    shown = np.where(mask == k + 1, 0, np.where(mask == 0, IGNORE_LABEL, mask)).astype(np.int64)
    return FramePanel(
        name, overlay_rgb(image), shown, labels.astype(np.int64), scores, bundle.threshold
    )
