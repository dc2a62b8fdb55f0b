"""Report: each fold's results and panels as the fold ends, then ``results.json`` / ``.md`` /
``.csv``, ROC curves and score histograms per protocol, the console summary, and a self-contained
HTML page; the same for a model's evaluation and for predictions."""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from oodseg.engine import BACKGROUND, Collection, FoldResult  # noqa: E402
from oodseg.io import atomic_path  # noqa: E402
from oodseg.results import BASELINE_METRICS, METRICS, OPERATING, assemble  # noqa: E402

if TYPE_CHECKING:  # annotations only: evaluate draws with this module's helpers
    from oodseg.bundle import Bundle, Maps
    from oodseg.evaluate import Evaluation
    from oodseg.suggest import Region

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
    "test_tpr": "test TPR",
    "balanced_accuracy": "bal. acc.",
    "miou_k_plus_1": "mIoU (K+1)",
    "mdice_k_plus_1": "mDice (K+1)",
}
SUMMARY_METRICS = tuple(m for m in METRICS if m != "threshold")
CONSOLE_METRICS = (
    "auroc",
    "fpr95",
    "id_accuracy",
    "test_tpr",
    "ood_recall",
    "miou_k_plus_1",
)
FOLD_TABLES = ("auroc", "fpr95", "id_accuracy", "ood_recall", "miou_k_plus_1")


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


def _stem(order: int, key: str) -> str:
    return f"{order:02d}-" + "".join(c if c.isalnum() or c in "-_" else "_" for c in key)


def write_fold(
    out: Path,
    order: int,
    result: FoldResult,
    *,
    collection: Collection,
    seconds: float = 0.0,
) -> None:
    """A finished fold into ``out/folds``: its rows and baselines (JSON), its figure data (NPZ,
    arrays only: read back without unpickling) and its panels (PNG, in ``out``)."""
    from oodseg.crossval import left_out

    folds = out / "folds"
    folds.mkdir(parents=True, exist_ok=True)
    fold = result.fold
    record = {
        "order": order,
        "seconds": seconds,
        "fold": {
            "protocol": fold.protocol,
            "name": fold.name,
            "known": [collection.class_names[c - 1] for c in fold.known],
            "left_out": left_out(collection, fold),
        },
        "rows": result.rows,
        "closed_set": result.closed_set,
        "fully_supervised": result.fully_supervised,
    }
    stem = _stem(order, fold.key)
    arrays = {
        f"{det}|{name}": np.asarray(value)
        for det, fig in result.figures.items()
        for name, value in fig.items()
    }
    with atomic_path(folds / f"{stem}.npz") as tmp:
        np.savez_compressed(tmp, **arrays)
    if result.panels:
        views = [_panel_view(collection, fold, p) for p in result.panels]
        det = result.rows[0]["detector"]
        title = f"{collection.name}, {fold.protocol}: OOD = {fold.name}"
        plot_panels(views, collection.class_names, det, title, out / f"panel_{stem}.png")
        for panel, view in zip(result.panels, views, strict=True):
            _keep_for_viewer(out, collection, fold, panel, view, stem)
    with atomic_path(folds / f"{stem}.json") as tmp:
        tmp.write_text(json.dumps(record, indent=1))


def _panel_view(collection: Collection, fold, panel) -> PanelView:
    s = collection.load(panel.sample)
    ood = np.isin(s.truth, fold.ood)
    return PanelView(
        s.name,
        rgb_view(s.image, collection.rgb_bands),
        s.truth,
        s.train + s.calibration,
        panel.prediction,
        panel.score_map,
        panel.threshold,
        ood if ood.any() else None,
    )


