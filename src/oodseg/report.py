"""Report: results.json / .md / .csv, figures, and the console summary of a run (one scene or a
frame data set)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from oodseg.crossval import METRICS, CrossvalResult, FoldFigures  # noqa: E402
from oodseg.crossval_frames import FramePanel, FramesResult  # noqa: E402
from oodseg.datasets import IGNORE_LABEL  # noqa: E402
from oodseg.io import atomic_path  # noqa: E402

if TYPE_CHECKING:  # annotations only: evaluate draws with this module's helpers
    from oodseg.bundle import Bundle
    from oodseg.evaluate import Evaluation

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
    save_figure_data(result.folds, out / "figures.npz")
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
    folds = f"{n_folds} fold" + ("s" if n_folds != 1 else "")
    lines = [
        "# "
        + res.get(
            "title", f"Held-out-class cross-validation: {res['dataset']}, split `{res['split']}`"
        ),
        "",
        f"Protocol: {res['protocol']}. Network: {res['config']['network']}. "
        f"Threshold at TPR {res['config']['tpr']} on calibration pixels. {folds}"
        + (f", {res['seconds']:.0f} s on {res['machine']}." if "seconds" in res else "."),
        "",
        f"## Mean ± std over {folds}",
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
    """One row per fold and detector, then a mean and a std row per detector; for a frame data set,
    a first column names each row's protocol."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    protocols = res.get("protocols", {"": res})
    lead = ["protocol"] if "protocols" in res else []
    writer.writerow([*lead, "held_out", "detector", *METRICS])
    for name, sub in protocols.items():
        lead = [name] if name else []
        for r in sub["folds"]:
            writer.writerow(
                [*lead, r["held_out"], r["detector"], *(f"{r[m]:.6g}" for m in METRICS)]
            )
        for stat in ("mean", "std"):
            for d, s in sub["summary"].items():
                writer.writerow([*lead, stat, d, *(f"{s[m][stat]:.6g}" for m in METRICS)])
    return buf.getvalue()


