"""Whole-prediction throughput next to the bare forward pass, in megapixels per second.

    .venv/bin/python bench/predict_throughput.py [--side 1024] [--repeats 3] [--device cpu]

Input: a side x side x 200 uint16 cube tiled from the real Indian Pines scene, saved as .npy. The
bare forward is the network alone on the normalised tensor already in memory. The whole prediction
is what `oodseg predict` does per image: memory-map the file, normalise strip by strip, the network
through MONAI's sliding window, the detector, the threshold, and writing the label PNG, the score
TIFF and the overlay PNG. Networks are untrained (the cost does not depend on the weights). Median
of the repeats after one warm-up, one table. Target: whole prediction >= 0.8 x the bare forward.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from timing import median_seconds

from oodseg.bundle import Bundle
from oodseg.datasets import BandNormaliser, load_indian_pines
from oodseg.detectors import make_detector
from oodseg.io import read_image
from oodseg.model import build_network
from oodseg.report import write_prediction


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--side", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    scene = load_indian_pines()
    reps = -(-args.side // 145)
    cube = np.tile(scene.cube, (reps, reps, 1))[: args.side, : args.side].astype(np.uint16)
    normaliser = BandNormaliser.fit(scene.cube, scene.labels >= 0)
    mp = args.side**2 / 1e6
    device = torch.device(args.device)
    print(
        f"input {args.side} x {args.side} x 200 uint16 .npy ({mp:.2f} MP), "
        f"{torch.get_num_threads()} threads, {device}"
    )
    print()
    print("| preset | detector | bare forward MP/s | whole prediction MP/s | ratio |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cube.npy"
        np.save(path, cube)
        x = torch.from_numpy(normaliser(cube).transpose(2, 0, 1).copy())[None].to(device)
        for preset in ("small", "reference"):
            torch.manual_seed(0)
            net = build_network(preset, 200, 16).eval().to(device)

            def bare(n: torch.nn.Module = net) -> None:
                with torch.no_grad():
                    n(x)
                if device.type == "cuda":
                    torch.cuda.synchronize()  # kernels are asynchronous: time their end

            forward = median_seconds(bare, args.repeats)
            for detector in ("gen", "maxlogit"):
                bundle = Bundle(
                    net,
                    make_detector(detector),
                    tuple("abcdefghijklmnop"),
                    normaliser,
                    0.0,
                    0.95,
                    preset,
                    "last",
                )

                def whole(b: Bundle = bundle) -> None:
                    image = read_image(path)
                    labels, scores = b.predict(image, device=args.device, source=str(path))
                    write_prediction(Path(tmp) / "out", path, image, labels, scores, b)

                seconds = median_seconds(whole, args.repeats)
                print(
                    f"| {preset} | {detector} | {mp / forward:.3f} | {mp / seconds:.3f} | "
                    f"{forward / seconds:.2f} |"
                )


if __name__ == "__main__":
    main()
