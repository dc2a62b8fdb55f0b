"""Data: labelled scenes as (cube, label map, class names), and per-band normalisation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

import numpy as np


@dataclass(frozen=True)
class Scene:
    """One labelled image: ``cube`` (H, W, bands) float32, ``labels`` (H, W) int64 with 0 = unlabelled
    and 1..K the classes named by ``class_names[k - 1]``."""

    name: str
    cube: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    rgb_bands: tuple[int, int, int]
    credit: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def class_id(self, name_or_id: str) -> int:
        """The label of a class given by name (case-insensitive) or by number."""
        if name_or_id.isdigit() and 1 <= int(name_or_id) <= self.num_classes:
            return int(name_or_id)
        lowered = [n.lower() for n in self.class_names]
        if name_or_id.lower() in lowered:
            return lowered.index(name_or_id.lower()) + 1
        raise ValueError(
            f"{self.name} has no class {name_or_id!r}; its classes are "
            + ", ".join(f"{i + 1} {n}" for i, n in enumerate(self.class_names))
        )


INDIAN_PINES_CLASSES = (
    "Alfalfa",
    "Corn-notill",
    "Corn-mintill",
    "Corn",
    "Grass-pasture",
    "Grass-trees",
    "Grass-pasture-mowed",
    "Hay-windrowed",
    "Oats",
    "Soybean-notill",
    "Soybean-mintill",
    "Soybean-clean",
    "Wheat",
    "Woods",
    "Buildings-Grass-Trees-Drives",
    "Stone-Steel-Towers",
)
INDIAN_PINES_CREDIT = (
    "M. F. Baumgardner, L. L. Biehl, D. A. Landgrebe (2015), '220 Band AVIRIS Hyperspectral Image "
    "Data Set: June 12, 1992 Indian Pine Test Site 3', Purdue University Research Repository, "
    "doi:10.4231/R7RX991C (CC0)."
)


def load_indian_pines() -> Scene:
    """The embedded Indian Pines scene (145 x 145 x 200, 16 classes), shipped inside the package."""
    with resources.files("oodseg").joinpath("data/indian_pines.npz").open("rb") as f:
        arrays = np.load(f)
        cube, gt = arrays["cube"], arrays["gt"]
    return Scene(
        name="indian_pines",
        cube=cube.astype(np.float32),
        labels=gt.astype(np.int64),
        class_names=INDIAN_PINES_CLASSES,
        # AVIRIS bands near 650, 550 and 460 nm after the water-band removal.
        rgb_bands=(27, 16, 7),
        credit=INDIAN_PINES_CREDIT,
    )


DATASETS: dict[str, Callable[[], Scene]] = {"indian_pines": load_indian_pines}


def load_dataset(name: str) -> Scene:
    """Load a data set by its registered name."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]()


@dataclass(frozen=True)
class BandNormaliser:
    """Per-band standardisation whose statistics come from the training region only, so that no test
    pixel leaks into the input scaling."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, cube: np.ndarray, region: np.ndarray) -> BandNormaliser:
        pixels = cube[region].astype(np.float64)
        if len(pixels) == 0:
            raise ValueError("cannot fit the band normalisation on an empty training region")
        std = pixels.std(axis=0)
        return cls(pixels.mean(axis=0), np.where(std > 0, std, 1.0))

    def __call__(self, cube: np.ndarray) -> np.ndarray:
        return ((cube - self.mean) / self.std).astype(np.float32)
