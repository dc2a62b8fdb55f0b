"""Whole-prediction throughput next to the bare forward pass, in megapixels per second.

    .venv/bin/python bench/predict_throughput.py [--side 1024] [--repeats 3] [--device cpu]

Input: a side x side x 200 uint16 cube tiled from the real Indian Pines scene, saved as .npy. The
bare forward is the network alone on the normalised tensor already in memory, in plain (NCHW)
memory and in the format prediction runs it (``Inference.memory_format``: channels-last on the
CPU); the ratio is against the latter. The whole prediction
is what `oodseg predict` does per image at the defaults: memory-map the file, normalise strip by
strip, the network through MONAI's sliding window, the detector, the score map's and the class
probabilities' smoothing (``ScoringConfig.smooth`` and ``smooth_classes``), the threshold, and
writing the label PNG, the score TIFF and the overlay PNG. Its stages are then timed one by one on
the whole image, in seconds per megapixel: reading and normalising (``Predictor.input``), the
detector with the score map's smoothing, the class smoothing and arg-max, and writing the files.
Networks are untrained (the cost does not depend on the weights). Medians of the repeats after one
warm-up, one table. Target: whole prediction >= 0.8 x the bare forward.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from timing import median_seconds

from oodseg.bundle import Bundle
from oodseg.config import ScoringConfig
from oodseg.datasets import BandNormaliser, load_indian_pines
from oodseg.detectors import make_detector
from oodseg.inference import Forward, Inference, Predictor, Scorer
from oodseg.io import read_image
from oodseg.model import build_network
from oodseg.report import write_prediction

STAGES = ("read + normalise", "detector + score smoothing", "class smoothing", "write")


def stage_seconds(
    predictor: Predictor, outputs: Forward, bundle: Bundle, path: Path, tmp: Path, repeats: int
) -> list[float]:
    """Median seconds of each of :data:`STAGES` on the whole image, ``outputs`` its forward pass."""
    image = read_image(path)
    labels, scores = bundle.predict(image, device=predictor.run.device, source=str(path))
    scorer = Scorer(predictor, {"d": bundle.detector})
    stages = [
        lambda: predictor.input(read_image(path), str(path)),
        lambda: scorer.score_maps(outputs),
        # A new Forward each time, so that the softmax it caches is timed too.
        lambda: Forward(outputs.x, outputs.logits, outputs.features).classes(bundle.smooth_classes),
        lambda: write_prediction(tmp / "out", path, image, labels, scores, bundle),
    ]
    return [median_seconds(stage, repeats) for stage in stages]


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
    smooth, smooth_classes = ScoringConfig.smooth, ScoringConfig.smooth_classes
    print(
        f"input {args.side} x {args.side} x 200 uint16 .npy ({mp:.2f} MP), 16 classes, "
        f"{torch.get_num_threads()} threads, {device}; smoothing: scores {smooth:g} px, "
        f"classes {smooth_classes:g} px"
    )
    print()
    print(
        "| preset | detector | bare forward, NCHW: MP/s | bare forward, as predicted: MP/s | "
        "whole prediction MP/s | ratio | " + " | ".join(f"{s}: s/MP" for s in STAGES) + " |"
    )
    print("|---|---|---|---|---|---|" + "---|" * len(STAGES))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cube.npy"
        np.save(path, cube)
        z = torch.from_numpy(normaliser(cube))[None].permute(0, 3, 1, 2).to(device)
        run = Inference(args.device, smooth=smooth, smooth_classes=smooth_classes)
        for preset in ("small", "reference"):
            torch.manual_seed(0)
            net = build_network(preset, 200, 16).eval().to(device)

            def bare(fmt: torch.memory_format, n: torch.nn.Module = net) -> float:
                n.to(memory_format=fmt)
                x = z.contiguous(memory_format=fmt)

                def once() -> None:
                    with torch.no_grad():
                        n(x)
                    if device.type == "cuda":
                        torch.cuda.synchronize()  # kernels are asynchronous: time their end

                return median_seconds(once, args.repeats)

            plain = bare(torch.contiguous_format)
            forward = bare(run.memory_format)  # as the prediction runs it
            predictor = Predictor(net, normaliser, preset, run)
            image = read_image(path)
            outputs = predictor.forward(image, str(path))
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
                    smooth=smooth,
                    smooth_classes=smooth_classes,
                )

                def whole(b: Bundle = bundle) -> None:
                    image = read_image(path)
                    labels, scores = b.predict(image, device=args.device, source=str(path))
                    write_prediction(Path(tmp) / "out", path, image, labels, scores, b)

                seconds = median_seconds(whole, args.repeats)
                cells = [
                    t / mp
                    for t in stage_seconds(
                        predictor, outputs, bundle, path, Path(tmp), args.repeats
                    )
                ]
                print(
                    f"| {preset} | {detector} | {mp / plain:.3f} | {mp / forward:.3f} | "
                    f"{mp / seconds:.3f} | "
                    f"{forward / seconds:.2f} | " + " | ".join(f"{c:.3f}" for c in cells) + " |"
                )


if __name__ == "__main__":
    main()
