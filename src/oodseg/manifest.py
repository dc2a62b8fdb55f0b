"""Users' data sets: images with sparse masks, from a YAML manifest or two folders matched by stem.

A manifest::

    classes: [tumour, vessel, fat]      # mask value k is classes[k - 1]; 0 = unlabelled
    ignore: 255                         # optional: a mask value that is neither (never scored)
    background: [0]                     # optional: mask values of known non-class pixels (OOD
                                        #   truth; ``ood`` is a synonym); 0 may be one of them
    variable: cube                      # optional: the array's name in .mat / .npz / HDF5 files
    mask_variable: labels               # optional: the same for the masks
    images:                             # paths relative to the manifest
      - {image: scans/a.hdr, mask: masks/a.png}
      - {image: scans/b.mat, mask: masks/b.png, split: val, group: patient2}

Colour masks instead of index masks: ``palette`` maps every class name, and any name listed under
``background``, to an RGB colour (``unlabelled`` and ``ignore`` are also accepted as names)::

    classes: [tumour, vessel]
    background: [healthy]
    palette: {tumour: [255, 0, 0], vessel: [0, 0, 255], healthy: [0, 255, 0], unlabelled: [0, 0, 0]}
    palette_tolerance: 80               # nearest colour within this RGB distance
    palette_strict: false               # true: a lossless mask must hold palette colours only

Each pixel of a colour mask snaps to the nearest palette colour within ``palette_tolerance`` and
farther pixels become ignore (both counted and reported): JPEG noise, and the few off-palette
pixels that resampled or augmented lossless masks carry. ``palette_strict: true`` refuses a
lossless mask (PNG, TIFF, ...) with any colour off the palette instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import yaml

from oodseg.io import (
    IMAGE_SUFFIXES,
    PIL_SUFFIXES,
    check_finite,
    is_colour_photo,
    read_array,
    read_image,
    read_mask,
)
from oodseg.progress import Stages, track

SPLITS = ("train", "val", "test")
LOSSY_MASKS = (".jpg", ".jpeg")
PALETTE_TOLERANCE = 80.0  # RGB distance; JPEG chroma subsampling moves edge colours that far


@dataclass(frozen=True)
class Item:
    """One image and its sparse mask (``None`` for an image to predict only)."""

    name: str
    image: Path
    mask: Path | None
    split: str = "train"
    split_given: bool = False  # the manifest gave the split (else "train" by default)
    group: str | None = None  # images of one group (a video, a patient) are split together


@dataclass(frozen=True)
class ImageDataset:
    """Images with sparse masks: 0 = unlabelled, 1..K = ``class_names``, ``ignore`` = neither."""

    class_names: tuple[str, ...]
    items: tuple[Item, ...]
    ignore: int | None = None
    variable: str | None = None
    mask_variable: str | None = None
    nan_policy: str = "error"
    ood: tuple[int, ...] = ()  # mask values of known non-class pixels: background, OOD truth
    palette: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # colour masks
    palette_tolerance: float = PALETTE_TOLERANCE
    palette_strict: bool = False  # lossless colour masks must hold palette colours only
    colour_counts: dict[str, dict[str, int]] = field(default_factory=dict)  # per colour mask read

    def colour_summary(self) -> dict[str, int]:
        """Pixels snapped to a palette colour and pixels ignored, over the colour masks read."""
        return {k: sum(c[k] for c in self.colour_counts.values()) for k in ("snapped", "ignored")}

    def split(self, name: str) -> tuple[Item, ...]:
        return tuple(i for i in self.items if i.split == name)


@dataclass(frozen=True)
class Sample:
    """A read and checked item: ``image`` (H, W, C) float32, ``mask`` (H, W) int64 with 0 =
    unlabelled (``ignore`` values are turned into 0: never trained on, never scored) and K + 1 where
    the mask holds one of the data set's ``ood`` values."""

    name: str
    image: np.ndarray
    mask: np.ndarray


