"""Cost of each OOD detector per megapixel, next to the network's forward pass on the same input.

    .venv/bin/python bench/detector_cost.py [--side 512] [--repeats 5]

Input: a side x side crop tiled from the normalised Indian Pines cube (200 bands) through the small
preset with 16 classes, trained for 10 epochs on the scene protocol's strokes (a k-d tree's speed
depends on how the features cluster, so untrained features would mislead); the reference preset's forward (EfficientNet-B4 U-Net, the paper's network)
on the same input is timed too. Detectors are fitted on 4,000 pixels of the small preset's outputs
(not timed); each then scores every pixel; ODIN re-runs the small network (forward, backward,
forward). KNN's cost grows with its bank, so it is shown with the whole 4,000-pixel bank and with a
500-pixel one (about what the Indian Pines folds hold), with the k-d tree (default; exact, or
``eps``-approximate) and the brute search, and the exact tree on the unrotated bank (before the
principal axes). Median of the repeats (after one warm-up), one table.
Target: every detector except ODIN costs less than the forward pass.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from scipy.spatial import cKDTree
from timing import median_seconds

from oodseg.crossval import DEFAULT_DETECTORS
from oodseg.datasets import BandNormaliser, load_indian_pines
from oodseg.detectors import InputDetector, PixelOutputs, make_detector
from oodseg.model import build_network
from oodseg.splits import make_split
from oodseg.training import IGNORE, TrainConfig, fit


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
    variants += [
        ("knn (bank 500)", make_detector("knn", bank_size=500)),
        ("knn (eps 0.5)", make_detector("knn", eps=0.5)),
        ("knn (eps 1)", make_detector("knn", eps=1.0)),
        ("knn (bank 500, eps 0.5)", make_detector("knn", bank_size=500, eps=0.5)),
        ("knn (brute)", make_detector("knn", search="brute")),
        ("knn (brute, bank 500)", make_detector("knn", bank_size=500, search="brute")),
        ("knn (16 centroids a class, k 1)", make_detector("knn", centroids=16, k=1)),
        ("knn (64 centroids a class, k 1)", make_detector("knn", centroids=64, k=1)),
        (
            "knn (64 centroids a class, k 1, brute)",
            make_detector("knn", centroids=64, k=1, search="brute"),
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
    # The same exact search with the tree on the bank as it is (before the principal axes).
    knn = dict(variants)["knn"]
    tree = cKDTree(knn.bank_.numpy())

    def unrotated():
        q = torch.nn.functional.normalize(every.features.float(), dim=1).numpy()
        return tree.query(q, k=[knn.k], workers=torch.get_num_threads())

    cost = median_seconds(unrotated, args.repeats)
    row = f"{cost / forward:.2f} | {cost / forward_reference:.2f}"
    print(
        f"| knn, tree on the unrotated bank (the previous code) | {1e3 * cost / mp:.0f} | {row} |"
    )


if __name__ == "__main__":
    main()
