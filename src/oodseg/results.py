"""Results of a cross-validation: the metrics each fold row holds, summaries over folds, and the
assembly of ``results.json`` from fold files (one run, a resumed run, or fold jobs merged)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from oodseg.threshold import RULES

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
# Each threshold rule's operating point and the oracle's (``RULE:METRIC`` in a fold row), and the
# ID share among the unlabelled pixels: estimated (per detector) and true.
OPERATING_METRICS = ("threshold", "test_tpr", "ood_recall", "balanced_accuracy", "miou_k_plus_1")
OPERATING = tuple(f"{rule}:{m}" for rule in (*RULES, "oracle") for m in OPERATING_METRICS) + (
    "id_share_estimate",
    "id_share_true",
)


def summarise(
    rows: Sequence[dict], detectors: Sequence[str]
) -> dict[str, dict[str, dict[str, float]]]:
    """Mean and standard deviation (ddof = 1) over folds, per detector and metric (of
    :data:`METRICS` and :data:`OPERATING`, those the rows hold)."""
    summary = {}
    for det in detectors:
        mine = [r for r in rows if r["detector"] == det]
        if not mine:
            continue
        summary[det] = {}
        for m in METRICS + OPERATING:
            if any(r.get(m) is None for r in mine):
                continue
            values = np.array([r[m] for r in mine], np.float64)
            std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
            summary[det][m] = {"mean": float(values.mean()), "std": std}
    return summary


BASELINE_METRICS = (
    "auroc",
    "fpr95",
    "id_accuracy",
    "test_tpr",
    "ood_recall",
    "balanced_accuracy",
    "miou_k_plus_1",
    "mdice_k_plus_1",
)


def _mean_row(rows: Sequence[dict]) -> dict:
    """One baseline's rows over the folds: its method, fold count, each metric's mean and each
    class's mean IoU (over the folds where the class has one)."""
    out = {"method": rows[0]["method"], "folds": len(rows)}
    for m in BASELINE_METRICS:
        values = [r[m] for r in rows if r.get(m) is not None]
        out[m] = float(np.mean(values)) if values else None
    names = {n: None for r in rows for n in r["iou_k_plus_1"]}  # every fold's classes, in order
    out["iou_k_plus_1"] = {}
    for n in names:
        values = [r["iou_k_plus_1"][n] for r in rows if r["iou_k_plus_1"].get(n) is not None]
        out["iou_k_plus_1"][n] = float(np.mean(values)) if values else None
    return out


def assemble(header: dict, fold_files: Sequence[dict], skipped: Sequence[dict]) -> dict:
    """``results.json`` from the run's header (data set, set-up, versions), its fold files (each
    ``{"fold": {...}, "rows": [...], "closed_set": {...}, "fully_supervised": {...} or None}``)
    and the skipped folds. Folds are ordered as the run lists them (``fold["order"]``). Each
    protocol gets its summary over folds and its baselines (the closed set, and the fully
    supervised network where it ran), averaged over the folds."""
    detectors = header["config"]["detectors"]
    protocols: dict[str, dict] = {}
    baselines: dict[str, dict[str, list[dict]]] = {}

    def protocol(name: str) -> dict:
        return protocols.setdefault(
            name, {"folds": [], "skipped_folds": [], "left_out_classes": {}}
        )

    for f in sorted(fold_files, key=lambda f: f["order"]):
        name = f["fold"]["protocol"]
        p = protocol(name)
        p["folds"] += f["rows"]
        if f["fold"]["left_out"]:
            p["left_out_classes"][f["fold"]["name"]] = f["fold"]["left_out"]
        mine = baselines.setdefault(name, {"closed_set": [], "fully_supervised": []})
        mine["closed_set"].append(f["closed_set"])
        if f.get("fully_supervised"):
            mine["fully_supervised"].append(f["fully_supervised"])
    for s in skipped:
        protocol(s["protocol"])["skipped_folds"].append(
            {"held_out": s["held_out"], "reason": s["reason"]}
        )
    for name, p in protocols.items():
        p["summary"] = summarise(p["folds"], detectors)
        p["baselines"] = [_mean_row(rows) for rows in baselines.get(name, {}).values() if rows]
    return {**header, "protocols": protocols}