def _keep_for_viewer(
    out: Path, collection: Collection, fold, panel, view: PanelView, stem: str
) -> None:
    """A panel image's picture and this fold's maps and suggested regions, for its viewer page."""
    from oodseg.suggest import suggest_regions
    from oodseg.viewer import Layer, Picture, save_layer, save_picture

    s = collection.load(panel.sample)
    strokes = np.where(np.isin(view.annotated, fold.known), view.annotated, 0).astype(np.uint8)
    picture = Picture.of(s.image, (view.rgb * 255).round(), collection.rgb_bands)
    save_picture(out, s.name, picture, collection.class_names)
    regions = suggest_regions(
        s.name,
        panel.classes,
        panel.margin,
        panel.score_map,
        panel.threshold,
        collection.class_names,
        annotated=strokes > 0,
    )
    layer = Layer(
        f"{fold.protocol}: OOD = {fold.name}",
        panel.classes.astype(np.uint8),
        panel.score_map,
        panel.threshold,
        tuple(fold.known),
        regions,
        strokes,
    )
    save_layer(out, s.name, stem, layer)


def load_fold_files(folder: Path) -> list[dict]:
    """The fold records written by :func:`write_fold` (none for a new folder)."""
    return [json.loads(p.read_text()) for p in sorted((folder / "folds").glob("*.json"))]


def _figure_data(folder: Path) -> dict[str, list[dict]]:
    """Per protocol, per fold: the figure arrays of each detector."""
    out: dict[str, list[dict]] = {}
    for record in load_fold_files(folder):
        path = folder / "folds" / f"{_stem(record['order'], _key(record))}.npz"
        figures: dict[str, dict] = {}
        with np.load(path, allow_pickle=False) as z:
            for key in z.files:
                det, name = key.split("|")
                figures.setdefault(det, {})[name] = z[key]
        out.setdefault(record["fold"]["protocol"], []).append(figures)
    return out


def _key(record: dict) -> str:
    return f"{record['fold']['protocol']}-{record['fold']['name']}"


def write_run(out: Path, res: dict) -> None:
    """``results.json`` / ``.md`` / ``.csv`` and, per protocol, the ROC curves and the score
    histograms of every fold, drawn from the fold files."""
    (out / "results.json").write_text(json.dumps(res, indent=2))
    (out / "results.md").write_text(markdown(res))
    (out / "results.csv").write_text(csv_table(res))
    data = _figure_data(out)
    for protocol, sub in res["protocols"].items():
        if protocol not in data:
            continue
        title = f"{res['dataset']}, {protocol}"
        aurocs = {d: _fmt(s, "auroc") for d, s in sub["summary"].items()}
        plot_roc(data[protocol], aurocs, title, out / f"roc_{protocol}.png")
        plot_histograms(data[protocol], title, out / f"histograms_{protocol}.png")


def write_merged(out: Path, runs: Sequence[Path]) -> dict:
    """Fold jobs' output folders merged into one run: the fold files copied, then the tables
    and figures drawn as for one run."""
    from oodseg.crossval import merge

    headers, records = [], []
    for run in runs:
        path = run / "results.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not a crossval output folder")
        headers.append(json.loads(path.read_text()))
        records += [(run, r) for r in load_fold_files(run)]
    header = merge(headers)
    orders = [r["order"] for _, r in records]
    repeated = sorted({o + 1 for o in orders if orders.count(o) > 1})
    if repeated:
        raise ValueError(f"fold job {', '.join(map(str, repeated))} appears in several runs")
    (out / "folds").mkdir()
    for run, record in records:
        for f in (run / "folds").glob(f"{record['order']:02d}-*"):
            shutil.copy(f, out / "folds" / f.name)
        for f in run.glob(f"panel_{record['order']:02d}-*.png"):
            shutil.copy(f, out / f.name)
        for f in run.glob(f"viewer/*/{record['order']:02d}-*.npz"):
            (out / "viewer" / f.parent.name).mkdir(parents=True, exist_ok=True)
            for kept in (f, f.parent / "picture.npz"):
                shutil.copy(kept, out / "viewer" / f.parent.name / kept.name)
    skipped = [
        {"protocol": p, **s}
        for h in headers
        for p, sub in h["protocols"].items()
        for s in sub["skipped_folds"]
    ]
    unique = [s for i, s in enumerate(skipped) if s not in skipped[:i]]
    header = {k: v for k, v in header.items() if k != "protocols"}
    header["seconds"] = round(sum(h["seconds"] for h in headers), 1)
    header["merged_from"] = len(runs)
    res = assemble(header, load_fold_files(out), unique)
    write_run(out, res)
    return res


