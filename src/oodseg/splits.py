"""Protocols: which pixels train, which calibrate the threshold, which are tested.

* ``scene``: the single-scene workflow. Simulated strokes anywhere in the scene are the annotations; a
  held-out share of whole strokes calibrates the threshold; every other labelled pixel, outside a
  ``margin`` around the strokes, is a test pixel.
* ``blocks``: a ``grid`` x ``grid`` checkerboard of spatially disjoint blocks. Blocks with an odd
  row + column sum are test blocks; of the others, those on even rows train and those on odd rows
  calibrate. Annotations are simulated inside the training and the calibration blocks; every labelled
  pixel of a test block is a test pixel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage

from oodseg.annotate import AnnotationMode, Annotations, simulate_annotations

SplitName = Literal["scene", "blocks"]


@dataclass(frozen=True)
class Split:
    """``train`` and ``val`` are sparse annotations; ``test`` marks the scored pixels; ``train_region``
    is the part of the image whose intensities may shape the input normalisation."""

    name: str
    train: Annotations
    val: Annotations
    test: np.ndarray
    train_region: np.ndarray
    description: str


def make_split(
    labels: np.ndarray,
    name: SplitName = "scene",
    *,
    mode: AnnotationMode = "strokes",
    budget: float = 0.05,
    val_share: float = 0.25,
    margin: int = 1,
    grid: int = 5,
    seed: int = 0,
) -> Split:
    """Build the ``scene`` or ``blocks`` protocol for a dense label map (0 = unlabelled)."""
    if name == "scene":
        return scene_split(
            labels,
            mode=mode,
            budget=budget,
            val_share=val_share,
            margin=margin,
            seed=seed,
        )
    if name == "blocks":
        return block_split(labels, mode=mode, budget=budget, grid=grid, seed=seed)
    raise ValueError(f"unknown split {name!r}; choose scene or blocks")


def scene_split(
    labels: np.ndarray,
    *,
    mode: AnnotationMode = "strokes",
    budget: float = 0.05,
    val_share: float = 0.25,
    margin: int = 1,
    seed: int = 0,
) -> Split:
    """Strokes anywhere; ``val_share`` of each class's strokes, drawn at random, calibrate; the
    rest of the labelled pixels, at least ``margin`` + 1 pixels (chessboard distance) from any
    stroke, are tested."""
    ann = simulate_annotations(labels, mode=mode, budget=budget, seed=seed)
    rng = np.random.default_rng(seed + 1)
    val = np.zeros(labels.shape, bool)
    for c in np.unique(ann.labels[ann.mask]):
        strokes = rng.permutation(np.unique(ann.stroke[ann.labels == c]))
        sizes = np.array([(ann.stroke == s).sum() for s in strokes])
        # Whole strokes go to calibration until it holds val_share of the class's pixels; at least one
        # stroke always stays for training.
        n_val = min(
            int(np.searchsorted(np.cumsum(sizes), val_share * sizes.sum())) + 1, len(strokes) - 1
        )
        val |= np.isin(ann.stroke, strokes[:n_val])
    near = (
        ndimage.binary_dilation(ann.mask, np.ones((3, 3), bool), iterations=margin)
        if margin
        else ann.mask
    )
    return Split(
        name="scene",
        train=ann.select(ann.mask & ~val),
        val=ann.select(val),
        test=(labels > 0) & ~near,
        train_region=np.ones(labels.shape, bool),
        description=(
            f"{mode} covering {budget:.0%} of each class's pixels anywhere in the scene; "
            f"{val_share:.0%} of each class's strokes calibrate the threshold; every other labelled "
            f"pixel at least {margin + 1} px from a stroke is a test pixel"
        ),
    )


def block_split(
    labels: np.ndarray,
    *,
    mode: AnnotationMode = "strokes",
    budget: float = 0.10,
    grid: int = 5,
    seed: int = 0,
) -> Split:
    """Spatially disjoint train / calibration / test blocks on a checkerboard."""
    if grid < 2:
        raise ValueError(f"a block split needs a grid of at least 2 x 2, got {grid}")
    h, w = labels.shape
    row = np.minimum(np.arange(h) * grid // h, grid - 1)[:, None]
    col = np.minimum(np.arange(w) * grid // w, grid - 1)[None, :]
    test_region = (row + col) % 2 == 1
    train_region = ~test_region & (row % 2 == 0)
    val_region = ~test_region & (row % 2 == 1)
    train = simulate_annotations(labels, region=train_region, mode=mode, budget=budget, seed=seed)
    val = simulate_annotations(labels, region=val_region, mode=mode, budget=budget, seed=seed + 1)
    return Split(
        name="blocks",
        train=train,
        val=val,
        test=(labels > 0) & test_region,
        train_region=train_region,
        description=(
            f"{grid}x{grid} checkerboard: {int(train_region.sum())} px of training blocks, "
            f"{int(val_region.sum())} px of calibration blocks, {int(test_region.sum())} px of test "
            f"blocks; {mode} covering {budget:.0%} of each class's pixels inside the training and "
            f"calibration blocks; every labelled pixel of a test block is a test pixel"
        ),
    )