def load_manifest(path: str | Path) -> ImageDataset:
    """An :class:`ImageDataset` from a YAML manifest (see the module's docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest not found")
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(spec, dict) or "classes" not in spec or "images" not in spec:
        raise ValueError(f"{path}: a manifest needs 'classes' and 'images' entries")
    items = []
    for i, entry in enumerate(spec["images"] or []):
        if not isinstance(entry, dict) or "image" not in entry:
            raise ValueError(f"{path}: images[{i}] needs an 'image' path")
        split = entry.get("split", "train")
        if split not in SPLITS:
            raise ValueError(f"{path}: images[{i}] has split {split!r}; use one of {SPLITS}")
        image = path.parent / entry["image"]
        mask = path.parent / entry["mask"] if entry.get("mask") else None
        group = entry.get("group", entry.get("video"))
        items.append(
            Item(
                entry.get("name", _stem(image)),
                image,
                mask,
                split,
                "split" in entry,
                None if group is None else str(group),
            )
        )
    classes = tuple(str(c) for c in spec["classes"] or [])
    background = list(spec.get("background", []) or []) + list(spec.get("ood", []) or [])
    palette = _palette(spec.get("palette"), classes, background, path)
    if palette:
        ood = (len(classes) + 1,) if background else ()  # every background colour: one value
    else:
        if any(not isinstance(v, int) for v in background):
            raise ValueError(
                f"{path}: background / ood values must be mask numbers (names need a palette), "
                f"got {background}"
            )
        ood = tuple(background)
    return _checked(
        ImageDataset(
            classes,
            tuple(items),
            spec.get("ignore"),
            spec.get("variable"),
            spec.get("mask_variable"),
            ood=ood,
            palette=palette,
            palette_tolerance=float(spec.get("palette_tolerance", PALETTE_TOLERANCE)),
            palette_strict=bool(spec.get("palette_strict", False)),
        ),
        path,
    )


def _palette(
    spec: object, classes: tuple[str, ...], background: list, path: Path
) -> dict[str, tuple[int, int, int]]:
    """The manifest's colour map, checked: every name known, every colour three values 0..255,
    no colour twice, every class coloured."""
    if spec is None:
        return {}
    if not isinstance(spec, dict):
        raise ValueError(f"{path}: 'palette' must map names to [r, g, b] colours")
    known = {*classes, *map(str, background), "unlabelled", "ignore"}
    palette = {}
    for name, colour in spec.items():
        if str(name) not in known:
            raise ValueError(
                f"{path}: palette colour {colour} is named {name!r}, which is no class, no "
                "background name (list it under 'background'), nor unlabelled / ignore"
            )
        if (
            not isinstance(colour, list | tuple)
            or len(colour) != 3
            or not all(isinstance(c, int) and 0 <= c <= 255 for c in colour)
        ):
            raise ValueError(f"{path}: palette colour of {name!r} must be [r, g, b] in 0..255")
        palette[str(name)] = tuple(colour)
    repeated = {c for c in palette.values() if list(palette.values()).count(c) > 1}
    if repeated:
        raise ValueError(f"{path}: palette colours repeat: {sorted(repeated)}")
    missing = [c for c in (*classes, *map(str, background)) if c not in palette]
    if missing:
        raise ValueError(f"{path}: no palette colour for {', '.join(missing)}")
    return palette


def from_folders(
    images: str | Path,
    masks: str | Path | None,
    class_names: tuple[str, ...],
    ignore: int | None = None,
    background: tuple[int, ...] = (),
) -> ImageDataset:
    """Images in one folder and masks in another, matched by file stem (masks may be None when
    only predicting); ``background``: mask values of known non-class pixels. An image without a
    mask, or a mask without an image, is an error."""
    images = Path(images)
    found = image_files(images)
    items = []
    if masks is not None:
        by_stem = {_stem(m): m for m in image_files(Path(masks))}
        missing = [f.name for f in found if _stem(f) not in by_stem]
        if missing:
            raise FileNotFoundError(f"{masks}: no mask for {', '.join(missing[:5])}")
        extra = sorted(set(by_stem) - {_stem(f) for f in found})
        if extra:
            raise FileNotFoundError(f"{images}: no image for the masks {', '.join(extra[:5])}")
        items = [Item(_stem(f), f, by_stem[_stem(f)]) for f in found]
    else:
        items = [Item(_stem(f), f, None) for f in found]
    return _checked(
        ImageDataset(tuple(class_names), tuple(items), ignore, ood=tuple(background)), images
    )


def image_files(folder: Path) -> list[Path]:
    """The image files of a folder, sorted (an ENVI header stands for its header + data pair)."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: folder not found")
    files = sorted(
        f
        for f in folder.iterdir()
        if f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith(".")
    )
    if not files:
        raise FileNotFoundError(f"{folder}: no image file ({', '.join(IMAGE_SUFFIXES)})")
    return files