def _fmt(summary: dict, metric: str) -> str:
    return f"{summary[metric]['mean']:.3f} ± {summary[metric]['std']:.3f}"


def markdown(res: dict) -> str:
    """The set-up, the baselines next to the method, then per protocol the summary (mean ± std
    over folds) and the per-fold tables."""
    cfg = res["config"]
    t = cfg["train"]
    lines = [
        f"# {res['dataset']}: open-set segmentation from sparse annotations",
        "",
        f"{res['description'][:1].upper()}{res['description'][1:]}. Network: {cfg['network']}, {t['epochs']} epochs x "
        f"{t['patches_per_epoch']} patches, {TRAINING[t.get('unlabelled', 'ignore')]}; K+1 map at "
        f"the {THRESHOLDS[cfg.get('threshold', 'tpr')].format(tpr=cfg['tpr'])}; score maps "
        f"smoothed with σ {t.get('smooth', 0):g} px, class probabilities with σ "
        f"{t.get('smooth_classes', 0):g} px. Annotated pixels: "
        + ", ".join(f"{k} {v}" for k, v in res["annotated_pixels"].items())
        + (f"; {res['seconds']:.0f} s on {res['machine']}." if "seconds" in res else "."),
    ]
    if res.get("credit"):
        lines += ["", f"Data: {res['credit']}"]
    if res.get("colour_masks"):
        lines += [
            "",
            "Colour masks: "
            + ", ".join(f"{v} pixels {k}" for k, v in res["colour_masks"].items())
            + " (JPEG noise snapped to the nearest palette colour; farther pixels ignored).",
        ]
    lines += ["", "## At a glance", "", _headline_markdown(res)]
    for protocol in res["protocols"]:
        lines += ["", f"![ROC curves, {protocol}](roc_{protocol}.png)"]
    for protocol, sub in res["protocols"].items():
        lines += ["", _protocol_markdown(protocol, sub)]
    return "\n".join(lines) + "\n"


def headline(res: dict) -> list[dict]:
    """Per protocol, what a reader looks at first: the best detector, the run's first (default)
    detector at its threshold, and the baselines on either side of the method."""
    out = []
    first = res["config"]["detectors"][0]
    for protocol, sub in res["protocols"].items():
        s = sub["summary"]
        if not s:
            continue
        best = max(s, key=lambda d: s[d]["auroc"]["mean"])
        bounds = {b["method"].split(" (")[0]: b for b in sub.get("baselines", [])}
        out.append(
            {
                "protocol": protocol,
                "folds": len({r["held_out"] for r in sub["folds"]}),
                "best": best,
                "best_auroc": s[best]["auroc"]["mean"],
                "detector": first,
                **{m: s[first][m]["mean"] for m in ("auroc", "test_tpr", "ood_recall")},
                "miou": s[first]["miou_k_plus_1"]["mean"],
                "closed_set": bounds.get("closed-set arg-max"),
                "fully_supervised": bounds.get("fully supervised"),
            }
        )
    return out


HEADLINE_COLUMNS = (
    "folds | best detector: AUROC | default detector: AUROC | its test TPR / OOD recall | its "
    "K+1 mIoU | closed set: K+1 mIoU | fully supervised: AUROC / K+1 mIoU"
)


