"""Peak resident memory of a cross-validation against the number of frames (bounded memory), and
on a collection of mixed image sizes.

    .venv/bin/python bench/crossval_memory.py [--frames 100,500] [--scale 0.25] [--epochs 1]
        [--data ../shared/data/vocalfolds/vocalfolds.yaml] [extra `oodseg crossval` options]
    .venv/bin/python bench/crossval_memory.py --mixed 200 [--epochs 1]

Each run is a fresh process on an evenly spread subset of the manifest's frames (each split keeps
its share), one leave-one-class-out fold (the manifest's first class). ``--frames``: two
detectors, no baselines: what grows with the frames is then what the run keeps per frame; prints
frames, pixels, wall time and peak RSS, and the growth from the first to the last frame count
(target: < 10 %). ``--mixed N``: N frames resized so that their longer sides spread
log-uniformly from 40 to 2,500 pixels (seeded), every default detector and both baselines: the
peak must not follow the largest image (target: < 2 GB); also prints the peak while each stage
ran (sampled every 50 ms), to find what holds it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

DEFAULT_DATA = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "vocalfolds" / "vocalfolds.yaml"
)
# The run in a fresh process, with its resident memory sampled every 50 ms and charged to the
# stages running at the time (the one-line-per-stage progress names them).
CHILD = """
import os, resource, sys, threading, time
from oodseg import progress
from oodseg.cli import app
running, peaks = [], {}
def sample():
    page = os.sysconf("SC_PAGE_SIZE")
    while True:
        with open("/proc/self/statm") as f:
            rss = int(f.read().split()[1]) * page / 2**20
        for stage in running[-1:] or ["between stages"]:
            peaks[stage] = max(peaks.get(stage, 0), rss)
        time.sleep(0.05)
threading.Thread(target=sample, daemon=True).start()
add, remove = progress.StageLines.add_task, progress.StageLines.remove_task
def add_task(self, description, *a, **k):
    running.append(description.split(": ")[-1])
    return add(self, description, *a, **k)
def remove_task(self, task):
    running.pop()
    return remove(self, task)
progress.StageLines.add_task, progress.StageLines.remove_task = add_task, remove_task
try:
    app([*sys.argv[1:], "--quiet"], standalone_mode=False)
