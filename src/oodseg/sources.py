"""Data sets as the fold engine sees them: collections of images with training, calibration and
truth masks, and the folds of each protocol.

* A **single scene** (the embedded Indian Pines, or a manifest of one image) is a collection of one
  image whose regions are split: ``scene`` (strokes anywhere, the rest tested) or ``blocks``
  (spatially disjoint blocks), see :mod:`oodseg.splits`.
* A **frame set** (Endoscapes, or a manifest of several densely labelled images) is split by image:
  the manifest's ``split`` column or the official split, else a seeded split of the images (or of
  their ``group``, e.g. a video) into about 60 % train, 20 % val, 20 % test. Strokes (or points)
  are simulated from the dense masks on the train images (they train) and the val images (they
  calibrate the threshold); the test images' dense masks are the truth. Images keep their own
  sizes: nothing is resized unless asked (``scale``), training patches are cut from each image.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from oodseg.annotate import AnnotationMode, simulate_annotations
from oodseg.config import BACKGROUND
from oodseg.datasets import (
    ENDOSCAPES_CREDIT,
    IGNORE_LABEL,
    Scene,
    class_id,
    endoscapes_items,
)
from oodseg.engine import Collection, Fold, Sample
from oodseg.manifest import ImageDataset, colour_bands, read_sample
from oodseg.splits import SplitName, make_split

PROTOCOLS = ("background", "loco")
FRAME_BUDGET = 0.02
FRAME_STROKE_LENGTH = 40
FRAME_PATCH = 128  # frames carry their context over a wider patch than a spectral scene
SCENE_BUDGET = {"scene": 0.05, "blocks": 0.10}


def scene_collection(
    scene: Scene,
    split: SplitName = "scene",
    *,
    annotation: AnnotationMode = "strokes",
    budget: float | None = None,
    margin: int = 1,
    seed: int = 0,
) -> Collection:
    """One labelled image split by region (``scene`` or ``blocks``)."""
    s = make_split(
        scene.labels,
        split,
        mode=annotation,
        budget=SCENE_BUDGET[split] if budget is None else budget,
        margin=margin,
        seed=seed,
    )
    sample = Sample(
        scene.name,
        scene.cube,
        s.train.labels.astype(np.uint8),
        s.val.labels.astype(np.uint8),
        np.where(s.test, scene.labels, 0).astype(np.uint8),
        # The fully supervised baseline's labels: every labelled pixel of the training region (on
        # the scene split the whole scene, test pixels included: the ceiling if everything known
        # had been annotated; on blocks, the training blocks only).
        dense=np.where(s.train_region, scene.labels, 0).astype(np.uint8),
        normalise=s.train_region,
        calibration_truth=scene.labels.astype(np.uint8),
    )
    return Collection(
        scene.name,
        scene.class_names,
        1,
        lambda _: sample,
        description=s.description,
        credit=scene.credit,
        rgb_bands=scene.rgb_bands,
    )


@dataclass(frozen=True)
class DenseItem:
    """One densely labelled image of a frame set: ``read`` gives the raw (H, W, C) image and its
    uint8 mask in the engine's values (class ids 1..K, BACKGROUND, 0 = unlabelled or ignore)."""

    name: str
    split: str  # train / val / test
    read: Callable[[], tuple[np.ndarray, np.ndarray]]


