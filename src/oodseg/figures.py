"""Figures: colours, false-colour views, overlays, image panels, ROC curves and score
histograms. Drawing only, from arrays: numpy and matplotlib, nothing that trains or scores."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from oodseg.config import BACKGROUND  # noqa: E402


@dataclass
class PanelView:
    """One image as a panel draws it: RGB (H, W, 3) in [0, 1], masks in the data set's ids."""

    title: str
    rgb: np.ndarray
    truth: np.ndarray  # class ids, BACKGROUND, 0 = not scored
    annotated: np.ndarray | None  # strokes (class ids), 0 elsewhere
    prediction: np.ndarray  # class ids, 0 = OOD
    score_map: np.ndarray
    threshold: float
    outline: np.ndarray | None = None  # the OOD truth to outline (held-out class, background)


def _detector_grid(n: int) -> tuple[plt.Figure, np.ndarray]:
    cols = min(n, 4)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.6 * rows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    return fig, axes.ravel()


OPERATING_MARKERS = {"tpr": "o", "pu": "s", "oracle": "*"}


def plot_roc(folds: list[dict], aurocs: dict[str, str], title: str, path: Path) -> None:
    """ROC curves of every fold (``{detector: {"fpr", "tpr"}}`` each), one panel per detector,
    with each threshold rule's operating point marked on its fold's curve where known."""
    detectors = list(aurocs)
    fig, axes = _detector_grid(len(detectors))
    for ax, det in zip(axes, detectors, strict=False):
        for fold in folds:
            (line,) = ax.plot(fold[det]["fpr"], fold[det]["tpr"], lw=0.8, alpha=0.7)
            for (fpr, tpr), marker in zip(
                fold[det].get("operating", ()), OPERATING_MARKERS.values(), strict=False
            ):
                ax.plot(fpr, tpr, marker, color=line.get_color(), ms=4, mec="k", mew=0.4)
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set_title(f"{det}: AUROC {aurocs[det]}", fontsize=9)
        ax.set(xlabel="FPR (OOD kept)", ylabel="TPR (ID kept)")
    if any("operating" in f.get(detectors[0], {}) for f in folds):
        handles = [
            plt.Line2D([], [], ls="", marker=m, color="grey", mec="k", mew=0.4)
            for m in OPERATING_MARKERS.values()
        ]
        labels = ["TPR rule", "PU rule", "oracle"]
        fig.legend(handles, labels, loc="lower right", fontsize=8)
    fig.suptitle(f"ROC per fold ({title}); markers: each threshold rule's operating point")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_histograms(folds: list[dict], title: str, path: Path) -> None:
    """ID vs OOD score histograms pooled over folds, each fold's scores shifted by its threshold so
    that 0 is the decision boundary in every fold."""
    detectors = list(folds[0])
    fig, axes = _detector_grid(len(detectors))
    for ax, det in zip(axes, detectors, strict=False):
        t = [float(f[det]["threshold"]) for f in folds]
        id_s = np.concatenate([f[det]["id_scores"] - x for f, x in zip(folds, t, strict=True)])
        ood_s = np.concatenate([f[det]["ood_scores"] - x for f, x in zip(folds, t, strict=True)])
        bins = np.histogram_bin_edges(np.r_[id_s, ood_s], bins=60)
        ax.hist(id_s, bins, density=True, alpha=0.55, label="ID (known classes)")
        ax.hist(ood_s, bins, density=True, alpha=0.55, label="OOD")
        ax.axvline(0, color="k", lw=1, ls="--")
        ax.set(title=det, xlabel="score − fold threshold", ylabel="density")
        ax.legend(fontsize=7)
    fig.suptitle(f"ID vs OOD scores over all folds, {title} (dashed: calibrated threshold)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def class_colours(n: int) -> np.ndarray:
    """RGB colours for labels 0..n: 0 (unlabelled) white, then a qualitative palette."""
    base = plt.get_cmap("tab20")(np.linspace(0, 1, 20))[:, :3]
    return np.vstack([[1.0, 1.0, 1.0], base[np.arange(n) % 20]])


def false_colour(cube: np.ndarray, bands: tuple[int, int, int]) -> np.ndarray:
    """An RGB composite of three bands, each stretched between its 2nd and 98th percentile."""
    rgb = np.asarray(cube[..., list(bands)], np.float64)
    step = max(1, rgb.shape[0] * rgb.shape[1] // 250_000)  # percentiles of a subsample suffice
    lo, hi = np.percentile(rgb.reshape(-1, 3)[::step], [2, 98], axis=0)
    return np.clip((rgb - lo) / np.where(hi > lo, hi - lo, 1), 0, 1)


def rgb_view(image: np.ndarray, bands: tuple[int, int, int] | None) -> np.ndarray:
    """An (H, W, 3) view in [0, 1]: an 8-bit RGB image as it is, else a false colour of
    ``bands`` (or of three bands spread over the spectrum)."""
    if bands is None and image.shape[-1] == 3 and image.dtype == np.uint8:
        return np.asarray(image) / 255.0
    return overlay_rgb(image, bands) / 255.0


def _tint(rgb: np.ndarray, labels: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """Classes 1..K tinted over the image; label 0 leaves the image as it is."""
    tinted = 0.45 * rgb + 0.55 * colours[np.clip(labels, 0, len(colours) - 1)]
    return np.where((labels[..., None] > 0) & (labels[..., None] < len(colours)), tinted, rgb)


def plot_panels(
    panels: Sequence[PanelView], class_names: Sequence[str], det: str, title: str, path: Path
) -> None:
    """Per image: the image | truth (outlined: what is OOD) | annotations | K+1 prediction (OOD
    grey hatched) | score heat map with the threshold's contour."""
    k = len(class_names)
    colours = class_colours(k)
    fig, axes = plt.subplots(len(panels), 5, figsize=(22, 3.6 * len(panels)), squeeze=False)
    for row, p in zip(axes, panels, strict=True):
        truth = np.where(p.truth == BACKGROUND, 0, p.truth)
        row[0].imshow(p.rgb)
        row[0].set_title(p.title, fontsize=9)
        row[1].imshow(_tint(p.rgb, truth, colours))
        if p.outline is not None:
            row[1].contourf(p.outline, levels=[0.5, 1.5], colors="none", hatches=["...."])
            row[1].contour(p.outline, levels=[0.5], colors="k", linewidths=0.6)
        row[1].set_title("test truth (dotted: OOD)", fontsize=9)
        annotated = p.annotated if p.annotated is not None else np.zeros_like(truth)
        row[2].imshow(_tint(p.rgb * 0.6, annotated, colours))
        row[2].set_title(f"annotated pixels ({int((annotated > 0).sum())})", fontsize=9)
        row[3].imshow(_tint(p.rgb, p.prediction, colours))
        ood = (p.prediction == 0).astype(float)
        row[3].imshow(np.dstack([np.full(ood.shape + (3,), 0.5), 0.6 * ood[..., None]]))
        row[3].contourf(ood, levels=[0.5, 1.5], colors="none", hatches=["////"])
        row[3].set_title(f"K+1 prediction, {det} (grey hatched: OOD)", fontsize=9)
        im = row[4].imshow(p.score_map, cmap="magma")
        row[4].contour(p.score_map >= p.threshold, levels=[0.5], colors="c", linewidths=0.6)
        row[4].set_title(f"{det} score (cyan: threshold)", fontsize=9)
        fig.colorbar(im, ax=row[4], fraction=0.03)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[i + 1]) for i in range(k)]
    fig.legend(handles, class_names, loc="lower center", ncol=min(k, 8), fontsize=8)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.05 if k <= 8 else 0.08, 1, 0.97))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def overlay_rgb(image: np.ndarray, bands: tuple[int, int, int] | None = None) -> np.ndarray:
    """An RGB uint8 view of an (H, W, C) image: ``bands``, else itself if RGB, else three spread
    bands (or its one band), each stretched between its 2nd and 98th percentile."""
    c = image.shape[-1]
    if bands is None:
        if c < 3:
            bands = (0, 0, 0)
        elif c == 3:
            bands = (0, 1, 2)
        else:
            bands = tuple(int(c * f) for f in (0.75, 0.5, 0.25))
    # The three bands taken before any conversion: a float copy of a whole cube is 10^9 bytes.
    rgb = np.asarray(image[..., list(bands)], np.float32)
    return (false_colour(rgb, (0, 1, 2)) * 255).astype(np.uint8)


def overlay(image: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """:func:`overlay_rgb` with the classes tinted and OOD pixels greyed."""
    rgb = overlay_rgb(image) / 255.0
    colours = class_colours(num_classes)
    tinted = np.where(labels[..., None] > 0, 0.5 * rgb + 0.5 * colours[labels], 0.35 * rgb + 0.4)
    return (np.clip(tinted, 0, 1) * 255).astype(np.uint8)
