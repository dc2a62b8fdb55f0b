"""Cost of each OOD detector per megapixel, next to the network's forward pass on the same input.

    .venv/bin/python bench/detector_cost.py [--side 512] [--repeats 5]

Input: a side x side crop tiled from the normalised Indian Pines cube (200 bands) through the small
preset with 16 classes, trained for 10 epochs on the scene protocol's strokes (a k-d tree's speed
depends on how the features cluster, so untrained features would mislead); the reference preset's forward (EfficientNet-B4 U-Net, the paper's network)
on the same input is timed too. Detectors are fitted on 4,000 pixels of the small preset's outputs
(not timed); each then scores every pixel; ODIN re-runs the small network (forward, backward,
forward). KNN (default: the nearest of 64 k-means centroids a class) is shown with 16 centroids and with
the brute search, and the published exact bank (k = 10), whose cost grows with the bank: the
whole 4,000-pixel bank and a 500-pixel one (about what the Indian Pines folds hold), with the k-d
tree (exact, or ``eps``-approximate), the brute search, and the tree on the unrotated bank (before
the principal axes); then the default's fit and one-off k-means. Median of the repeats (after
one warm-up), one table.
Target: every detector except ODIN costs less than the forward pass.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from scipy.spatial import cKDTree
from timing import median_seconds

from oodseg.config import TrainConfig
from oodseg.crossval import DEFAULT_DETECTORS
from oodseg.datasets import BandNormaliser, load_indian_pines
from oodseg.detectors import InputDetector, PixelOutputs, make_detector
from oodseg.model import build_network
from oodseg.splits import make_split
from oodseg.training import IGNORE, fit


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--side", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    scene = load_indian_pines()
    cube = BandNormaliser.fit(scene.cube, scene.labels >= 0)(scene.cube)
    reps = -(-args.side // 145)
    tiled = np.tile(cube, (reps, reps, 1))[: args.side, : args.side]
    x = torch.from_numpy(np.ascontiguousarray(tiled.transpose(2, 0, 1)))[None]
    split = make_split(scene.labels, "scene", mode="strokes", budget=0.05, margin=1, seed=0)
    target = np.where(split.train.labels > 0, split.train.labels - 1, IGNORE)
    net = fit(
        build_network("small", 200, 16),
        [(cube, target)],
        TrainConfig(epochs=10),
        patch=64,
        progress=False,
    )
    reference = build_network("reference", 200, 16).eval()
    mp = args.side**2 / 1e6
    with torch.no_grad():
        forward = median_seconds(lambda: net(x), args.repeats)
        forward_reference = median_seconds(lambda: reference(x), args.repeats)
        logits, features = net(x)
    every = PixelOutputs.from_maps(logits[0], features[0], head=net.head)
    rng = np.random.default_rng(0)
    fit_idx = torch.from_numpy(rng.choice(args.side**2, 4000, replace=False))
    train = PixelOutputs(
        every.logits[fit_idx], every.features[fit_idx], every.head_weight, every.head_bias
    )
    labels = logits[0].flatten(1).T[fit_idx].argmax(1)  # the network's classes
    print(
        f"input 1 x 200 x {args.side} x {args.side} ({mp:.2f} MP), small preset, {torch.get_num_threads()} threads"
    )
    print()
    print("| step | ms per MP | x small forward | x reference forward |")
    print("|---|---|---|---|")
    for name, seconds in (("small", forward), ("reference", forward_reference)):
        row = f"{seconds / forward:.2f} | {seconds / forward_reference:.2f}"
        print(f"| network forward, {name} preset | {1e3 * seconds / mp:.0f} | {row} |")
    variants = [(name, make_detector(name)) for name in DEFAULT_DETECTORS]
    exact = {"centroids": 0, "k": 10}  # the published detector: the 10th nearest bank pixel
    variants += [
        ("knn (16 centroids a class)", make_detector("knn", centroids=16)),
        ("knn (brute)", make_detector("knn", search="brute")),
        ("knn, exact bank, k 10", make_detector("knn", **exact)),
        ("knn, exact bank (500), k 10", make_detector("knn", bank_size=500, **exact)),
        ("knn, exact bank, k 10, eps 0.5", make_detector("knn", eps=0.5, **exact)),
        ("knn, exact bank, k 10, eps 1", make_detector("knn", eps=1.0, **exact)),
        ("knn, exact bank, k 10, brute", make_detector("knn", search="brute", **exact)),
        (
            "knn, exact bank (500), k 10, brute",
            make_detector("knn", bank_size=500, search="brute", **exact),
        ),
    ]
    for name, det in variants:
        if isinstance(det, InputDetector):
            cost = median_seconds(lambda d=det: d.score_image(net, x), args.repeats)
        else:
            det.fit(train, labels)
            cost = median_seconds(lambda d=det: d.score(every), args.repeats)
        row = f"{cost / forward:.2f} | {cost / forward_reference:.2f}"
        print(f"| {name} | {1e3 * cost / mp:.0f} | {row} |")
    # The exact search with the tree on the bank as it is (before the principal axes).
    knn = dict(variants)["knn, exact bank, k 10"]
    tree = cKDTree(knn.bank_.numpy())

    def unrotated():
        q = torch.nn.functional.normalize(every.features.float(), dim=1).numpy()
        return tree.query(q, k=[knn.k], workers=torch.get_num_threads())

    cost = median_seconds(unrotated, args.repeats)
    row = f"{cost / forward:.2f} | {cost / forward_reference:.2f}"
    print(f"| knn, exact bank, tree on the unrotated bank | {1e3 * cost / mp:.0f} | {row} |")
    # The default knn's fit and its one-off k-means at first score (the tree is built then too).
    build = median_seconds(
        lambda: make_detector("knn").fit(train, labels).prototypes(), args.repeats
    )
    print(f"\nknn's fit and k-means of a {len(labels)}-pixel bank: {1e3 * build:.0f} ms")


if __name__ == "__main__":
    main()