def print_summary(res: dict, console: Console) -> None:
    """The mean ± std table on the console."""
    took = f" ({res['seconds']:.0f} s)" if "seconds" in res else ""
    title = f"{res['dataset']} / {res['split']}: mean ± std over folds{took}"
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
    step = max(1, rgb.shape[0] * rgb.shape[1] // 250_000)  # percentiles of a subsample suffice
    lo, hi = np.percentile(rgb.reshape(-1, 3)[::step], [2, 98], axis=0)
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


BASELINE_METRICS = (
    "auroc",
    "fpr95",
    "id_accuracy",
    "ood_recall",
    "miou_k_plus_1",
    "mdice_k_plus_1",
)


def write_frames_report(out: Path, result: FramesResult) -> None:
    """Every output of a frame data set run: results.json / .md / .csv, per protocol ROC curves
    and score histograms, and the test-frame panels."""
    res = result.results
    (out / "results.json").write_text(json.dumps(res, indent=2))
    (out / "results.md").write_text(frames_markdown(res))
    (out / "results.csv").write_text(csv_table(res))
    for protocol, sub in res["protocols"].items():
        view = CrossvalResult(sub, None, None, result.folds[protocol])
        plot_roc(view, out / f"roc_{protocol}.png")
        plot_histograms(view, out / f"histograms_{protocol}.png")
    if result.panels:
        # The panels show the detector with the best mean AUROC: what a user would deploy.
        summary = res["protocols"]["background"]["summary"]
        det = max(summary, key=lambda d: summary[d]["auroc"]["mean"])
        plot_frame_panels(result.panels[det], result.class_names, det, out / "frames.png")


def frames_markdown(res: dict) -> str:
    """Set-up, the baselines next to the method, then each protocol's tables."""
    h, w = res["resolution"]
    cfg = res["config"]
    lines = [
        f"# {res['dataset']}: open-set segmentation from sparse strokes",
        "",
        f"Frames {h}x{w} (scale {cfg['scale']}); frames per split: "
        + ", ".join(f"{s} {n}" for s, n in res["frames"].items())
        + f"; strokes on {cfg['budget']:.0%} of each class's pixels per frame ("
        + ", ".join(f"{s} {n}" for s, n in res["annotated_pixels"].items())
        + f" annotated pixels); network: {cfg['preset']} preset, {cfg['train']['epochs']} epochs x "
        f"{cfg['train']['patches_per_epoch']} patches of {cfg['train']['patch']} px; threshold at TPR "
        f"{cfg['tpr']}. {res['seconds']:.0f} s on {res['machine']}.",
        "",
        f"Data: {res['credit']}",
    ]
    if res["baselines"]:
        lines += ["", "## Background as OOD: baselines next to the method", ""]
        lines += ["| method | " + " | ".join(LABELS[m] for m in BASELINE_METRICS) + " |"]
        lines.append("|---" * (len(BASELINE_METRICS) + 1) + "|")
        rows = list(res["baselines"])
        if "background" in res["protocols"]:
            for det, s in res["protocols"]["background"]["summary"].items():
                rows.append({"method": f"OOD-SEG, {det}", **{m: s[m]["mean"] for m in s}})
        for r in rows:
            cells = ["—" if r.get(m) is None else f"{r[m]:.3f}" for m in BASELINE_METRICS]
            lines.append(f"| {r['method']} | " + " | ".join(cells) + " |")
    for sub in res["protocols"].values():
        lines += ["", markdown(sub).replace("\n## ", "\n### ").replace("# ", "## ", 1)]
    return "\n".join(lines) + "\n"


def plot_frame_panels(
    panels: list[FramePanel], class_names: tuple[str, ...], det: str, path: Path
) -> None:
    """Per test frame: frame | ground truth | K+1 prediction with OOD as a grey hatched layer |
    score heat map with the threshold's contour."""
    # Saturated colours only: a pale class tint would read as the grey OOD layer.
    strong = plt.get_cmap("tab10")(np.array([0, 1, 2, 3, 4, 6, 8, 9, 5])[: len(class_names)])
    colours = np.vstack([[0.0, 0.0, 0.0], strong[:, :3]])
    fig, axes = plt.subplots(len(panels), 4, figsize=(18, 3.1 * len(panels)), squeeze=False)
    for row, p in zip(axes, panels, strict=True):
        frame = p.image / 255.0
        truth = np.where(p.mask == IGNORE_LABEL, 0, p.mask)
        row[0].imshow(frame)
        row[0].set_title(p.name, fontsize=9)
        row[1].imshow(_overlay(frame, truth, colours))
        row[1].contourf(p.mask == 0, levels=[0.5, 1.5], colors="none", hatches=["...."])
        row[1].set_title("ground truth (dotted: background / OOD)", fontsize=9)
        row[2].imshow(_overlay(frame, p.prediction, colours))
        ood = (p.prediction == 0).astype(float)
        row[2].imshow(np.dstack([np.full(ood.shape + (3,), 0.5), 0.6 * ood[..., None]]))
        row[2].contourf(ood, levels=[0.5, 1.5], colors="none", hatches=["////"])
        row[2].set_title(f"K+1 prediction, {det} (grey hatched: OOD)", fontsize=9)
        im = row[3].imshow(p.score_map, cmap="magma")
        row[3].contour(p.score_map >= p.threshold, levels=[0.5], colors="c", linewidths=0.6)
        row[3].set_title(f"{det} score (cyan: threshold)", fontsize=9)
        fig.colorbar(im, ax=row[3], fraction=0.03)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[i + 1]) for i in range(len(class_names))]
    fig.legend(handles, class_names, loc="lower center", ncol=len(class_names), fontsize=9)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _overlay(frame: np.ndarray, labels: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """Classes 1..K tinted over the frame; label 0 leaves the frame as it is."""
    tinted = 0.45 * frame + 0.55 * colours[labels]
    return np.where(labels[..., None] > 0, tinted, frame)


def write_prediction(
    out: Path,
    source: Path,
    image: np.ndarray,
    labels: np.ndarray,
    scores: np.ndarray,
    bundle: Bundle,
    score_format: str = "tif",
) -> list[Path]:
    """Per image: the K+1 label map (PNG, or a uint16 TIFF beyond 255 classes; 0 = OOD), the
    float32 score map (TIFF or NPY) and an overlay PNG (classes tinted, OOD greyed), each
    written atomically."""
    import tifffile
    from PIL import Image

    stem = source.name[: -len(source.suffix)] if source.suffix else source.name
    paths = []
    label_path = out / f"{stem}_labels.{'png' if labels.dtype == np.uint8 else 'tif'}"
    with atomic_path(label_path) as tmp:
        if labels.dtype == np.uint8:
            Image.fromarray(labels).save(tmp, format="PNG")
        else:
            tifffile.imwrite(tmp, labels)
    paths.append(label_path)
    score_path = out / f"{stem}_scores.{score_format}"
    with atomic_path(score_path) as tmp:
        if score_format == "npy":
            with open(tmp, "wb") as f:
                np.save(f, scores)
        else:
            tifffile.imwrite(tmp, scores)
    paths.append(score_path)
    overlay_path = out / f"{stem}_overlay.png"
    with atomic_path(overlay_path) as tmp:
        Image.fromarray(overlay(image, labels, len(bundle.class_names))).save(tmp, format="PNG")
    paths.append(overlay_path)
    return paths


def overlay_rgb(image: np.ndarray) -> np.ndarray:
    """An RGB uint8 view of an (H, W, C) image: itself if RGB, else three spread bands (or its one
    band), each stretched between its 2nd and 98th percentile."""
    c = image.shape[-1]
    if c < 3:
        bands = (0, 0, 0)
    elif c == 3:
        bands = (0, 1, 2)
    else:
        bands = tuple(int(c * f) for f in (0.75, 0.5, 0.25))
    return (false_colour(np.asarray(image, np.float32), bands) * 255).astype(np.uint8)


def overlay(image: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """:func:`overlay_rgb` with the classes tinted and OOD pixels greyed."""
    rgb = overlay_rgb(image) / 255.0
    colours = class_colours(num_classes)
    tinted = np.where(labels[..., None] > 0, 0.5 * rgb + 0.5 * colours[labels], 0.35 * rgb + 0.4)
    return (np.clip(tinted, 0, 1) * 255).astype(np.uint8)


EVALUATION_METRICS = (
    "auroc",
    "aupr_in",
    "aupr_out",
    "fpr95",
    "id_kept",
    "id_accuracy",
    "ood_recall",
    "miou_k_plus_1",
)


def write_evaluation(out: Path, evaluation: Evaluation) -> None:
    """results.json / .md / .csv, the pooled ROC curve and score histogram, and image panels."""
    res = evaluation.results
    (out / "results.json").write_text(json.dumps(res, indent=2))
    (out / "results.md").write_text(evaluation_markdown(res))
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["image", "n_id", "n_ood", *EVALUATION_METRICS])
    for r in [*res["per_image"], {"image": "pooled", **res["pooled"]}]:
        cells = ["" if r.get(m) is None else f"{r[m]:.6g}" for m in EVALUATION_METRICS]
        writer.writerow([r["image"], r["n_id"], r["n_ood"], *cells])
    (out / "results.csv").write_text(buf.getvalue())
    det = res["detector"]
    if res["pooled"]["n_ood"]:
        summary = {det: {"auroc": {"mean": res["pooled"]["auroc"], "std": 0.0}}}
        view = CrossvalResult(
            {"summary": summary, "dataset": "evaluation", "split": "pooled"},
            None,
            None,
            [{"figures": {det: evaluation.figures}}],
        )
        plot_roc(view, out / "roc.png")
        plot_histograms(view, out / "histograms.png")
    if evaluation.panels:
        plot_frame_panels(evaluation.panels, tuple(res["classes"]), det, out / "images.png")


def evaluation_markdown(res: dict) -> str:
    """Pooled and per-image tables of an evaluation."""
    pooled = res["pooled"]
    lines = [
        f"# Evaluation: {res['detector']}, threshold {res['threshold']:.4g} "
        f"(target TPR {res['target_tpr']})",
        "",
        f"{len(res['per_image'])} images, {pooled['n_id']} ID and {pooled['n_ood']} OOD pixels, "
        f"{res['seconds']:.0f} s.",
        "",
        "| | " + " | ".join(_EVAL_LABELS[m] for m in EVALUATION_METRICS) + " |",
        "|---" * (len(EVALUATION_METRICS) + 1) + "|",
    ]
    for r in [{"image": "**pooled**", **pooled}, *res["per_image"]]:
        cells = ["—" if r.get(m) is None else f"{r[m]:.3f}" for m in EVALUATION_METRICS]
        lines.append(f"| {r['image']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


_EVAL_LABELS = {**LABELS, "id_kept": "ID kept (TPR)"}


def write_html(folder: Path) -> Path:
    """``report.html`` in ``folder``: its results.md as HTML with every PNG figure embedded, one
    self-contained file that reads offline."""
    import base64

    import markdown

    md_path = folder / "results.md"
    if not md_path.is_file():
        raise FileNotFoundError(f"{md_path}: no results to report (run crossval or evaluate first)")
    body = markdown.markdown(md_path.read_text(), extensions=["tables"])
    figures = "".join(
        f'<figure><img alt="{p.stem}" src="data:image/png;base64,'
        f'{base64.b64encode(p.read_bytes()).decode()}"><figcaption>{p.stem}</figcaption></figure>'
        for p in sorted(folder.glob("*.png"))
    )
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>oodseg report</title><style>"
        "body{font-family:sans-serif;max-width:1400px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:1em 0;font-size:0.85em}"
        "td,th{border:1px solid #ccc;padding:0.25em 0.5em;text-align:right}"
        "td:first-child,th:first-child{text-align:left}img{max-width:100%}"
        f"</style></head><body>{body}<h2>Figures</h2>{figures}</body></html>"
    )
    path = folder / "report.html"
    with atomic_path(path) as tmp:
        tmp.write_text(page)
    return path


_FIGURE_FIELDS = ("threshold", "id_scores", "ood_scores", "fpr", "tpr")


def save_figure_data(folds: list[dict], path: Path) -> None:
    """What the ROC and histogram figures are drawn from, so that ``crossval merge`` can redraw
    them for fold jobs run apart (arrays only: read back without unpickling)."""
    arrays = {}
    for fold in folds:
        for det, f in fold["figures"].items():
            values = (np.asarray(f.threshold), f.id_scores, f.ood_scores, *f.roc)
            for name, value in zip(_FIGURE_FIELDS, values, strict=True):
                arrays[f"{fold['held_out']}|{det}|{name}"] = value
    with atomic_path(path) as tmp:
        np.savez_compressed(tmp, **arrays)


def load_figure_data(path: Path) -> list[dict]:
    """The folds (``{"held_out", "figures"}``) saved by :func:`save_figure_data`."""
    folds: dict[str, dict] = {}
    with np.load(path, allow_pickle=False) as z:
        for key in z.files:
            held, det, name = key.split("|")
            folds.setdefault(held, {}).setdefault(det, {})[name] = z[key]
    return [
        {
            "held_out": held,
            "figures": {
                det: FoldFigures(
                    float(f["threshold"]), f["id_scores"], f["ood_scores"], (f["fpr"], f["tpr"])
                )
                for det, f in dets.items()
            },
        }
        for held, dets in folds.items()
    ]


def write_merged(out: Path, runs: list[Path]) -> dict:
    """Merge fold jobs' output folders into one report: tables, figures, and their panels."""
    import shutil

    from oodseg.crossval import merge

    results = []
    for run in runs:
        path = run / "results.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not a crossval output folder")
        results.append(json.loads(path.read_text()))
    res = merge(results)
    folds = [f for run in runs for f in load_figure_data(run / "figures.npz")]
    (out / "results.json").write_text(json.dumps(res, indent=2))
    (out / "results.md").write_text(markdown(res))
    (out / "results.csv").write_text(csv_table(res))
    view = CrossvalResult(res, None, None, folds)
    plot_roc(view, out / "roc.png")
    plot_histograms(view, out / "histograms.png")
    save_figure_data(folds, out / "figures.npz")
    for run in runs:
        for panel in run.glob("panel_*.png"):
            shutil.copy(panel, out / panel.name)
    return res
