"""Report: results.json / .md / .csv, figures, and the console summary of a cross-validation run."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from oodseg.crossval import METRICS, CrossvalResult  # noqa: E402

LABELS = {
    "auroc": "AUROC",
    "aupr_in": "AUPR-In",
    "aupr_out": "AUPR-Out",
    "ap": "AP",
    "fpr95": "FPR95",
    "threshold": "threshold",
    "id_accuracy": "ID acc.",
    "closed_set_accuracy": "closed-set acc.",
    "ood_recall": "OOD recall",
    "miou_k_plus_1": "mIoU (K+1)",
    "mdice_k_plus_1": "mDice (K+1)",
}
SUMMARY_METRICS = tuple(m for m in METRICS if m != "threshold")
CONSOLE_METRICS = (
    "auroc",
    "aupr_in",
    "aupr_out",
    "fpr95",
    "id_accuracy",
    "ood_recall",
    "miou_k_plus_1",
)
FOLD_TABLES = ("auroc", "fpr95", "id_accuracy", "ood_recall", "miou_k_plus_1")
PANEL_FOLDS = 3


def write_report(out: Path, result: CrossvalResult) -> None:
    """Write every output of a run into the folder ``out`` (which must exist)."""
    res = result.results
    (out / "results.json").write_text(json.dumps(res, indent=2))
    (out / "results.md").write_text(markdown(res))
    (out / "results.csv").write_text(csv_table(res))
    plot_roc(result, out / "roc.png")
    plot_histograms(result, out / "histograms.png")
    # Panels for the folds with the most OOD pixels: where the score map is most telling.
    by_size = sorted(result.folds, key=lambda f: -len(next(iter(f["figures"].values())).ood_scores))
    for fold in by_size[:PANEL_FOLDS]:
        name = result.scene.class_names[fold["held_out"] - 1]
        plot_panel(result, fold, out / f"panel_{fold['held_out']:02d}_{name}.png")


def _fmt(summary: dict, metric: str) -> str:
    return f"{summary[metric]['mean']:.3f} ± {summary[metric]['std']:.3f}"


def markdown(res: dict) -> str:
    """The summary (mean ± std over folds) and per-fold tables, in Markdown."""
    detectors = list(res["summary"])
    n_folds = len({r["held_out"] for r in res["folds"]})
    lines = [
        f"# Held-out-class cross-validation: {res['dataset']}, split `{res['split']}`",
        "",
        f"Protocol: {res['protocol']}. Network: {res['config']['network']}. "
        f"Threshold at TPR {res['config']['tpr']} on calibration pixels. {n_folds} folds, "
        f"{res['seconds']:.0f} s on {res['machine']}.",
        "",
        f"## Mean ± std over {n_folds} folds",
        "",
        "| detector | " + " | ".join(LABELS[m] for m in SUMMARY_METRICS) + " |",
        "|---" * (len(SUMMARY_METRICS) + 1) + "|",
    ]
    lines += [
        f"| {d} | " + " | ".join(_fmt(res["summary"][d], m) for m in SUMMARY_METRICS) + " |"
        for d in detectors
    ]
    for metric in FOLD_TABLES:
        lines += [
            "",
            f"## {LABELS[metric]} per fold",
            "",
            "| held out | " + " | ".join(detectors) + " |",
        ]
        lines.append("|---" * (len(detectors) + 1) + "|")
        by_fold: dict[str, dict[str, float]] = {}
        for r in res["folds"]:
            by_fold.setdefault(r["held_out"], {})[r["detector"]] = r[metric]
        lines += [
            f"| {f} | " + " | ".join(f"{v[d]:.3f}" for d in detectors) + " |"
            for f, v in by_fold.items()
        ]
        lines.append(
            "| **mean ± std** | "
            + " | ".join(_fmt(res["summary"][d], metric) for d in detectors)
            + " |"
        )
    cost: dict[str, list[float]] = {}
    for r in res["folds"]:
        cost.setdefault(r["detector"], []).append(r["detector_seconds"])
    lines += ["", "## Detector cost (fit + score of the whole image, mean per fold)", ""]
    lines += ["| detector | seconds |", "|---|---|"]
    lines += [f"| {d} | {np.mean(v):.3f} |" for d, v in cost.items()]
    if res["skipped_folds"]:
        lines += [
            "",
            "Skipped folds: "
            + "; ".join(f"{s['held_out']} ({s['reason']})" for s in res["skipped_folds"]),
        ]
    if res["left_out_classes"]:
        lines += [
            "",
            "Classes left out of a fold (test pixels but no training annotation): "
            + "; ".join(f"fold {k}: {', '.join(v)}" for k, v in res["left_out_classes"].items()),
        ]
    return "\n".join(lines) + "\n"


def csv_table(res: dict) -> str:
    """One row per fold and detector, then a mean and a std row per detector."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["held_out", "detector", *METRICS])
    for r in res["folds"]:
        writer.writerow([r["held_out"], r["detector"], *(f"{r[m]:.6g}" for m in METRICS)])
    for stat in ("mean", "std"):
        for d, s in res["summary"].items():
            writer.writerow([stat, d, *(f"{s[m][stat]:.6g}" for m in METRICS)])
    return buf.getvalue()