finally:
    print("PEAK_KIB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    for stage, peak in sorted(peaks.items(), key=lambda kv: -kv[1]):
        print("STAGE_MIB", round(peak), stage)
"""


def subset(manifest: Path, n: int, out: Path) -> Path:
    """A copy of the manifest with ``n`` frames spread evenly over it (absolute paths)."""
    spec = yaml.safe_load(manifest.read_text())
    images = spec["images"]
    picks = np.linspace(0, len(images) - 1, min(n, len(images))).round().astype(int)
    spec["images"] = [
        {
            **images[i],
            "image": str(manifest.parent / images[i]["image"]),
            "mask": str(manifest.parent / images[i]["mask"]),
        }
        for i in picks
    ]
    path = out / f"frames_{n}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def resized_frames(
    manifest: Path, n: int, longest: int = 2500, seed: int = 0
) -> Iterator[tuple[Image.Image, Image.Image, str]]:
    """``n`` evenly spread frames of the manifest (image, mask, split), each resized (bilinear
    image, nearest mask) so that its longer side is log-uniform in [40, ``longest``] pixels."""
    images = yaml.safe_load(manifest.read_text())["images"]
    picks = np.linspace(0, len(images) - 1, min(n, len(images))).round().astype(int)
    sides = np.exp(np.random.default_rng(seed).uniform(np.log(40), np.log(longest), len(picks)))
    for i, side in zip(picks, sides, strict=True):
        image = Image.open(manifest.parent / images[i]["image"]).convert("RGB")
        mask = Image.open(manifest.parent / images[i]["mask"])
        f = side / max(image.size)
        size = (max(1, round(image.size[0] * f)), max(1, round(image.size[1] * f)))
        yield (
            image.resize(size, Image.BILINEAR),
            mask.resize(size, Image.NEAREST),
            images[i]["split"],
        )


def mixed(manifest: Path, n: int, out: Path, seed: int = 0) -> Path:
    """:func:`resized_frames` as PNGs, with their manifest."""
    entries = []
    for j, (image, mask, split) in enumerate(resized_frames(manifest, n, seed=seed)):
        image.save(out / f"img{j}.png")
        mask.save(out / f"mask{j}.png")
        entries.append({"image": f"img{j}.png", "mask": f"mask{j}.png", "split": split})
    path = out / f"mixed_{n}.yaml"
    path.write_text(yaml.safe_dump({**yaml.safe_load(manifest.read_text()), "images": entries}))
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--frames", default="100,500")
    parser.add_argument("--scale", default="0.25")
    parser.add_argument("--epochs", default="1")
    parser.add_argument("--mixed", type=int, default=0, help="frames of mixed sizes (0: off)")
    args, extra = parser.parse_known_args()
    if not args.data.is_file():
        raise SystemExit(f"{args.data}: manifest not found (pass --data)")
    first_class = yaml.safe_load(args.data.read_text())["classes"][0]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        counts = [args.mixed] if args.mixed else [int(v) for v in args.frames.split(",")]
        for n in counts:
            if args.mixed:
                manifest = mixed(args.data, n, Path(tmp))
                options = ["--scale", "1"]  # every default detector, both baselines
            else:
                manifest = subset(args.data, n, Path(tmp))
                options = ["--scale", args.scale, "--detectors", "gen,mahalanobis"]
                options.append("--no-baselines")
            out = Path(tmp) / f"run_{n}"
            cmd = [sys.executable, "-c", CHILD, "crossval", "--data", str(manifest)]
            cmd += ["--out", str(out), "--protocols", "loco", "--hold-out", first_class, *options]
            cmd += ["--epochs", args.epochs, "--device", "cpu", *extra]
            start = time.perf_counter()
            run = subprocess.run(cmd, capture_output=True, text=True)
            wall = time.perf_counter() - start
            peak = [line for line in run.stdout.splitlines() if line.startswith("PEAK_KIB")]
            if run.returncode != 0 or not peak:
                raise SystemExit(run.stdout[-3000:] + run.stderr[-3000:])
            res = json.loads((out / "results.json").read_text())
            pixels = sum(res["annotated_pixels"].values())
            rows.append(
                (n, res["images"], pixels, wall, int(peak[0].split()[1]) / 1024, res["machine"])
            )
            by_stage = [
                line.split(" ", 2)[1:]
                for line in run.stdout.splitlines()
                if line.startswith("STAGE_MIB")
            ]
    what = (
        f"{args.mixed} frames of {args.data.name}, longer sides 40-2500 px; one loco fold, every "
        "default detector, both baselines"
        if args.mixed
        else f"{args.data} at scale {args.scale}; one loco fold, gen + mahalanobis, no baselines"
    )
    print(f"{what}; `--epochs {args.epochs} {' '.join(extra)}`")
    print()
    print("| frames | annotated + test pixels | wall time | peak RSS | machine |")
    print("|---|---|---|---|---|")
    for _, images, pixels, wall, peak, machine in rows:
        print(f"| {images} | {pixels:,} | {wall:.0f} s | {peak:.0f} MiB | {machine} |")
    if args.mixed:
        print()
        print("| stage (the largest peaks) | peak RSS while it ran |")
        print("|---|---|")
        for mib, stage in by_stage[:6]:
            print(f"| {stage} | {int(mib):,} MiB |")
        return
    growth = rows[-1][4] / rows[0][4] - 1
    print()
    print(
        f"peak RSS growth from {rows[0][1]} to {rows[-1][1]} frames: {growth:+.1%} (target < +10 %)"
    )


if __name__ == "__main__":
    main()