def headline_cells(h: dict) -> list[str]:
    """One :func:`headline` entry as the table cells of :data:`HEADLINE_COLUMNS`."""
    closed, full = h["closed_set"], h["fully_supervised"]
    return [
        str(h["folds"]),
        f"{h['best']} {h['best_auroc']:.3f}",
        f"{h['detector']} {h['auroc']:.3f}",
        f"{h['test_tpr']:.2f} / {h['ood_recall']:.2f}",
        f"{h['miou']:.3f}",
        f"{closed['miou_k_plus_1']:.3f}" if closed else "—",
        f"{full['auroc']:.3f} / {full['miou_k_plus_1']:.3f}" if full else "—",
    ]


def _headline_markdown(res: dict) -> str:
    lines = [f"| protocol | {HEADLINE_COLUMNS} |", "|---" * 8 + "|"]
    lines += ["| " + " | ".join([h["protocol"], *headline_cells(h)]) + " |" for h in headline(res)]
    return "\n".join(lines)


TRAINING = {
    "ignore": "cross-entropy on the annotated pixels only (the paper's training)",
    "nnpu": "cross-entropy + a known-vs-unknown head trained with the non-negative PU risk on the "
    "unlabelled pixels (beyond the paper)",
    "nnpu-head": "cross-entropy, and a known-vs-unknown head trained with the non-negative PU risk "
    "on its features (beyond the paper; the network is the paper's)",
}
THRESHOLDS = {
    "tpr": "threshold keeping {tpr} of the calibration annotations (the paper's rule)",
    "pu": "threshold flagging the OOD share of the unlabelled pixels that best-bin estimation "
    "finds (PU rule)",
}


