"""Screen one lever fast: a few folds through the fold engine, mean AUROC per detector.

    .venv/bin/python bench/lever_probe.py [--data ip|es|samson] [--detectors gen,mahalanobis]
        [--folds Woods,Corn] [--scale 0.25] [--baseline] [--rescore smooth=2,4,8 [--rescore ...]]
        [TrainConfig fields: --smooth=4 ...]

Indian Pines (scene split): the six folds below by default (``--folds all``: the 16), a subset
that covers large and small classes, so that a lever costs a few minutes; Endoscapes: the
background protocol at ``--scale``; Samson: its three leave-one-class-out folds (those of
``oodseg crossval --data``). Levers that pass the screen go to the full grid of
``bench/quality.py``. Any ``--name=value`` left over is a ``TrainConfig`` field (its type taken
from the default). ``--rescore`` scores each fold's one network at every value of a scoring field
(a mean per value); repeated, at every combination of their values. Means: AUROC (test TPR / OOD
recall / K+1 mIoU at ``--rule``'s threshold).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from oodseg.datasets import load_dataset
from oodseg.engine import collect, run_fold, train_network
from oodseg.manifest import load_manifest
from oodseg.sources import dataset_collection, endoscapes_collection, folds, scene_collection
from oodseg.threshold import RULES
from oodseg.training import TrainConfig

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
ENDOSCAPES = SHARED / "endoscapes_seg50"
SAMSON = SHARED / "samson" / "samson.yaml"
# What changes the scoring only: TrainConfig fields, the threshold rule and the tpr rule's target.
SCORING = ("smooth", "smooth_classes", "tta", "rule", "tpr")
RUN_FIELDS = ("rule", "tpr")
POINT = ("auroc", "test_tpr", "ood_recall", "miou_k_plus_1")  # what the means are taken of
IP_FOLDS = "Woods,Corn-notill,Hay-windrowed,Soybean-mintill,Grass-pasture,Corn"


def train_config(pairs: list[str]) -> TrainConfig:
    values = {}
    for item in pairs:
        key, _, value = item.lstrip("-").partition("=")
        if key not in TrainConfig.__dataclass_fields__:
            raise SystemExit(f"{key}: not a TrainConfig field")
        default = TrainConfig.__dataclass_fields__[key].default
        values[key] = (
            (int(value) if value.isdigit() else value) if default is None else type(default)(value)
        )
    return TrainConfig(device="cpu", **values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", choices=("ip", "es", "samson"), default="ip")
    parser.add_argument("--detectors", default="gen,mahalanobis")
    parser.add_argument("--folds", default=IP_FOLDS)
    parser.add_argument("--scale", type=float, default=0.25)
    parser.add_argument("--rule", default="pu")
    parser.add_argument("--baseline", action="store_true", help="also the fully supervised net")
    parser.add_argument(
        "--rescore",
        action="append",
        default=[],
        help="FIELD=V1,V2,...: a scoring field (smooth, tta, the threshold rule, or the tpr "
        "rule's target tpr) at each value, on one network a fold; repeat it for every "
        "combination",
    )
    args, rest = parser.parse_known_args()
    config = train_config(rest)
    variants = [("", config, {"rule": args.rule, "tpr": 0.95})]
    settings: list[list[str]] = [[]]
    for spec in args.rescore:
        field, _, values = spec.partition("=")
        if field not in SCORING:
            raise SystemExit(f"--rescore takes a scoring field: {', '.join(SCORING)}")
        settings = [[*s, f"{field}={v}"] for s in settings for v in values.split(",")]
    if args.rescore:
        variants = [
            (
                " ".join(s) + " ",
                train_config([*rest, *(f"--{v}" for v in s if v.split("=")[0] not in RUN_FIELDS)]),
                {"rule": args.rule, "tpr": 0.95}
                | {k: v for k, _, v in (x.partition("=") for x in s) if k in RUN_FIELDS},
            )
            for s in settings
        ]
    for _, _, run in variants:  # checked before any training
        if run["rule"] not in RULES or not 0 < float(run["tpr"]) < 1:
            raise SystemExit(
                f"the threshold rule must be one of {', '.join(RULES)} and the tpr target in "
                f"(0, 1), got rule {run['rule']!r} and tpr {run['tpr']}"
            )
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
    scores = {(v, d): [] for v, *_ in variants for d in detectors}
    for fold in chosen:
        net = train_network(collection, fold.known, config, progress=False)
        for variant, scoring, run in variants:
            result = run_fold(
                collection,
                fold,
                scoring,
                detectors,
                float(run["tpr"]),
                rule=run["rule"],
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
    for variant, *_ in variants:
        means = " ".join(
            "{}={:.3f} ({:.2f}/{:.2f}/{:.3f})".format(d, *np.mean(v, 0))
            for (w, d), v in scores.items()
            if w == variant
        )
        print(f"MEAN {variant}{means} ({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