def _stem(path: Path) -> str:
    return path.name[: -len(path.suffix)] if path.suffix else path.name


def _checked(data: ImageDataset, source: Path) -> ImageDataset:
    if not data.class_names:
        raise ValueError(f"{source}: no class names given")
    if len(set(data.class_names)) != len(data.class_names):
        raise ValueError(f"{source}: class names repeat: {', '.join(data.class_names)}")
    if not data.items:
        raise ValueError(f"{source}: no image listed")
    if data.ignore is not None and 0 <= data.ignore <= len(data.class_names):
        raise ValueError(f"{source}: the ignore value {data.ignore} is also a class or unlabelled")
    clash = [v for v in data.ood if 1 <= v <= len(data.class_names) or v == data.ignore]
    if clash and not data.palette:
        raise ValueError(
            f"{source}: the background / ood values {clash} are also a class or the ignore value"
        )
    return data


def colour_bands(data: ImageDataset) -> int | None:
    """3 where any of the data set's images is a colour PNG / JPEG: its grey-scale PNG / JPEG
    images are then read as three equal bands (a camera's grey frames among colour ones), by
    :func:`read_sample`. None otherwise: every image keeps its own bands."""
    return 3 if any(is_colour_photo(item.image) for item in data.items) else None


def read_sample(data: ImageDataset, item: Item, bands: int | None = None) -> Sample:
    """Read one item and check it: finite values (or filled by the NaN policy), the band count
    (a grey-scale PNG / JPEG is read as three equal bands where ``bands`` is 3), the mask's shape
    and values."""
    image = check_finite(read_image(item.image, data.variable), item.image, data.nan_policy)
    if bands == 3 and image.shape[-1] == 1 and item.image.suffix.lower() in PIL_SUFFIXES:
        image = np.repeat(image, 3, axis=-1)
    if bands is not None and image.shape[-1] != bands:
        raise ValueError(
            f"{item.image}: {image.shape[-1]} bands, but the data set / model has {bands}; "
            "save every image with the same bands"
        )
    mask = np.zeros(image.shape[:2], np.int64)
    if item.mask is not None:
        mask = (
            _colour_mask(data, item.mask)
            if data.palette
            else read_mask(item.mask, data.mask_variable)
        )
        if mask.shape != image.shape[:2]:
            raise ValueError(
                f"{item.mask}: mask is {mask.shape[0]}x{mask.shape[1]}, image {item.image.name} is "
                f"{image.shape[0]}x{image.shape[1]}; resize the mask to the image with "
                "nearest-neighbour sampling (or crop the larger one), so that pixels correspond"
            )
        k = len(data.class_names)
        if data.ignore is not None:
            mask = np.where(mask == data.ignore, 0, mask)
        ood = np.isin(mask, data.ood)
        bad = np.unique(mask[((mask < 0) | (mask > k)) & ~ood])
        if bad.size:
            raise ValueError(
                f"{item.mask}: values {', '.join(map(str, bad[:5]))} are outside the declared "
                f"classes 1..{len(data.class_names)} (0 = unlabelled"
                + (f", {data.ignore} = ignore)" if data.ignore is not None else ")")
            )
        mask = np.where(ood, k + 1, mask)
    return Sample(item.name, image.astype(np.float32), mask)


