"""Your own data, end to end through the Python API: two images with sparse masks in two folders,
train, save the bundle, load it back, predict a new image.

    .venv/bin/python examples/own_data.py [OUT_DIR]

The images here are crops of the embedded Indian Pines scene with simulated strokes, so that the
example runs anywhere; point `oodseg.from_folders` (or `oodseg.load_manifest`) at your files.
"""

import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

import oodseg

CLASSES = ("Corn-notill", "Soybean-mintill", "Woods")


def write_example_data(root: Path) -> None:
    scene = oodseg.load_dataset("indian_pines")
    labels = np.zeros_like(scene.labels)
    for k, name in enumerate(CLASSES, start=1):
        labels[scene.labels == scene.class_id(name)] = k
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, (y, x) in enumerate([(10, 70), (60, 90)]):
        np.save(root / "images" / f"scan{i}.npy", scene.cube[y : y + 64, x : x + 64])
        strokes = oodseg.simulate_annotations(labels[y : y + 64, x : x + 64], budget=0.1, seed=i)
        Image.fromarray(strokes.labels.astype(np.uint8)).save(root / "masks" / f"scan{i}.png")
    np.save(root / "new_scan.npy", scene.cube[80:144, 0:64])


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())
    write_example_data(root)

    data = oodseg.from_folders(root / "images", root / "masks", CLASSES)
    bundle = oodseg.train(data, detector="gen", config=oodseg.TrainConfig(epochs=5, device="cpu"))
    bundle.save(root / "model")

    model = oodseg.load_bundle(root / "model")  # JSON + safetensors, nothing unpickled
    labels, scores = model.predict(np.load(root / "new_scan.npy"))
    shares = np.bincount(labels.ravel(), minlength=len(CLASSES) + 1) / labels.size
    print(f"threshold {model.threshold:.3f} at TPR {model.tpr}")
    for name, share in zip(("OOD", *CLASSES), shares, strict=True):
        print(f"{name:>16}: {share:.1%} of the new scan")


if __name__ == "__main__":
    main()