def frames_collection(
    name: str,
    class_names: tuple[str, ...],
    items: Sequence[DenseItem],
    *,
    annotation: AnnotationMode = "strokes",
    budget: float = FRAME_BUDGET,
    stroke_length: int = FRAME_STROKE_LENGTH,
    seed: int = 0,
    credit: str = "",
    description: str = "",
) -> Collection:
    """Images split by image: strokes on the train (training) and val (calibration) images,
    dense truth on the test images. Images are read when needed, one at a time; the simulated
    strokes are kept (sparse) after the first read, so every fold sees the same."""
    index_in_split: list[int] = []
    seen: dict[str, int] = {}
    for item in items:
        index_in_split.append(seen.get(item.split, 0))
        seen[item.split] = index_in_split[-1] + 1
    strokes: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def annotate(i: int, dense: np.ndarray) -> np.ndarray:
        if i not in strokes:
            # The seed of each image depends on its split and place in it (as in earlier releases).
            offset = 0 if items[i].split == "train" else 1_000_000
            ann = simulate_annotations(
                np.where(dense == BACKGROUND, 0, dense).astype(np.int64),
                mode=annotation,
                budget=budget,
                stroke_length=stroke_length,
                seed=seed * 7_919 + offset + index_in_split[i],
            )
            at = np.flatnonzero(ann.labels)
            strokes[i] = (at, ann.labels.ravel()[at].astype(np.uint8))
        out = np.zeros(dense.size, np.uint8)
        out[strokes[i][0]] = strokes[i][1]
        return out.reshape(dense.shape)

    @functools.lru_cache(maxsize=1)
    def load(i: int) -> Sample:
        item = items[i]
        image, dense = item.read()
        empty = np.zeros(dense.shape, np.uint8)
        marked = annotate(i, dense) if item.split in ("train", "val") else empty
        return Sample(
            item.name,
            image,
            marked if item.split == "train" else empty,
            marked if item.split == "val" else empty,
            dense if item.split == "test" else empty,
            dense=dense if item.split == "train" else None,
            normalise=np.ones(dense.shape, bool) if item.split == "train" else None,
            calibration_truth=dense if item.split == "val" else None,
        )

    counts = {s: sum(1 for i in items if i.split == s) for s in ("train", "val", "test")}
    split_text = ", ".join(f"{n} {s}" for s, n in counts.items())
    return Collection(
        name,
        class_names,
        len(items),
        load,
        description=(
            f"{description}{split_text} images; {annotation} on {budget:.0%} of each class's "
            "pixels per train / val image (never on background); val strokes calibrate the "
            "threshold; every labelled pixel of a test image is a test pixel"
        ),
        credit=credit,
        patch=FRAME_PATCH,
    )


def endoscapes_collection(
    root: str | Path,
    *,
    scale: float = 0.5,
    max_frames: int | None = None,
    annotation: AnnotationMode = "strokes",
    budget: float | None = None,
    seed: int = 0,
) -> Collection:
    """Endoscapes-Seg50 in its official layout and video split (background known: OOD)."""
    names, found = endoscapes_items(root, scale=scale, max_frames=max_frames)

    def engine_values(read):
        def go():
            image, mask = read()
            # Endoscapes: 0 = background, 255 = not annotated; the engine: BACKGROUND and 0.
            return image, np.where(mask == 0, BACKGROUND, np.where(mask == IGNORE_LABEL, 0, mask))

        return go

    items = [DenseItem(n, split, engine_values(read)) for n, split, read in found]
    return frames_collection(
        "endoscapes",
        names,
        items,
        annotation=annotation,
        budget=FRAME_BUDGET if budget is None else budget,
        seed=seed,
        credit=ENDOSCAPES_CREDIT,
        description=f"official video split, frames at scale {scale}: ",
    )


def dataset_collection(
    data: ImageDataset,
    *,
    source: str,
    split: SplitName = "scene",
    annotation: AnnotationMode = "strokes",
    budget: float | None = None,
    margin: int = 1,
    scale: float = 1.0,
    seed: int = 0,
) -> Collection:
    """A user's densely labelled collection: one image is split by region (``split``), several
    by image (the manifest's ``split`` column, else seeded by image or ``group``)."""
    if any(item.mask is None for item in data.items):
        missing = [str(i.image) for i in data.items if i.mask is None]
        raise ValueError(
            f"{source}: cross-validation needs a dense mask for every image; none for "
            + ", ".join(missing[:5])
        )
    name = Path(source).stem if Path(source).suffix else Path(source).name
    k = len(data.class_names)
    # The band count every image must have: a colour photo's 3, else the first image's, set when
    # it is read, so that a refusal names the file that differs.
    bands = colour_bands(data)

    def read(item) -> tuple[np.ndarray, np.ndarray]:
        nonlocal bands
        s = read_sample(data, item, bands)
        bands = s.image.shape[-1]
        dense = np.where(s.mask == k + 1, BACKGROUND, s.mask).astype(np.uint8)
        image = s.image
        if scale != 1:
            image, dense = _resized(image, dense, scale)
        return image, dense

    if len(data.items) == 1:
        image, dense = read(data.items[0])
        if (dense == BACKGROUND).any():
            raise ValueError(
                f"{source}: a single image's background cannot be tested apart from its strokes "
                "here; declare no background, or give several images"
            )
        scene = Scene(name, image, dense.astype(np.int64), data.class_names, _rgb(image))
        return scene_collection(
            scene,
            split,
            annotation=annotation,
            budget=budget,
            margin=margin,
            seed=seed,
        )
    splits = assign_splits(data, seed, source)
    items = [
        DenseItem(item.name, s, functools.partial(read, item))
        for item, s in zip(data.items, splits, strict=True)
    ]
    how = (
        "the manifest's split"
        if any(i.split_given for i in data.items)
        else ("a seeded split by " + ("group" if any(i.group for i in data.items) else "image"))
    )
    return frames_collection(
        name,
        data.class_names,
        items,
        annotation=annotation,
        budget=FRAME_BUDGET if budget is None else budget,
        seed=seed,
        description=f"{how}, "
        + (f"images resized by {scale}, " if scale != 1 else "images at their own sizes, "),
    )