def print_summary(res: dict, console: Console) -> None:
    """The mean ± std table on the console."""
    title = f"{res['dataset']} / {res['split']}: mean ± std over folds ({res['seconds']:.0f} s)"
    table = Table(title=title)
    table.add_column("detector")
    for m in CONSOLE_METRICS:
        table.add_column(LABELS[m], justify="right")
    for d, s in res["summary"].items():
        table.add_row(d, *(_fmt(s, m) for m in CONSOLE_METRICS))
    console.print(table)


def _detector_grid(n: int) -> tuple[plt.Figure, np.ndarray]:
    cols = min(n, 4)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.6 * rows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    return fig, axes.ravel()


def plot_roc(result: CrossvalResult, path: Path) -> None:
    """ROC curves of every fold, one panel per detector."""
    detectors = list(result.results["summary"])
    fig, axes = _detector_grid(len(detectors))
    for ax, det in zip(axes, detectors, strict=False):
        for fold in result.folds:
            fpr, tpr = fold["figures"][det].roc
            ax.plot(fpr, tpr, lw=0.8, alpha=0.7)
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set_title(f"{det}: AUROC {_fmt(result.results['summary'][det], 'auroc')}", fontsize=9)
        ax.set(xlabel="FPR (OOD kept)", ylabel="TPR (ID kept)")
    fig.suptitle(f"ROC per held-out class ({result.results['dataset']}, {result.results['split']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_histograms(result: CrossvalResult, path: Path) -> None:
    """ID vs OOD score histograms pooled over folds, each fold's scores shifted by its threshold so
    that 0 is the decision boundary in every fold."""
    detectors = list(result.results["summary"])
    fig, axes = _detector_grid(len(detectors))
    for ax, det in zip(axes, detectors, strict=False):
        figs = [f["figures"][det] for f in result.folds]
        id_s = np.concatenate([f.id_scores - f.threshold for f in figs])
        ood_s = np.concatenate([f.ood_scores - f.threshold for f in figs])
        bins = np.histogram_bin_edges(np.r_[id_s, ood_s], bins=60)
        ax.hist(id_s, bins, density=True, alpha=0.55, label="ID (known classes)")
        ax.hist(ood_s, bins, density=True, alpha=0.55, label="OOD (held-out class)")
        ax.axvline(0, color="k", lw=1, ls="--")
        ax.set(title=det, xlabel="score − fold threshold", ylabel="density")
        ax.legend(fontsize=7)
    fig.suptitle("ID vs OOD scores over all folds (dashed: calibrated threshold)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def class_colours(n: int) -> np.ndarray:
    """RGB colours for labels 0..n: 0 (unlabelled) white, then a qualitative palette."""
    base = plt.get_cmap("tab20")(np.linspace(0, 1, 20))[:, :3]
    return np.vstack([[1.0, 1.0, 1.0], base[np.arange(n) % 20]])


def false_colour(cube: np.ndarray, bands: tuple[int, int, int]) -> np.ndarray:
    """An RGB composite of three bands, each stretched between its 2nd and 98th percentile."""
    rgb = cube[..., list(bands)].astype(np.float64)
    lo, hi = np.percentile(rgb, [2, 98], axis=(0, 1))
    return np.clip((rgb - lo) / np.where(hi > lo, hi - lo, 1), 0, 1)


def plot_panel(result: CrossvalResult, fold: dict, path: Path) -> None:
    """False colour | ground truth | annotated pixels | K+1 prediction | score map, for one fold and the
    first detector."""
    scene = result.scene
    det = next(iter(result.results["summary"]))
    fig_data = fold["figures"][det]
    colours = class_colours(scene.num_classes)
    cmap = ListedColormap(colours)
    known = np.asarray(fold["known"])
    # Back to dataset ids for colouring; OOD shown in black.
    pred = np.where(
        fig_data.prediction < len(known), known[np.minimum(fig_data.prediction, len(known) - 1)], -1
    )
    pred_rgb = np.where(pred[..., None] >= 0, colours[np.maximum(pred, 0)], 0.0)
    held = scene.class_names[fold["held_out"] - 1]
    fig, axes = plt.subplots(1, 5, figsize=(20, 4.4))
    axes[0].imshow(false_colour(scene.cube, scene.rgb_bands))
    axes[0].set_title("false colour")
    axes[1].imshow(scene.labels, cmap=cmap, vmin=0, vmax=scene.num_classes, interpolation="nearest")
    axes[1].contour(scene.labels == fold["held_out"], levels=[0.5], colors="k", linewidths=0.8)
    axes[1].set_title(f"ground truth (outlined: {held}, held out)")
    axes[2].imshow(
        result.annotated, cmap=cmap, vmin=0, vmax=scene.num_classes, interpolation="nearest"
    )
    axes[2].set_title(f"annotated pixels ({int((result.annotated > 0).sum())})")
    axes[3].imshow(pred_rgb, interpolation="nearest")
    axes[3].set_title(f"K+1 prediction, {det} (black: OOD)")
    im = axes[4].imshow(fig_data.score_map, cmap="viridis")
    axes[4].contour(
        fig_data.score_map >= fig_data.threshold, levels=[0.5], colors="w", linewidths=0.5
    )
    axes[4].set_title(f"{det} score (white: threshold)")
    fig.colorbar(im, ax=axes[4], fraction=0.046)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
