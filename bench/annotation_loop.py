"""The annotation loop, simulated: do strokes drawn where ``oodseg suggest`` points help more than
strokes drawn at random places, for the same number of annotated pixels?

    .venv/bin/python bench/annotation_loop.py [--data ip,es] [--rounds 3] [--folds Woods,Corn]
        [--seeds 0] [--out docs/annotation_loop] [--replot]

* Indian Pines, scene protocol, leave-one-class-out folds (``--folds``): strokes on 1 % of each
  class's pixels to start with (a quarter of them calibrate the threshold, fixed), each round adds
  ``ROUND_PIXELS["ip"]`` pixels.
* Endoscapes-Seg50, quarter resolution, ``--max-frames`` frames per split, background protocol:
  strokes on 0.5 % of each class's pixels per train and val frame to start with (the val strokes
  calibrate, fixed), each round adds ``ROUND_PIXELS["es"]`` pixels over the train frames.

Both arms start from the same strokes and network. **suggested**: down the ranked regions of
:func:`oodseg.suggest.suggest_regions` (all training images, by score), the simulated annotator
looks at each region's anchor: a known class there gets a stroke of that class from the anchor,
inside the region's box (as long as the data set's simulated strokes); anything else (the held-out
class, background, unlabelled) is left alone, as a real annotator leaves what is none of the
classes. **random**: anchors drawn uniformly among the training images' pixels not yet annotated,
the same annotator. Each round stops at its pixel budget; the network is then retrained from the
same seed and scored (the defaults: GEN, or the PU head's ``pu`` score where the data declare
background, at the ``pu`` threshold rule). Test pixels are the same for both
arms and every round: on Indian Pines the scene split's test pixels less every pixel either arm
annotated in any round and a 1-pixel margin around them (so no arm is scored on pixels it drew),
on Endoscapes the test frames.

Each seed (``--seeds``) redraws the starting strokes and the random places and reseeds training.
Prints a table per data set (mean over folds and seeds) and the share of the random arm's added
pixels the suggested arm needed to reach the random arm's final mean AUROC (linear interpolation
along its curve); writes ``OUT.json`` (a data set run again replaces its
entry, or adds to it when its seeds are new, the others are kept) and ``OUT.png`` from every
entry. ``--replot`` trains nothing: it redraws ``OUT.png`` and reprints the tables from
``OUT.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

from oodseg.annotate import simulate_annotations, stroke_at  # noqa: E402
from oodseg.config import ScoringConfig, TrainConfig  # noqa: E402
from oodseg.crossval import DEFAULT_DETECTORS  # noqa: E402
from oodseg.datasets import IGNORE_LABEL, endoscapes_items, load_dataset  # noqa: E402
from oodseg.engine import (  # noqa: E402
    BACKGROUND,
    Collection,
    FittedScorer,
    Fold,
    Sample,
    collect,
    fit_scorer,
    fold_rows,
    test_pass,
    train_network,
)
from oodseg.inference import Inference  # noqa: E402
from oodseg.splits import make_split  # noqa: E402
from oodseg.suggest import class_margin, suggest_regions  # noqa: E402

ENDOSCAPES = Path(__file__).resolve().parents[2] / "shared" / "data" / "endoscapes_seg50"
START_BUDGET = {"ip": 0.01, "es": 0.005}
ROUND_PIXELS = {"ip": 120, "es": 1500}
STROKE = {"ip": 12, "es": 40}
ARMS = ("suggested", "random")


@dataclass
class World:
    """A data set as the loop sees it: images, dense truth (engine values), the fixed
    calibration strokes, the starting training strokes, the training images and the folds."""

    key: str
    name: str
    class_names: tuple[str, ...]
    images: list[np.ndarray]
    truth: list[np.ndarray]  # class ids, BACKGROUND, 0 = unlabelled
    calibration: list[np.ndarray]
    start: list[np.ndarray]
    test: list[np.ndarray]  # the test pixels (before the loop's strokes are taken out)
    trainable: list[int]  # the images strokes are drawn on
    normalise: list[np.ndarray | None]
    folds: list[Fold]
    rgb_bands: tuple[int, int, int] | None = None

    def collection(self, strokes: list[np.ndarray], test: list[np.ndarray]) -> Collection:
        def load(i: int) -> Sample:
            return Sample(
                f"{self.name}-{i}",
                self.images[i],
                strokes[i],
                self.calibration[i],
                np.where(test[i], self.truth[i], 0).astype(np.uint8),
                normalise=self.normalise[i],
                calibration_truth=self.truth[i] if self.calibration[i].any() else None,
            )

        c = Collection(self.name, self.class_names, len(self.images), load, "", rgb_bands=None)
        c.patch = 128 if self.key == "es" else None
        return collect(c)


def indian_pines(folds: list[str], seed: int) -> World:
    scene = load_dataset("indian_pines")
    s = make_split(scene.labels, "scene", budget=START_BUDGET["ip"], seed=seed)
    all_ids = range(1, len(scene.class_names) + 1)
    chosen = [
        Fold("loco", n, tuple(i for i in all_ids if i != scene.class_id(n)), (scene.class_id(n),))
        for n in folds
    ]
    return World(
        "ip",
        "indian_pines",
        scene.class_names,
        [scene.cube],
        [scene.labels.astype(np.uint8)],
        [s.val.labels.astype(np.uint8)],
        [s.train.labels.astype(np.uint8)],
        [s.test],
        [0],
        [s.train_region],
        chosen,
        scene.rgb_bands,
    )


def endoscapes(max_frames: int, seed: int) -> World:
    names, found = endoscapes_items(ENDOSCAPES, scale=0.25, max_frames=max_frames)
    images, truth, cal, start, test, trainable, normalise = [], [], [], [], [], [], []
    for i, (_, split, read) in enumerate(found):
        image, mask = read()
        dense = np.where(mask == 0, BACKGROUND, np.where(mask == IGNORE_LABEL, 0, mask))
        dense = dense.astype(np.uint8)
        strokes = np.zeros(dense.shape, np.uint8)
        if split in ("train", "val"):
            strokes = simulate_annotations(
                np.where(dense == BACKGROUND, 0, dense).astype(np.int64),
                budget=START_BUDGET["es"],
                stroke_length=STROKE["es"],
                seed=i + 1000 * seed,
            ).labels.astype(np.uint8)
        images.append(image)
        truth.append(dense)
        cal.append(strokes if split == "val" else np.zeros_like(strokes))
        start.append(strokes if split == "train" else np.zeros_like(strokes))
        test.append(np.full(dense.shape, split == "test"))
        normalise.append(np.ones(dense.shape, bool) if split == "train" else None)
        if split == "train":
            trainable.append(i)
    known = tuple(sorted(set(np.unique(np.concatenate([s.ravel() for s in start]))) - {0}))
    fold = Fold("background", "background", known, (BACKGROUND,))
    return World("es", "endoscapes", names, images, truth, cal, start, test, trainable,
                 normalise, [fold])  # fmt: skip


def train_and_fit(world: World, fold: Fold, strokes, config: TrainConfig) -> FittedScorer:
    collection = world.collection(strokes, world.test)
    net = train_network(collection, fold.known, config)
    # The defaults' detector, as ``oodseg crossval`` orders them: pu where the PU head was trained.
    detector = "pu" if net.known_head is not None else DEFAULT_DETECTORS[0]
    return fit_scorer(
        collection,
        net,
        fold.known,
        [detector],
        0.95,
        Inference.of(config, ScoringConfig()),
        ood=fold.ood,
    )


def add_strokes(
    world: World,
    fold: Fold,
    strokes: list[np.ndarray],
    fitted: FittedScorer,
    arm: str,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """One round of the simulated annotator: ``ROUND_PIXELS`` more annotated pixels."""
    strokes = [s.copy() for s in strokes]
    taken = [(s > 0) | (c > 0) for s, c in zip(strokes, world.calibration, strict=True)]
    budget, length = ROUND_PIXELS[world.key], STROKE[world.key]
    (detector,) = fitted.points
    if arm == "suggested":
        places = []
        ids_of = np.asarray(fold.known)
        for i in world.trainable:
            forward = fitted.scorer.predictor.forward(world.images[i])
            score = fitted.scorer.score_maps(forward, only=[detector])[detector]
            classes = ids_of[forward.logits.argmax(0).numpy()]
            margin = class_margin(forward.logits.softmax(0).numpy())
            regions = suggest_regions(
                str(i), classes, margin, score, fitted.thresholds[detector],
                world.class_names, annotated=taken[i], top=10_000,
            )  # fmt: skip
            places += [(r.score, i, r.anchor, r.bbox) for r in regions]
        places.sort(key=lambda p: -p[0])
        queue = iter((i, anchor, bbox) for _, i, anchor, bbox in places)
    else:

        def random_places():
            sizes = np.array([world.images[i].shape[0] * world.images[i].shape[1]
                              for i in world.trainable])  # fmt: skip
            while True:
                j = rng.choice(len(sizes), p=sizes / sizes.sum())
                i = world.trainable[j]
                h, w = world.truth[i].shape
                y, x = int(rng.integers(h)), int(rng.integers(w))
                if not taken[i][y, x]:
                    yield i, (y, x), None

        queue = random_places()
    added, tries = 0, 0
    for i, (y, x), bbox in queue:
        tries += 1
        if added >= budget or tries > 200_000:
            break
        label = int(world.truth[i][y, x])
        if label not in fold.known:
            continue  # the held-out class, background or unlabelled: left alone
        free = (world.truth[i] == label) & ~taken[i]
        if bbox is not None:
            inside = np.zeros_like(free)
            inside[bbox[0] : bbox[2], bbox[1] : bbox[3]] = True
            free &= inside
        path = stroke_at(free, (y, x), min(length, budget - added), rng)
        strokes[i][path[:, 0], path[:, 1]] = label
        taken[i][path[:, 0], path[:, 1]] = True
        added += len(path)
    return strokes


def scored(collection: Collection, fold: Fold, fitted: FittedScorer) -> dict:
    tallies, closed, _ = test_pass(
        collection,
        fold,
        fitted.scorer,
        fitted.thresholds,
        candidates={d: p.candidates for d, p in fitted.points.items()},
    )
    (row,) = fold_rows(collection, fold, tallies, closed, fitted)[0]
    return {m: row[m] for m in ("auroc", "id_accuracy", "miou_k_plus_1", "ood_recall", "test_tpr")}


def run_world(world: World, rounds: int, config: TrainConfig) -> dict:
    curves = {arm: [] for arm in ARMS}
    detector = None
    start = time.perf_counter()
    for fold in world.folds:
        strokes0 = [np.where(np.isin(s, fold.known), s, 0).astype(np.uint8) for s in world.start]
        fitted0 = train_and_fit(world, fold, strokes0, config)
        (detector,) = fitted0.points
        kept = {arm: [(strokes0, fitted0)] for arm in ARMS}
        for arm in ARMS:
            rng = np.random.default_rng(config.seed)
            strokes, fitted = strokes0, fitted0
            for r in range(rounds):
                strokes = add_strokes(world, fold, strokes, fitted, arm, rng)
                fitted = train_and_fit(world, fold, strokes, config)
                kept[arm].append((strokes, fitted))
                print(f"  {world.name} {fold.name} {arm} round {r + 1}: "
                      f"{sum(int((s > 0).sum()) for s in strokes)} pixels, "
                      f"{time.perf_counter() - start:.0f} s", flush=True)  # fmt: skip
        # The same test pixels for both arms and every round: none that any arm annotated.
        drawn = [
            np.any([s[i] > 0 for arm in ARMS for s, _ in kept[arm]], axis=0)
            for i in range(len(world.images))
        ]
        test = [
            t & ~ndimage.binary_dilation(d, iterations=1) if world.key == "ip" else t
            for t, d in zip(world.test, drawn, strict=True)
        ]
        scoring = world.collection([np.zeros_like(t, np.uint8) for t in world.truth], test)
        for arm in ARMS:
            curve = []
            for strokes, fitted in kept[arm]:
                pixels = sum(int((s > 0).sum()) for s in strokes)
                curve.append({"pixels": pixels, **scored(scoring, fold, fitted)})
            curves[arm].append({"fold": fold.name, "seed": config.seed, "curve": curve})
    return {"seconds": round(time.perf_counter() - start), "detector": detector, "curves": curves}


def mean_curve(folds: list[dict]) -> dict[str, np.ndarray]:
    keys = folds[0]["curve"][0].keys()
    return {k: np.mean([[p[k] for p in f["curve"]] for f in folds], axis=0) for k in keys}


def pixels_to_reach(curve: dict[str, np.ndarray], target: float) -> float | None:
    """Added pixels at which ``curve`` first reaches ``target`` AUROC (linear interpolation), or
    None where it never does. The start is not a candidate: both arms share it, so a target at or
    below it (the random strokes ending no higher than they began) measures nothing."""
    added, auroc = curve["pixels"] - curve["pixels"][0], curve["auroc"]
    if auroc[0] >= target:
        raise ValueError(f"the target AUROC {target:.3f} is not above the start {auroc[0]:.3f}")
    for j in range(1, len(auroc)):
        if auroc[j] >= target:
            f = (target - auroc[j - 1]) / (auroc[j] - auroc[j - 1])
            return float(added[j - 1] + f * (added[j] - added[j - 1]))
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="ip,es")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--folds", default="Woods,Corn-notill")
    parser.add_argument("--max-frames", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--out", type=Path, default=Path("docs/annotation_loop"))
    parser.add_argument("--replot", action="store_true", help="from OUT.json, training nothing")
    args = parser.parse_args()
    if args.replot:
        given = [
            f"--{k.replace('_', '-')}"
            for k in ("data", "rounds", "folds", "max_frames", "epochs", "seeds")
            if getattr(args, k) != parser.get_default(k)
        ]
        if given:
            raise SystemExit(f"--replot trains nothing: {', '.join(given)} would be ignored")
    keys = [] if args.replot else args.data.split(",")
    if not set(keys) <= {"ip", "es"} or args.rounds < 1:
        raise SystemExit("--data takes ip and/or es, --rounds at least 1")
    if "es" in keys and not ENDOSCAPES.is_dir():
        raise SystemExit(f"{ENDOSCAPES}: Endoscapes-Seg50 not found")
    seeds = [int(v) for v in args.seeds.split(",")]
    path = args.out.with_suffix(".json")
    if args.replot and not path.is_file():
        raise SystemExit(f"{path}: no results to redraw")
    results = json.loads(path.read_text()) if path.is_file() else {}
    for key in keys:
        runs = []
        for seed in seeds:
            config = TrainConfig(device="cpu", epochs=args.epochs, seed=seed)
            world = (
                indian_pines(args.folds.split(","), seed)
                if key == "ip"
                else endoscapes(args.max_frames, seed)
            )
            runs.append(run_world(world, args.rounds, config))
        entry = {
            "name": world.name,
            "folds": [f.name for f in world.folds],
            "seeds": seeds,
            "detector": runs[0]["detector"],
            "seconds": sum(r["seconds"] for r in runs),
            "curves": {arm: [c for r in runs for c in r["curves"][arm]] for arm in ARMS},
        }
        old = results.get(key)
        same = old and (old["folds"], old.get("detector", "gen")) == (
            entry["folds"],
            entry["detector"],
        )
        if same and not set(old["seeds"]) & set(seeds):
            # Other seeds of the same set-up (entries before the detector was kept used GEN).
            entry["seeds"] = old["seeds"] + seeds
            entry["seconds"] += old["seconds"]
            entry["curves"] = {arm: old["curves"][arm] + entry["curves"][arm] for arm in ARMS}
        results[key] = entry
    fig, axes = plt.subplots(len(results), 3, figsize=(15, 4 * len(results)), squeeze=False)
    metrics = (("auroc", "AUROC"), ("id_accuracy", "ID accuracy"), ("miou_k_plus_1", "K+1 mIoU"))
    for row, res in zip(axes, results.values(), strict=True):
        means = {arm: mean_curve(res["curves"][arm]) for arm in ARMS}
        target, start = means["random"]["auroc"][-1], means["suggested"]["auroc"][0]
        reach = pixels_to_reach(means["suggested"], target) if target > start else None
        added = means["random"]["pixels"][-1] - means["random"]["pixels"][0]
        res["share_of_random_pixels"] = None if reach is None else reach / added
        print(f"\n{res['name']} ({', '.join(res['folds'])}; {res.get('detector', 'gen')}; "
              f"seeds {res['seeds']}; "
              f"{res['seconds']} s, 2-core CPU)\n")  # fmt: skip
        print("| round | arm | annotated pixels | AUROC | ID acc. | K+1 mIoU | OOD recall |")
        print("|---|---|---|---|---|---|---|")
        for arm in ARMS:
            m = means[arm]
            for r in range(len(m["pixels"])):
                print(f"| {r} | {arm} | {m['pixels'][r]:.0f} | {m['auroc'][r]:.3f} | "
                      f"{m['id_accuracy'][r]:.3f} | {m['miou_k_plus_1'][r]:.3f} | "
                      f"{m['ood_recall'][r]:.3f} |")  # fmt: skip
        if target <= start:
            print(f"\nthe random strokes end at AUROC {target:.3f}, no higher than the start "
                  f"({start:.3f}): the share of their added pixels is undefined")  # fmt: skip
        else:
            shown = "not reached" if reach is None else f"{reach / added:.0%}"
            print(f"\nsuggested strokes reach the random strokes' final AUROC ({target:.3f}) "
                  f"with {shown} of their {added:.0f} added pixels")  # fmt: skip
        for ax, (metric, label) in zip(row, metrics, strict=True):
            for arm, style in zip(ARMS, ("o-", "s--"), strict=True):
                ax.plot(means[arm]["pixels"], means[arm][metric], style, label=arm)
            ax.set_xlabel("annotated pixels")
            ax.set_ylabel(label)
            ax.set_title(f"{res['name']}: {label}")
            ax.grid(alpha=0.3)
        row[0].legend()
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out.with_suffix(".png"), dpi=100)
    path.write_text(json.dumps(results, indent=1, default=float))
    print(f"\nwritten: {args.out.with_suffix('.png')}, {args.out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
