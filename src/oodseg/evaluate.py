"""Evaluating a model bundle on labelled images of your own.

ID pixels are the annotated pixels of the K classes; OOD pixels are those whose mask value the
manifest lists under ``ood`` (an unseen tissue, a new instrument, background where it is known);
unlabelled (0) and ignore pixels are not scored. Metrics pool all images (and are given per image).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from oodseg.bundle import OOD_LABEL, Bundle, Maps
from oodseg.config import BACKGROUND
from oodseg.figures import PanelView, rgb_view
from oodseg.manifest import ImageDataset, read_sample
from oodseg.metrics import ScoreTally, ood_metrics, segmentation_from_confusion
from oodseg.progress import Stages, track
from oodseg.suggest import suggest_regions
from oodseg.viewer import Layer, Picture

PANELS = 4


@dataclass
class Evaluation:
    """``results`` is what ``results.json`` holds; the rest feeds the figures."""

    results: dict
    figures: dict[str, np.ndarray]  # threshold, fpr, tpr, id_scores, ood_scores
    panels: list[PanelView]
    viewers: list[tuple[str, Picture, Layer]]  # the panel images, for their viewer pages


def evaluate(
    bundle: Bundle, data: ImageDataset, *, device: str = "cpu", progress: Stages | None = None
) -> Evaluation:
    """Predict every image of ``data`` (its ``test`` split if it has one) and score the result."""
    start = time.perf_counter()
    items = data.split("test") or data.items
    if tuple(data.class_names) != tuple(bundle.class_names):
        raise ValueError(
            f"the data set's classes ({', '.join(data.class_names)}) are not the model's "
            f"({', '.join(bundle.class_names)})"
        )
    k = len(bundle.class_names)
    tally = ScoreTally(k, seed=0)  # streamed: one image in memory at a time
    per_image, panels, viewers = [], [], []
    for item in track(items, progress, "scoring the images"):
        sample = read_sample(data, item, bundle.bands)
        drawn = len(panels) < PANELS
        maps = bundle.maps(sample.image, device=device, source=str(item.image), margin=drawn)
        labels, scores = maps.labels, maps.scores
        is_id = (sample.mask >= 1) & (sample.mask <= k)
        is_ood = sample.mask == k + 1
        scored = is_id | is_ood
        truth = np.where(is_ood, k, sample.mask - 1)[scored]
        pred = np.where(labels == OOD_LABEL, k, labels.astype(np.int64) - 1)[scored]
        tally.add(scores[is_id], scores[is_ood], truth, pred)
        row = {"image": item.name, "n_id": int(is_id.sum()), "n_ood": int(is_ood.sum())}
        row["id_kept"] = float((scores[is_id] >= bundle.threshold).mean()) if is_id.any() else None
        if is_id.any() and is_ood.any():
            row |= ood_metrics(scores[is_id], scores[is_ood])
        per_image.append(row)
        if drawn:
            panels.append(_panel(item.name, sample.image, sample.mask, labels, scores, bundle, k))
            viewers.append(_viewer(item.name, sample.image, maps, bundle, panels[-1]))
    cm = tally.confusion
    n_id, n_ood = int(cm[:-1].sum()), int(cm[-1].sum())
    if not n_id:
        raise ValueError("no annotated pixel of the model's classes in the evaluation masks")
    pooled = {
        "n_id": n_id,
        "n_ood": n_ood,
        "id_kept": float(cm[:-1, :-1].sum() / n_id),
        "id_accuracy": float(np.trace(cm[:-1, :-1]) / n_id),
    }
    roc = (np.array([0.0, 1.0]), np.array([0.0, 1.0]))
    if n_ood:
        ood, curve = tally.ood_result()
        seg = segmentation_from_confusion(cm)
        pooled |= ood
        pooled |= {
            "ood_recall": float(cm[-1, -1] / n_ood),
            "miou_k_plus_1": seg["miou"],
            "mdice_k_plus_1": seg["mdice"],
        }
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
    figures = {
        "threshold": np.asarray(bundle.threshold),
        "fpr": roc[0],
        "tpr": roc[1],
        "id_scores": tally.sample[0],
        "ood_scores": tally.sample[1],
    }
    return Evaluation(results, figures, panels, viewers)


def _panel(name, image, mask, labels, scores, bundle: Bundle, k: int) -> PanelView:
    """A panel: the classes' pixels as truth, the OOD truth outlined."""
    truth = np.where(mask == k + 1, BACKGROUND, mask)
    ood = mask == k + 1
    return PanelView(
        name,
        rgb_view(image, None),
        truth,
        None,
        labels.astype(np.int64),
        scores,
        bundle.threshold,
        ood if ood.any() else None,
    )


def _viewer(
    name: str, image: np.ndarray, maps: Maps, bundle: Bundle, panel: PanelView
) -> tuple[str, Picture, Layer]:
    """An evaluated image's picture and the model's maps and suggested regions, for its page."""
    regions = suggest_regions(
        name, maps.classes, maps.margin, maps.scores, bundle.threshold, bundle.class_names
    )
    picture = Picture.of(image, (panel.rgb * 255).round())
    return name, picture, Layer("model", maps.classes, maps.scores, bundle.threshold, None, regions)
