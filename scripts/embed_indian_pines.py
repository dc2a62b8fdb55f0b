"""Convert the Indian Pines .mat files into the compressed .npz that ships inside the package."""

import hashlib
import sys
from pathlib import Path

import numpy as np
from scipy.io import loadmat

SHA256 = {
    "Indian_pines_corrected.mat": "ec2f8808710919d566f70f0d4aa885aae1ddfd42b734aba71c5e12ca65450939",
    "Indian_pines_gt.mat": "65c4687a8ab04f6da4789799bc3bc4f6e88bccac3ed6a2e6ae367e5e6b9e429c",
}


def main(src: Path, dst: Path) -> None:
    for name, digest in SHA256.items():
        if hashlib.sha256((src / name).read_bytes()).hexdigest() != digest:
            sys.exit(f"{src / name}: sha256 differs from the published file")
    cube = loadmat(src / "Indian_pines_corrected.mat")["indian_pines_corrected"]
    gt = loadmat(src / "Indian_pines_gt.mat")["indian_pines_gt"]
    np.savez_compressed(dst, cube=cube, gt=gt)


if __name__ == "__main__":
    here = Path(__file__).resolve().parent.parent
    main(here.parent / "shared/data/indian_pines", here / "src/oodseg/data/indian_pines.npz")