def _baselines_markdown(sub: dict) -> str:
    """The method between its bounds: the closed set, every detector, full supervision."""
    lines = ["| method | " + " | ".join(LABELS[m] for m in BASELINE_METRICS) + " |"]
    lines.append("|---" * (len(BASELINE_METRICS) + 1) + "|")
    ours = [
        {"method": f"OOD-SEG, {det}", **{m: s[m]["mean"] for m in BASELINE_METRICS if m in s}}
        for det, s in sub["summary"].items()
    ]
    for r in sub["baselines"][:1] + ours + sub["baselines"][1:]:
        cells = ["—" if r.get(m) is None else f"{r[m]:.3f}" for m in BASELINE_METRICS]
        lines.append(f"| {r['method']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


PROTOCOL_TITLES = {
    "loco": "Leave one class out: ID = the known classes' test pixels, OOD = the held-out class's",
    "background": "Background as OOD: ID = the classes' test pixels, OOD = the background's",
}


def _protocol_markdown(protocol: str, sub: dict) -> str:
    detectors = list(sub["summary"])
    n_folds = len({r["held_out"] for r in sub["folds"]})
    folds = f"{n_folds} fold" + ("s" if n_folds != 1 else "")
    lines = [f"## {PROTOCOL_TITLES[protocol]}", ""]
    if detectors and sub.get("baselines"):
        lines += [
            f"### Between the bounds: closed set, the method, full supervision (means over {folds})",
            "",
            _baselines_markdown(sub),
            "",
        ]
    if detectors:
        lines += [f"### Mean ± std over {folds}", ""]
        lines += ["| detector | " + " | ".join(LABELS[m] for m in SUMMARY_METRICS) + " |"]
        lines.append("|---" * (len(SUMMARY_METRICS) + 1) + "|")
        lines += [
            f"| {d} | " + " | ".join(_fmt(sub["summary"][d], m) for m in SUMMARY_METRICS) + " |"
            for d in detectors
        ]
        lines += ["", _operating_markdown(sub, detectors)]
    lines += ["", '<details markdown="1"><summary>Per-fold tables and detector cost</summary>']
    for metric in FOLD_TABLES if n_folds > 1 else ():
        lines += ["", f"### {LABELS[metric]} per fold", ""]
        lines += ["| held out | " + " | ".join(detectors) + " |"]
        lines.append("|---" * (len(detectors) + 1) + "|")
        by_fold: dict[str, dict[str, float]] = {}
        for r in sub["folds"]:
            by_fold.setdefault(r["held_out"], {})[r["detector"]] = r[metric]
        lines += [
            f"| {f} | " + " | ".join(f"{v[d]:.3f}" for d in detectors) + " |"
            for f, v in by_fold.items()
        ]
        lines.append(
            "| **mean ± std** | "
            + " | ".join(_fmt(sub["summary"][d], metric) for d in detectors)
            + " |"
        )
    if sub["folds"]:
        cost: dict[str, list[float]] = {}
        for r in sub["folds"]:
            cost.setdefault(r["detector"], []).append(r["detector_seconds"])
        lines += ["", "### Detector cost (fit + score, seconds per fold)", ""]
        lines += ["| detector | seconds |", "|---|---|"]
        lines += [f"| {d} | {np.mean(v):.3f} |" for d, v in cost.items()]
    lines += ["", "</details>"]
    if sub["skipped_folds"]:
        lines += [
            "",
            "Skipped folds: "
            + "; ".join(f"{s['held_out']} ({s['reason']})" for s in sub["skipped_folds"]),
        ]
    if sub["left_out_classes"]:
        lines += [
            "",
            "Classes left out of a fold (test pixels but no training annotation): "
            + "; ".join(f"fold {k}: {', '.join(v)}" for k, v in sub["left_out_classes"].items()),
        ]
    return "\n".join(lines)


RULE_TITLES = {
    "tpr": "TPR rule (paper)",
    "pu": "PU rule",
    "oracle": "oracle (test truth)",
}


def _operating_markdown(sub: dict, detectors: list[str]) -> str:
    """Each threshold rule's operating point next to the oracle's, mean over folds, and the ID
    share among the unlabelled pixels as estimated (BBE) and as it truly is."""
    rules = [r for r in RULE_TITLES if any(f"{r}:test_tpr" in sub["summary"][d] for d in detectors)]
    lines = [
        "### Operating points: test TPR / OOD recall / balanced accuracy / K+1 mIoU (means)",
        "",
        "| detector | " + " | ".join(RULE_TITLES[r] for r in rules) + " | ID share of the "
        "unlabelled pixels: estimated / true |",
        "|---" * (len(rules) + 2) + "|",
    ]
    metrics = ("test_tpr", "ood_recall", "balanced_accuracy", "miou_k_plus_1")
    for d in detectors:
        s = sub["summary"][d]
        cells = [
            " / ".join(f"{s[f'{r}:{m}']['mean']:.2f}" for m in metrics)
            if f"{r}:test_tpr" in s
            else "—"
            for r in rules
        ]
        share = " / ".join(
            f"{s[k]['mean']:.2f}" if k in s else "—" for k in ("id_share_estimate", "id_share_true")
        )
        lines.append(f"| {d} | " + " | ".join(cells) + f" | {share} |")
    return "\n".join(lines)


def csv_table(res: dict) -> str:
    """One row per protocol, fold and detector, then a mean and a std row per detector."""
    columns = METRICS + OPERATING
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["protocol", "held_out", "detector", *columns])
    cell = lambda v: "" if v is None else f"{v:.6g}"  # noqa: E731
    for name, sub in res["protocols"].items():
        for r in sub["folds"]:
            writer.writerow(
                [name, r["held_out"], r["detector"], *(cell(r.get(m)) for m in columns)]
            )
        for stat in ("mean", "std"):
            for d, s in sub["summary"].items():
                values = (s[m][stat] if m in s else None for m in columns)
                writer.writerow([name, stat, d, *(cell(v) for v in values)])
    return buf.getvalue()


def print_summary(res: dict, console: Console) -> None:
    """The mean ± std table of each protocol on the console."""
    took = f" ({res['seconds']:.0f} s)" if "seconds" in res else ""
    for protocol, sub in res["protocols"].items():
        table = Table(title=f"{res['dataset']} / {protocol}: mean ± std over folds{took}")
        table.add_column("detector")
        for m in CONSOLE_METRICS:
            table.add_column(LABELS[m], justify="right")
        for d, s in sub["summary"].items():
            table.add_row(d, *(_fmt(s, m) for m in CONSOLE_METRICS))
        console.print(table)


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