def _resized(image: np.ndarray, mask: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear image (band by band), nearest-neighbour mask."""
    from PIL import Image

    h, w = mask.shape
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    bands = [
        np.asarray(
            Image.fromarray(np.asarray(image[..., c], np.float32)).resize(size, Image.BILINEAR)
        )
        for c in range(image.shape[-1])
    ]
    return np.stack(bands, -1), np.asarray(Image.fromarray(mask).resize(size, Image.NEAREST))


def _rgb(image: np.ndarray) -> tuple[int, int, int] | None:
    """Three bands spread over the spectrum for a false-colour view (None for RGB images)."""
    c = image.shape[-1]
    if c == 3:
        return None
    return (min(c - 1, c * 3 // 4), c // 2, c // 4)


def assign_splits(data: ImageDataset, seed: int, source: str) -> list[str]:
    """Each image's split: the manifest's where given; else a seeded shuffle of the groups (or
    images) into about 60 % train, 20 % val and 20 % test, at least one group in each."""
    if any(i.split_given for i in data.items):
        splits = [i.split for i in data.items]
    else:
        groups = sorted({i.group or i.name for i in data.items})
        if len(groups) < 3:
            raise ValueError(
                f"{source}: {len(groups)} image group(s): a split by image needs at least 3 "
                "(train, val, test); give a 'split' column, or more images"
            )
        order = np.random.default_rng(seed).permutation(groups)
        n_test = n_val = max(1, round(0.2 * len(groups)))
        role = {g: "test" for g in order[:n_test]}
        role |= {g: "val" for g in order[n_test : n_test + n_val]}
        role |= {g: "train" for g in order[n_test + n_val :]}
        splits = [role[i.group or i.name] for i in data.items]
    for needed in ("train", "val", "test"):
        if needed not in splits:
            raise ValueError(
                f"{source}: no {needed} image: cross-validation needs train, val and test images"
            )
    return splits


def folds(
    collection: Collection, protocols: Sequence[str], classes: Sequence[str] | None = None
) -> tuple[list[Fold], list[dict]]:
    """The folds of the requested protocols, and the folds skipped (with the reason): a held-out
    class with no test pixel, or a fold with no ID test pixel or no known class to train on."""
    names = collection.class_names
    trained = set(collection.class_counts("train"))
    tested = collection.class_counts("truth")
    out, skipped = [], []
    for protocol in protocols:
        if protocol == "background":
            known = tuple(sorted(trained))
            candidates = [("background", known, (BACKGROUND,))]
        else:
            held = (
                [class_id(names, c, collection.name) for c in classes]
                if classes
                else list(range(1, len(names) + 1))
            )
            candidates = [(names[h - 1], tuple(sorted(trained - {h})), (h,)) for h in held]
        for name, known, ood in candidates:
            reason = None
            if not any(tested.get(o, 0) for o in ood):
                reason = f"no test pixel of {name}"
            elif not known:
                reason = "no known class with training annotations"
            elif not any(tested.get(c, 0) for c in known):
                reason = "no test pixel of a known class"
            if reason:
                skipped.append({"protocol": protocol, "held_out": name, "reason": reason})
            else:
                out.append(Fold(protocol, name, known, ood))
    return out, skipped


def available_protocols(collection: Collection) -> tuple[str, ...]:
    """``background`` where the collection's test truth holds background pixels, and ``loco``."""
    return ("background", "loco") if collection.declares_background else ("loco",)
