"""Time of the checking pass (``oodseg crossval``'s first stage: every image and mask read once,
checked, counted, strokes simulated) on collections of mixed sizes with JPEG colour masks.

    .venv/bin/python bench/checking_pass.py [--collections 69:2500,36:600]
        [--data ../shared/data/vocalfolds/vocalfolds.yaml]

Each collection ``N:SIDE`` is N frames of the manifest resized so that their longer sides spread
log-uniformly from 40 to SIDE pixels (seeded), written as JPEG images with JPEG colour masks (a
palette, so every pixel is snapped); one fresh process per collection times ``prepare``. Prints
frames, megapixels, seconds and milliseconds per megapixel.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml
from crossval_memory import resized_frames
from PIL import Image

DEFAULT_DATA = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "vocalfolds" / "vocalfolds.yaml"
)
CHILD = """
import sys, time
from rich.console import Console
from oodseg.crossval import CrossvalConfig, prepare
from oodseg.manifest import load_manifest
start = time.perf_counter()
plan = prepare(CrossvalConfig(dataset="data"), load_manifest(sys.argv[1]), source=sys.argv[1],
               console=Console(stderr=True), quiet=True)
print("SECONDS", time.perf_counter() - start, plan.header["machine"])
"""


def colour_collection(manifest: Path, n: int, longest: int, out: Path, seed: int = 0) -> Path:
    """``n`` evenly spread frames of ``manifest`` as JPEGs with JPEG colour masks, longer sides
    log-uniform in [40, ``longest``] pixels; returns the new manifest."""
    classes = yaml.safe_load(manifest.read_text())["classes"]
    if len(classes) > 7:
        raise SystemExit(f"{manifest}: at most 7 classes (the corners of the RGB cube)")
    # Far-apart colours, as annotation tools draw them: the corners of the RGB cube.
    palette = {"unlabelled": [0, 0, 0]}
    palette |= {name: [(c >> b & 1) * 255 for b in range(3)] for c, name in enumerate(classes, 1)}
    colours = np.array([palette["unlabelled"], *(palette[n] for n in classes)], np.uint8)
    entries = []
    for j, (image, mask, split) in enumerate(resized_frames(manifest, n, longest, seed)):
        image.save(out / f"img{j}.jpg", quality=90)
        index = np.clip(np.asarray(mask).astype(np.int64), 0, len(classes))
        Image.fromarray(colours[index]).save(out / f"mask{j}.jpg", quality=90)
        entries.append({"image": f"img{j}.jpg", "mask": f"mask{j}.jpg", "split": split})
    path = out / f"colour_{n}_{longest}.yaml"
    path.write_text(yaml.safe_dump({"classes": classes, "palette": palette, "images": entries}))
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--collections", default="69:2500,36:600", help="N:SIDE,...")
    args = parser.parse_args()
    if not args.data.is_file():
        raise SystemExit(f"{args.data}: manifest not found (pass --data)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for what in args.collections.split(","):
            n, longest = (int(v) for v in what.split(":"))
            folder = Path(tmp) / what.replace(":", "_")
            folder.mkdir()
            manifest = colour_collection(args.data, n, longest, folder)
            spec = yaml.safe_load(manifest.read_text())
            pixels = sum(np.prod(Image.open(folder / e["image"]).size) for e in spec["images"])
            run = subprocess.run(
                [sys.executable, "-c", CHILD, str(manifest)], capture_output=True, text=True
            )
            found = [line for line in run.stdout.splitlines() if line.startswith("SECONDS")]
            if run.returncode != 0 or not found:
                raise SystemExit(run.stdout[-3000:] + run.stderr[-3000:])
            _, seconds, machine = found[0].split(" ", 2)
            rows.append((len(spec["images"]), longest, pixels / 1e6, float(seconds), machine))
    print(f"checking pass of {args.data.name} frames as JPEG images with JPEG colour masks")
    print()
    print("| frames | longer sides | megapixels | checking pass | per megapixel | machine |")
    print("|---|---|---|---|---|---|")
    for frames, longest, mpix, seconds, machine in rows:
        print(
            f"| {frames} | 40-{longest} px | {mpix:.1f} | {seconds:.1f} s | "
            f"{seconds / mpix * 1000:.0f} ms | {machine} |"
        )


if __name__ == "__main__":
    main()