def write_suggestions(
    out: Path,
    source: Path,
    image: np.ndarray,
    regions: Sequence[Region],
    maps: Maps,
    bundle: Bundle,
    annotated: np.ndarray | None = None,
) -> list[Path]:
    """Per image: the overlay PNG with the suggested regions boxed and numbered by rank (magenta:
    between known classes, cyan: near the threshold) and the interactive viewer page."""
    from PIL import Image, ImageDraw

    from oodseg.viewer import Layer, Picture, page, write_page

    stem = source.stem
    picture = Image.fromarray(overlay(image, maps.labels, len(bundle.class_names)))
    draw = ImageDraw.Draw(picture)
    width = max(1, max(picture.size) // 300)
    for r in regions:
        y0, x0, y1, x1 = r.bbox
        colour = (255, 0, 255) if r.reason == "class" else (0, 229, 255)
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=colour, width=width)
        draw.text((r.anchor[1], r.anchor[0]), str(r.rank), fill=(255, 255, 255))
    overlay_path = out / f"{stem}_suggestions.png"
    with atomic_path(overlay_path) as tmp:
        picture.save(tmp, format="PNG")
    layer = Layer(
        "model",
        maps.classes,
        maps.scores,
        bundle.threshold,
        regions=list(regions),
        annotated=annotated,
    )
    html = page(
        stem,
        Picture.of(image, (rgb_view(image, None) * 255).round()),
        bundle.class_names,
        [layer],
        title=f"{stem}: {bundle.detector.name}, {len(regions)} suggested regions",
    )
    return [overlay_path, write_page(out / f"{stem}_viewer.html", html)]


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
        folds = [{det: evaluation.figures}]
        plot_roc(folds, {det: f"{res['pooled']['auroc']:.3f}"}, "pooled", out / "roc.png")
        plot_histograms(folds, "pooled", out / "histograms.png")
    if evaluation.panels:
        title = f"evaluation, {det}"
        plot_panels(evaluation.panels, tuple(res["classes"]), det, title, out / "images.png")
    from oodseg.viewer import save_layer, save_picture

    for name, picture, layer in evaluation.viewers:
        save_picture(out, name, picture, tuple(res["classes"]))
        save_layer(out, name, "model", layer)


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
    self-contained file that reads offline. Figures the page refers to stay where it shows them
    (it leads with them); the others follow the tables. The images a run kept for the viewer get
    their interactive pages (``viewer/<image>.html``, each self-contained), linked at the top."""
    import base64
    import re

    import markdown

    md_path = folder / "results.md"
    if not md_path.is_file():
        raise FileNotFoundError(f"{md_path}: no results to report (run crossval or evaluate first)")
    body = markdown.markdown(md_path.read_text(), extensions=["tables", "md_in_html"])
    uri = lambda p: f"data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}"  # noqa: E731
    shown = set()

    def inline(match: re.Match) -> str:
        path = folder / match.group(1)
        if not path.is_file():
            return match.group(0)
        shown.add(path.name)
        return f'src="{uri(path)}"'

    body = re.sub(r'src="([^"/]+\.png)"', inline, body)
    from oodseg.viewer import write_pages

    pages = write_pages(folder)
    if pages:
        links = "".join(f'<li><a href="viewer/{p.name}">{p.stem}</a></li>' for p in pages)
        body = (
            "<p><b>Interactive viewer</b> (threshold slider, class toggles, suggested regions, "
            f"the pixel under the cursor), one page per image:</p><ul>{links}</ul>" + body
        )
    figures = "".join(
        f'<figure><img alt="{p.stem}" src="{uri(p)}"><figcaption>{p.stem}</figcaption></figure>'
        for p in sorted(folder.glob("*.png"))
        if p.name not in shown
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
