"""Training throughput of both presets: milliseconds per step and training pixels per second.

    .venv/bin/python bench/train_throughput.py [--presets small,reference] [--steps 48]
        [--device cpu] [--against OTHER_CHECKOUT/src]

The real training path (``oodseg.training.fit``: patches around the Indian Pines scene's strokes,
Lightning's loop), timed as the difference between a run of ``--steps`` more steps and a run of a
few, so that start-up is not counted; the data path alone (cutting and batching the same patches)
is timed beside it. ``--against`` runs the same measurement in a child process importing oodseg
from another checkout's ``src`` (the code before a change), in the same run, and prints the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import torch
from timing import median_seconds

from oodseg import training
from oodseg.config import PRESETS, TrainConfig
from oodseg.datasets import BandNormaliser, load_indian_pines
from oodseg.model import build_network
from oodseg.training import IGNORE, PatchDataset, fit

BATCH = 8
WARM_EPOCHS = 1


def measure(preset: str, steps: int, device: str) -> dict:
    scene = load_indian_pines()
    normaliser = BandNormaliser.fit(scene.cube, scene.labels >= 0)
    image = normaliser(scene.cube)
    target = np.where(scene.labels > 0, scene.labels - 1, IGNORE)
    sparse = np.full_like(target, IGNORE)
    sparse[::7, ::7] = target[::7, ::7]  # a sparse sample of labelled pixels, as strokes are
    patch = PRESETS[preset].patch
    per_epoch = 4 * BATCH

    def train(epochs: int) -> float:
        torch.manual_seed(0)
        net = build_network(preset, image.shape[-1], 16)
        config = TrainConfig(
            preset=preset, epochs=epochs, patches_per_epoch=per_epoch, batch_size=BATCH,
            device=device,
        )  # fmt: skip
        start = time.perf_counter()
        fit(net, [(image, sparse)], config, patch=patch, progress=False)
        return time.perf_counter() - start

    extra = max(1, steps // (per_epoch // BATCH))
    short, long = train(WARM_EPOCHS), train(WARM_EPOCHS + extra)
    step = (long - short) / (extra * per_epoch // BATCH)
    tensor = torch.from_numpy(np.asarray(image, np.float32)).permute(2, 0, 1)
    data = PatchDataset([(tensor, torch.from_numpy(sparse.astype(np.int16)))], patch, BATCH, 0)
    collate = getattr(training, "_batch", torch.utils.data.default_collate)
    data_s = median_seconds(lambda: collate([data[i] for i in range(BATCH)]), 9)
    return {
        "preset": preset,
        "patch": patch,
        "step_ms": 1000 * step,
        "data_ms": 1000 * data_s,
        "mpix_s": BATCH * patch * patch / step / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", default="small,reference")
    parser.add_argument("--steps", type=int, default=48)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--against", default=None, help="another checkout's src directory")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args()
    unknown = set(args.presets.split(",")) - set(PRESETS)
    if unknown:
        parser.error(
            f"unknown presets {', '.join(sorted(unknown))}; choose from {', '.join(PRESETS)}"
        )
    rows = [measure(p, args.steps, args.device) for p in args.presets.split(",")]
    if args.json:
        print(json.dumps(rows))
        return
    before = {}
    if args.against:
        env = {**os.environ, "PYTHONPATH": args.against}
        argv = ["--presets", args.presets, "--steps", str(args.steps), "--device", args.device]
        out = subprocess.run(
            [sys.executable, __file__, *argv, "--json"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        before = {r["preset"]: r for r in json.loads(out.strip().splitlines()[-1])}
    print(f"training, batch {BATCH}, {args.device}, {torch.get_num_threads()} threads")
    print()
    head = "| preset | patch | ms / step | data ms / batch | training Mpix/s |"
    if before:
        head += f" before ({args.against}): ms / step | data ms / batch | speed-up |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for r in rows:
        line = (
            f"| {r['preset']} | {r['patch']} | {r['step_ms']:.1f} | {r['data_ms']:.1f} | "
            f"{r['mpix_s']:.3f} |"
        )
        if r["preset"] in before:
            b = before[r["preset"]]
            line += (
                f" {b['step_ms']:.1f} | {b['data_ms']:.1f} | {b['step_ms'] / r['step_ms']:.2f}x |"
            )
        print(line)


if __name__ == "__main__":
    main()
