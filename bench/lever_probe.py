"""Screen one lever fast: a few folds through the fold engine, mean AUROC per detector.

    .venv/bin/python bench/lever_probe.py [--data ip|es|samson] [--detectors gen,mahalanobis]
        [--folds Woods,Corn] [--scale 0.25] [--baseline] [--rescore smooth=2,4,8 [--rescore ...]]
        [TrainConfig or ScoringConfig fields: --dropout=0.1 --threshold=tpr ...]

Indian Pines (scene split): the six folds below by default (``--folds all``: the 16), a subset
that covers large and small classes, so that a lever costs a few minutes; Endoscapes: the
background protocol at ``--scale``; Samson: its three leave-one-class-out folds (those of
``oodseg crossval --data``). Levers that pass the screen go to the full grid of
``bench/quality.py``. Any ``--name=value`` left over is a ``TrainConfig`` or ``ScoringConfig``
field (its type taken from the default). ``--rescore`` scores each fold's one network at every
value of a ``ScoringConfig`` field (a mean per value); repeated, at every combination of their
values. Means: AUROC (test TPR / OOD recall / K+1 mIoU at the threshold rule's threshold).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import fields
from pathlib import Path

import numpy as np

from oodseg.config import ScoringConfig, TrainConfig
from oodseg.datasets import load_dataset
from oodseg.engine import collect, run_fold, train_network
from oodseg.manifest import load_manifest
from oodseg.sources import dataset_collection, endoscapes_collection, folds, scene_collection

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
ENDOSCAPES = SHARED / "endoscapes_seg50"
SAMSON = SHARED / "samson" / "samson.yaml"
POINT = ("auroc", "test_tpr", "ood_recall", "miou_k_plus_1")  # what the means are taken of
IP_FOLDS = "Woods,Corn-notill,Hay-windrowed,Soybean-mintill,Grass-pasture,Corn"


def values_of(cls: type, pairs: list[str]) -> dict:
    """The ``--name=value`` pairs that name fields of ``cls``, typed as the fields' defaults."""
    known = {f.name: f.default for f in fields(cls)}
    values = {}
    for item in pairs:
        key, _, value = item.lstrip("-").partition("=")
        if key in known:
            default = known[key]
            values[key] = (
                (int(value) if value.isdigit() else value)
                if default is None
                else type(default)(value)
            )
    return values


def configs(pairs: list[str]) -> tuple[TrainConfig, ScoringConfig]:
    names = {f.name for c in (TrainConfig, ScoringConfig) for f in fields(c)}
    unknown = [p for p in pairs if p.lstrip("-").partition("=")[0] not in names]
    if unknown:
        raise SystemExit(f"{', '.join(unknown)}: not a TrainConfig or ScoringConfig field")
    train = TrainConfig(**{"device": "cpu", **values_of(TrainConfig, pairs)})
    return train, ScoringConfig(**values_of(ScoringConfig, pairs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", choices=("ip", "es", "samson"), default="ip")
    parser.add_argument("--detectors", default="gen,mahalanobis")
    parser.add_argument("--folds", default=IP_FOLDS)
    parser.add_argument("--scale", type=float, default=0.25)
    parser.add_argument("--baseline", action="store_true", help="also the fully supervised net")
    parser.add_argument(
        "--rescore",
        action="append",
        default=[],
        help="FIELD=V1,V2,...: a ScoringConfig field (smooth, smooth_classes, threshold, tpr) at "
        "each value, on one network a fold; repeat it for every combination",
    )
    args, rest = parser.parse_known_args()
    config, scoring = configs(rest)
    scoring_fields = [f.name for f in fields(ScoringConfig)]
    settings: list[list[str]] = [[]]
    for spec in args.rescore:
        field, _, values = spec.partition("=")
        if field not in scoring_fields:
            raise SystemExit(f"--rescore takes a scoring field: {', '.join(scoring_fields)}")
        settings = [[*s, f"{field}={v}"] for s in settings for v in values.split(",")]
    # Every variant is checked (built) before any training.
    variants = [(" ".join(s) + " " if s else "", configs([*rest, *s])[1]) for s in settings]
    if args.data == "ip":
        source = scene_collection(load_dataset("indian_pines"), "scene")
        protocol = "loco"
        names = None if args.folds == "all" else args.folds.split(",")
    elif args.data == "es":
        source = endoscapes_collection(ENDOSCAPES, scale=args.scale)
        protocol, names = "background", None
    else:
        source = dataset_collection(load_manifest(SAMSON), source=str(SAMSON))
        protocol, names = "loco", None
    collection = collect(source, input_pca=config.input_pca)
    chosen, _ = folds(collection, [protocol], names)
    detectors = args.detectors.split(",")
    start = time.perf_counter()
    scores = {(v, d): [] for v, _ in variants for d in detectors}
    for fold in chosen:
        net = train_network(collection, fold.known, config)
        for variant, scored in variants:
            result = run_fold(
                collection,
                fold,
                config,
                scored,
                detectors,
                baseline=args.baseline,
                net=net,
            )
            cells = []
            for row in result.rows:
                scores[variant, row["detector"]].append([row[m] for m in POINT])
                cells.append(
                    f"{row['detector']}={row['auroc']:.3f} ({row['test_tpr']:.2f}/"
                    f"{row['ood_recall']:.2f}/{row['miou_k_plus_1']:.3f})"
                )
            cells.append(f"closed={result.rows[0]['closed_set_accuracy']:.3f}")
            if result.fully_supervised:
                scores.setdefault((variant, "fully supervised"), []).append(
                    [result.fully_supervised[m] for m in POINT]
                )
                cells.append(f"FS={result.fully_supervised['auroc']:.3f}")
            print(f"{fold.name[:14]:15s}", variant + " ".join(cells), flush=True)
    for variant, _ in variants:
        means = " ".join(
            "{}={:.3f} ({:.2f}/{:.2f}/{:.3f})".format(d, *np.mean(v, 0))
            for (w, d), v in scores.items()
            if w == variant
        )
        print(f"MEAN {variant}{means} ({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