def _colour_mask(data: ImageDataset, path: Path) -> np.ndarray:
    """An index mask from a colour mask through the palette (see the module's docstring)."""
    rgb = np.asarray(read_array(path, data.mask_variable, colour=True))
    if rgb.ndim != 3 or rgb.shape[-1] not in (3, 4):
        raise ValueError(f"{path}: a palette needs colour (RGB) masks, got shape {rgb.shape}")
    rgb = rgb[..., :3].astype(np.int32)
    k = len(data.class_names)
    names = list(data.palette)
    value = np.array(
        [
            data.class_names.index(n) + 1
            if n in data.class_names
            else 0  # unlabelled and ignore alike: never annotated, never scored
            if n in ("unlabelled", "ignore")
            else k + 1
            for n in names
        ]
    )
    colours = np.array([data.palette[n] for n in names])
    # Each distinct colour once (a mask has few colours, JPEG noise a few thousand at most), as
    # one 24-bit code per pixel: numpy finds distinct codes by hashing, then each pixel's place
    # among them by binary search, many times faster than sorting the pixels' colour rows.
    code = (rgb[..., 0] << 16 | rgb[..., 1] << 8 | rgb[..., 2]).ravel()
    codes = np.unique(code)
    inverse = np.searchsorted(codes, code)
    distinct = np.stack([codes >> 16, codes >> 8 & 255, codes & 255], 1)
    d = np.sqrt(((distinct[:, None, :] - colours[None]) ** 2).sum(-1))
    nearest, dist = d.argmin(1), d.min(1)
    exact, near = dist == 0, dist <= data.palette_tolerance
    per_pixel = np.bincount(inverse, minlength=len(distinct))
    if data.palette_strict and path.suffix.lower() not in LOSSY_MASKS and not exact.all():
        bad = distinct[~exact][np.argmax(per_pixel[~exact])]
        raise ValueError(
            f"{path}: unknown colour {bad.tolist()} on {int(per_pixel[~exact].sum())} pixels, and "
            "the manifest sets palette_strict: true; remove that key to snap colours within "
            f"palette_tolerance ({data.palette_tolerance:g}) to the nearest palette colour, or "
            "add the colour to the palette"
        )
    data.colour_counts[str(path)] = {
        "snapped": int(per_pixel[near & ~exact].sum()),
        "ignored": int(per_pixel[~near].sum()),
    }
    out = np.where(near, value[nearest], 0)
    return out[inverse].reshape(rgb.shape[:2])


def read_all(
    data: ImageDataset,
    split: str = "train",
    bands: int | None = None,
    progress: Stages | None = None,
) -> list[Sample]:
    """Every item of a split, read and checked; band counts must agree across the data set (and
    with ``bands`` if given), and every training class needs at least one annotated pixel."""
    items = data.split(split)
    if not items:
        raise ValueError(f"the data set has no {split} image")
    samples = []
    for item in track(items, progress, f"reading the {split} images"):
        sample = read_sample(data, item, bands)
        bands = sample.image.shape[-1]
        samples.append(sample)
    if split == "train":
        counts = np.bincount(
            np.concatenate([s.mask.ravel() for s in samples]), minlength=len(data.class_names) + 1
        )
        classes = counts[1 : len(data.class_names) + 1]  # beyond: declared background values
        if classes.sum() == 0:
            raise ValueError("the data set has no annotated pixel (every mask is 0 / ignore)")
        empty = [n for n, c in zip(data.class_names, classes, strict=True) if c == 0]
        if empty:
            raise ValueError(
                f"no annotated pixel of class {', '.join(empty)} in the training masks"
            )
    return samples


def with_nan_policy(data: ImageDataset, policy: str) -> ImageDataset:
    return replace(data, nan_policy=policy)
