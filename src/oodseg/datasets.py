"""Data: labelled scenes as (cube, label map, class names), collections of labelled frames, and
per-band normalisation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image
from rich.progress import track


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
        return class_id(self.class_names, name_or_id, self.name)


def class_id(class_names: tuple[str, ...], name_or_id: str, source: str) -> int:
    """The label (1..K) of a class of ``class_names`` given by name (case-insensitive) or number."""
    if name_or_id.isdigit() and 1 <= int(name_or_id) <= len(class_names):
        return int(name_or_id)
    lowered = [n.lower() for n in class_names]
    if name_or_id.lower() in lowered:
        return lowered.index(name_or_id.lower()) + 1
    raise ValueError(
        f"{source} has no class {name_or_id!r}; its classes are "
        + ", ".join(f"{i + 1} {n}" for i, n in enumerate(class_names))
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
FRAME_DATASETS = ("endoscapes",)  # read from a folder given with --data-root
IGNORE_LABEL = 255  # "not annotated" in a frame mask: never a class, never OOD


@dataclass(frozen=True)
class Frame:
    """One video frame: ``image`` (H, W, 3) uint8 and its dense ``mask`` (H, W) uint8 with
    0 = background (known, and not one of the classes), 1..K the classes, 255 = ignore."""

    name: str
    image: np.ndarray
    mask: np.ndarray


@dataclass(frozen=True)
class FrameSet:
    """Frames of an official train / val / test split, with class names for labels 1..K."""

    name: str
    class_names: tuple[str, ...]
    splits: dict[str, list[Frame]]
    resolution: tuple[int, int]  # (H, W) the frames were resized to
    credit: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


ENDOSCAPES_SPLITS = ("train", "val", "test")
ENDOSCAPES_CREDIT = (
    "Endoscapes-Seg50: Murali et al. (2023), 'The Endoscapes Dataset for Surgical Scene "
    "Segmentation, Object Detection, and Critical View of Safety Assessment: Official Splits and "
    "Benchmark', arXiv:2312.12429; Alapatt et al. (2021), arXiv:2112.13815. CC BY-NC-SA 4.0, "
    "non-commercial research only; read from the user's copy, never shipped."
)


def endoscapes_items(
    root: str | Path,
    *,
    scale: float = 0.5,
    max_frames: int | None = None,
    splits: tuple[str, ...] = ENDOSCAPES_SPLITS,
) -> tuple[tuple[str, ...], list[tuple[str, str, Callable[[], tuple[np.ndarray, np.ndarray]]]]]:
    """The class names and the frames of Endoscapes-Seg50 in the official release layout under
    ``root`` (``{split}_seg/*.jpg`` frames, ``semseg/<frame>.png`` masks of one channel or three
    identical ones, ``{split}_seg_vids.txt`` video lists, ``seg_label_map.txt``), as (name, split,
    read) with ``read()`` giving the frame (H, W, 3) uint8 and its mask (H, W) uint8 resized by
    ``scale`` (bilinear; masks nearest; 255 and any value outside the label map become
    ``IGNORE_LABEL``). The layout is checked here; frames are read only when ``read`` is called.
    ``max_frames`` keeps that many frames per split, spread evenly over its sorted names."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: Endoscapes folder not found (pass --data-root)")
    if not 0 < scale <= 1:
        raise ValueError(f"frame scale must be in (0, 1], got {scale}")
    names = _label_map(root / "seg_label_map.txt")
    if names.get(0) != "background" or sorted(names) != list(range(len(names))):
        raise ValueError(
            f"{root / 'seg_label_map.txt'}: expected ids 0..K with 0 = background, got {names}"
        )
    found = []
    for split in splits:
        videos = _video_list(root / f"{split}_seg_vids.txt")
        files = sorted((root / f"{split}_seg").glob("*.jpg"))
        if not files:
            raise FileNotFoundError(f"{root / f'{split}_seg'}: no .jpg frame found")
        for f in files:
            if f.stem.split("_")[0] not in videos:
                raise ValueError(
                    f"{f}: video {f.stem.split('_')[0]} is not in {split}_seg_vids.txt"
                )
        if max_frames is not None and max_frames < len(files):
            files = [
                files[i] for i in np.linspace(0, len(files) - 1, max_frames).round().astype(int)
            ]
        for f in files:
            mask = root / "semseg" / f"{f.stem}.png"
            if not mask.is_file():
                raise FileNotFoundError(f"{mask}: mask of frame {f.name} not found")
            found.append((f.stem, split, partial(_read_frame, f, mask, len(names) - 1, scale)))
    return tuple(names[i] for i in range(1, len(names))), found


def load_endoscapes(
    root: str | Path,
    *,
    scale: float = 0.5,
    max_frames: int | None = None,
    splits: tuple[str, ...] = ENDOSCAPES_SPLITS,
) -> FrameSet:
    """Endoscapes-Seg50 read whole into memory (see :func:`endoscapes_items`)."""
    class_names, found = endoscapes_items(root, scale=scale, max_frames=max_frames, splits=splits)
    out: dict[str, list[Frame]] = {s: [] for s in splits}
    for name, split, read in track(found, description="reading frames", transient=True):
        out[split].append(Frame(name, *read()))
    return FrameSet(
        name="endoscapes",
        class_names=class_names,
        splits=out,
        resolution=out[splits[-1]][0].mask.shape,
        credit=ENDOSCAPES_CREDIT,
    )


def _label_map(path: Path) -> dict[int, str]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: label map not found")
    names = {}
    for line in path.read_text().splitlines():
        if line.strip():
            name, _, value = line.strip().rpartition(" ")
            if not name or not value.isdigit():
                raise ValueError(f"{path}: expected '<name> <id>' per line, got {line!r}")
            names[int(value)] = name.strip()
    return names


def _video_list(path: Path) -> set[str]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: video split file not found")
    return {v.strip() for v in path.read_text().split() if v.strip()}


def _read_frame(
    image_path: Path, mask_path: Path, num_classes: int, scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """Read, check and resize one frame and its mask; errors name the file."""
    try:
        with Image.open(image_path) as im:
            image = im.convert("RGB")
            image.load()
        with Image.open(mask_path) as im:
            mask = np.array(im)
    except (OSError, SyntaxError) as e:
        raise ValueError(f"cannot read {image_path} or {mask_path}: {e}") from None
    if mask.ndim == 3:
        if (mask != mask[..., :1]).any():
            raise ValueError(f"{mask_path}: a mask's channels must be identical class ids")
        mask = mask[..., 0]
    if mask.shape != (image.height, image.width):
        raise ValueError(
            f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]}, frame {image_path.name} is "
            f"{image.width}x{image.height}"
        )
    mask = np.where(mask <= num_classes, mask, IGNORE_LABEL).astype(np.uint8)
    size = (round(image.width * scale), round(image.height * scale))
    if scale != 1:
        image = image.resize(size, Image.Resampling.BILINEAR)
        mask = np.array(Image.fromarray(mask).resize(size, Image.Resampling.NEAREST))
    return np.asarray(image), mask


def load_dataset(name: str) -> Scene:
    """Load a data set by its registered name."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]()


@dataclass(frozen=True)
class BandNormaliser:
    """Per-band standardisation whose statistics come from the training region only, so that no test
    pixel leaks into the input scaling; with ``projection`` (P, C), the standardised bands are then
    mapped onto P principal components (a spectral PCA of the training pixels)."""

    mean: np.ndarray
    std: np.ndarray
    projection: np.ndarray | None = None

    @property
    def channels(self) -> int:
        """The network's input channels: the bands, or the principal components kept."""
        return len(self.mean) if self.projection is None else len(self.projection)

    def with_pca(self, covariance: np.ndarray, components: int) -> BandNormaliser:
        """The same standardisation followed by the ``components`` leading principal components
        of the bands' ``covariance`` (raw values), all divided by one scale so that their mean
        variance is 1. Not whitened: whitening gave the noise components the weight of the
        leading ones and cost 6 points of closed-set accuracy on Indian Pines
        (docs/lever_screen.md)."""
        if not 0 < components < len(self.mean):
            raise ValueError(
                f"--input-pca keeps between 1 and {len(self.mean) - 1} of the {len(self.mean)} "
                f"bands, got {components}"
            )
        correlation = covariance / np.outer(self.std, self.std)
        values, vectors = np.linalg.eigh(correlation)  # ascending
        top = np.argsort(values)[::-1][:components]
        scale = np.sqrt(max(values[top].mean(), 1e-12))
        return BandNormaliser(self.mean, self.std, vectors[:, top].T / scale)

    @classmethod
    def fit(cls, cube: np.ndarray, region: np.ndarray) -> BandNormaliser:
        """Mean and standard deviation of the pixels of ``region``."""
        pixels = cube[region].astype(np.float64)
        if len(pixels) == 0:
            raise ValueError("cannot fit the band normalisation on an empty training region")
        std = pixels.std(axis=0)
        return cls(pixels.mean(axis=0), np.where(std > 0, std, 1.0))

    def __call__(self, cube: np.ndarray) -> np.ndarray:
        z = (cube - self.mean) / self.std
        return (z if self.projection is None else z @ self.projection.T).astype(np.float32)
