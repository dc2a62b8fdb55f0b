"""Results of a cross-validation: the metrics each fold row holds, summaries over folds, and the
assembly of ``results.json`` from fold files (one run, a resumed run, or fold jobs merged)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

METRICS = (
    "auroc",
    "aupr_in",
    "aupr_out",
    "ap",
    "fpr95",
    "threshold",
    "id_accuracy",
    "closed_set_accuracy",
    "ood_recall",
    "test_tpr",
    "balanced_accuracy",
    "miou_k_plus_1",
    "mdice_k_plus_1",
)


def summarise(
    rows: Sequence[dict], detectors: Sequence[str]
) -> dict[str, dict[str, dict[str, float]]]:
    """Mean and standard deviation (ddof = 1) over folds, per detector and metric."""
    summary = {}
    for det in detectors:
        mine = [r for r in rows if r["detector"] == det]
        if not mine:
            continue
        summary[det] = {}
        for m in METRICS:
            values = np.array([r[m] for r in mine], np.float64)
            std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
            summary[det][m] = {"mean": float(values.mean()), "std": std}
    return summary


def assemble(header: dict, fold_files: Sequence[dict], skipped: Sequence[dict]) -> dict:
    """``results.json`` from the run's header (data set, set-up, versions), its fold files (each
    ``{"fold": {...}, "rows": [...], "closed_set": {...}}`` or ``{"baseline": {...}}``) and the
    skipped folds. Folds are ordered as the run lists them (``fold["order"]``)."""
    detectors = header["config"]["detectors"]
    protocols: dict[str, dict] = {}
    baselines = []
    for f in sorted(fold_files, key=lambda f: f["order"]):
        if "baseline" in f:
            baselines.append(f["baseline"])
            continue
        p = protocols.setdefault(
            f["fold"]["protocol"], {"folds": [], "skipped_folds": [], "left_out_classes": {}}
        )
        p["folds"] += f["rows"]
        if f["fold"]["left_out"]:
            p["left_out_classes"][f["fold"]["name"]] = f["fold"]["left_out"]
        if f["fold"]["protocol"] == "background":
            baselines.insert(0, f["closed_set"])
    for s in skipped:
        protocols.setdefault(
            s["protocol"], {"folds": [], "skipped_folds": [], "left_out_classes": {}}
        )["skipped_folds"].append({"held_out": s["held_out"], "reason": s["reason"]})
    for p in protocols.values():
        p["summary"] = summarise(p["folds"], detectors)
    return {**header, "protocols": protocols, "baselines": baselines}
