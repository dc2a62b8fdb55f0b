"""The run store: what a cross-validation leaves on disk, written and read here only.

``folds/`` holds, per finished fold, a JSON record (its rows and baselines) and an NPZ of figure
arrays (read back without unpickling); they are written as each fold ends, so that an interrupted
run resumes where it stopped and fold jobs run apart merge into one run. ``results.json`` is the
run's summary, assembled from the fold records; :mod:`oodseg.report` renders it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from oodseg.io import atomic_path
from oodseg.metrics import BASELINE_METRICS, METRICS, OPERATING


def fold_stem(order: int, key: str) -> str:
    return f"{order:02d}-" + "".join(c if c.isalnum() or c in "-_" else "_" for c in key)


def save_fold(out: Path, record: dict, arrays: dict[str, np.ndarray]) -> None:
    """A finished fold's ``record`` (JSON, ``record["order"]`` its place in the run) and its
    figure ``arrays`` (NPZ) into ``out/folds``, each written atomically, the record last: a
    record on disk means a whole fold."""
    folds = out / "folds"
    folds.mkdir(parents=True, exist_ok=True)
    stem = fold_stem(record["order"], _key(record))
    with atomic_path(folds / f"{stem}.npz") as tmp:
        np.savez_compressed(tmp, **arrays)
    with atomic_path(folds / f"{stem}.json") as tmp:
        tmp.write_text(json.dumps(record, indent=1))


def load_fold_files(folder: Path) -> list[dict]:
    """The fold records written by :func:`save_fold` (none for a new folder)."""
    return [json.loads(p.read_text()) for p in sorted((folder / "folds").glob("*.json"))]


def figure_data(folder: Path) -> dict[str, list[dict]]:
    """Per protocol, per fold: the figure arrays of each detector."""
    out: dict[str, list[dict]] = {}
    for record in load_fold_files(folder):
        path = folder / "folds" / f"{fold_stem(record['order'], _key(record))}.npz"
        figures: dict[str, dict] = {}
        with np.load(path, allow_pickle=False) as z:
            for key in z.files:
                det, name = key.split("|")
                figures.setdefault(det, {})[name] = z[key]
        out.setdefault(record["fold"]["protocol"], []).append(figures)
    return out


def _key(record: dict) -> str:
    return f"{record['fold']['protocol']}-{record['fold']['name']}"


def write_results(out: Path, res: dict) -> None:
    """``results.json``."""
    (out / "results.json").write_text(json.dumps(res, indent=2))


def read_results(folder: Path) -> dict:
    """A run's ``results.json``."""
    path = folder / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a crossval output folder")
    return json.loads(path.read_text())


def summarise(
    rows: Sequence[dict], detectors: Sequence[str]
) -> dict[str, dict[str, dict[str, float | None]]]:
    """Mean and standard deviation (ddof = 1; None for one fold) over folds, per detector and
    metric (of :data:`METRICS` and :data:`OPERATING`, those the rows hold)."""
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
            # One fold has no spread: None, shown as a mean alone.
            std = float(values.std(ddof=1)) if len(values) > 1 else None
            summary[det][m] = {"mean": float(values.mean()), "std": std}
    return summary


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


def same_config(a: dict, b: dict) -> bool:
    """Whether two runs' configurations agree (apart from which fold job they ran)."""
    return {**a, "fold": None} == {**b, "fold": None}


def merge_headers(runs: Sequence[dict]) -> dict:
    """Check that the headers of fold jobs (``--fold i``) describe one configuration."""
    if not runs:
        raise ValueError("nothing to merge")
    base = runs[0]
    for res in runs[1:]:
        if not same_config(res["config"], base["config"]):
            a, b = _flat({**base["config"], "fold": None}), _flat({**res["config"], "fold": None})
            diff = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
            raise ValueError(f"the runs differ in configuration ({', '.join(diff)}): not one run")
    return {**base, "config": {**base["config"], "fold": None}}


def _flat(config: dict, prefix: str = "") -> dict:
    """A nested configuration as ``{"scoring.tpr": value, ...}``, to name what differs."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def merge_runs(out: Path, runs: Sequence[Path]) -> dict:
    """Fold jobs' output folders merged into the new folder ``out``: their fold files, panels
    and viewer data copied, and ``results.json``'s content assembled and returned (the report
    renders it)."""
    headers, records = [], []
    for run in runs:
        headers.append(read_results(run))
        records += [(run, r) for r in load_fold_files(run)]
    header = merge_headers(headers)
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
    return assemble(header, load_fold_files(out), unique)
