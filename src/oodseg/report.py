"""Report: renders a finished run (from the run store), an evaluation and predictions as tables,
figures and a self-contained HTML page, and prints the console summary. Rendering only: nothing
here trains or scores (no torch)."""

from __future__ import annotations

import base64
import csv
import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import markdown as md
import numpy as np
import tifffile
from PIL import Image, ImageDraw
from rich.console import Console
from rich.table import Table

from oodseg.figures import overlay, plot_histograms, plot_panels, plot_roc, rgb_view
from oodseg.io import atomic_path
from oodseg.metrics import BASELINE_METRICS, METRICS, OPERATING
from oodseg.progress import Stages
from oodseg.runstore import figure_data, write_results
from oodseg.viewer import Layer, Picture, page, save_layer, save_picture, write_page, write_pages

if TYPE_CHECKING:  # annotations only: these modules call this one
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


def write_run(out: Path, res: dict) -> None:
    """``results.json`` / ``.md`` / ``.csv`` and, per protocol, the ROC curves and the score
    histograms of every fold, drawn from the run store's fold files."""
    write_results(out, res)
    (out / "results.md").write_text(markdown(res))
    (out / "results.csv").write_text(csv_table(res))
    data = figure_data(out)
    for protocol, sub in res["protocols"].items():
        if protocol not in data:
            continue
        title = f"{res['dataset']}, {protocol}"
        aurocs = {d: _fmt(s, "auroc") for d, s in sub["summary"].items()}
        plot_roc(data[protocol], aurocs, title, out / f"roc_{protocol}.png")
        plot_histograms(data[protocol], title, out / f"histograms_{protocol}.png")


def _fmt(summary: dict, metric: str) -> str:
    """Mean ± standard deviation over folds; the mean alone for one fold (no spread)."""
    mean, std = summary[metric]["mean"], summary[metric]["std"]
    return f"{mean:.3f}" if std is None else f"{mean:.3f} ± {std:.3f}"


def markdown(res: dict) -> str:
    """The set-up, the baselines next to the method, then per protocol the summary (mean ± std
    over folds) and the per-fold tables."""
    cfg = res["config"]
    t, sc = cfg["train"], cfg["scoring"]
    lines = [
        f"# {res['dataset']}: open-set segmentation from sparse annotations",
        "",
        f"{res['description'][:1].upper()}{res['description'][1:]}. Network: {cfg['network']}, "
        f"{t['epochs']} epochs x {t['patches_per_epoch']} patches, seed {t['seed']}, "
        f"{TRAINING[t['unlabelled']]}; K+1 map at the "
        f"{THRESHOLDS[sc['threshold']].format(tpr=sc['tpr'])}; score maps smoothed with σ "
        f"{sc['smooth']:g} px, class probabilities with σ {sc['smooth_classes']:g} px. "
        "Annotated pixels: "
        + ", ".join(f"{k} {v}" for k, v in res["annotated_pixels"].items())
        + (f"; {res['seconds']:.0f} s on {res['machine']}" if "seconds" in res else "")
        + (f", {res['date']}." if "date" in res else "."),
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
    write_results(out, res)
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


def write_html(folder: Path, progress: Stages | None = None) -> Path:
    """``report.html`` in ``folder``: its results.md as HTML with every PNG figure embedded, one
    self-contained file that reads offline. Figures the page refers to stay where it shows them
    (it leads with them); the others follow the tables. The images a run kept for the viewer get
    their interactive pages (``viewer/<image>.html``, each self-contained), linked at the top."""
    md_path = folder / "results.md"
    if not md_path.is_file():
        raise FileNotFoundError(f"{md_path}: no results to report (run crossval or evaluate first)")
    body = md.markdown(md_path.read_text(), extensions=["tables", "md_in_html"])
    uri = lambda p: f"data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}"  # noqa: E731
    shown = set()

    def inline(match: re.Match) -> str:
        path = folder / match.group(1)
        if not path.is_file():
            return match.group(0)
        shown.add(path.name)
        return f'src="{uri(path)}"'

    body = re.sub(r'src="([^"/]+\.png)"', inline, body)
    pages = write_pages(folder, progress)
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
