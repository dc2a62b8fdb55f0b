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
peak must not follow the largest image (target: < 2 GB).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

DEFAULT_DATA = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "vocalfolds" / "vocalfolds.yaml"
)
CHILD = """
import resource, sys
from oodseg.cli import app
try:
    app(sys.argv[1:], standalone_mode=False)
finally:
    print("PEAK_KIB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
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


def mixed(manifest: Path, n: int, out: Path, seed: int = 0) -> Path:
    """``n`` evenly spread frames of the manifest, each resized (bilinear image, nearest mask) so
    that its longer side is log-uniform in [40, 2500] pixels, as PNGs, with their manifest."""
    spec = yaml.safe_load(manifest.read_text())
    images = spec["images"]
    picks = np.linspace(0, len(images) - 1, min(n, len(images))).round().astype(int)
    sides = np.exp(np.random.default_rng(seed).uniform(np.log(40), np.log(2500), len(picks)))
    entries = []
    for j, (i, side) in enumerate(zip(picks, sides, strict=True)):
        image = Image.open(manifest.parent / images[i]["image"]).convert("RGB")
        mask = Image.open(manifest.parent / images[i]["mask"])
        f = side / max(image.size)
        size = (max(1, round(image.size[0] * f)), max(1, round(image.size[1] * f)))
        image.resize(size, Image.BILINEAR).save(out / f"img{j}.png")
        mask.resize(size, Image.NEAREST).save(out / f"mask{j}.png")
        entries.append(
            {"image": f"img{j}.png", "mask": f"mask{j}.png", "split": images[i]["split"]}
        )
    path = out / f"mixed_{n}.yaml"
    path.write_text(yaml.safe_dump({**spec, "images": entries}))
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
        return
    growth = rows[-1][4] / rows[0][4] - 1
    print()
    print(
        f"peak RSS growth from {rows[0][1]} to {rows[-1][1]} frames: {growth:+.1%} (target < +10 %)"
    )


if __name__ == "__main__":
    main()
